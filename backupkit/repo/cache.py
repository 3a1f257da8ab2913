"""The local cache: sealed copies of index objects and metadata packs, plus the config.

Everything kept here is exactly the bytes of the store's object (still sealed), so the
cache holds no plaintext and a damaged cache file fails authentication and is refetched.
Objects named in the cache are immutable in the store, so a name present here is never
stale; names no longer in the store are dropped when the repository is opened.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import platformdirs


def default_cache_root() -> Path:
    env = os.environ.get("BK_CACHE_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_cache_dir("backupkit"))


class Cache:
    """A directory of cached objects; every method is a no-op when ``root`` is None."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        if root is not None:
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError:
                self.root = None

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
        try:
            with open(self._path(name), "rb") as f:
                f.seek(offset)
                data = f.read(length)
        except OSError:
            return None
        return data if len(data) == length else None

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
