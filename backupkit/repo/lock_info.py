"""The lock document: what a lock object says about its holder, and who is alive.

Vocabulary
----------
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

Holds ``LockInfo`` (one listed lock object, decoded), the process facts a lock records
(``node_id``, ``pid_start``) and checks (``pid_alive``), and ``human_age`` for messages.
The protocol that uses them is in ``lock_acquire.py``; the manager in ``lock.py``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

LOCK_PREFIX = "locks/"


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


def node_id() -> str | None:
    """This machine's boot id plus our pid namespace: equal only where pids are comparable."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return None
    return f"{boot}:{ns}"


def pid_start(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, field 22 of /proc/PID/stat);
    None if there is no such process or no /proc."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        return int(stat[stat.rindex(b")") + 2 :].split()[19])  # split() starts at field 3
    except (OSError, ValueError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return True  # unknown: assume alive
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OSError, OverflowError):  # EPERM: it exists, it is just not ours; a forged pid
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
