"""A held repository lock: its refresh thread, loss detection and release.

Vocabulary as in ``lock_info.py``; a ``Lock`` is what ``LockManager.acquire`` (``lock.py``)
returns.

Refresh and loss
----------------
A held lock is re-put every ``refresh`` seconds by a background thread (and by
``Lock.check``). Each refresh rewrites our object only if it still exists
(``ObjectStore.rewrite_existing``; gone: someone ran ``bk unlock --remove-all``; the lock
is *lost*) and compares the store time of that write with that of the previous one.
Another client can only have judged us stale if that gap exceeded the TTL, so a gap
above ``ttl - margin`` also marks the lock lost: the process may have been suspended,
SIGSTOPped or cut off while someone took the repository over. A refresh that keeps
failing (store errors) loses the lock once ``ttl - max(margin, 1.5 * refresh)`` seconds of the client's clock (restic's 22.5 of 30 minutes) passed
since the last good one started. ``Lock.check`` raises
``LockLost`` for a lost lock and otherwise refreshes synchronously, so a writer that
calls it right before it publishes (backup, before its snapshot; prune, before
deleting) knows nobody could have taken its place up to that moment.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from backupkit.errors import LockError, LockLost, ObjectNotFound, StoreError
from backupkit.repo.lock_info import LOCK_PREFIX, human_age

if TYPE_CHECKING:
    from backupkit.repo.lock import LockManager


class Lock:
    """A held lock. Use as a context manager; ``check()`` before publishing anything.
    ``doc``: what the lock object holds (``LockManager.new_doc``: exclusive, operation ...)."""

    def __init__(
        self,
        manager: LockManager,
        name: str,
        lock_id: bytes,
        doc: dict[str, Any],
        mtime: float,
        has_sentinel: bool,
        started: float,
    ) -> None:
        self.manager = manager
        self.name = name
        self.exclusive: bool = doc["exclusive"]
        self.operation: str = doc["operation"]
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
        if self.has_sentinel and mgr.sentinel_flag() != self.name:
            if not store.exists(self.name):
                raise self._lose("its lock object was removed (by 'bk unlock --remove-all'?)")
            raise self._lose("the exclusive lock marker was removed or taken over")
        doc = dict(self._doc, since=self._since)
        # Taken before the write: the deadline for failing refreshes must count from a
        # moment no later than the store time the write gets, however slow the calls.
        started = mgr.clock()
        try:
            # One conditional write where the server can (bk serve), else stat, put, stat.
            new_mtime = store.rewrite_existing(self.name, mgr.seal(self._id, doc))
        except ObjectNotFound:
            raise self._lose("its lock object was removed (by 'bk unlock --remove-all'?)") from None
        gap = new_mtime - self._last_mtime
        if gap > mgr.ttl - mgr.margin:
            raise self._lose(
                f"it went {human_age(gap)} without a refresh (TTL {human_age(mgr.ttl)}); "
                f"another process may have taken the repository over"
            )
        if self.has_sentinel:
            store.put(mgr.sentinel_name, mgr.seal(mgr.sentinel_id, dict(doc, flag=self.name)))
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
            mgr.granted.discard(self)
            try:
                if self.has_sentinel and mgr.sentinel_flag() == self.name:
                    mgr.delete_quietly(mgr.sentinel_name)
                mgr.delete_quietly(self.name)
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
