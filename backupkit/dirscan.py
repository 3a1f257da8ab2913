"""One directory's names and lstats at once, and scanning ahead of the backup walk.

``scan(fs, path)`` lists a directory (names sorted as bytes) and lstats every entry:
``(names, stats)``, where ``stats`` gives in the names' order the ``os.stat_result`` of
each or the ``OSError`` its lstat raised. A directory that cannot be listed raises ``OSError`` as
``os.listdir`` does. With ``fs`` the ``os`` module, the C extension ``_dirscan`` reads
the whole directory in one call with the GIL released (``fstatat`` on the directory's
descriptor) into C memory (``read``); the Python objects are made apart (``entries``,
``subdirs``), by the thread that needs them, as it needs them. Otherwise, or without the extension,
``scan_py`` does the same with ``fs.listdir`` and ``fs.lstat``: the reference the tests
hold the C code to (tests/test_dirscan.py).

``warm_ahead`` starts a thread (in C, without the GIL) that reads the directories of one
source ahead of the walk, in its order (depth first, names sorted), and throws what it
read away: on a cold cache the inodes come in while the walk compares what it has, and
the walk's own ``scan`` finds them in memory. Only the cache is shared, never a result:
what the walk sees is what its own ``scan`` returned, so the read-ahead cannot change
what a backup stores, only when the disk is read.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable

try:
    from backupkit import _dirscan

    C_AVAILABLE = True
except ImportError:  # pragma: no cover - the extension is built by pip install
    _dirscan = None
    C_AVAILABLE = False

#: (sorted names, the lstat result or OSError of each, in the names' order)
Scan = tuple[list[bytes], Iterable]

_S_ISDIR = stat.S_ISDIR
_stat_result = os.stat_result


def read(fs, path: bytes) -> object:
    """The directory ``path`` read and its entries lstat'ed: a listing for ``entries``,
    ``subdirs`` and ``count``. In C (the GIL released) when ``fs`` is the ``os`` module."""
    if fs is os and _dirscan is not None:
        return _dirscan.read(path)
    return scan_py(fs, path)


def entries(listing: object) -> Scan:
    """(names, stats) of a listing; ``stats`` an iterable made as it is gone through (one
    ``os.stat_result`` alive at a time, as with an ``os.lstat`` call per entry)."""
    if type(listing) is tuple:
        return listing  # type: ignore[return-value]
    stats = _dirscan.stats(listing, _stat_result)
    if _dirscan.errors(listing):
        stats = (OSError(st, os.strerror(st)) if type(st) is int else st for st in stats)
    return _dirscan.names(listing), stats


def scan(fs, path: bytes) -> Scan:
    """The directory ``path``'s names and lstats (see the module's text)."""
    return entries(read(fs, path))


def scan_py(fs, path: bytes) -> Scan:
    """``scan`` in Python, through ``fs`` (the ``os`` module or a test's stand-in)."""
    names = sorted(fs.listdir(path))
    pre = path if path == b"/" else path + b"/"
    stats: list = []
    for name in names:
        try:
            stats.append(fs.lstat(pre + name))
        except OSError as e:
            stats.append(e)
    return names, stats


class _NoWarm:
    """``warm_ahead`` where there is nothing to warm (a test's stand-in ``fs``, no C)."""

    def at(self, path: bytes) -> None:
        pass

    def close(self) -> None:
        pass

    def counts(self) -> tuple[int, int, int]:
        return (0, 0, 0)


def warm_ahead(fs, root: bytes, ahead: int, dev: int = -1):
    """A thread that reads and lstats the directories below ``root`` ahead of the walk,
    in its order, so that on a cold cache the disk works while the walk compares (the
    results are thrown away: the walk's own ``scan`` then finds the inodes in memory).
    ``at(path)``: the walk lists ``path`` now (what the thread read beyond it is bounded
    by ``ahead`` entries; what the walk went past is not read); ``close()`` stops it
    without waiting; ``counts()`` -> (directories read, passed over, entries ahead).
    ``dev`` >= 0: directories on another device are not entered. ``ahead`` 0, or ``fs``
    not the ``os`` module: nothing is read ahead."""
    if fs is not os or _dirscan is None or ahead <= 0:
        return _NoWarm()
    return _dirscan.warm(root, ahead, dev)


__all__ = ["C_AVAILABLE", "Scan", "entries", "read", "scan", "scan_py", "warm_ahead"]
