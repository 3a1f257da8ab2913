"""One directory's names and lstats at once, and reading them ahead of the backup walk.

``scan(fs, path)`` lists a directory (names sorted as bytes) and lstats every entry:
``(names, stats)``, where ``stats`` gives in the names' order the ``os.stat_result`` of
each or the ``OSError`` its lstat raised. A directory that cannot be listed raises
``OSError`` as ``os.listdir`` does. With ``fs`` the ``os`` module, the C extension
``_dirscan`` reads the whole directory in one call with the GIL released (``fstatat`` on
the directory's descriptor) into C memory (``read``); the Python objects are made apart
(``entries``), one at a time as the walk goes through them. Otherwise, or without the
extension, ``scan_py`` does the same with ``fs.listdir`` and ``fs.lstat``: the reference
the tests hold the C code to (tests/test_dirscan.py).

``read_ahead`` starts threads (in C, without the GIL) that read the directories of one
source ahead of the walk, in its order (depth first, names sorted), and keep each
listing until the walk takes it: on a cold cache the disk works while the walk compares
what it has, and warm, the system calls leave the walk's thread. A listing is at most
``max_age`` seconds old when the walk takes it (else the walk reads the directory
again); an lstat taken that much earlier changes nothing a backup stores: a file that
is read is compared with its lstat after the read (``backup_reads.py``), and a file
reused as unchanged is stored as it was at its lstat, content and metadata alike.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable, Sequence

try:
    from backupkit import _dirscan

    C_AVAILABLE = True
except ImportError:  # pragma: no cover - the extension is built by pip install
    _dirscan = None
    C_AVAILABLE = False

#: (sorted names, the lstat result or OSError of each, in the names' order)
Scan = tuple[list[bytes], Iterable]

_stat_result = os.stat_result


def read(fs, path: bytes) -> object:
    """The directory ``path`` read and its entries lstat'ed: a listing for ``entries``.
    In C (the GIL released) when ``fs`` is the ``os`` module."""
    if fs is os and _dirscan is not None:
        return _dirscan.read(path)
    return scan_py(fs, path)


def entries(listing: object, places: list[int] | None = None) -> Scan:
    """(names, stats) of a listing; ``stats`` an iterable made as it is gone through (one
    ``os.stat_result`` alive at a time, as with an ``os.lstat`` call per entry).
    ``places``: only the entries at these places of the listing, in that order."""
    if type(listing) is tuple:
        if places is None:
            return listing  # type: ignore[return-value]
        names, stats = listing[0], list(listing[1])
        return [names[i] for i in places], [stats[i] for i in places]
    args = () if places is None else (places,)
    stats = _dirscan.stats(listing, _stat_result, *args)
    if _dirscan.errors(listing):
        stats = (OSError(st, os.strerror(st)) if type(st) is int else st for st in stats)
    return _dirscan.names(listing, *args), stats


def listing(fs, path: bytes, ahead=None) -> object:
    """The directory ``path`` read for ``entries`` (see the module's text): from ``ahead``
    (a ``read_ahead``) when it has read it, else read now. A C listing (a capsule) when
    ``fs`` is the ``os`` module, else ``scan_py``'s (names, stats)."""
    got = ahead.take(path) if ahead is not None else None
    return got if got is not None else read(fs, path)


def scan(fs, path: bytes, ahead=None) -> Scan:
    """The directory ``path``'s names and lstats: ``entries`` of its ``listing``."""
    return entries(listing(fs, path, ahead))


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


class _NoReadAhead:
    """``read_ahead`` where nothing is read ahead (a test's stand-in ``fs``, no C)."""

    def take(self, path: bytes) -> None:
        return None

    def close(self) -> None:
        pass

    def counts(self) -> tuple[int, int, int, int]:
        return (0, 0, 0, 0)


def read_ahead(fs, root: bytes, max_entries: int, max_age: float, dev: int = -1, threads: int = 1):
    """``threads`` threads (in C, without the GIL) that ``read`` the directories below
    ``root`` in the walk's order (each the first one not yet read) and keep the listings
    for it: ``take(path)`` gives the listing of the directory the walk is about to list,
    or None (not read yet, its read failed, or older than ``max_age`` seconds): then the
    walk reads it itself. At most ``max_entries`` entries are held; what the walk went
    past is dropped or not read; ``dev`` >= 0: directories on another device are not
    entered. ``close()`` stops them without waiting; ``counts()`` -> (directories read,
    passed over, taken; entries held). ``max_entries`` 0, or ``fs`` not the ``os``
    module: nothing is read ahead."""
    if fs is not os or _dirscan is None or max_entries <= 0:
        return _NoReadAhead()
    return _dirscan.ahead(root, max_entries, max_age, dev, threads)


class Warming:
    """The warmers ``warm`` started; ``close()`` stops them all (without waiting)."""

    def __init__(self, handles: list) -> None:
        self._handles = handles

    def close(self) -> None:
        for h in self._handles:
            h.close()
        self._handles = []

    def counts(self) -> list[tuple[int, int, int, int]]:
        """Each warmer's ``counts()`` (directories read first), while not closed."""
        return [h.counts() for h in self._handles]


#: warmers started at most (one thread each): the first sources' trees
WARM_SOURCES_MAX = 2


def warm(paths: Sequence[str | bytes], one_file_system: bool = False) -> Warming:
    """A thread per directory among the first ``WARM_SOURCES_MAX`` of ``paths`` (as a
    user gave them) that reads its tree in the walk's order and drops each listing (C,
    without the GIL): the kernel's caches hold the metadata when the walk gets there.
    ``one_file_system``: other file systems are not entered. Without the C extension,
    or for paths that are not directories, nothing is started."""
    handles = []
    if _dirscan is None:
        return Warming(handles)
    for p in paths:
        if len(handles) >= WARM_SOURCES_MAX:
            break
        root = os.fsencode(os.path.abspath(p))
        try:
            st = os.lstat(root)
        except (OSError, ValueError):
            continue
        if stat.S_ISDIR(st.st_mode):
            handles.append(_dirscan.ahead(root, 0, 0.0, st.st_dev if one_file_system else -1, 1, False))
    return Warming(handles)


__all__ = ["C_AVAILABLE", "Scan", "Warming", "entries", "listing", "read", "read_ahead", "scan", "scan_py", "warm"]
