"""Read handles of the sftp: store: pack files kept open across range reads, and how much
one read request asks for.

Vocabulary: a *session* is one SSH connection with its SFTP channel (``sshconn``); a
*read handle* is an SFTP file open for reading on one session (handles belong to their
session's channel). Each session keeps up to ``HANDLES_PER_SESSION`` of them
(``Handles``, least recently used closed first, without waiting for the answer), so the
range reads of one pack cost no open, fstat or close after the first. A cached handle is
dropped when the same store writes or deletes that name (``Changes``) and after
``HANDLE_TTL`` seconds: a pack deleted meanwhile reads as not found rather than from the
unlinked file (packs are named by their content, so until then a read racing another
client's delete can only return the bytes the name stands for).

Reads ask for the server's max-read-length (``limits@openssh.com``, asked once per
session): OpenSSH's sftp-server allows 255 KiB, paramiko asks for 32 KiB. Writes stay at
32 KiB: 16 MiB pipelined writes on loopback took the same time at 255 KiB.
"""

from __future__ import annotations

import errno
import stat as stat_module
import threading
import time
from collections import OrderedDict

import paramiko

from backupkit.store.sshconn import TRANSIENT, Session

#: Open read handles kept per session (OpenSSH's sftp-server allows 512 per session).
HANDLES_PER_SESSION = 8
#: Seconds a cached read handle is used before it is reopened.
HANDLE_TTL = 30.0
#: Bytes asked per SFTP read when the server does not tell its limit (paramiko's 32 KiB)
#: and the most asked when it does (OpenSSH's sftp-server: 255 KiB). Measured on loopback,
#: 16 MiB in 1 MiB ranges: 27 MiB/s at 32 KiB, 58 MiB/s at 255 KiB.
READ_DEFAULT, READ_MAX = 32 * 1024, 255 * 1024
#: A cached read handle: (file, size, change count at the open, monotonic open time).
Entry = tuple[paramiko.SFTPFile, int, int, float]


class Changes:
    """Which names this store wrote or deleted, as a count: a cached read handle opened
    before the last change of its name is out of date.

    Bounded: past ``limit`` names the record is cleared and every handle opened before
    counts as out of date."""

    def __init__(self, limit: int = 4096) -> None:
        self._lock = threading.Lock()
        self._count = 0
        self._floor = 0  # handles opened before this count are out of date
        self._last: dict[str, int] = {}
        self._limit = limit

    def seen(self) -> int:
        with self._lock:
            return self._count

    def changed(self, path: str) -> None:
        """Call after a write or delete of ``path`` finished (or failed)."""
        with self._lock:
            self._count += 1
            if len(self._last) >= self._limit:
                self._last.clear()
                self._floor = self._count
            self._last[path] = self._count

    def current(self, path: str, opened_at: int) -> bool:
        with self._lock:
            return opened_at >= self._floor and self._last.get(path, -1) <= opened_at


class Handles:
    """A session's open read handles: path -> (file, size, change count at the open,
    monotonic time of the open), least recently used first. Only the thread that has the
    session checked out uses it; closing the session closes them on the server."""

    def __init__(self) -> None:
        self._files: OrderedDict[str, Entry] = OrderedDict()

    @classmethod
    def of(cls, session: Session) -> Handles:
        handles = getattr(session, "read_handles", None)
        if handles is None:
            handles = session.read_handles = cls()  # type: ignore[attr-defined]
        return handles

    def take(self, path: str, changes: Changes) -> Entry | None:
        """Remove and return the cached handle of ``path`` if it is still current (give
        it back with ``keep``); an out-of-date one is closed."""
        entry = self._files.pop(path, None)
        if entry is None:
            return None
        if time.monotonic() - entry[3] > HANDLE_TTL or not changes.current(path, entry[2]):
            close_quietly(entry[0])
            return None
        return entry

    def keep(self, path: str, entry: Entry) -> None:
        """Cache ``entry`` as the most recently used; close the least recently used
        beyond ``HANDLES_PER_SESSION``."""
        self._files[path] = entry
        while len(self._files) > HANDLES_PER_SESSION:
            _, old = self._files.popitem(last=False)
            close_quietly(old[0])


def open_file(session: Session, path: str) -> tuple[paramiko.SFTPFile, int]:
    """Open a regular file for reading: (file, size); its reads ask for as much as the
    server allows (``read_size``). A directory (a name that is only a prefix) is not
    found; sftp-server opens directories without complaint."""
    f = session.sftp.open(path, "rb")
    f.MAX_REQUEST_SIZE = read_size(session)  # paramiko's per-request bound, per file
    try:
        st = f.stat()
    except BaseException:
        f.close()
        raise
    if not stat_module.S_ISREG(st.st_mode or 0):
        f.close()
        raise FileNotFoundError(errno.ENOENT, "not a file")
    return f, st.st_size or 0


def read_size(session: Session) -> int:
    """The bytes one SFTP read may ask for on this session: the server's max-read-length
    from ``limits@openssh.com`` (asked once per session), at most ``READ_MAX``; paramiko's
    32 KiB from servers that do not answer."""
    size = getattr(session, "read_size", None)
    if size is None:
        size = READ_DEFAULT
        try:
            t, msg = session.sftp._request(paramiko.sftp.CMD_EXTENDED, "limits@openssh.com")  # type: ignore[attr-defined]
            if t == paramiko.sftp.CMD_EXTENDED_REPLY:
                msg.get_int64()  # max-packet-length
                told = msg.get_int64()  # max-read-length (0: no limit told)
                if told:
                    size = max(READ_DEFAULT, min(READ_MAX, told))
        except (OSError, paramiko.SFTPError):
            pass  # not OpenSSH: keep the default
        session.read_size = size  # type: ignore[attr-defined]
    return int(size)


def close_quietly(f: paramiko.SFTPFile) -> None:
    """Close a read handle without waiting for the answer (one round trip saved)."""
    try:
        f._close(async_=True)  # type: ignore[attr-defined]
    except (OSError, *TRANSIENT):
        pass
