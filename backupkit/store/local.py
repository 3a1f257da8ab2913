"""LocalObjectStore: objects as files under a root directory.

An object name maps to the file ``root/<name>``; each ``/`` in the name is a
subdirectory. Files whose names start with ``.tmp-`` are writes in progress: ``list``
never shows them, and a crash can leave them behind (harmless; nothing refers to them).

Crash safety (restic #3436, kopia's filesystem store): a write goes to a temp file in the
destination directory, is fsynced, renamed into place with ``os.replace`` and the
directory is fsynced, so after a crash a name holds the old object, the whole new one,
or nothing. ``put_if_absent`` hard-links the finished temp file to the final name, which
fails with EEXIST when the name is taken: atomic on every POSIX filesystem with links.
"""

from __future__ import annotations

import errno
import os
import re
import stat as stat_module
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from backupkit.errors import ObjectNotFound, StoreError, StorePermissionError, BadArgument
from backupkit.store.base import Backend, ObjectInfo, ObjectSource, ObjectStore, check_name, read_at_most, split_prefix, too_large
from backupkit.store.retry import RequestStats

TEMP_PREFIX = ".tmp-"
#: a range read of at least this many bytes tells the kernel first (``_advise``)
_ADVISE_FROM = 256 * 1024


def _advise(fd: int, offset: int, length: int) -> None:
    """Readahead hint for a large range read (a restore's pack span): WILLNEED starts
    reading the whole range at once, so a cold disk gets many requests in flight rather
    than the kernel's readahead window (128 KiB) at a time. A hint: failures are ignored."""
    try:
        os.posix_fadvise(fd, offset, length, os.POSIX_FADV_WILLNEED)
    except (AttributeError, OSError):
        pass
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._-]+$")
# Errors meaning "this filesystem cannot hard-link": fall back to a non-atomic create.
_NO_LINK_ERRNOS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EXDEV, errno.EMLINK}


def _store_error(exc: OSError, what: str) -> StoreError:
    """Map an OSError raised while doing ``what`` to the StoreError tree."""
    code = exc.errno
    if code in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
        return ObjectNotFound(f"{what}: not found")
    if code in (errno.EACCES, errno.EPERM, errno.EROFS):
        return StorePermissionError(f"{what}: permission denied ({exc.strerror})")
    if code in (errno.ENOSPC, errno.EDQUOT):
        return StoreError(f"{what}: no space left on the device (or quota exceeded)")
    return StoreError(f"{what}: {exc.strerror or exc}")


