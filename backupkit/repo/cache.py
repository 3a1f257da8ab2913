"""The local cache: sealed copies of index objects and metadata packs, plus the config.

Everything kept here is exactly the bytes of the store's object (still sealed), so the
cache holds no plaintext and a damaged cache file fails authentication and is refetched.
Objects named in the cache are immutable in the store, so a name present here is never
stale; names no longer in the store are dropped when the repository is opened.

Layout of a *cache root* (``--cache-dir``, ``BK_CACHE_DIR``, else the user cache dir)::

    CACHEDIR.TAG               the standard tag (https://bford.info/cachedir/): backup
                               tools that honour it (tar, restic --exclude-caches) skip
                               the whole root
    <repository id>/           one repository's cache (64 hex digits): index/, meta/ ...;
                               its modification time is bumped on every open: "last used"
    locations/<32 hex>/        what opening needs, per store location (``OpenCache``);
                               also, per location as given on the command line,
                               ``kdf``: the key file's KDF section, the CLI's hint
                               for deriving ahead (``backupkit_cli.keyahead``)

``backupkit.repo.cache_dirs`` (``bk cache``) lists and cleans that layout and touches
nothing else in the root.

When the cache cannot be written (no directory, ``--no-cache``, a full or read-only file
system), what would have been written is kept in memory for the rest of the run, up to
``MEMORY_BUDGET`` bytes (least recently used dropped first), so each object is still
fetched about once per run; the first failed write is reported once (``on_unwritable``).
"""

from __future__ import annotations

import hashlib
import mmap
import os
import tempfile
import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

import platformdirs

from backupkit.store.base import ObjectSource


