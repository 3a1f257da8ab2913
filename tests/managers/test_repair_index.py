"""bk repair index: rebuild the index from pack headers; damaged index objects never block."""

from __future__ import annotations

import os

from backupkit.managers.check import CheckManager, CheckOptions
from backupkit.managers.repair_index import RepairIndexManager, RepairIndexOptions
from backupkit.repo.pack import pack_name
from backupkit.snapshot import list_snapshots
from tests.managers.lifecycle_util import open_repo, restored, tree_bytes
from tests.managers.repair_util import blob_location, flip, repo3  # noqa: F401


def _check(store, read_data=True):
    return CheckManager(open_repo(store)).run(CheckOptions(read_data=read_data))


def test_damaged_index_object_does_not_block_other_snapshots(repo3, tmp_path):
    store, repo, (s1, s2, s3), src = repo3
    newest = max(store.list("index/"), key=lambda o: o.mtime).name
    flip(store, newest, 40)
    r = open_repo(store)
    r.index  # loads
    assert newest in r.index_failures
    # s1 is indexed by the other objects: it restores in full
    got = restored(r, s1, src, tmp_path / "out1")
    assert set(got) == {"shared.bin", "only12.bin", "sub/x.txt"}


def test_repair_index_after_flipped_index_object_restores_everything(repo3, tmp_path):
    store, repo, (s1, s2, s3), src = repo3
    want = tree_bytes(src)
    names = sorted(o.name for o in store.list("index/"))
    flip(store, names[0], 40)
    assert not _check(store, read_data=False).ok
    res = RepairIndexManager(open_repo(store)).run()
    assert res.plan.damaged_index == {names[0]: res.plan.damaged_index[names[0]]}
    assert not res.plan.problems and not res.plan.gone
    assert set(o.name for o in store.list("index/")) == set(res.index_written)
    check = _check(store)
    assert check.ok and not check.findings, check.findings
    r = open_repo(store)
    assert restored(r, s3, src, tmp_path / "out") == want


def test_repair_index_after_every_index_object_deleted(repo3):
    store, repo, snaps, src = repo3
    before = {(b.blob_id, b.pack.id, b.offset, b.length, b.raw_length) for b in repo.index.blobs()}
    for o in list(store.list("index/")):
        store.delete(o.name)
    res = RepairIndexManager(open_repo(store)).run()
    assert len(res.plan.added) == len(res.plan.packs) > 0
    after = {(b.blob_id, b.pack.id, b.offset, b.length, b.raw_length) for b in open_repo(store).index.blobs()}
    assert after == before
    assert _check(store).ok


def test_pack_with_damaged_header_keeps_its_old_entries_and_names_repair_packs(repo3):
    store, repo, (s1, s2, s3), src = repo3
    loc = blob_location(repo, s1, os.fsencode(src / "shared.bin"))
    name = pack_name(loc.pack.kind, loc.pack.id)
    size = loc.pack.size
    flip(store, name, size - 30)  # inside the sealed header
    res = RepairIndexManager(open_repo(store)).run()
    (p,) = res.plan.problems
    assert p.name == name and p.outcome == "salvaged"
    assert res.plan.repair_packs == (name,)
    assert open_repo(store).index.lookup(loc.blob_id) is not None
    check = _check(store)
    assert [f.kind for f in check.errors] == ["pack_header"]


def test_read_all_packs_leaves_out_corrupt_blobs(repo3):
    store, repo, (s1, s2, s3), src = repo3
    loc = blob_location(repo, s1, os.fsencode(src / "only12.bin"))
    name = pack_name(loc.pack.kind, loc.pack.id)
    flip(store, name, loc.offset + loc.length // 2)
    plain = RepairIndexManager(open_repo(store)).plan()
    assert not plain.bad_blobs and plain.packs_read > 0
    res = RepairIndexManager(open_repo(store)).run(RepairIndexOptions(read_all_packs=True))
    assert [(p, b) for p, b, _r in res.plan.bad_blobs] == [(name, loc.blob_id.hex())]
    assert open_repo(store).index.lookup(loc.blob_id) is None
    check = _check(store)
    assert {f.kind for f in check.errors} == {"blob_missing"}
    assert {s for f in check.errors for s in f.snapshots} == {s1.id, s2.id}


def test_dry_run_changes_nothing(repo3):
    store, repo, snaps, src = repo3
    before = sorted(o.name for o in store.list(""))
    res = RepairIndexManager(open_repo(store)).run(dry_run=True)
    assert res.dry_run and not res.index_written
    assert sorted(o.name for o in store.list("")) == before
    assert len(list_snapshots(open_repo(store))) == 3


def test_prune_refuses_while_an_index_object_is_unreadable(repo3):
    from backupkit.managers.prune import DamagedRepository, PruneManager
    import pytest

    store, repo, snaps, src = repo3
    before = sorted(o.name for o in store.list("data/"))
    flip(store, sorted(o.name for o in store.list("index/"))[0], 40)
    with pytest.raises(DamagedRepository, match="repair index"):
        PruneManager(open_repo(store)).run()
    assert sorted(o.name for o in store.list("data/")) == before
    RepairIndexManager(open_repo(store)).run()
    PruneManager(open_repo(store)).run()
    assert sorted(o.name for o in store.list("data/")) == before
