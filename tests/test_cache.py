"""The cache root: CACHEDIR.TAG, "last used", and ``bk cache`` listing and cleaning.

Caches are made by opening real repositories (and backing up into them, so the caches
hold index and metadata files); ages are set with os.utime, as a month of disuse would.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from backupkit.managers.backup import BackupManager, BackupOptions
from backupkit.repo.cache import CACHEDIR_SIGNATURE, CACHEDIR_TAG, LOCATIONS
from backupkit.repo.cache_dirs import list_caches, remove_old_caches
from backupkit.repo.repository import Repository
from backupkit.store.local import LocalObjectStore
from tests.support.kit import PASSWORD, cli_env, make_test_repo, reopen, run_bk, write_file

DAY = 86400.0


def age(path: Path, days: float) -> None:
    t = time.time() - days * DAY
    os.utime(path, (t, t))


@pytest.fixture
def two(tmp_path):
    """Two repositories sharing one cache root, each with a backup; returns (cache, ids)."""
    cache = tmp_path / "cache"
    write_file(tmp_path / "src" / "f", os.urandom(100_000))
    ids = []
    for name in ("a", "b"):
        repo = make_test_repo(tmp_path / name, cache=cache)
        BackupManager(repo).run(BackupOptions(paths=(str(tmp_path / "src"),)))
        repo.close()
        reopen(repo, cache=cache).close()  # also makes the per-location open cache
        ids.append(repo.config.repo_id)
    return cache, ids


def test_the_cache_root_is_tagged(tmp_path):
    cache = tmp_path / "cache"
    make_test_repo(tmp_path / "repo", cache=cache).close()
    tag = (cache / CACHEDIR_TAG).read_bytes()
    assert tag.startswith(CACHEDIR_SIGNATURE + b"\n")
    # a tag that is there already is left as it is
    (cache / CACHEDIR_TAG).write_bytes(CACHEDIR_SIGNATURE + b"\n# mine\n")
    make_test_repo(tmp_path / "repo2", cache=cache).close()
    assert (cache / CACHEDIR_TAG).read_bytes() == CACHEDIR_SIGNATURE + b"\n# mine\n"
    assert not [p for p in cache.iterdir() if p.name.startswith(".tmp-")]


def test_list_caches_sizes_ages_and_order(two):
    cache, (a, b) = two
    age(cache / a, 40)
    listing = list_caches(cache, max_age_days=30)
    assert [c.repo_id for c in listing.caches] == [a, b]  # least recently used first
    old, fresh = listing.caches
    assert old.old and not fresh.old
    assert all(c.size and c.size > 0 for c in listing.caches)
    assert list_caches(cache, max_age_days=50).caches[0].old is False
    assert list_caches(cache, sizes=False).caches[0].size is None
    assert json.loads(json.dumps(listing.to_json()))["caches"][0]["repo_id"] == a


def test_opening_marks_a_cache_used(two, tmp_path):
    cache, (a, _b) = two
    age(cache / a, 40)
    assert list_caches(cache).caches[0].old
    Repository.open(LocalObjectStore(tmp_path / "a"), PASSWORD, cache_root=cache).close()
    assert not any(c.old for c in list_caches(cache).caches)


def test_cleanup_removes_only_old_caches_of_ours(two, tmp_path):
    cache, (a, b) = two
    outside = tmp_path / "outside"
    write_file(outside / "keep", b"not a cache")
    lookalike = "f" * 64
    os.symlink(outside, cache / lookalike)  # a symlink with a cache's name: never followed
    write_file(cache / ("e" * 64), b"a file with a cache's name")
    write_file(cache / "notes" / "todo", b"the user's own")
    locations = sorted((cache / LOCATIONS).iterdir())
    assert len(locations) == 2
    for p in (cache / a, cache / lookalike, cache / "notes", locations[0]):
        os.utime(p, (time.time() - 40 * DAY,) * 2, follow_symlinks=False)
    size_a = next(c.size for c in list_caches(cache).caches if c.repo_id == a)
    done = remove_old_caches(cache, max_age_days=30)
    assert [c.repo_id for c in done.removed] == [a] and done.freed == size_a
    assert done.locations_removed == 1 and not done.failed
    assert not (cache / a).exists() and (cache / b).is_dir()
    assert sorted((cache / LOCATIONS).iterdir()) == locations[1:]
    assert (outside / "keep").read_bytes() == b"not a cache" and (cache / lookalike).is_symlink()
    assert (cache / ("e" * 64)).is_file() and (cache / "notes" / "todo").is_file()
    assert (cache / CACHEDIR_TAG).is_file()
    again = remove_old_caches(cache, max_age_days=30)
    assert again.removed == () and again.locations_removed == 0


def test_missing_root_lists_nothing(tmp_path):
    assert list_caches(tmp_path / "none").caches == ()
    assert remove_old_caches(tmp_path / "none").removed == ()


def test_bk_cache_command(two, tmp_path):
    cache, (a, b) = two
    env = cli_env(tmp_path / "a", cache)
    age(cache / a, 40)
    r = run_bk("cache", env=env)
    assert r.returncode == 0, r.stderr
    rows = [ln.split() for ln in r.stdout.decode().splitlines()[1:]]
    assert [row[0] for row in rows] == [a[:10], b[:10]]
    assert rows[0][1:5] == ["40", "days", "ago", "yes"] and rows[1][1:4] == ["0", "days", "ago"]
    assert "2 caches in" in r.stderr
    listing = json.loads(run_bk("--json", "cache", "--no-size", env=env).stdout)
    assert [c["repo_id"] for c in listing["caches"]] == [a, b] and listing["caches"][0]["size"] is None
    r = run_bk("--json", "cache", "--cleanup", "--max-age", "30", env=env)
    assert r.returncode == 0, r.stderr
    assert [c["repo_id"] for c in json.loads(r.stdout)["removed"]] == [a]
    r = run_bk("cache", "--cleanup", env=env)
    assert r.returncode == 0 and "no caches older than 30 days" in r.stderr, r.stderr
    assert [c["repo_id"] for c in json.loads(run_bk("--json", "cache", env=env).stdout)["caches"]] == [b]
    assert run_bk("cache", "--max-age", "-1", env=env).returncode == 2
    r = run_bk("--no-cache", "cache", env=env)
    assert r.returncode == 1 and "--no-cache" in r.stderr, r.stderr
