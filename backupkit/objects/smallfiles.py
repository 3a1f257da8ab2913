"""Reading files that are one chunk: the system calls a batch of small files makes, the
same on a reader thread (``ContentWriter.read_small``) and in a sealing process
(``sealprocs.py``).

A file is opened without following a symlink and without blocking (a file swapped for a
fifo since the walk's lstat must not hang the open; its fstat then refuses it), read up
to the size it had at lstat, never further, and compared afterwards: a file whose size,
mtime or ctime now differ from the lstat "changed while being read". A batch opens each
file ``ahead`` files before its read and asks for its data at once
(``posix_fadvise(WILLNEED)``), so the disk sees that many reads queued. Whatever is not
one chunk (empty, at least the chunker's minimum, or with holes) is handed, still open,
to the caller's ``more``.

All file system calls go through ``fs`` (the ``os`` module, or a test's stand-in).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from typing import Any

from backupkit.errors import FileReadError

#: what ``read_batch`` gives for one file: an error, (data, changed) for a file of one
#: chunk, or whatever ``more`` returned for the others
Read = Any


def open_file(fs: Any, path: bytes) -> int:
    """An fd of ``path`` for reading (no atime update where allowed); FileReadError."""
    # O_NONBLOCK: a file swapped for a fifo since lstat must not block open() (the fstat
    # after it then skips it); it changes nothing for reads of regular files.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
    try:
        return fs.open(path, flags | getattr(os, "O_NOATIME", 0))
    except PermissionError:
        try:
            return fs.open(path, flags)
        except OSError as err:
            raise FileReadError(f"cannot read: {err.strerror}") from None
    except OSError as err:
        raise FileReadError(f"cannot read: {err.strerror}") from None


def read_upto(fs: Any, fd: int, n: int) -> bytes:
    """Up to ``n`` bytes from ``fd``'s position (fewer only at the end of the file)."""
    parts = []
    while n > 0:
        b = fs.read(fd, n)
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def changed(after: os.stat_result, st: os.stat_result) -> bool:
    """Did the file change while it was read (size or times now unlike the walk's lstat)?"""
    return (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def read_one_chunk(fs: Any, fd: int, st: os.stat_result, min_size: int) -> tuple[bytes, bool, os.stat_result | None]:
    """(data, changed, None) of a file that is one chunk (not empty, below the chunker's
    minimum ``min_size``, no holes); for any other file (b"", False, its fstat), nothing
    read. FileReadError when it cannot be read or is no longer a regular file."""
    try:
        fst = fs.fstat(fd)
        if not stat.S_ISREG(fst.st_mode):
            raise FileReadError("changed type while being read, skipped")
        size = min(st.st_size, fst.st_size)
        if not (0 < size < min_size and fst.st_blocks * 512 >= size):
            return b"", False, fst
        data = read_upto(fs, fd, size)
        after = fs.fstat(fd)
    except OSError as err:
        raise FileReadError(f"read error: {err.strerror}") from None
    return data, changed(after, st), None


def read_batch(
    fs: Any,
    files: list[tuple[bytes, os.stat_result]],
    min_size: int,
    ahead: int,
    more: Callable[[int, os.stat_result, os.stat_result], Read],
    on_bytes: Callable[[int], None],
) -> list[Read]:
    """For each (path, lstat) of ``files``: a FileReadError, (data, changed) when the
    file is one chunk, or ``more(fd, lstat, fstat)`` for any other (the fd is closed
    after). One file's error never touches the others."""
    advise = getattr(fs, "posix_fadvise", None)
    ahead = max(1, ahead)
    n = len(files)
    out: list[Read] = [None] * n
    fds: list[int | None] = [None] * n
    opened = 0
    try:
        for i, (_path, st) in enumerate(files):
            while opened < n and opened <= i + ahead:
                try:
                    fd = fds[opened] = open_file(fs, files[opened][0])
                    if advise is not None and files[opened][1].st_size:
                        advise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
                except FileReadError as err:
                    out[opened] = err
                except OSError:
                    pass  # only a hint
                opened += 1
            fd = fds[i]
            if fd is None:
                continue
            try:
                data, ch, fst = read_one_chunk(fs, fd, st, min_size)
                if fst is not None:
                    out[i] = more(fd, st, fst)
                else:
                    if data:
                        on_bytes(len(data))
                    out[i] = (data, ch)
            except FileReadError as err:
                out[i] = err
            finally:
                fds[i] = None
                fs.close(fd)
    finally:
        for fd in fds:
            if fd is not None:
                fs.close(fd)
    return out


def read_xattrs(fs: Any, path: bytes) -> tuple[tuple[bytes, bytes], ...] | None:
    """The extended attributes of ``path`` itself (not a symlink's target), by name;
    None when it has none or they cannot be listed (one that vanishes is left out)."""
    try:
        names = fs.listxattr(path, follow_symlinks=False)
    except OSError:
        return None
    xattrs = []
    for n in sorted(names):
        try:
            xattrs.append((n.encode("utf-8", "surrogateescape"), fs.getxattr(path, n, follow_symlinks=False)))
        except OSError:
            continue
    return tuple(xattrs) or None


__all__ = ["changed", "open_file", "read_batch", "read_one_chunk", "read_upto", "read_xattrs"]
