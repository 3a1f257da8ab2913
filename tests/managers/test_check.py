"""bk check: structure, --read-data, findings that name snapshots and paths."""

from __future__ import annotations

import os
import random

import pytest

from backupkit.errors import UsageError
from backupkit.managers.check import CheckManager, CheckOptions, parse_subset, select_packs
from backupkit.repo.index import PackInfo
from backupkit.repo.pack import pack_name
from backupkit.tree import SnapshotTree
from tests.managers.lifecycle_util import backup, day, init_repo, local_store, open_repo, random_bytes, write_files
from tests.managers.repair_util import blob_location, flip, repo3  # noqa: F401 (repo3 is a fixture)
from tests.support.faulty import FaultyStore


def test_clean_repository(repo3):
    store, repo, _snaps, _src = repo3
    res = CheckManager(open_repo(store)).run(CheckOptions(read_data=True))
    assert res.ok, res.findings
    assert res.findings == ()
    assert res.snapshots == 3 and res.packs_read == res.packs > 0


def test_flipped_byte_in_data_pack_names_exactly_the_affected_snapshots_and_paths(repo3):
    store, repo, (s1, s2, s3), src = repo3
    path = os.fsencode(src / "only12.bin")
    loc = blob_location(repo, s1, path)
    flip(store, pack_name(loc.pack.kind, loc.pack.id), loc.offset + loc.length // 2)

    assert CheckManager(open_repo(store)).run().ok  # the structure is intact
    res = CheckManager(open_repo(store)).run(CheckOptions(read_data=True))

    assert not res.ok
    (f,) = res.errors
    assert f.kind == "blob_corrupt" and loc.blob_id.hex() in f.object
    assert f.snapshots == tuple(sorted([s1.id, s2.id]))
    assert set(f.paths) == {(s1.id, os.fsdecode(path)), (s2.id, os.fsdecode(path))}


def test_deleted_pack_is_found_without_read_data(repo3):
    store, repo, (s1, s2, s3), src = repo3
    path = os.fsencode(src / "only3.bin")
    loc = blob_location(repo, s3, path)
    name = pack_name(loc.pack.kind, loc.pack.id)
    in_pack = {b.blob_id for b in repo.index.blobs() if b.pack.id == loc.pack.id}
    store.delete(name)

    res = CheckManager(open_repo(store)).run()

    assert not res.ok
    (f,) = [f for f in res.errors if f.kind == "pack_missing"]
    assert f.object == name
    assert s3.id in f.snapshots
    assert (s3.id, os.fsdecode(path)) in f.paths
    # every path named really uses a blob of the lost pack
    for sid, p in f.paths:
        snap = {s.id: s for s in (s1, s2, s3)}[sid]
        e = SnapshotTree(repo, snap.root).require(os.fsencode(p))
        assert in_pack & set(i for i in e.content or () if isinstance(i, bytes))


def test_missing_index_object_fails_check(repo3):
    store, _repo, (s1, s2, s3), _src = repo3
    names = sorted(o.name for o in store.list("index/"))
    for n in names:
        store.delete(n)
    res = CheckManager(open_repo(store)).run()
    assert not res.ok
    kinds = {f.kind for f in res.errors}
    assert "blob_missing" in kinds and "index_missing" in kinds
    damaged = {s for f in res.errors for s in f.snapshots}
    assert damaged == {s1.id, s2.id, s3.id}


def test_one_missing_index_object_names_the_snapshots_that_lose_data(repo3):
    store, repo, (s1, s2, s3), _src = repo3
    # the last backup wrote the last index object: only3.bin and the new tree nodes
    newest = max(store.list("index/"), key=lambda o: o.mtime).name
    store.delete(newest)
    res = CheckManager(open_repo(store)).run()
    assert not res.ok
    damaged = {s for f in res.errors for s in f.snapshots}
    assert damaged == {s3.id}
    assert {f.kind for f in res.errors} <= {"blob_missing"}
    assert {f.kind for f in res.findings if f.severity == "info"} == {"pack_unreferenced"}


def test_damaged_tree_node_is_named_without_read_data(repo3):
    store, repo, (s1, s2, s3), _src = repo3
    loc = repo.index.lookup(s3.root)
    flip(store, pack_name(loc.pack.kind, loc.pack.id), loc.offset + 40)
    res = CheckManager(open_repo(store)).run()
    assert not res.ok
    (f,) = res.errors
    assert f.kind == "tree_unreadable" and f.snapshots == (s3.id,) and f.paths == ((s3.id, None),)


class FlipFirstRead(FaultyStore):
    """Flips one chosen byte of the first ``get`` of one object (a blob, not padding)."""

    def __init__(self, inner, name: str, offset: int) -> None:
        super().__init__(inner)
        self.target, self.offset, self.flipped = name, offset, 0

    def get(self, name: str, max_size: int | None = None) -> bytes:
        data = super().get(name, max_size=max_size)
        if name == self.target and not self.flipped:
            self.flipped += 1
            data = data[: self.offset] + bytes([data[self.offset] ^ 1]) + data[self.offset + 1 :]
        return data


@pytest.mark.parametrize("kind", ["data", "meta"])
def test_corrupt_first_read_clean_on_retry_is_not_damage(repo3, kind):
    store, repo, (s1, _s2, _s3), src = repo3
    loc = blob_location(repo, s1, os.fsencode(src / "shared.bin")) if kind == "data" else repo.index.lookup(s1.root)
    name = pack_name(loc.pack.kind, loc.pack.id)
    faulty = FlipFirstRead(store, name, loc.offset + 20)
    res = CheckManager(open_repo(faulty)).run(CheckOptions(read_data=True))
    assert faulty.flipped == 1
    assert res.ok, res.errors
    assert [(f.kind, f.object) for f in res.findings] == [("read_retry_ok", name)]


def test_random_corrupt_first_reads_are_not_damage(repo3):
    store, _repo, _snaps, _src = repo3
    faulty = FaultyStore(store, seed=3)
    packs = sorted(n for prefix in ("data/", "meta/") for n in (o.name for o in store.list(prefix)))
    # the first read of three packs is damaged; each rule counts reads of its own pack
    # only, so the retry is clean whatever order check's threads read packs in
    chosen = random.Random(3).sample(packs, 3)
    for name in chosen:
        faulty.corrupt_reads(name, mode="flip", nth=1, count=1)
    res = CheckManager(open_repo(faulty)).run(CheckOptions(read_data=True))
    assert faulty.injected == 3
    assert res.ok, res.errors
    # a flip that lands in pack padding damages nothing, so not every pack is retried
    assert {f.object for f in res.findings if f.kind == "read_retry_ok"} <= set(chosen)


def test_truncated_first_read_clean_on_retry_is_not_damage(repo3):
    store, _repo, _snaps, _src = repo3
    faulty = FaultyStore(store, seed=5)
    faulty.corrupt_reads(lambda n: n.startswith("data/"), mode="truncate", count=1)
    res = CheckManager(open_repo(faulty)).run(CheckOptions(read_data=True))
    assert res.ok, res.errors


def test_unreferenced_pack_is_info_not_error(repo3):
    store, _repo, _snaps, _src = repo3
    data = store.get(next(o.name for o in store.list("data/")))
    store.put("data/ee/" + "ee" * 32, data)
    res = CheckManager(open_repo(store)).run()
    assert res.ok
    assert [(f.severity, f.kind) for f in res.findings] == [("info", "pack_unreferenced")]


def test_truncated_pack_is_found_without_read_data(repo3):
    store, repo, (s1, s2, s3), src = repo3
    loc = blob_location(repo, s1, os.fsencode(src / "shared.bin"))
    name = pack_name(loc.pack.kind, loc.pack.id)
    store.put(name, store.get(name)[:-10])
    res = CheckManager(open_repo(store)).run()
    (f,) = res.errors
    # only the header is cut off: every blob still reads, so no snapshot loses anything
    assert f.kind == "pack_size" and f.snapshots == ()
    # cut into the blobs: exactly the snapshots that use the blobs past the end
    store.put(name, store.get(name)[: loc.offset + 1])
    res = CheckManager(open_repo(store)).run()
    (f,) = res.errors
    assert f.kind == "pack_size" and set(f.snapshots) == {s1.id, s2.id, s3.id}


def test_subset_selection():
    packs = [PackInfo(os.urandom(32), "data", 100) for _ in range(50)]
    groups = [select_packs(packs, f"{n}/3") for n in (1, 2, 3)]
    assert sorted(p.id for g in groups for p in g) == sorted(p.id for p in packs)
    assert len(select_packs(packs, "10%", seed=1)) == 5
    assert len(select_packs(packs, "0.1%", seed=1)) == 1
    for bad in ("0/3", "4/3", "abc", "0%", "101%"):
        with pytest.raises(UsageError):
            parse_subset(bad)


def test_read_data_subset_reads_only_that_share(repo3):
    store, _repo, _snaps, _src = repo3
    total = CheckManager(open_repo(store)).run(CheckOptions(read_data=True)).packs_read
    parts = [CheckManager(open_repo(store)).run(CheckOptions(read_data_subset=f"{n}/2")).packs_read for n in (1, 2)]
    assert sum(parts) == total


def test_damaged_index_object_is_a_finding_and_names_what_it_costs(repo3):
    store, _repo, (s1, s2, s3), _src = repo3
    newest = max(store.list("index/"), key=lambda o: o.mtime).name
    flip(store, newest, 40)
    res = CheckManager(open_repo(store)).run()
    kinds = {f.kind for f in res.errors}
    assert "index_unreadable" in kinds and kinds <= {"index_unreadable", "blob_missing"}
    assert {s for f in res.errors for s in f.snapshots} == {s3.id}


def test_damaged_catalog_is_an_error_and_a_stale_one_is_info(repo3):
    store, _repo, _snaps, _src = repo3
    flip(store, "catalog", 30)
    assert [f.kind for f in CheckManager(open_repo(store)).run().errors] == ["catalog_unreadable"]
    store.delete("catalog")
    res = CheckManager(open_repo(store)).run()
    assert res.ok and [f.kind for f in res.findings] == ["catalog_stale"]


def test_long_file_with_content_blobs_is_named(tmp_path):
    src = tmp_path / "src"
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    write_files(src, {"big.bin": random_bytes(3_000_000, 9), "small.txt": b"s"})
    snap = backup(repo, src, day(0))
    e = SnapshotTree(repo, snap.root).require(os.fsencode(src / "big.bin"))
    assert e.content_blobs is not None  # the content list lives in content blobs
    items = SnapshotTree(repo, snap.root).content(e)
    loc = repo.index.lookup(items[40])
    flip(store, pack_name(loc.pack.kind, loc.pack.id), loc.offset + 100)
    res = CheckManager(open_repo(store)).run(CheckOptions(read_data=True))
    (f,) = res.errors
    assert f.kind == "blob_corrupt" and f.paths == ((snap.id, os.fsdecode(src / "big.bin")),)


def test_snapshot_in_the_catalog_without_its_object_is_a_finding(repo3):
    """Issue 9.6: a deleted snapshot object is an error of check; listing leaves it out
    with a warning and keeps its catalog entry (repair can write the object again)."""
    from backupkit.catalog import read_catalog
    from backupkit.snapshot import list_snapshots, lost_snapshots

    store, _repo, (s1, s2, s3), _src = repo3
    store.delete(f"snapshots/{s2.id}")
    res = CheckManager(open_repo(store)).run()
    (f,) = res.errors
    assert f.kind == "snapshot_missing" and f.snapshots == (s2.id,) and f.object == f"snapshots/{s2.id}"
    repo = open_repo(store)
    assert [s.id for s in list_snapshots(repo)] == [s1.id, s3.id]
    assert any(s2.id[:8] in w and "missing" in w for w in repo.warnings)
    assert s2.id in read_catalog(open_repo(store))  # not silently dropped
    assert [s.id for s in lost_snapshots(open_repo(store))] == [s2.id]
    assert [f.kind for f in CheckManager(open_repo(store)).run().errors] == ["snapshot_missing"]


def test_unreadable_catalog_and_one_corrupt_snapshot_still_list(repo3):
    """Issue 9.6: with the catalog unreadable and one snapshot object corrupt, listing
    rebuilds the catalog from the readable snapshots and reports the other."""
    from backupkit.catalog import read_catalog
    from backupkit.snapshot import find_snapshot, list_snapshots

    store, _repo, (s1, s2, s3), _src = repo3
    flip(store, "catalog", 30)
    flip(store, f"snapshots/{s1.id}", 30)
    repo = open_repo(store)
    assert [s.id for s in list_snapshots(repo)] == [s2.id, s3.id]
    assert any(s1.id in w for w in repo.warnings), repo.warnings
    assert set(read_catalog(open_repo(store))) == {s2.id, s3.id}
    assert find_snapshot(open_repo(store), "latest").id == s3.id


def test_damaged_key_file_hidden_by_the_cache_is_found(repo3, tmp_path):
    """Issue 9.5: the key file in the store is damaged while the cache still holds the
    good copy that opens the repository: check opens the store's key files and says so."""
    import base64
    import json

    from backupkit.repo.repository import Repository
    from tests.managers.lifecycle_util import PASSWORD

    store, _repo, _snaps, _src = repo3
    cache = tmp_path / "cache"
    Repository.open(store, PASSWORD, cache_root=cache).close()  # caches config and key file
    (name,) = [o.name for o in store.list("keys/")]
    doc = json.loads(store.get(name))
    wrapped = bytearray(base64.b64decode(doc["data"]))
    wrapped[20] ^= 1
    doc["data"] = base64.b64encode(bytes(wrapped)).decode()
    store.put(name, json.dumps(doc).encode())
    repo = Repository.open(store, PASSWORD, cache_root=cache, connections=2)  # still opens, from the cache
    (f,) = CheckManager(repo).run().errors
    assert f.kind == "key_damaged" and f.object == name and "damaged key file" in f.message


@pytest.mark.parametrize("which", ["another", "the one in use"])
def test_a_changed_byte_anywhere_in_a_key_file_is_found(tmp_path, which):
    """Issue 9.5: whatever position of a key file one byte changes at (JSON whitespace,
    a base64 string's unused bits, a KDF number still within bounds, the salt, the
    wrapped keys, the sealed metadata), check names the file; another key file opens
    the repository. Every position, three bit patterns each."""
    from backupkit.repo.keymanager import KeyManager, check_key_file
    from backupkit.repo.repository import Repository
    from tests.managers.lifecycle_util import PASSWORD
    from tests.support.kit import INSECURE_TEST_KDF

    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    added = KeyManager(repo).add(PASSWORD, INSECURE_TEST_KDF)  # the same password
    key_id = added if which == "another" else repo.key_id
    name = f"keys/{key_id}"
    cache = tmp_path / "cache"
    Repository.open(store, PASSWORD, cache_root=cache).close()  # caches a key file that opens
    path = tmp_path / "repo" / name
    raw = path.read_bytes()
    repo = Repository.open(store, PASSWORD, cache_root=cache, connections=2)
    assert check_key_file(repo, name) is None
    missed = []
    for mask in (0x01, 0x20, 0x80):
        for pos in range(len(raw)):
            damaged = bytearray(raw)
            damaged[pos] ^= mask
            path.write_bytes(bytes(damaged))
            if check_key_file(repo, name) is None:
                missed.append((pos, mask, raw[pos : pos + 1]))
    path.write_bytes(raw)
    assert not missed, f"{len(missed)} changes unseen, e.g. {missed[:5]}"
    assert check_key_file(repo, name) is None
    res = CheckManager(repo).run()
    assert res.ok, res.errors


def test_the_key_file_that_opened_the_repository_is_not_derived_again(tmp_path):
    """Check opens every key file with the password, but the one whose very bytes opened
    the repository gives a known answer: no second Argon2id run. Shown by a password
    that no longer fits: with the same bytes nothing is derived (no finding); with one
    byte changed, it is derived and refused (key_damaged)."""
    from backupkit.repo.keymanager import check_key_file
    from backupkit.repo.repository import Repository
    from tests.managers.lifecycle_util import PASSWORD

    store = local_store(tmp_path / "repo")
    init_repo(store)
    repo = Repository.open(store, PASSWORD, cache_root=False, connections=2)
    name = f"keys/{repo.key_id}"
    assert repo.key_raw == store.get(name)
    repo.password = b"not the password"
    assert check_key_file(repo, name) is None
    repo.key_raw = repo.key_raw[:-1] + bytes([repo.key_raw[-1] ^ 1])  # as if a cached copy differed
    kind, message = check_key_file(repo, name)
    assert kind == "key_damaged" and "no longer opens it" in message


def test_config_is_verified_from_the_store_not_the_cache(repo3, tmp_path):
    from backupkit.repo.repository import Repository
    from tests.managers.lifecycle_util import PASSWORD

    store, _repo, _snaps, _src = repo3
    cache = tmp_path / "cache"
    Repository.open(store, PASSWORD, cache_root=cache).close()
    flip(store, "config", 40)
    repo = Repository.open(store, PASSWORD, cache_root=cache, connections=2)
    assert [f.kind for f in CheckManager(repo).run().errors] == ["config_unreadable"]


def test_names_that_are_not_ours_are_listed_and_ignored(repo3):
    """Issue 10.3: junk names under our prefixes end in no error: every command skips
    them (with a warning) and check lists them."""
    from backupkit.snapshot import list_snapshots

    store, _repo, snaps, _src = repo3
    junk = ["index/zz", "snapshots/x", "snapshots/abcd", "data/00/" + "11" * 32, "meta/zz", "keys/nope", "locks/zz"]
    for n in junk:
        store.put(n, b"junk")
    repo = open_repo(store)
    assert [s.id for s in list_snapshots(repo)] == [s.id for s in snaps]
    assert len(repo.reload_index()) > 0
    res = CheckManager(open_repo(store)).run()
    assert res.ok, res.errors
    assert sorted(f.object for f in res.findings if f.kind == "foreign_object") == sorted(junk)
    assert all(f.severity == "warning" for f in res.findings if f.kind == "foreign_object")


def _blobs_of(repo, snap, path: bytes) -> set[bytes]:
    e = SnapshotTree(repo, snap.root).require(path)
    return {i for i in e.content or () if isinstance(i, bytes)}


def test_a_lost_pack_whose_blobs_a_later_backup_wrote_again_is_a_warning_not_damage(repo3):
    from backupkit.managers.remedies import INDEX, remedies
    from backupkit.managers.repair_index import RepairIndexManager

    store, repo, (_s1, _s2, s3), src = repo3
    loc = blob_location(repo, s3, os.fsencode(src / "shared.bin"))
    name = pack_name(loc.pack.kind, loc.pack.id)
    store.delete(name)
    write_files(src, {"only12.bin": random_bytes(60_000, 2)})  # every file ever backed up is back
    backup(open_repo(store), src, day(3))  # writes the lost blobs again (the pack is gone)

    res = CheckManager(open_repo(store)).run(CheckOptions(read_data=True))
    assert res.ok, res.errors
    (f,) = [f for f in res.findings if f.object == name]
    assert (f.severity, f.kind) == ("warning", "pack_missing_redundant") and f.snapshots == ()
    assert remedies(res.findings) == [INDEX]
    RepairIndexManager(open_repo(store)).run()
    assert CheckManager(open_repo(store)).run(CheckOptions(read_data=True)).findings == ()


def test_a_cut_pack_whose_lost_blobs_a_later_backup_wrote_again_names_no_snapshot(repo3):
    store, repo, (s1, _s2, _s3), src = repo3
    loc = blob_location(repo, s1, os.fsencode(src / "shared.bin"))
    name = pack_name(loc.pack.kind, loc.pack.id)
    store.put(name, store.get(name)[: loc.offset + 1])
    write_files(src, {"only12.bin": random_bytes(60_000, 2)})
    backup(open_repo(store), src, day(3))  # the pack is listed at another size: its blobs count as lost
    res = CheckManager(open_repo(store)).run()
    (f,) = res.errors
    assert f.kind == "pack_size" and f.snapshots == () and "read from other packs" in f.message


def test_a_lost_pack_names_only_the_blobs_no_later_backup_wrote_again(repo3):
    store, repo, (s1, s2, s3), src = repo3
    only12 = _blobs_of(repo, s1, os.fsencode(src / "only12.bin"))
    shared = _blobs_of(repo, s1, os.fsencode(src / "shared.bin"))
    loc = repo.index.lookup(sorted(only12)[0])
    in_pack = {b.blob_id for b in repo.index.blobs() if b.pack.id == loc.pack.id}
    assert in_pack & shared, "the fixture's first pack no longer mixes the two files"
    name = pack_name(loc.pack.kind, loc.pack.id)
    store.delete(name)
    s4 = backup(open_repo(store), src, day(3))  # shared.bin is in the source, only12.bin is not

    res = CheckManager(open_repo(store)).run()
    (f,) = [f for f in res.errors if f.object == name]
    assert f.kind == "pack_missing" and "read from other packs" in f.message
    assert f.snapshots == tuple(sorted([s1.id, s2.id]))  # not s3 or s4: shared.bin was written again
    assert {p for _sid, p in f.paths} == {os.fsdecode(os.fsencode(src / "only12.bin"))}
    assert s4.id not in f.snapshots and s3.id not in f.snapshots


def test_malformed_entries_are_findings_naming_their_snapshots_and_check_goes_on(tmp_path):
    from backupkit.managers.remedies import SNAPSHOTS, remedies
    from backupkit.managers.repair_snapshots import RepairSnapshotsManager, RepairSnapshotsOptions
    from tests.managers.lifecycle_util import forged_snapshot, wire_dir_and_file

    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    d, f = wire_dir_and_file(repo)
    entries = {b"/": d, b"/a": d, b"/a/f": f, b"/bad": {**d, "m": "rwx"}, b"/odd": {**f, "c": ["not a blob id"]}}
    s1 = forged_snapshot(repo, entries)
    s2 = forged_snapshot(repo, {**entries, b"/z": f})  # shares no node with s1: both are named
    stored = {o.name for o in store.list("data/")}
    flip(store, sorted(stored)[0], 40)  # and damage check must still find, past the entries

    res = CheckManager(open_repo(store)).run(CheckOptions(read_data=True))
    bad = {f.object: f for f in res.errors if f.kind == "entry_malformed"}
    assert set(bad) == {"entry /bad", "entry /odd"}
    assert bad["entry /bad"].snapshots == tuple(sorted([s1.id, s2.id]))
    assert set(bad["entry /odd"].paths) == {(s1.id, "/odd"), (s2.id, "/odd")}
    assert "'m'" in bad["entry /bad"].message and "'c'" in bad["entry /odd"].message
    assert any(f.kind == "blob_corrupt" for f in res.errors)  # read data ran after the trees
    assert SNAPSHOTS in remedies(res.findings)

    RepairSnapshotsManager(open_repo(store)).run(RepairSnapshotsOptions(forget=True))
    after = CheckManager(open_repo(store)).run()
    assert not [f for f in after.findings if f.kind == "entry_malformed"]


def test_a_pack_listed_larger_than_any_pack_is_a_finding_not_the_end_of_check(repo3):
    from backupkit import limits

    store, repo, (s1, _s2, _s3), src = repo3
    loc = blob_location(repo, s1, os.fsencode(src / "only12.bin"))
    name = pack_name(loc.pack.kind, loc.pack.id)
    os.truncate(os.path.join(store.root, name), limits.PACK_MAX + 1)  # sparse: nothing written
    other = next(p for p in repo.index.packs() if p.id != loc.pack.id and p.kind == loc.pack.kind)
    flip(store, pack_name(other.kind, other.id), 40)

    res = CheckManager(open_repo(store)).run(CheckOptions(read_data=True))
    (f,) = [f for f in res.errors if f.kind == "pack_unreadable"]
    assert f.object == name and "cannot be read whole" in f.message
    assert (s1.id, os.fsdecode(os.fsencode(src / "only12.bin"))) in f.paths
    assert any(f.kind == "blob_corrupt" for f in res.errors)  # the other packs were still read
    assert {f.kind for f in res.errors} >= {"pack_size", "pack_unreadable", "blob_corrupt"}
    assert res.packs_read == res.packs - 1  # the one it could not read is not counted as read
