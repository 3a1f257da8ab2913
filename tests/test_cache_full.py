"""The local cache when its file system is full (issue 9.9): no temporary files left
behind, one warning, and each object read from the store about once per run."""

from __future__ import annotations

import contextlib
import os
import resource
import signal

from backupkit.repo.cache import Cache
from backupkit.repo.repository import Repository
from backupkit.tree import SnapshotTree
from tests.managers.lifecycle_util import PASSWORD, backup, init_repo, local_store, random_bytes, write_files


@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """Writes past ``nbytes`` fail with EFBIG (SIGXFSZ ignored), as on a full file
    system: a real OS error, no monkeypatching."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    old = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, old)


def _leftovers(root) -> list[str]:
    return [f for _d, _s, files in os.walk(root) for f in files if f.startswith(".tmp-")]


def test_put_removes_its_temporary_file_and_keeps_the_object_in_memory(tmp_path):
    warnings: list[str] = []
    cache = Cache(tmp_path / "c", warnings.append)
    with file_size_limit(100):
        cache.put("meta/ab/one", b"x" * 1000)
        cache.put("meta/ab/two", b"y" * 1000)
    assert _leftovers(tmp_path / "c") == []
    assert cache.get("meta/ab/one") == b"x" * 1000
    assert cache.read_range("meta/ab/two", 10, 5) == b"yyyyy"
    assert len(warnings) == 1 and "cache" in warnings[0] and cache.unwritable
    cache.delete("meta/ab/one")
    assert cache.get("meta/ab/one") is None


def test_a_full_cache_reads_each_object_once_per_run(tmp_path):
    src = tmp_path / "src"
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    write_files(src, {f"d{i}/f{j}.bin": random_bytes(2_000, i * 100 + j) for i in range(20) for j in range(10)})
    snap = backup(repo, src)
    meta_packs = len(list(store.list("meta/")))
    index_objects = len(list(store.list("index/")))
    cache_dir = tmp_path / "cache"
    with file_size_limit(100):
        repo = Repository.open(store, PASSWORD, cache_root=cache_dir, connections=2)
        before = store.stats()
        for _ in range(3):  # walk every tree node three times
            assert sum(1 for _p in SnapshotTree(repo, snap.root, hamt=None).walk()) > 200
            repo.reload_index()
        after = store.stats()
    assert _leftovers(cache_dir) == []
    gets = after["GET"] - before["GET"]
    assert gets <= meta_packs + 3 * index_objects, (gets, meta_packs, index_objects)
    cache_warnings = [w for w in repo.warnings if "cache" in w]
    assert len(cache_warnings) == 1, repo.warnings
