"""Repository locks: which commands may work on one repository at the same time.

Vocabulary
----------
lock object
    A sealed ``T_LOCK`` object ``locks/<64 hex>`` (32 random bytes, the AEAD id) whose
    msgpack plaintext names its holder: ``host``, ``user``, ``pid``, ``pstart`` (when
    that process started: clock ticks since boot, /proc/PID/stat), ``node`` (boot id
    and pid namespace, so "same machine" is not guessed from a host name), ``operation``,
    ``exclusive``, ``created`` (the holder's clock: shown, never compared) and, from its
    first refresh on, ``since`` (the store time of its first write).
shared / exclusive
    Shared locks (backup, restore, check, ls, diff) coexist with each other; an exclusive
    lock (forget, prune, key changes) coexists with nothing.
store time
    The modification time the store reports for an object (``ObjectInfo.mtime``).
    Clients never compare their own clock with anything the store or another client
    says; every age below is a difference of two store times.
reference time (``now_ref``)
    The store time of an object this client wrote *before* the listing it judges: its
    own lock object during acquisition, a throw-away probe lock for ``bk unlock``.
stale
    A lock object is stale when ``now_ref - mtime > ttl`` (nobody refreshed it for a
    whole TTL of store time), or when it comes from this very machine (same ``node``)
    and its process is gone: its pid is dead (restic's rule; a host *name* alone is not
    enough: containers share names but not pid spaces), or the pid now belongs to a
    process that started at another time than the ``pstart`` the lock records (pids
    wrap: with a pid_max of 32768 a killed command's pid names another process within
    minutes, and that must not keep its lock alive for a TTL). Stale locks are
    ignored; only ``bk unlock`` deletes them (and acquisition deletes a stale
    *sentinel*, below).
sentinel
    ``locks/<HMAC(id key, "lock" | "exclusive")>``: a second object an exclusive locker
    creates with ``put_if_absent`` on stores whose conditional create is atomic (S3
    ``If-None-Match: *``, hard links on a local disk). Its plaintext is the holder's
    document plus ``flag``, the name of the holder's lock object. Its name is keyed
    like every other name, so the store learns nothing from it.

Acquisition (one attempt)
-------------------------
1. Create our lock object (random name, so it cannot collide).
2. Exclusive, on an atomic store: ``put_if_absent`` the sentinel. Whoever creates it
   ranks first among exclusive contenders (step 5).
3. Wait ``recheck_delay`` (200 ms), a margin for stores whose listings lag; safety does
   not rest on it.
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

Why this is the restic protocol rearranged: restic lists, creates, waits, lists again.
We create first and fold the first listing into the recheck: one request fewer, and the
listing comes with the reference time it needs for judging staleness.

Refresh and loss
----------------
A held lock is re-put every ``refresh`` seconds by a background thread (and by
``Lock.check``). Each refresh first stats our object (gone: someone ran ``bk unlock
--remove-all``; the lock is *lost*), re-puts it, and compares the new store time with
that of the previous write. Another client can only have judged us stale if that gap
exceeded the TTL, so a gap above ``ttl - margin`` also marks the lock lost: the process
may have been suspended, SIGSTOPped or cut off while someone took the repository over.
A refresh that keeps failing (store errors) loses the lock once ``ttl - max(margin,
1.5 * refresh)`` seconds of the client's clock (restic's 22.5 of 30 minutes) passed
since the last good one started. ``Lock.check`` raises
``LockLost`` for a lost lock and otherwise refreshes synchronously, so a writer that
calls it right before it publishes (backup, before its snapshot; prune, before
deleting) knows nobody could have taken its place up to that moment.
"""

from __future__ import annotations

import getpass
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import msgpack

from backupkit.crypto import T_LOCK
from backupkit.errors import (
    FormatError,
    IntegrityError,
    LockError,
    ObjectNotFound,
    StoreError,
)
from backupkit.errors import LockConflict, LockLost  # noqa: F401 - defined in errors.py, re-exported here
from backupkit.repo.names import id_of
from backupkit.repo.pack import decode_payload

