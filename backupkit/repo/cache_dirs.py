"""Listing and cleaning the repository caches under a cache root (``bk cache``).

Vocabulary (the layout is described in ``backupkit.repo.cache``): a *repository cache*
is a directory named by a repository id (64 hex digits); its modification time, bumped
on every open, is when it was *last used*; it is *old* when that was longer ago than
the maximum age (restic's default: 30 days). Only directories named as bk names them
are listed or removed: never symlinks, never anything else a user keeps in the root.
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from backupkit.repo.cache import LOCATIONS, default_cache_root

#: restic's default for ``cache --max-age``.
DEFAULT_MAX_AGE_DAYS = 30.0
_REPO_DIR_RE = re.compile(r"^[0-9a-f]{64}$")
_LOCATION_DIR_RE = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class RepoCache:
    """One repository's cache directory under a cache root.

    Attributes:
        repo_id: the repository id (the directory's name).
        size: bytes in its files (None when not measured).
        last_used: when bk last opened the repository with this cache (the directory's
            modification time), seconds since the epoch.
        old: not used for the ``max_age_days`` it was judged against.
    """

    repo_id: str
    size: int | None
    last_used: float
    old: bool

    def to_json(self) -> dict:
        return {"repo_id": self.repo_id, "size": self.size, "last_used": _iso(self.last_used), "old": self.old}


@dataclass(frozen=True)
class CacheListing:
    """``bk cache``: the repository caches under ``root``, least recently used first."""

    root: Path
    caches: tuple[RepoCache, ...]
    max_age_days: float

    def to_json(self) -> dict:
        return {"root": str(self.root), "max_age_days": self.max_age_days, "caches": [c.to_json() for c in self.caches]}


@dataclass(frozen=True)
class CacheCleanup:
    """``bk cache --cleanup``: what was removed (and what could not be)."""

    root: Path
    #: caches unused for longer than the age limit, removed
    removed: tuple[RepoCache, ...]
    #: old ``locations/`` entries removed (per store location: its sealed config and key files)
    locations_removed: int
    #: bytes the removed caches held
    freed: int
    #: "path: reason" of every directory that could not be removed
    failed: tuple[str, ...]

    def to_json(self) -> dict:
        return {
            "root": str(self.root),
            "removed": [c.to_json() for c in self.removed],
            "locations_removed": self.locations_removed,
            "freed": self.freed,
            "failed": list(self.failed),
        }


def _iso(t: float) -> str:
    from datetime import datetime, timezone

    return datetime.fromtimestamp(t, timezone.utc).isoformat()


def _tree_size(path: Path) -> int:
    """Bytes in the regular files below ``path`` (symlinks are not followed)."""
    total = 0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for entry in it:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            total += entry.stat(follow_symlinks=False).st_size
                    except OSError:
                        continue
        except OSError:
            continue
    return total


def _subdirs(path: Path, name_re: re.Pattern[str]) -> list[tuple[Path, float]]:
    """(directory, mtime) of the real directories in ``path`` whose names match."""
    out = []
    try:
        with os.scandir(path) as it:
            for entry in it:
                if name_re.match(entry.name) and entry.is_dir(follow_symlinks=False):
                    try:
                        out.append((Path(entry.path), entry.stat(follow_symlinks=False).st_mtime))
                    except OSError:
                        continue
    except FileNotFoundError:
        return []
    return out


def resolve_cache_root(cache_root: os.PathLike | str | None) -> Path:
    """The cache root in use: ``cache_root`` if given, else ``BK_CACHE_DIR`` or the default."""
    return Path(os.fspath(cache_root)) if cache_root is not None else default_cache_root()


def list_caches(
    cache_root: os.PathLike | str | None = None,
    max_age_days: float = DEFAULT_MAX_AGE_DAYS,
    sizes: bool = True,
    now: float | None = None,
) -> CacheListing:
    """Every repository cache under the cache root, least recently used first.

    A cache is *old* when its repository was not opened for ``max_age_days``. Reads
    only; a missing root lists nothing.
    """
    root = resolve_cache_root(cache_root)
    now = time.time() if now is None else now
    caches = [
        RepoCache(d.name, _tree_size(d) if sizes else None, mtime, now - mtime > max_age_days * 86400)
        for d, mtime in _subdirs(root, _REPO_DIR_RE)
    ]
    caches.sort(key=lambda c: (c.last_used, c.repo_id))
    return CacheListing(root, tuple(caches), max_age_days)


def remove_old_caches(
    cache_root: os.PathLike | str | None = None,
    max_age_days: float = DEFAULT_MAX_AGE_DAYS,
    now: float | None = None,
) -> CacheCleanup:
    """Remove the caches of repositories not opened for ``max_age_days`` (restic's
    ``cache --cleanup``), and the per-location open caches not used as long.

    Only directories named as bk names them are touched (64 hex digits, and
    ``locations/`` entries of 32), never symlinks or anything else in the root. A cache
    removed by mistake costs only downloads: the next open fills it again.
    """
    listing = list_caches(cache_root, max_age_days, sizes=True, now=now)
    now = time.time() if now is None else now
    removed, failed, freed = [], [], 0
    for cache in listing.caches:
        if not cache.old:
            continue
        path = listing.root / cache.repo_id
        try:
            shutil.rmtree(path)
        except OSError as exc:
            failed.append(f"{path}: {exc.strerror or exc}")
            continue
        removed.append(cache)
        freed += cache.size or 0
    locations = 0
    for d, mtime in _subdirs(listing.root / LOCATIONS, _LOCATION_DIR_RE):
        if now - mtime > max_age_days * 86400:
            try:
                shutil.rmtree(d)
                locations += 1
            except OSError as exc:
                failed.append(f"{d}: {exc.strerror or exc}")
    return CacheCleanup(listing.root, tuple(removed), locations, freed, tuple(failed))
