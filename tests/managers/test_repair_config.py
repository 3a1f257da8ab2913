"""bk repair config: the cached copy when it authenticates, else a config rebuilt from the
data, and a refusal where a value cannot be recovered (docs/recovery.md, "The config")."""

from __future__ import annotations

import shutil

import pytest

from backupkit.errors import ConfigDamaged, RepositoryExists
from backupkit.managers.backup import BackupManager, BackupOptions
from backupkit.managers.config_evidence import recover_chunker
from backupkit.managers.repair_config import RepairConfigManager, RepairConfigOptions
from backupkit.repo.repository import Repository
from tests.managers.lifecycle_util import PASSWORD, day, local_store, open_repo, random_bytes, write_files
from tests.support.kit import INSECURE_TEST_KDF


def _make(tmp_path, chunker, files=None, chunker_key=None):
    src = tmp_path / "src"
    write_files(src, files or {"a.bin": random_bytes(400_000, 1), "zeros.bin": bytes(100_000), "t.txt": b"t"})
    store = local_store(tmp_path / "repo")
    repo = Repository.init(
        store, PASSWORD, kdf=INSECURE_TEST_KDF, pack_size=64 * 1024, chunker=chunker, cache_root=False, chunker_key=chunker_key
    )
    BackupManager(repo).run(BackupOptions(paths=(str(src),), time=day(0), host="h"))
    repo.close()
    cache = tmp_path / "cache"
    Repository.open(store, PASSWORD, cache_root=cache).index  # noqa: B018 - fills this machine's caches
    return store, repo.config, src, cache


def _repair(store, cache, **kw):
    mgr = RepairConfigManager(store, PASSWORD, cache_root=cache)
    try:
        return mgr.run(RepairConfigOptions(**kw))
    finally:
        mgr.close()


def test_a_config_that_authenticates_is_never_touched(tmp_path):
    store, _cfg, _src, cache = _make(tmp_path, (4096, 8192, 16384))
    before = store.get("config")
    res = _repair(store, cache, new_id=True)
    assert res.plan.problem is None and res.plan.source == "none" and not res.written
    assert store.get("config") == before


def test_rebuilt_config_holds_the_original_id_and_chunker_and_dedups(tmp_path):
    chunker = (4096, 8192, 16384)  # not init's defaults; zeros.bin is cut at the maximum
    store, cfg, src, cache = _make(tmp_path, chunker)
    store.delete("config")
    shutil.rmtree(cache / "locations")
    res = _repair(store, cache)
    assert res.written and res.plan.source == "rebuilt"
    now = open_repo(store).config
    assert (now.repo_id, now.chunker_min, now.chunker_avg, now.chunker_max) == (cfg.repo_id, *chunker)
    assert now.compression_level == cfg.compression_level
    assert abs(now.created - cfg.created) < 60
    # the same source again: every chunk deduplicates against what is stored
    repo = open_repo(store)
    BackupManager(repo).run(BackupOptions(paths=(str(src),), time=day(1), host="h"))
    assert repo.stats["bytes_raw_new"] < 4096, repo.stats  # only the new trie nodes and snapshot


def test_the_cached_copy_of_another_location_is_written_back(tmp_path):
    store, cfg, _src, cache = _make(tmp_path, (4096, 8192, 16384))
    original = store.get("config")
    other = tmp_path / "same-repo-elsewhere"
    shutil.copytree(tmp_path / "repo", other)
    shutil.rmtree(cache)
    Repository.open(local_store(other), PASSWORD, cache_root=cache).close()  # the other URL's cache only
    store.put("config", original[:-1] + bytes([original[-1] ^ 1]))
    with pytest.raises(ConfigDamaged, match="run bk repair config"):
        open_repo(store)
    res = _repair(store, cache)
    assert res.written and res.plan.source == "cache" and str(cache) in res.plan.cache_file
    assert store.get("config") == original
    assert open_repo(store).config == cfg


def test_no_candidate_re_cuts_the_data_so_no_config_is_invented(tmp_path):
    # 3/4 of the average: no ratio bk tries. The key is fixed so that the data surely
    # tells (a random one leaves a small chance that no chunk would have been cut
    # between 4096 and 6144, and then (4096, 8192, 65536) re-cuts all data the same way)
    store, _cfg, _src, cache = _make(
        tmp_path, (6144, 8192, 65536), {"a.bin": random_bytes(600_000, 2)}, chunker_key=bytes(range(32))
    )
    store.delete("config")
    shutil.rmtree(cache / "locations")
    with pytest.raises(ConfigDamaged, match="chunker parameters cannot be recovered"):
        _repair(store, cache)
    assert not store.exists("config")
    with pytest.raises(RepositoryExists, match="bk repair config"):
        Repository.init(store, PASSWORD, kdf=INSECURE_TEST_KDF, cache_root=False)


def test_without_any_cache_the_id_is_only_new_on_request(tmp_path):
    store, cfg, _src, cache = _make(tmp_path, (4096, 8192, 16384))
    store.delete("config")
    shutil.rmtree(cache)
    with pytest.raises(ConfigDamaged, match="repository id cannot be recovered.*--new-id"):
        _repair(store, cache)
    assert not store.exists("config")
    res = _repair(store, False, new_id=True)
    assert res.written and res.plan.config.repo_id != cfg.repo_id
    assert open_repo(store).config.chunker_avg == cfg.chunker_avg


def test_a_config_put_back_meanwhile_is_not_overwritten(tmp_path):
    store, _cfg, _src, cache = _make(tmp_path, (4096, 8192, 16384))
    original = store.get("config")
    store.delete("config")
    mgr = RepairConfigManager(store, PASSWORD, cache_root=cache)
    try:
        plan = mgr.plan()
        store.put("config", original)  # another machine was quicker
        assert not mgr.execute(plan).written
    finally:
        mgr.close()
    assert store.get("config") == original


def test_chunker_evidence_reads_no_more_than_its_limit(tmp_path):
    store, _cfg, _src, _cache = _make(tmp_path, (4096, 8192, 16384))
    ev = recover_chunker(open_repo(store), read_limit=0)
    assert ev.bytes_read == 0 and ev.streams == 0
    assert ev.params is None and "could be read within 0 bytes" in ev.note  # never the defaults by default


def test_a_key_file_of_another_repository_never_gets_a_config_sealed_for_it(tmp_path):
    """A planted key file (another repository's, the same password) is the only one the
    password opens: repair config finds it opens nothing here and changes nothing."""
    store, _cfg, _src, cache = _make(tmp_path, (4096, 8192, 16384))
    other = local_store(tmp_path / "other")
    Repository.init(other, PASSWORD, kdf=INSECURE_TEST_KDF, cache_root=False).close()
    for o in list(store.list("keys/")):
        store.delete(o.name)
    (planted,) = [o.name for o in other.list("keys/")]
    store.put(planted, other.get(planted))
    before = store.get("config")
    shutil.rmtree(cache)
    with pytest.raises(ConfigDamaged, match="opens no index object, snapshot or pack header"):
        _repair(store, cache, new_id=True)
    assert store.get("config") == before
