"""Taking a repository lock: the acquisition protocol (one attempt) and why it is safe.

Vocabulary as in ``lock_info.py`` (lock object, shared/exclusive, store time, reference
time, stale, sentinel). ``LockManager.acquire`` (``lock.py``) retries ``attempt``.

Acquisition (one attempt)
-------------------------
1. Create our lock object (random name, so it cannot collide).
2. Exclusive, on an atomic store: ``put_if_absent`` the sentinel. Whoever creates it
   ranks first among exclusive contenders (step 5).
3. Where listings may lag (not ``ObjectStore.immediate_listings``, which a local
   directory and memory are), an exclusive contender waits ``2 x recheck_delay``
   (400 ms) before it lists; a shared one lists at once (and, if that listing does not
   show its own object yet, waits ``recheck_delay`` and lists again). This is a margin
   for stores whose listings lag, as restic's 200 ms wait by every contender is, and it
   is as wide (see "Listings that lag" below); safety does not rest on it.
4. List ``locks/``. Our own object's store time in that listing is ``now_ref``: it was
   written before the listing started, so anything stale against it really went a TTL
   of store time without a refresh. Read the other lock objects (cached by name and
   mtime across polls) and drop stale ones and probes. A *conflict* is any exclusive
   lock, or any lock at all when we want exclusive. An unreadable lock object counts as
   an exclusive one until it turns stale.
5. No conflict: the lock is ours. Otherwise *back off* (delete the sentinel if ours,
   then our lock object, and fail or retry) if some conflicting contender ranks before
   us, if a conflicting lock looks established (older than the settle window), or after
   ``settle_polls`` polls; else wait ``recheck_delay`` and go back to 4. Rank is
   (0 if you hold the live sentinel else 1, name of your lock object), lowest first. A
   live sentinel someone else holds is itself a conflict for an exclusive contender.

Why no two conflicting locks are ever both held (the flag principle): A and B each
write their object and only then list. Listings are linearizable (S3 has strong
list-after-write since 2020; a local directory and the memory store trivially), so
whichever of the two writes finished last, its writer's listing sees the other's
object. A contender proceeds only on a listing without conflicts, so at most one of
two conflicting contenders proceeds, whatever the timing, the ranks or the sentinel.
Ranks, polls and the sentinel only decide *who* backs off, which is liveness: among
contenders whose objects overlap, the lowest ranked one never yields on rank; it waits
for the others, which see it and leave. Two exclusive contenders on an atomic store
never both yield: exactly one created the sentinel. Without an atomic conditional
create (``atomic_put_if_absent`` False) the sentinel is skipped and the lowest name
wins the same way. A store that claims atomicity and lies (two sentinel "winners") can
only cost a retry, never a double grant, because the grant still needs a clean listing.
Deleting a stale sentinel can race with a fresh one (there is no conditional delete);
that too costs only liveness.

Listings that lag: if a listing may miss objects written less than L ago, two
conflicting contenders both proceed only if neither listing shows the other's object.
Say X (exclusive) writes at tX and lists after waiting dX, S writes at tS and lists
after dS. X misses S iff tS + L > tX + dX; S misses X iff tX + L > tS + dS. Both hold
for some tS iff dX + dS < 2L. restic waits 200 ms in every contender (dX = dS = 200
ms): safe while L <= 200 ms. Here dX = 400 ms and dS = 0: the same bound, L <= 200 ms,
and two exclusive contenders have 800 ms. So the wait is paid once, by the rare
exclusive commands (prune, forget, repair), instead of by every backup, restore, ls
and check (200 ms of a ~1.5 s restore from S3). Shared contenders never conflict with
each other. An older bk (200 ms in both) beside this one keeps L <= 200 ms against our
exclusive contenders and L <= 100 ms between its exclusive and our shared ones.

Why this is the restic protocol rearranged: restic lists, creates, waits, lists again.
We create first and fold the first listing into the recheck: one request fewer, and the
listing comes with the reference time it needs for judging staleness.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from backupkit.errors import LockConflict
from backupkit.repo.lock_held import Lock
from backupkit.repo.lock_info import LOCK_PREFIX, LockInfo, human_age

if TYPE_CHECKING:
    from backupkit.repo.lock import LockManager


class _RetryNow(Exception):
    """Internal: the attempt cleared a stale sentinel; try again at once."""


def attempt(mgr: LockManager, exclusive: bool, operation: str) -> Lock:
    """One acquisition attempt (steps 1-5 above). Raises LockConflict, or _RetryNow after
    clearing a dead holder's sentinel."""
    lock_id = os.urandom(32)
    name = LOCK_PREFIX + lock_id.hex()
    doc = mgr.new_doc(exclusive, operation)
    started = mgr.clock()
    has_sentinel = False
    #: True while the sentinel's put_if_absent runs: a signal can land inside it, after
    #: the sentinel is written and before ``has_sentinel`` says so; then the flag is read
    sentinel_unknown = False
    granted = False
    try:
        # inside the try: an interrupt (a signal raises anywhere) right after the
        # write must still remove the lock object
        # A plain put: the name is 32 random bytes, so a collision is not a case worth a
        # request (put_if_absent costs a HEAD first on stores without conditional writes).
        mgr.store.put(name, mgr.seal(lock_id, doc))
        if exclusive and mgr.uses_sentinel:
            sentinel_unknown = True
            has_sentinel = _take_sentinel(mgr, doc, name)
            sentinel_unknown = False
        lagging = bool(mgr.recheck_delay) and not getattr(mgr.store, "immediate_listings", False)
        if lagging and exclusive:
            mgr.sleep(2 * mgr.recheck_delay)  # the margin for both sides (step 3)
        settle_window = max(2.0, 4 * mgr.recheck_delay * (mgr.settle_polls + 1))
        polls = 0
        while True:
            polls += 1
            infos = list(mgr.store.list(LOCK_PREFIX))
            mine = next((i for i in infos if i.name == name), None)
            if mine is None and lagging and not exclusive and polls == 1:
                mgr.sleep(mgr.recheck_delay)  # listed at once: our own write may not show yet
                continue
            if mine is None:
                raise LockConflict(
                    "our lock object vanished while we were taking the lock (is 'bk unlock --remove-all' running?)"
                )
            now_ref = float(mine.mtime)
            conflicts: list[LockInfo] = []
            sentinel_owner: str | None = None
            foreign_sentinel: LockInfo | None = None
            for info in infos:
                if info.name == name:
                    continue
                if now_ref - info.mtime > mgr.ttl and info.name != mgr.sentinel_name:
                    continue  # stale by store time: no need to read it
                li = mgr.read_info(info)
                if li is None or li.probe:
                    continue
                if li.sentinel:
                    if mgr.stale_reason(li, now_ref) is not None:
                        if exclusive and mgr.uses_sentinel:
                            # A dead holder's sentinel: clear it and start over.
                            mgr.delete_quietly(li.name)
                            raise _RetryNow()
                        continue
                    owner = li.doc.get("flag") if li.readable else None
                    sentinel_owner = owner if isinstance(owner, str) else None
                    if sentinel_owner != name:
                        has_sentinel = False
                        if exclusive:
                            foreign_sentinel = li
                    continue
                if mgr.stale_reason(li, now_ref) is not None:
                    continue
                if exclusive or li.exclusive:
                    conflicts.append(li)
            if has_sentinel and sentinel_owner != name:
                has_sentinel = False  # it vanished (someone judged it stale, or unlock)
            if not conflicts and foreign_sentinel is None:
                lock = Lock(mgr, name, lock_id, doc, now_ref, has_sentinel, started)
                # From here an interrupt is the caller's to clean up (LockManager.release_granted)
                mgr.granted.add(lock)
                granted = True
                return lock
            my_rank = (0 if has_sentinel else 1, name)

            def rank(li: LockInfo) -> tuple[int, str]:
                return (0 if li.name == sentinel_owner else 1, li.name)

            yield_now = (
                foreign_sentinel is not None
                or any(rank(c) < my_rank for c in conflicts)
                or any(now_ref - c.since > settle_window for c in conflicts)
                or polls >= mgr.settle_polls
            )
            if yield_now:
                holder = _pick_holder(conflicts, foreign_sentinel)
                raise LockConflict(_conflict_message(mgr, holder, now_ref), holder)
            mgr.sleep(mgr.recheck_delay)
    finally:
        if not granted:
            if has_sentinel or sentinel_unknown:
                if mgr.sentinel_flag() == name:
                    mgr.delete_quietly(mgr.sentinel_name)
            mgr.delete_quietly(name)