def _fsync_dir(path: str) -> None:
    """fsync a directory so a rename or new entry in it survives a crash."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # some filesystems refuse to fsync directories
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def _read_at_most(f, size: int, limit: int) -> bytes:
    """The file's bytes, at most ``limit``: ``size`` (its fstat size) + 1 in one read,
    then, if it grew since, on in pieces (``read_at_most``: never ``f.read(limit)``)."""
    data = f.read(min(size, limit - 1) + 1)
    if len(data) <= size or len(data) >= limit:
        return data
    return read_at_most(f.read, limit, data)


class LocalObjectStore(ObjectStore):
    """Objects stored as files in a directory tree.

    Args:
        root: the directory holding the objects; created (with parents) on the first
            write, so ``init`` can point at a new path.
        fsync: fsync files and directories on write (default). Only tests that write
            many throw-away objects should turn it off.
    """

    #: a listing of a directory shows every file renamed into it before it started
    #: (on a network file system with no hard links, found by ``put_if_absent``, this
    #: store stops counting on that)
    immediate_listings = True

    def __init__(self, root: str | Path, *, fsync: bool = True) -> None:
        self.root = os.path.abspath(os.fspath(root))
        self.location = self.root
        self._fsync = fsync
        self._stats = RequestStats()

    @property
    def spool_dir(self) -> str | None:  # type: ignore[override]
        """The root: a spooled pack is copied from there into its object's temporary
        file on the same filesystem (``copy_file_range``)."""
        return self.root if os.path.isdir(self.root) else None

    # -- helpers -----------------------------------------------------------------------

    def _path(self, name: str) -> str:
        check_name(name)
        return os.path.join(self.root, name)

    def _ensure_dir(self, path: str) -> None:
        """Create directory ``path`` and missing parents, fsyncing each new entry."""
        if os.path.isdir(path):
            return
        parent = os.path.dirname(path)
        if parent != path:
            self._ensure_dir(parent)
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            if not os.path.isdir(path):
                raise
            return
        if self._fsync:
            _fsync_dir(parent)

    def _write_temp(self, directory: str, data: bytes | ObjectSource) -> str:
        """Write ``data`` (bytes, or an ObjectSource copied file to file) to a new
        fsynced temp file in ``directory``; return its path."""
        # The name is chosen before the file exists (not by mkstemp), so that an interrupt
        # at any point (a signal raises anywhere) still knows what to remove.
        tmp = os.path.join(directory, TEMP_PREFIX + secrets.token_hex(12))
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o600)
            with os.fdopen(fd, "wb") as f:
                if isinstance(data, ObjectSource):
                    data.copy_to(fd)
                else:
                    f.write(data)
                f.flush()
                if self._fsync:
                    os.fsync(f.fileno())
        except FileExistsError:  # not ours: never remove it (96 random bits: not expected)
            raise
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return tmp

    # -- the contract --------------------------------------------------------------------

    def get(self, name: str, max_size: int | None = None) -> bytes:
        path = self._path(name)
        self._stats.add("GET")
        try:
            with open(path, "rb") as f:
                if max_size is not None:
                    size = os.fstat(f.fileno()).st_size
                    too_large(name, size, max_size)
                    data = _read_at_most(f, size, max_size + 1)
                    too_large(name, len(data), max_size)
                else:
                    data = f.read()
        except OSError as exc:
            raise _store_error(exc, f"reading {name}") from None
        self._stats.add("bytes_down", len(data))
        return data

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        path = self._path(name)
        try:
            with open(path, "rb") as f:
                return self._pread(f.fileno(), name, os.fstat(f.fileno()).st_size, offset, length, hint=True)
        except OSError as exc:
            raise _store_error(exc, f"reading {name}") from None

    def get_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        # one open file and the kernel's own readahead: a WILLNEED hint per range (as
        # get_range gives a restore's spans) made check --read-data of `/usr` 10% slower
        # cold, reading each pack in 4 MiB ranges (docs/performance-limits.md)
        path = self._path(name)
        try:
            f = open(path, "rb")
        except OSError as exc:
            raise _store_error(exc, f"reading {name}") from None
        with f:
            try:
                size = os.fstat(f.fileno()).st_size  # once: the ranges are of one object
            except OSError as exc:
                raise _store_error(exc, f"reading {name}") from None
            for offset, length in ranges:
                try:
                    data = self._pread(f.fileno(), name, size, offset, length, hint=False)
                except OSError as exc:
                    raise _store_error(exc, f"reading {name}") from None
                yield data
                del data  # held by the reader alone while it works on it

    def _pread(self, fd: int, name: str, size: int, offset: int, length: int, hint: bool) -> bytes:
        """``length`` bytes at ``offset`` of the open object ``name`` (``size`` bytes when
        opened); ``hint``: a WILLNEED first when the range is large (a restore's pack span)."""
        self._stats.add("GET_RANGE")
        if offset < 0 or length < 0:
            raise StoreError(f"invalid range {offset}+{length} of {name}")
        if offset + length > size:
            raise StoreError(f"range {offset}+{length} past the end of {name} ({size} bytes)")
        if hint and length >= _ADVISE_FROM:
            _advise(fd, offset, length)
        data = os.pread(fd, length, offset)
        if len(data) != length:  # the file shrank under us
            raise StoreError(f"short read of {name}: {len(data)} of {length} bytes at {offset}")
        self._stats.add("bytes_down", len(data))
        return data

    def put(self, name: str, data: bytes) -> None:
        self._write(name, data, _replace)

    def put_source(self, name: str, source: ObjectSource) -> None:
        """``put`` from a spooled object: copied in the kernel into the temp file beside
        the object, fsynced and renamed like any ``put``."""
        self._write(name, source, _replace)

    def put_if_absent(self, name: str, data: bytes) -> bool:
        return self._write(name, data, self._link_if_absent)

    def _write(self, name: str, data: bytes | ObjectSource, place: Callable[[str, str], bool]) -> bool:
        """Write ``data`` to a temporary file in the object's directory, then let
        ``place(tmp, path)`` move it to the object's path (True) or leave it (False: the
        object is not written; the temporary file is removed)."""
        path = self._path(name)
        directory = os.path.dirname(path)
        self._stats.add("PUT")
        tmp = None
        try:
            self._ensure_dir(directory)
            tmp = self._write_temp(directory, data)
            if not place(tmp, path):
                return False
            tmp = None
            if self._fsync:
                _fsync_dir(directory)
        except OSError as exc:
            raise _store_error(exc, f"writing {name}") from None
        finally:
            if tmp is not None:
                _unlink_quietly(tmp)
        self._stats.add("bytes_up", data.size if isinstance(data, ObjectSource) else len(data))
        return True

    def _link_if_absent(self, tmp: str, path: str) -> bool:
        """A hard link fails if the name exists (atomic); without hard links, a check
        and a rename."""
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in _NO_LINK_ERRNOS:
                raise
            # No hard links here (FAT, some network filesystems): check, then rename.
            # Two racing writers can both "win"; say so through the class attribute.
            self.atomic_put_if_absent = False
            self.immediate_listings = False
            if os.path.lexists(path):
                return False
            os.replace(tmp, path)
            return True
        _unlink_quietly(tmp)
        return True

    def delete(self, name: str) -> None:
        path = self._path(name)
        self._stats.add("DELETE")
        try:
            if os.path.isdir(path):
                raise ObjectNotFound(f"deleting {name}: not found")
            os.unlink(path)
        except OSError as exc:
            raise _store_error(exc, f"deleting {name}") from None

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        # Walk only the directory the prefix names; a partial last segment ("data/3f")
        # filters the entries of that directory.
        dir_part, partial = split_prefix(prefix)
        self._stats.add("LIST")
        if not os.path.isdir(self.root):
            raise StoreError(f"listing {prefix or '(everything)'}: {self.root} is not a directory")
        start = os.path.join(self.root, dir_part) if dir_part else self.root
        stack = [(start, dir_part + "/" if dir_part else "", partial)]
        while stack:
            directory, rel, must_start = stack.pop()
            try:
                with os.scandir(directory) as it:
                    entries = list(it)
            except (FileNotFoundError, NotADirectoryError):
                continue  # the prefix names nothing (or vanished): nothing to list there
            except OSError as exc:
                raise _store_error(exc, f"listing {rel or '(root)'}") from None
            for entry in entries:
                if entry.name.startswith(TEMP_PREFIX) or not entry.name.startswith(must_start):
                    continue
                if not _SEGMENT_RE.match(entry.name) or entry.name in (".", ".."):
                    continue  # not something we wrote
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append((entry.path, rel + entry.name + "/", ""))
                        continue
                    if not entry.is_file(follow_symlinks=False):
                        continue
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue  # deleted while we listed: it is gone, not missed
                except OSError as exc:
                    raise _store_error(exc, f"listing {rel + entry.name}") from None
                yield ObjectInfo(rel + entry.name, st.st_size, st.st_mtime)

    def stat(self, name: str) -> ObjectInfo:
        path = self._path(name)
        self._stats.add("HEAD")
        try:
            st = os.stat(path)
        except OSError as exc:
            raise _store_error(exc, f"stat {name}") from None
        if not stat_module.S_ISREG(st.st_mode):
            raise ObjectNotFound(f"stat {name}: not found")
        return ObjectInfo(name, st.st_size, st.st_mtime)

    def remove_abandoned(self, older_than: float) -> int:
        """Delete ``.tmp-*`` files (writes a killed process never renamed) older than
        ``older_than`` seconds, anywhere below the root."""
        if not os.path.isdir(self.root):
            return 0
        cutoff = time.time() - older_than
        removed = 0
        for directory, _dirs, files in os.walk(self.root):
            for f in files:
                if not f.startswith(TEMP_PREFIX):
                    continue
                path = os.path.join(directory, f)
                try:
                    if os.lstat(path).st_mtime < cutoff:
                        os.unlink(path)
                        removed += 1
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    raise _store_error(exc, f"removing {path}") from None
        return removed

    def stats(self) -> dict[str, int]:
        """Calls per kind (``GET`` ... ``DELETE``) and payload bytes; see RequestStats."""
        return self._stats.snapshot()

    def __repr__(self) -> str:
        return f"LocalObjectStore({self.root!r})"


def _replace(tmp: str, path: str) -> bool:
    """``put``: the new object replaces any old one (atomic rename)."""
    os.replace(tmp, path)
    return True


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def open_local(location: str, *, connections: int | None = None, **options: object) -> LocalObjectStore:
    """Open a plain path, ``local:PATH`` or ``file:`` (``file:/path``, ``file:///path``).

    ``connections`` is accepted for the contract and unused: a directory has no pool.
    """
    if location.startswith("//"):
        location = location[2:]
        if not location.startswith("/"):
            raise BadArgument("file: URLs name no host: use file:/path or file:///path")
    if not location:
        raise BadArgument("the repository path is empty")
    return LocalObjectStore(location, **options)  # type: ignore[arg-type]


BACKEND = Backend(
    name="local",
    open=open_local,
    forms=("PATH", "local:PATH", "file:PATH"),
    connections=2,
)