LOCK_PREFIX = "locks/"
DEFAULT_TTL = 1800.0
DEFAULT_REFRESH = 300.0
DEFAULT_RECHECK_DELAY = 0.2
#: restic's --retry-lock schedule: 5 s, doubling, at most 60 s between attempts.
DEFAULT_RETRY_BACKOFF = (5.0, 60.0)


def human_age(seconds: float) -> str:
    """``42s``, ``3m``, ``2h5m``, ``3d4h``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h{m}m" if m else f"{h}h"
    d, h = divmod(s // 3600, 24)
    return f"{d}d{h}h" if h else f"{d}d"


def _node_id() -> str | None:
    """This machine's boot id plus our pid namespace: equal only where pids are comparable."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}:{ns}"


def _pid_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, field 22 of /proc/PID/stat);
    None if there is no such process or no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])  # split() starts at field 3
    except (OSError, ValueError, IndexError):
        return None


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # unknown: assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, it is just not ours
        return True
    return True


@dataclass(frozen=True)
class LockInfo:
    """One object under ``locks/`` as read from the store.

    Attributes:
        name: object name.
        mtime: store time of its last write (creation or refresh).
        doc: the decoded plaintext; empty when ``readable`` is False.
        readable: False when the object did not open or parse (treated as exclusive).
        sentinel: True for the exclusive sentinel.
    """

    name: str
    mtime: float
    doc: dict[str, Any] = field(default_factory=dict)
    readable: bool = True
    sentinel: bool = False

    @property
    def exclusive(self) -> bool:
        return bool(self.doc.get("exclusive", True)) if self.readable else True

    @property
    def probe(self) -> bool:
        return self.readable and bool(self.doc.get("probe"))

    @property
    def since(self) -> float:
        """Store time of the first write (the first write's mtime before any refresh)."""
        s = self.doc.get("since")
        return float(s) if isinstance(s, (int, float)) and s <= self.mtime else self.mtime

    def holder(self) -> str:
        """``user@host (pid N, operation)``."""
        if not self.readable:
            return f"an unreadable lock object {self.name}"
        d = self.doc
        return f"{d.get('user', '?')}@{d.get('host', '?')} (pid {d.get('pid', '?')}, {d.get('operation', '?')})"

    def to_json(self, now_ref: float | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "mtime": self.mtime,
            "readable": self.readable,
            "sentinel": self.sentinel,
            "exclusive": self.exclusive,
        }
        for k in ("host", "user", "pid", "operation", "created"):
            if k in self.doc:
                out[k] = self.doc[k]
        if now_ref is not None:
            out["age"] = round(max(0.0, now_ref - self.since), 3)
            out["idle"] = round(max(0.0, now_ref - self.mtime), 3)
        return out


