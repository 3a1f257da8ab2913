"""bk repair packs: salvage what authenticates, drop the damaged packs, let backup heal."""

from __future__ import annotations

import os

import pytest

from backupkit.errors import BadArgument
from backupkit.managers.check import CheckManager, CheckOptions
from backupkit.managers.repair_index import RepairIndexManager
from backupkit.managers.repair_packs import RepairPacksManager
from backupkit.repo.pack import pack_name
from backupkit.snapshot import list_snapshots
from tests.managers.lifecycle_util import backup, day, open_repo, restored, tree_bytes
from tests.managers.repair_util import blob_location, flip, repo3  # noqa: F401


def _check(store):
    return CheckManager(open_repo(store)).run(CheckOptions(read_data=True))


@pytest.mark.parametrize("damage", ["flip_blob", "flip_header", "truncate"])
def test_repair_packs_then_backup_heals(repo3, tmp_path, damage):
    store, repo, (s1, s2, s3), src = repo3
    loc = blob_location(repo, s3, os.fsencode(src / "shared.bin"))
    name = pack_name(loc.pack.kind, loc.pack.id)
    in_pack = {b.blob_id for b in repo.index.blobs() if b.pack.id == loc.pack.id}
    if damage == "flip_blob":
        flip(store, name, loc.offset + loc.length // 2)
    elif damage == "flip_header":
        flip(store, name, loc.pack.size - 30)
    else:
        store.put(name, store.get(name)[: loc.offset + loc.length - 1])
    assert not _check(store).ok

    RepairIndexManager(open_repo(store)).run()
    res = RepairPacksManager(open_repo(store)).run([loc.pack.id.hex()])
    (p,) = res.plan.packs
    assert p.name == name
    salvaged = {b for b, *_ in p.salvage}
    if damage == "truncate":  # repair index already dropped the entries past the end
        assert salvaged | set(p.lost) <= in_pack and loc.blob_id not in salvaged
    else:
        assert salvaged | set(p.lost) == in_pack
    assert not store.exists(name)
    r = open_repo(store)
    for bid, *_ in p.salvage:
        assert r.index.lookup(bid) is not None
    check = _check(store)
    if damage == "flip_header":  # every blob still authenticates: nothing is lost
        assert not p.lost and check.ok
        return
    assert set(p.lost) <= {loc.blob_id}
    assert r.index.lookup(loc.blob_id) is None
    assert {f.kind for f in check.errors} == {"blob_missing"}

    # a plain backup of the unchanged source writes the lost blobs again
    s4 = backup(open_repo(store), src, day(3))
    r = open_repo(store)
    assert r.index.lookup(loc.blob_id) is not None
    assert restored(r, s4, src, tmp_path / "out") == tree_bytes(src)
    # the same blob ids came back: what is still missing is only what the source no
    # longer has (only12.bin, whose blobs may have shared the pack)
    lost = {(sid, path) for f in _check(store).errors for sid, path in f.paths}
    assert lost <= {(s.id, str(src / "only12.bin")) for s in (s1, s2)}


def test_bad_ids_are_usage_errors(repo3):
    store, *_ = repo3
    with pytest.raises(BadArgument):
        RepairPacksManager(open_repo(store)).run(["zz"])
    with pytest.raises(BadArgument):
        RepairPacksManager(open_repo(store)).run(["00000000deadbeef"])


def test_dry_run_changes_nothing(repo3):
    store, repo, (s1, s2, s3), src = repo3
    loc = blob_location(repo, s1, os.fsencode(src / "only12.bin"))
    flip(store, pack_name(loc.pack.kind, loc.pack.id), loc.offset + 3)
    before = sorted(o.name for o in store.list(""))
    res = RepairPacksManager(open_repo(store)).run([loc.pack.id.hex()[:12]], dry_run=True)
    assert res.dry_run and res.plan.lost == 1
    assert sorted(o.name for o in store.list("")) == before
    assert len(list_snapshots(open_repo(store))) == 3


@pytest.mark.parametrize("force", [False, True])
def test_backup_after_a_lost_pack_never_references_it(repo3, tmp_path, force):
    """No repair at all: the next backup (with or without --force) writes the blobs of
    the lost pack again instead of referencing them."""
    from backupkit.managers.backup import BackupManager, BackupOptions

    store, repo, (s1, s2, s3), src = repo3
    loc = blob_location(repo, s3, os.fsencode(src / "shared.bin"))
    store.delete(pack_name(loc.pack.kind, loc.pack.id))
    res = BackupManager(open_repo(store)).run(BackupOptions(paths=(str(src),), time=day(3), host="h1", force=force))
    assert res.snapshot is not None and not res.errors
    r = open_repo(store)
    assert restored(r, res.snapshot, src, tmp_path / "out") == tree_bytes(src)
    RepairIndexManager(open_repo(store)).run()
    check = _check(store)
    assert res.snapshot.id not in {s for f in check.errors for s in f.snapshots}


def test_backup_after_a_lost_index_object_reads_the_files_again(repo3, tmp_path):
    store, repo, (s1, s2, s3), src = repo3
    newest = max(store.list("index/"), key=lambda o: o.mtime).name
    flip(store, newest, 40)
    s4 = backup(open_repo(store), src, day(3))
    assert restored(open_repo(store), s4, src, tmp_path / "out") == tree_bytes(src)


def test_backup_after_a_damaged_tree_node_writes_it_again(repo3, tmp_path):
    """No repair: the parent's root node is damaged. The backup starts again without the
    parent and writes the node again instead of deduplicating against the damaged copy,
    so the new snapshot (and the old one, whose tree is the same) restores in full."""
    from backupkit.managers.backup import BackupManager, BackupOptions

    store, repo, (s1, s2, s3), src = repo3
    loc = repo.index.lookup(s3.root)
    flip(store, pack_name(loc.pack.kind, loc.pack.id), loc.offset + 40)
    r = open_repo(store)
    res = BackupManager(r).run(BackupOptions(paths=(str(src),), time=day(3), host="h1"))
    assert res.snapshot is not None and res.parent is None  # started again without it
    r = open_repo(store)
    assert restored(r, res.snapshot, src, tmp_path / "out") == tree_bytes(src)
    if res.snapshot.root == s3.root:  # the same tree (unless /tmp above src changed meanwhile)
        # the same node was written again, not deduplicated: the old snapshot heals too
        assert r.index.lookup(s3.root).pack.id != loc.pack.id
        assert restored(r, s3, src, tmp_path / "out3") == tree_bytes(src)