def default_cache_root() -> Path:
    env = os.environ.get("BK_CACHE_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir("backupkit"))


#: Cached objects kept memory-mapped for read_range (a trie walk reads thousands of
#: small nodes from a few metadata packs; opening the file for each costs ~25 us).
MAPPED_FILES = 64

#: Bytes of objects kept in memory for the run when the cache directory cannot take them.
MEMORY_BUDGET = 256 * 1024 * 1024


class _MemoryCache:
    """Objects kept in memory for one run, least recently used dropped beyond ``budget``."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.size = 0
        self._objects: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, name: str):
        with self._lock:
            data = self._objects.get(name)
            if data is not None:
                self._objects.move_to_end(name)
            return data

    def put(self, name: str, data) -> None:
        if len(data) > self.budget:
            return
        with self._lock:
            old = self._objects.pop(name, None)
            if old is not None:
                self.size -= len(old)
            self._objects[name] = data
            self.size += len(data)
            while self.size > self.budget:
                self.size -= len(self._objects.popitem(last=False)[1])

    def delete(self, name: str) -> None:
        with self._lock:
            old = self._objects.pop(name, None)
            if old is not None:
                self.size -= len(old)


class Cache:
    """A directory of cached objects (``root``), with objects kept in memory for the run
    when there is no directory or it cannot be written.

    Thread-safe. ``read_range`` serves from read-only memory maps of the most recently
    used ``MAPPED_FILES`` objects (file-backed pages: the kernel may drop them at will).
    ``unwritable`` holds the reason of the first failed write (None while all is well);
    ``on_unwritable(message)`` is called once, at that first failure.
    """

    def __init__(
        self,
        root: Path | None,
        on_unwritable: Callable[[str], None] | None = None,
        memory_budget: int = MEMORY_BUDGET,
    ) -> None:
        self.root = root
        self.unwritable: str | None = None
        self._on_unwritable = on_unwritable
        self._memory = _MemoryCache(memory_budget)
        self._maps: OrderedDict[str, mmap.mmap] = OrderedDict()
        self._maps_lock = threading.Lock()
        if root is not None:
            try:
                root.mkdir(parents=True, exist_ok=True)
                os.utime(root)  # "last used", for bk cache --cleanup
            except OSError as e:
                self.root = None
                self._failed(f"cannot create the cache directory {root}: {e.strerror or e}")
            else:
                tag_cache_root(root.parent)

    def _failed(self, message: str) -> None:
        with self._maps_lock:
            first = self.unwritable is None
            if first:
                self.unwritable = message
        if first and self._on_unwritable is not None:
            self._on_unwritable(f"{message}; going on without a cache (objects are kept in memory for this run)")

    def _path(self, name: str) -> Path:
        assert self.root is not None
        return self.root / name

    def get(self, name: str) -> bytes | None:
        held = self._memory.get(name)
        if held is not None:
            return bytes(held)
        return _read_cached(self.root, name)

    def read_range(self, name: str, offset: int, length: int) -> bytes | None:
        held = self._memory.get(name)
        if held is not None:
            data = bytes(held[offset : offset + length])
            return data if len(data) == length else None
        if self.root is None:
            return None
        with self._maps_lock:
            m = self._maps.get(name)
            if m is not None:
                self._maps.move_to_end(name)
                data = m[offset : offset + length]
                return data if len(data) == length else None
        m = self._map(name)
        if m is None:
            return None
        with self._maps_lock:
            if m.closed:  # evicted or deleted by another thread meanwhile
                return self.read_range(name, offset, length)
            data = m[offset : offset + length]
        return data if len(data) == length else None

    def _map(self, name: str) -> mmap.mmap | None:
        try:
            with open(self._path(name), "rb") as f:
                m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError):  # missing, or empty (cannot be mapped)
            return None
        with self._maps_lock:
            old = self._maps.get(name)
            if old is not None:
                m.close()
                return old
            self._maps[name] = m
            while len(self._maps) > MAPPED_FILES:
                self._maps.popitem(last=False)[1].close()
        return m

    def _unmap(self, name: str) -> None:
        with self._maps_lock:
            m = self._maps.pop(name, None)
            if m is not None:
                m.close()

    def close(self) -> None:
        """Drop every memory map (the cache stays usable; maps are made again on use)."""
        with self._maps_lock:
            for m in self._maps.values():
                m.close()
            self._maps.clear()

    def put(self, name: str, data: bytes) -> None:
        """Keep ``data`` (a bytes-like object) under ``name``: on disk, or in memory for
        the run when the directory cannot take it (the temporary file is removed)."""
        if self.root is None:
            self._memory.put(name, data)
            return
        try:
            _write_atomically(self._path(name), data)
        except OSError as e:
            self._failed(f"cannot write to the cache {self.root}: {e.strerror or e}")
            self._memory.put(name, data)

    def put_source(self, name: str, source: ObjectSource) -> None:
        """``put`` from an ObjectSource (a spooled pack): copied file to file, never
        whole in memory unless the cache is kept in memory."""
        if self.root is None:
            self._memory.put(name, source.read_all())
            return
        try:
            _write_atomically(self._path(name), source)
        except OSError as e:
            self._failed(f"cannot write to the cache {self.root}: {e.strerror or e}")
            self._memory.put(name, source.read_all())

    def delete(self, name: str) -> None:
        self._memory.delete(name)
        if self.root is None:
            return
        self._unmap(name)
        try:
            self._path(name).unlink()
        except OSError:
            pass

    def names(self, prefix: str) -> set[str]:
        """Names cached under a directory prefix such as ``index/`` or ``meta/``."""
        if self.root is None:
            return set()
        base = self.root / prefix
        out = set()
        for dirpath, _dirs, files in os.walk(base):
            rel = Path(dirpath).relative_to(self.root).as_posix()
            for f in files:
                if not f.startswith(".tmp-"):
                    out.add(f"{rel}/{f}")
        return out


class OpenCache:
    """What opening a repository needs, cached per store location: the sealed config and
    the key files that opened it (password-wrapped, exactly the stored bytes).

    Both are immutable in the store and key file names are random, so a cached key
    file is used only while its name is still listed under ``keys/`` (a removed or
    re-passworded key is forgotten at the next open); a cached config that the key does
    not open belongs to an earlier repository at the same location and is dropped.
    Opening then costs one listing instead of three requests (restic reads config and
    key files on every run).
    """

    def __init__(self, directory: Path | None) -> None:
        self._dir = directory

    @classmethod
    def for_location(cls, location: str, cache_root: os.PathLike | None | bool) -> OpenCache:
        if cache_root is False or not location:
            return cls(None)
        root = default_cache_root() if cache_root in (None, True) else Path(os.fspath(cache_root))  # type: ignore[arg-type]
        directory = root / LOCATIONS / hashlib.sha256(location.encode("utf-8", "surrogateescape")).hexdigest()[:32]
        try:
            os.utime(directory)  # "last used", for bk cache --cleanup
        except OSError:
            pass  # not made yet: put() makes it
        return cls(directory)

    @property
    def directory(self) -> Path | None:
        """This location's directory (None without a cache)."""
        return self._dir

    def _file(self, name: str) -> Path:
        assert self._dir is not None
        return self._dir / name  # "config" or "keys/<id>"

    def has(self, name: str) -> bool:
        return self._dir is not None and self._file(name).is_file()

    def get(self, name: str) -> bytes | None:
        return _read_cached(self._dir, name)

    def put(self, name: str, data: bytes) -> None:
        if self._dir is None:
            return
        try:
            _write_atomically(self._file(name), data)
        except OSError:
            pass  # only costs requests next time

    def keep_keys(self, listed: list[str]) -> None:
        """Forget cached key files whose names are no longer listed in the store."""
        if self._dir is None:
            return
        keep = {self._file(n) for n in listed}
        try:
            for p in (self._dir / "keys").glob("*"):
                if p not in keep:
                    p.unlink()
        except OSError:
            pass

    def clear(self) -> None:
        if self._dir is None:
            return
        for p in (self._dir / "config", *(self._dir / "keys").glob("*")):
            try:
                p.unlink()
            except OSError:
                pass


# -- the cache root's layout (bk cache lists and cleans it: cache_dirs.py) ---------------

#: The Cache Directory Tagging Specification's file and its required first line.
CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
#: The subdirectory of per-location open caches (``OpenCache``).
LOCATIONS = "locations"


def tag_cache_root(root: Path) -> None:
    """Write ``root/CACHEDIR.TAG`` unless it is there (never fails: it only helps)."""
    tag = root / CACHEDIR_TAG
    if tag.exists():
        return
    text = CACHEDIR_SIGNATURE + (
        b"\n# This file is a cache directory tag created by backupkit (bk).\n"
        b"# For information about cache directory tags see https://bford.info/cachedir/\n"
    )
    try:
        _write_atomically(tag, text, mode=0o644)
    except OSError:
        pass


def _read_cached(directory: Path | None, name: str) -> bytes | None:
    """A cached file's bytes; None without a cache directory or when it cannot be read
    (a cache only saves requests)."""
    if directory is None:
        return None
    try:
        return (directory / name).read_bytes()
    except OSError:
        return None


def _write_atomically(path: Path, data, mode: int | None = None) -> None:
    """Write through a temporary file renamed into place (with ``mode``, if given); the
    temporary file never outlives a failure (a full file system must not fill up).
    ``data``: bytes-like, or an ObjectSource (copied file to file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, ObjectSource):
                data.copy_to(f.fileno())
            else:
                f.write(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
