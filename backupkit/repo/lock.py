"""Repository locks: which commands may work on one repository at the same time.

This module holds ``LockManager``: one client's settings (TTL, refresh, retries, who we
are), acquisition with retries, reading and sealing lock objects, the staleness rule,
and what ``bk unlock`` does (list with a probe, remove stale, remove all).

The parts live beside it, each with its own vocabulary and reasoning:
``lock_info.py`` (the lock document, ``LockInfo``, the terms used throughout),
``lock_acquire.py`` (the acquisition protocol and why no two conflicting locks are
ever both held), ``lock_held.py`` (a held ``Lock``: refresh thread, loss, release).
Import everything from here.
"""

from __future__ import annotations

import getpass
import os
import socket
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgpack

from backupkit.crypto import T_LOCK
from backupkit.errors import (
    FormatError,
    IntegrityError,
    ObjectNotFound,
    StoreError,
)
from backupkit.errors import LockConflict, LockLost  # noqa: F401 - defined in errors.py, re-exported here
from backupkit.limits import LOCK_MAX
from backupkit.repo.lock_acquire import _RetryNow, attempt
from backupkit.repo.lock_held import Lock
from backupkit.repo.lock_info import LOCK_PREFIX, LockInfo, human_age, node_id, pid_alive, pid_start
from backupkit.repo.names import id_of
from backupkit.repo.pack import decode_payload

DEFAULT_TTL = 1800.0
DEFAULT_REFRESH = 300.0
DEFAULT_RECHECK_DELAY = 0.2
#: restic's --retry-lock schedule: 5 s, doubling, at most 60 s between attempts.
DEFAULT_RETRY_BACKOFF = (5.0, 60.0)


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
        recheck_delay: the margin for listings that lag: an exclusive contender waits
            twice this between creating its lock object and listing (a shared one
            lists at once), and every contender this long between polls while a
            lower-ranked contender leaves (``lock_acquire``, step 3).
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
        self.node = node_id() if node is True else (node or None)
        self.pid_start = pid_start(self.pid) if node is True else None
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
        #: Locks granted and not yet released: a caller interrupted between the grant and
        #: taking the lock into its own ``try`` releases them with ``release_granted``.
        self.granted: set[Lock] = set()

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
                return attempt(self, exclusive, operation)
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

    def release_granted(self) -> None:
        """Release every lock this manager granted that is still held (idempotent)."""
        for lock in list(self.granted):
            lock.release()

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
                li = self.read_info(info)
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
        if not pid_alive(pid):
            return f"process {pid} on this machine is gone"
        if isinstance(started, int):
            now = pid_start(pid)
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
    def new_doc(self, exclusive: bool, operation: str, **extra: Any) -> dict[str, Any]:
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

    def seal(self, obj_id: bytes, doc: dict[str, Any]) -> bytes:
        return self.repo.seal_object(T_LOCK, obj_id, msgpack.packb(doc))

    @staticmethod
    def _id_of(name: str) -> bytes | None:
        return id_of("locks", name)

    def read_info(self, info: Any) -> LockInfo | None:
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
                raw = self.store.get(info.name, max_size=LOCK_MAX)
            except ObjectNotFound:
                self._cache.pop(info.name, None)
                return None
            except FormatError:  # larger than any lock: unreadable, never read whole
                raw = b""
            try:
                plain = decode_payload(self.repo.sealer.open(T_LOCK, obj_id, raw, info.name), info.name, LOCK_MAX)
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

    def delete_quietly(self, name: str) -> None:
        for tries in range(3):
            try:
                self.store.delete(name)
                return
            except ObjectNotFound:
                return
            except StoreError:
                if tries == 2:
                    return  # it turns stale after the TTL; nothing else to do
                self.sleep(min(1.0, self.recheck_delay * 2 ** tries))

    def sentinel_flag(self) -> str | None:
        """The lock object the sentinel names now, or None if there is none."""
        try:
            info = self.store.stat(self.sentinel_name)
        except ObjectNotFound:
            return None
        li = self.read_info(info)
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
            self.mgr.store.put(self.name, self.mgr.seal(obj_id, self.mgr.new_doc(False, "probe", probe=True)))

            def now_ref(infos: Iterable[Any]) -> float:
                for i in infos:
                    if i.name == self.name:
                        return float(i.mtime)
                return float(self.mgr.store.stat(self.name).mtime)

            return self.name, now_ref

        def __exit__(self, *exc: object) -> None:
            self.mgr.delete_quietly(self.name)

    def _probe(self) -> LockManager._ProbeCtx:
        return LockManager._ProbeCtx(self)


__all__ = [
    "DEFAULT_REFRESH",
    "DEFAULT_TTL",
    "LOCK_PREFIX",
    "Lock",
    "LockConflict",
    "LockInfo",
    "LockLost",
    "LockManager",
    "human_age",
]
