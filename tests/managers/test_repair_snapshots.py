"""bk repair snapshots: patched files, lost trie nodes, snapshot objects from the catalog."""

from __future__ import annotations

import os

from backupkit.managers.check import CheckManager, CheckOptions
from backupkit.managers.repair_packs import RepairPacksManager
from backupkit.managers.repair_snapshots import RepairSnapshotsManager, RepairSnapshotsOptions
from backupkit.repo.pack import pack_name
from backupkit.snapshot import list_snapshots, load_snapshot
from backupkit.tree import SnapshotTree
from tests.managers.lifecycle_util import backup, day, open_repo, restored, tree_bytes
from tests.managers.repair_util import blob_location, flip, repo3  # noqa: F401


def _check(store):
    return CheckManager(open_repo(store)).run(CheckOptions(read_data=True))


def test_intact_repository_needs_nothing(repo3):
    store, *_ = repo3
    res = RepairSnapshotsManager(open_repo(store)).run(RepairSnapshotsOptions(forget=True))
    assert res.plan.nothing_to_do and not res.written and not res.forgotten


def _lose_blob(store, repo, snap, path):
    loc = blob_location(repo, snap, path)
    name = pack_name(loc.pack.kind, loc.pack.id)
    flip(store, name, loc.offset + loc.length // 2)
    RepairPacksManager(open_repo(store)).run([loc.pack.id.hex()])
    return loc


def test_damaged_file_keeps_its_readable_parts_with_zeros(repo3, tmp_path):
    store, repo, (s1, s2, s3), src = repo3
    path = os.fsencode(src / "only12.bin")
    from tests.managers.lifecycle_util import random_bytes

    original = random_bytes(60_000, 2)  # only12.bin (see repo3)
    loc = _lose_blob(store, repo, s1, path)
    lost_snaps = {f.snapshots for f in _check(store).errors}
    res = RepairSnapshotsManager(open_repo(store)).run(RepairSnapshotsOptions(forget=True))
    assert {r.snapshot for r in res.plan.repairs} == {s for ss in lost_snaps for s in ss}
    for r in res.plan.repairs:
        assert r.action == "rewrite" and r.lost_nodes == 0 and not r.dirs_added
        assert [p for p, _n in r.patched] == [os.fsdecode(path)]
    assert set(res.forgotten) == set(res.written)
    check = _check(store)
    assert check.ok and not check.errors, check.errors
    r = open_repo(store)
    snaps = {s.meta.get("repaired_from"): s for s in list_snapshots(r)}
    new1 = snaps[s1.id]
    assert "repaired" in new1.tags and new1.time_ns == s1.time_ns
    (tmp_path / "src").rename(tmp_path / "src.now")
    out = tmp_path / "out"
    from backupkit.managers.restore import RestoreManager, RestoreOptions

    res2 = RestoreManager(r).restore(new1, RestoreOptions(target=str(out), connections=2))
    assert not res2.errors
    got = (out / os.fsdecode(path).lstrip("/")).read_bytes()
    assert len(got) == len(original)
    # every byte is either the original's or a zero of the lost range
    diff = [i for i in range(len(got)) if got[i] != original[i]]
    assert diff and all(got[i] == 0 for i in diff)
    assert len(diff) <= loc.raw_length
    assert (out / str(src / "shared.bin").lstrip("/")).read_bytes() == (tmp_path / "src.now" / "shared.bin").read_bytes()


def test_remove_damaged_files(repo3):
    store, repo, (s1, s2, s3), src = repo3
    path = os.fsencode(src / "only12.bin")
    _lose_blob(store, repo, s1, path)
    res = RepairSnapshotsManager(open_repo(store)).run(RepairSnapshotsOptions(remove_damaged_files=True))
    assert all(r.removed == (os.fsdecode(path),) for r in res.plan.repairs)
    r = open_repo(store)
    new = load_snapshot(r, res.written[s1.id])
    assert SnapshotTree(r, new.root).get(path) is None
    assert SnapshotTree(r, new.root).get(os.fsencode(src / "shared.bin")) is not None
    assert not res.forgotten and len(list_snapshots(r)) == 5


def test_lost_tree_node_then_backup_heals(repo3, tmp_path):
    store, repo, (s1, s2, s3), src = repo3
    loc = repo.index.lookup(s3.root)
    flip(store, pack_name(loc.pack.kind, loc.pack.id), loc.offset + 40)
    RepairPacksManager(open_repo(store)).run([loc.pack.id.hex()])
    res = RepairSnapshotsManager(open_repo(store)).run(RepairSnapshotsOptions(forget=True))
    assert s3.id in res.written and s3.id in res.forgotten
    (r3,) = [r for r in res.plan.repairs if r.snapshot == s3.id]
    assert r3.lost_nodes >= 1
    assert _check(store).ok
    s4 = backup(open_repo(store), src, day(3))
    assert restored(open_repo(store), s4, src, tmp_path / "out") == tree_bytes(src)
    assert _check(store).ok


def test_deleted_snapshot_object_comes_back_from_the_catalog(repo3):
    store, repo, (s1, s2, s3), src = repo3
    raw = store.get(f"snapshots/{s2.id}")
    store.delete(f"snapshots/{s2.id}")
    res = RepairSnapshotsManager(open_repo(store)).run()
    assert [(r.snapshot, r.action) for r in res.plan.repairs] == [(s2.id, "restore_object")]
    assert res.objects_restored == (s2.id,)
    assert load_snapshot(open_repo(store), s2.id) == s2
    assert store.exists(f"snapshots/{s2.id}") and len(store.get(f"snapshots/{s2.id}")) == len(raw)
    assert _check(store).ok


def test_corrupt_snapshot_object_comes_back_from_the_catalog(repo3):
    store, repo, (s1, s2, s3), src = repo3
    flip(store, f"snapshots/{s1.id}", 30)
    res = RepairSnapshotsManager(open_repo(store)).run()
    assert res.objects_restored == (s1.id,)
    assert load_snapshot(open_repo(store), s1.id) == s1
    check = _check(store)
    assert check.ok and not check.errors


def test_dry_run_changes_nothing(repo3):
    store, repo, (s1, s2, s3), src = repo3
    _lose_blob(store, repo, s1, os.fsencode(src / "only12.bin"))
    before = sorted(o.name for o in store.list(""))
    res = RepairSnapshotsManager(open_repo(store)).run(RepairSnapshotsOptions(forget=True), dry_run=True)
    assert res.dry_run and res.plan.repairs and not res.written
    assert sorted(o.name for o in store.list("")) == before


def test_backup_after_repair_reads_patched_files_again(repo3, tmp_path):
    """repair snapshots before the healing backup: the repaired (latest) snapshot is the
    parent, and its patched file is read again rather than kept with zeros."""
    store, repo, (s1, s2, s3), src = repo3
    _lose_blob(store, repo, s3, os.fsencode(src / "shared.bin"))
    res = RepairSnapshotsManager(open_repo(store)).run(RepairSnapshotsOptions(forget=True))
    assert s3.id in res.written
    from backupkit.managers.backup import BackupManager, BackupOptions

    b = BackupManager(open_repo(store)).run(BackupOptions(paths=(str(src),), time=day(3), host="h1"))
    assert b.parent == res.written[s3.id] and b.files_unchanged >= 1
    assert restored(open_repo(store), b.snapshot, src, tmp_path / "out") == tree_bytes(src)
    assert _check(store).ok