def _take_sentinel(mgr: LockManager, doc: dict[str, Any], flag: str) -> bool:
    sdoc = dict(doc, flag=flag)
    return bool(mgr.store.put_if_absent(mgr.sentinel_name, mgr.seal(mgr.sentinel_id, sdoc)))

def _pick_holder(conflicts: list[LockInfo], foreign_sentinel: LockInfo | None) -> LockInfo | None:
    if foreign_sentinel is not None:
        owner = foreign_sentinel.doc.get("flag")
        for c in conflicts:
            if c.name == owner:
                return c
        return foreign_sentinel
    if not conflicts:
        return None
    return sorted(conflicts, key=lambda c: (not c.exclusive, c.since, c.name))[0]

def _conflict_message(mgr: LockManager, holder: LockInfo | None, now_ref: float) -> str:
    if holder is None:
        return "repository is locked"
    if not holder.readable:
        # 'bk unlock' removes only stale locks, so say when this one turns stale
        left = max(0.0, mgr.ttl - (now_ref - holder.mtime))
        return (
            f"repository is locked by {holder.holder()}, written {human_age(now_ref - holder.mtime)} ago "
            f"(it counts as an exclusive lock; 'bk unlock' removes it once stale, in {human_age(left)}; "
            f"'bk unlock --remove-all' removes it now, if no bk process uses the repository)"
        )
    how = "exclusively " if holder.exclusive and holder.readable else ""
    age = human_age(now_ref - holder.since)
    return (
        f"repository is locked {how}by {holder.holder()} since {age} ago "
        f"(a lock turns stale {human_age(mgr.ttl)} after its holder stops refreshing it; "
        f"'bk unlock' removes stale locks)"
    )