class LockManager:
    """Takes, inspects and removes the locks of one repository.

    Args:
        repo: an open ``Repository`` (any store).
        ttl: seconds of store time after which an unrefreshed lock is stale.
        refresh: seconds between background refreshes of a held lock (0: no thread;
            call ``Lock.refresh`` yourself).
        retry_lock: keep retrying a conflicting acquisition for this many seconds.
        clock: the client's clock; used only for ``created`` and for giving up on a
            lock whose refreshes keep failing, never for staleness.
        sleep: how to wait (tests pass a fake).
        recheck_delay: wait between creating our lock object and listing, and between
            polls while a lower-ranked contender leaves.
        settle_polls: listings to wait for lower-ranked contenders before backing off.
        retry_backoff: (first, largest) wait between attempts with ``retry_lock``.
        sentinel: use the exclusive sentinel; default: when the store's
            ``put_if_absent`` is atomic.
        on_retry: called with the conflict and the wait before each retry (a CLI
            prints "locked by ...; retrying in 5s").
        host, pid, node: who we are (tests impersonate other clients with them).
    """

    def __init__(
        self,
        repo: Any,
        ttl: float = DEFAULT_TTL,
        refresh: float = DEFAULT_REFRESH,
        retry_lock: float = 0.0,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        *,
        recheck_delay: float = DEFAULT_RECHECK_DELAY,
        settle_polls: int = 5,
        retry_backoff: tuple[float, float] = DEFAULT_RETRY_BACKOFF,
        sentinel: bool | None = None,
        on_retry: Callable[[LockConflict, float], None] | None = None,
        host: str | None = None,
        pid: int | None = None,
        node: str | None | bool = True,
    ) -> None:
        if ttl <= 0:
            raise ValueError("ttl must be positive")
        if refresh < 0 or (refresh and refresh >= ttl):
            raise ValueError("refresh must be 0 (no thread) or shorter than ttl")
        self.repo = repo
        self.store = repo.store
        self.ttl = float(ttl)
        self.refresh = float(refresh)
        self.retry_lock = max(0.0, float(retry_lock))
        self.clock = clock
        self.sleep = sleep
        self.recheck_delay = max(0.0, recheck_delay)
        self.settle_polls = max(1, settle_polls)
        self.retry_backoff = retry_backoff
        self._sentinel_opt = sentinel
        self.on_retry = on_retry
        self.host = host if host is not None else socket.gethostname()
        self.pid = pid if pid is not None else os.getpid()
        self.node = _node_id() if node is True else (node or None)
        self.pid_start = _pid_start(self.pid) if node is True else None
        try:
            self.user = getpass.getuser()
        except Exception:  # noqa: BLE001 - no passwd entry (containers): not worth failing
            self.user = str(os.getuid()) if hasattr(os, "getuid") else "?"
        #: Refresh gaps above ``ttl - margin`` lose the lock (S3 times have 1 s steps).
        self.margin = min(5.0, self.ttl / 10)
        #: Failing refreshes lose the lock after this many seconds of the client's clock
        #: (restic's refreshability timeout: TTL minus 1.5 refresh intervals).
        self.refresh_deadline = self.ttl - max(self.margin, 1.5 * self.refresh)
        sid = repo.sealer.keyed_hash(b"lock", b"exclusive")
        self.sentinel_id = sid
        self.sentinel_name = LOCK_PREFIX + sid.hex()
        self._cache: dict[str, LockInfo] = {}

    # -- public API ------------------------------------------------------------------------
    @property
    def uses_sentinel(self) -> bool:
        if self._sentinel_opt is not None:
            return self._sentinel_opt
        return bool(self.store.atomic_put_if_absent)

    def acquire(self, exclusive: bool, operation: str) -> Lock:
        """Take a lock, retrying for ``retry_lock`` seconds. Raises LockConflict."""
        deadline = self.clock() + self.retry_lock
        delay, cap = self.retry_backoff
        sentinel_cleanups = 0
        while True:
            try:
                return self._attempt(exclusive, operation)
            except _RetryNow:
                sentinel_cleanups += 1
                if sentinel_cleanups <= 3:
                    continue
                raise LockConflict("the exclusive lock marker keeps changing; try again") from None
            except LockConflict as e:
                remaining = deadline - self.clock()
                if remaining <= 0:
                    if self.retry_lock > 0:
                        raise LockConflict(f"{e} (gave up after retrying for {human_age(self.retry_lock)})", e.holder) from None
                    raise
                wait = min(delay, remaining)
                if self.on_retry is not None:
                    self.on_retry(e, wait)
                self.sleep(wait)
                delay = min(delay * 2, cap)

    def list_locks(self, probes: bool = False) -> tuple[float, list[LockInfo]]:
        """Every lock object with a reference time: ``(now_ref, locks)``; writes a probe.

        Other clients' probes (from ``bk unlock`` runs) are left out unless ``probes``.
        """
        with self._probe() as (probe_name, now_ref_fn):
            infos = list(self.store.list(LOCK_PREFIX))
            now_ref = now_ref_fn(infos)
            out = []
            for info in infos:
                if info.name == probe_name:
                    continue
                li = self._read(info)
                if li is not None and (probes or not li.probe):
                    out.append(li)
        out.sort(key=lambda li: (li.since, li.name))
        return now_ref, out

    def stale_reason(self, li: LockInfo, now_ref: float) -> str | None:
        """Why ``li`` is stale at reference time ``now_ref``; None if it is alive."""
        idle = now_ref - li.mtime
        if idle > self.ttl:
            return f"not refreshed for {human_age(idle)}"
        pid = li.doc.get("pid")
        if not (li.readable and isinstance(pid, int) and self._same_machine(li.doc)):
            return None
        started = li.doc.get("pstart")
        if pid == self.pid:  # ours, unless an earlier process had our pid
            if isinstance(started, int) and self.pid_start is not None and started != self.pid_start:
                return f"process {pid} on this machine is gone (its pid is ours now)"
            return None
        if not _pid_alive(pid):
            return f"process {pid} on this machine is gone"
        if isinstance(started, int):
            now = _pid_start(pid)
            if now is not None and now != started:
                return f"process {pid} on this machine is gone (the pid belongs to a newer process)"
        return None

    def remove_stale(self) -> list[tuple[LockInfo, str]]:
        """Delete stale lock objects (and a stale sentinel); returns them with reasons."""
        now_ref, locks = self.list_locks(probes=True)
        removed = []
        for li in locks:
            why = self.stale_reason(li, now_ref)
            if why is None:
                continue
            try:
                self.store.delete(li.name)
            except ObjectNotFound:
                continue
            removed.append((li, why))
        return removed

    def remove_all(self) -> list[str]:
        """Delete every object under ``locks/``, live or not. Holders will find out."""
        names = [i.name for i in self.store.list(LOCK_PREFIX)]
        removed = []
        for n in names:
            try:
                self.store.delete(n)
            except ObjectNotFound:
                continue
            removed.append(n)
        return removed

    # -- objects ---------------------------------------------------------------------------
    def _doc(self, exclusive: bool, operation: str, **extra: Any) -> dict[str, Any]:
        d: dict[str, Any] = {
            "v": 1,
            "host": self.host,
            "user": self.user,
            "pid": self.pid,
            "operation": operation,
            "exclusive": bool(exclusive),
            "created": float(self.clock()),
        }
        if self.node:
            d["node"] = self.node
        if self.pid_start is not None:
            d["pstart"] = self.pid_start
        d.update(extra)
        return d

    def _seal(self, obj_id: bytes, doc: dict[str, Any]) -> bytes:
        return self.repo.seal_object(T_LOCK, obj_id, msgpack.packb(doc))

    @staticmethod
    def _id_of(name: str) -> bytes | None:
        return id_of("locks", name)

    def _read(self, info: Any) -> LockInfo | None:
        """Read and decode one listed lock object; None if it vanished meanwhile.

        Lock objects are cached by (name, mtime); the sentinel never is: each new holder
        rewrites it under the same name, and S3 reports mtimes in whole seconds, so a
        cached copy can name the previous holder. Trusting it made a fresh sentinel
        holder think the sentinel foreign, back off and leave the sentinel behind, which
        then blocked every exclusive lock for a TTL.
        """
        sentinel = info.name == self.sentinel_name
        cached = None if sentinel else self._cache.get(info.name)
        if cached is not None and cached.mtime == info.mtime:
            return cached
        obj_id = self._id_of(info.name)
        li: LockInfo
        if obj_id is None:
            # not a name bk writes: no bk process holds it (issue 10.3)
            self.repo.warn(f"ignoring {info.name!r} in the store: not a name bk writes (bk check lists every such name)")
            return None
        else:
            try:
                raw = self.store.get(info.name)
            except ObjectNotFound:
                self._cache.pop(info.name, None)
                return None
            try:
                plain = decode_payload(self.repo.sealer.open(T_LOCK, obj_id, raw, info.name), info.name)
                doc = msgpack.unpackb(plain)
                if not isinstance(doc, dict):
                    raise FormatError(f"{info.name}: not a lock document")
                li = LockInfo(info.name, info.mtime, doc, True, sentinel)
            except (IntegrityError, FormatError, ValueError, TypeError, msgpack.UnpackException):
                li = LockInfo(info.name, info.mtime, readable=False, sentinel=sentinel)
        if sentinel:
            return li
        if len(self._cache) > 1024:
            self._cache.clear()
        self._cache[info.name] = li
        return li

    def _same_machine(self, doc: dict[str, Any]) -> bool:
        if self.node:
            return doc.get("node") == self.node
        return doc.get("node") is None and doc.get("host") == self.host

    def _delete_quietly(self, name: str) -> None:
        for attempt in range(3):
            try:
                self.store.delete(name)
                return
            except ObjectNotFound:
                return
            except StoreError:
                if attempt == 2:
                    return  # it turns stale after the TTL; nothing else to do
                self.sleep(min(1.0, self.recheck_delay * 2 ** attempt))

    def _sentinel_flag(self) -> str | None:
        """The lock object the sentinel names now, or None if there is none."""
        try:
            info = self.store.stat(self.sentinel_name)
        except ObjectNotFound:
            return None
        li = self._read(info)
        if li is None or not li.readable:
            return None
        flag = li.doc.get("flag")
        return flag if isinstance(flag, str) else None

    class _ProbeCtx:
        def __init__(self, mgr: LockManager) -> None:
            self.mgr = mgr
            self.name = ""

        def __enter__(self):
            obj_id = os.urandom(32)
            self.name = LOCK_PREFIX + obj_id.hex()
            self.mgr.store.put(self.name, self.mgr._seal(obj_id, self.mgr._doc(False, "probe", probe=True)))

            def now_ref(infos: Iterable[Any]) -> float:
                for i in infos:
                    if i.name == self.name:
                        return float(i.mtime)
                return float(self.mgr.store.stat(self.name).mtime)

            return self.name, now_ref

        def __exit__(self, *exc: object) -> None:
            self.mgr._delete_quietly(self.name)

    def _probe(self) -> LockManager._ProbeCtx:
        return LockManager._ProbeCtx(self)

    # -- acquisition -----------------------------------------------------------------------
    def _attempt(self, exclusive: bool, operation: str) -> Lock:
        lock_id = os.urandom(32)
        name = LOCK_PREFIX + lock_id.hex()
        doc = self._doc(exclusive, operation)
        started = self.clock()
        has_sentinel = False
        granted = False
        try:
            # inside the try: an interrupt (a signal raises anywhere) right after the
            # write must still remove the lock object
            self.store.put_if_absent(name, self._seal(lock_id, doc))
            if exclusive and self.uses_sentinel:
                has_sentinel = self._take_sentinel(doc, name)
            if self.recheck_delay:
                self.sleep(self.recheck_delay)
            settle_window = max(2.0, 4 * self.recheck_delay * (self.settle_polls + 1))
            polls = 0
            while True:
                polls += 1
                infos = list(self.store.list(LOCK_PREFIX))
                mine = next((i for i in infos if i.name == name), None)
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
                    if now_ref - info.mtime > self.ttl and info.name != self.sentinel_name:
                        continue  # stale by store time: no need to read it
                    li = self._read(info)
                    if li is None or li.probe:
                        continue
                    if li.sentinel:
                        if self.stale_reason(li, now_ref) is not None:
                            if exclusive and self.uses_sentinel:
                                # A dead holder's sentinel: clear it and start over.
                                self._delete_quietly(li.name)
                                raise _RetryNow()
                            continue
                        owner = li.doc.get("flag") if li.readable else None
                        sentinel_owner = owner if isinstance(owner, str) else None
                        if sentinel_owner != name:
                            has_sentinel = False
                            if exclusive:
                                foreign_sentinel = li
                        continue
                    if self.stale_reason(li, now_ref) is not None:
                        continue
                    if exclusive or li.exclusive:
                        conflicts.append(li)
                if has_sentinel and sentinel_owner != name:
                    has_sentinel = False  # it vanished (someone judged it stale, or unlock)
                if not conflicts and foreign_sentinel is None:
                    granted = True
                    return Lock(self, name, lock_id, doc, exclusive, operation, now_ref, has_sentinel, started)
                my_rank = (0 if has_sentinel else 1, name)

                def rank(li: LockInfo) -> tuple[int, str]:
                    return (0 if li.name == sentinel_owner else 1, li.name)

                yield_now = (
                    foreign_sentinel is not None
                    or any(rank(c) < my_rank for c in conflicts)
                    or any(now_ref - c.since > settle_window for c in conflicts)
                    or polls >= self.settle_polls
                )
                if yield_now:
                    holder = self._pick_holder(conflicts, foreign_sentinel)
                    raise LockConflict(self._conflict_message(holder, now_ref), holder)
                self.sleep(self.recheck_delay)
        finally:
            if not granted:
                if has_sentinel:
                    if self._sentinel_flag() == name:
                        self._delete_quietly(self.sentinel_name)
                self._delete_quietly(name)

    def _take_sentinel(self, doc: dict[str, Any], flag: str) -> bool:
        sdoc = dict(doc, flag=flag)
        return bool(self.store.put_if_absent(self.sentinel_name, self._seal(self.sentinel_id, sdoc)))

    def _pick_holder(self, conflicts: list[LockInfo], foreign_sentinel: LockInfo | None) -> LockInfo | None:
        if foreign_sentinel is not None:
            owner = foreign_sentinel.doc.get("flag")
            for c in conflicts:
                if c.name == owner:
                    return c
            return foreign_sentinel
        if not conflicts:
            return None
        return sorted(conflicts, key=lambda c: (not c.exclusive, c.since, c.name))[0]

    def _conflict_message(self, holder: LockInfo | None, now_ref: float) -> str:
        if holder is None:
            return "repository is locked"
        if not holder.readable:
            # 'bk unlock' removes only stale locks, so say when this one turns stale
            left = max(0.0, self.ttl - (now_ref - holder.mtime))
            return (
                f"repository is locked by {holder.holder()}, written {human_age(now_ref - holder.mtime)} ago "
                f"(it counts as an exclusive lock; 'bk unlock' removes it once stale, in {human_age(left)}; "
                f"'bk unlock --remove-all' removes it now, if no bk process uses the repository)"
            )
        how = "exclusively " if holder.exclusive and holder.readable else ""
        age = human_age(now_ref - holder.since)
        return (
            f"repository is locked {how}by {holder.holder()} since {age} ago "
            f"(a lock turns stale {human_age(self.ttl)} after its holder stops refreshing it; "
            f"'bk unlock' removes stale locks)"
        )


