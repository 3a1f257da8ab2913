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
    locations/<32 hex>/        what opening needs, per store location (``OpenCache``)

``backupkit.repo.cache_dirs`` (``bk cache``) lists and cleans that layout and touches
nothing else in the root.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import platformdirs


def default_cache_root() -> Path:
    env = os.environ.get("BK_CACHE_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir("backupkit"))


#: Cached objects kept memory-mapped for read_range (a trie walk reads thousands of
#: small nodes from a few metadata packs; opening the file for each costs ~25 us).
MAPPED_FILES = 64


class Cache:
    """A directory of cached objects; every method is a no-op when ``root`` is None.

    Thread-safe. ``read_range`` serves from read-only memory maps of the most recently
    used ``MAPPED_FILES`` objects (file-backed pages: the kernel may drop them at will).
    """

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self._maps: OrderedDict[str, mmap.mmap] = OrderedDict()
        self._maps_lock = threading.Lock()
        if root is not None:
            try:
                root.mkdir(parents=True, exist_ok=True)
                os.utime(root)  # "last used", for bk cache --cleanup
            except OSError:
                self.root = None
            else:
                tag_cache_root(root.parent)

    def _path(self, name: str) -> Path:
        assert self.root is not None
        return self.root / name

    def get(self, name: str) -> bytes | None:
        if self.root is None:
            return None
        try:
            return self._path(name).read_bytes()
        except OSError:
            return None

    def read_range(self, name: str, offset: int, length: int) -> bytes | None:
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
        if self.root is None:
            return
        p = self._path(name)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
        except OSError:
            pass  # a cache that cannot be written only costs speed

    def delete(self, name: str) -> None:
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

    def _file(self, name: str) -> Path:
        assert self._dir is not None
        return self._dir / name  # "config" or "keys/<id>"

    def has(self, name: str) -> bool:
        return self._dir is not None and self._file(name).is_file()

    def get(self, name: str) -> bytes | None:
        if self._dir is None:
            return None
        try:
            return self._file(name).read_bytes()
        except OSError:
            return None

    def put(self, name: str, data: bytes) -> None:
        if self._dir is None:
            return
        p = self._file(name)
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=".tmp-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, p)
        except OSError:
            pass  # only costs requests next time

    def cached_keys(self) -> dict[str, bytes]:
        """Every cached key file, by store name (``keys/<id>``)."""
        if self._dir is None:
            return {}
        out = {}
        try:
            for p in (self._dir / "keys").iterdir():
                if not p.name.startswith(".tmp-"):
                    try:
                        out[f"keys/{p.name}"] = p.read_bytes()
                    except OSError:
                        continue
        except OSError:
            pass
        return out

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
        fd, tmp = tempfile.mkstemp(dir=root, prefix=".tmp-")
        with os.fdopen(fd, "wb") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, tag)
    except OSError:
        pass