class _RetryNow(Exception):
    """Internal: the attempt cleared a stale sentinel; try again at once."""


class Lock:
    """A held lock. Use as a context manager; ``check()`` before publishing anything."""

    def __init__(
        self,
        manager: LockManager,
        name: str,
        lock_id: bytes,
        doc: dict[str, Any],
        exclusive: bool,
        operation: str,
        mtime: float,
        has_sentinel: bool,
        started: float,
    ) -> None:
        self.manager = manager
        self.name = name
        self.exclusive = exclusive
        self.operation = operation
        self.has_sentinel = has_sentinel
        self._id = lock_id
        self._doc = doc
        self._since = mtime
        self._last_mtime = mtime
        self._last_ok = started  # client time just before the write that gave ``mtime``
        self._lost: str | None = None
        self._released = False
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        #: The error of a failed release (the object then turns stale after the TTL).
        self.release_error: BaseException | None = None
        self._thread: threading.Thread | None = None
        if manager.refresh > 0:
            self._thread = threading.Thread(target=self._refresh_loop, name="bk-lock-refresh", daemon=True)
            self._thread.start()

    # -- state -----------------------------------------------------------------------------
    @property
    def lost(self) -> str | None:
        """Why the lock was lost, or None while it is held."""
        return self._lost

    def _lose(self, why: str) -> LockLost:
        self._lost = why
        return LockLost(f"lost the repository lock: {why}")

    # -- refresh ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-put the lock object now. Raises LockLost, or StoreError on a transient failure."""
        with self._mutex:
            if self._released:
                raise LockError("the lock was already released")
            if self._lost is not None:
                raise LockLost(f"lost the repository lock: {self._lost}")
            mgr = self.manager
            try:
                self._refresh_locked()
            except LockLost:
                raise
            except StoreError as e:
                idle = mgr.clock() - self._last_ok
                if idle > mgr.refresh_deadline:
                    raise self._lose(f"could not refresh it for {human_age(idle)} ({e})") from None
                raise

    def _refresh_locked(self) -> None:
        mgr = self.manager
        store = mgr.store
        try:
            store.stat(self.name)
        except ObjectNotFound:
            raise self._lose("its lock object was removed (by 'bk unlock --remove-all'?)") from None
        if self.has_sentinel and mgr._sentinel_flag() != self.name:
            raise self._lose("the exclusive lock marker was removed or taken over")
        doc = dict(self._doc, since=self._since)
        # Taken before the write: the deadline for failing refreshes must count from a
        # moment no later than the store time the write gets, however slow the calls.
        started = mgr.clock()
        store.put(self.name, mgr._seal(self._id, doc))
        new_mtime = float(store.stat(self.name).mtime)
        gap = new_mtime - self._last_mtime
        if gap > mgr.ttl - mgr.margin:
            raise self._lose(
                f"it went {human_age(gap)} without a refresh (TTL {human_age(mgr.ttl)}); "
                f"another process may have taken the repository over"
            )
        if self.has_sentinel:
            store.put(mgr.sentinel_name, mgr._seal(mgr.sentinel_id, dict(doc, flag=self.name)))
        self._last_mtime = new_mtime
        self._last_ok = started

    def _refresh_loop(self) -> None:
        interval = self.manager.refresh
        wait = interval
        while not self._stop.wait(wait):
            try:
                self.refresh()
                wait = interval
            except LockLost:
                return
            except LockError:
                return  # released
            except StoreError:
                wait = min(interval, max(1.0, interval / 10))
            except Exception as e:  # noqa: BLE001 - never die silently with a lock we think we hold
                self._lost = f"refreshing failed: {type(e).__name__}: {e}"
                return

    def check(self) -> None:
        """Raise LockLost unless the lock is provably still ours; refreshes it first.

        Call right before publishing (a snapshot, the catalog) or deleting anything.
        """
        if self._lost is not None:
            raise LockLost(f"lost the repository lock: {self._lost}")
        try:
            self.refresh()
        except LockLost:
            raise
        except StoreError:
            pass  # transient and still within the TTL (refresh raised LockLost otherwise)

    # -- release ---------------------------------------------------------------------------
    def release(self) -> None:
        """Delete the lock object (and our sentinel). Idempotent; never raises."""
        with self._mutex:
            if self._released:
                return
            self._released = True
            self._stop.set()
            mgr = self.manager
            try:
                if self.has_sentinel and mgr._sentinel_flag() == self.name:
                    mgr._delete_quietly(mgr.sentinel_name)
                mgr._delete_quietly(self.name)
            except Exception as e:  # noqa: BLE001 - the object turns stale after the TTL
                self.release_error = e
        t = self._thread
        if t is not None and t is not threading.current_thread():
            t.join(timeout=5)

    def __enter__(self) -> Lock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        kind = "exclusive" if self.exclusive else "shared"
        return f"<Lock {kind} {self.operation} {self.name[len(LOCK_PREFIX):][:12]}>"


__all__ = [
    "DEFAULT_REFRESH",
    "DEFAULT_TTL",
    "Lock",
    "LockConflict",
    "LockInfo",
    "LockLost",
    "LockManager",
    "human_age",
]
