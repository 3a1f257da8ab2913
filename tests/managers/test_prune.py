"""bk prune: what it deletes and repacks, that it fails closed, and that an interrupted
prune leaves a valid repository that the next prune finishes."""

from __future__ import annotations

import os
import time

import pytest

from backupkit.errors import StoreError, StoreUnavailable
from backupkit.managers.check import CheckManager, CheckOptions
from backupkit.managers.prune import DamagedRepository, MaxUnused, PruneManager, RepackRules, parse_max_unused
from backupkit.repo.pack import TYPE_OF_KIND, pack_name
from backupkit.repo.packspool import PackBuilder
from backupkit.snapshot import remove_snapshots
from backupkit.tree import SnapshotTree
from tests.managers.lifecycle_util import (
    backup,
    day,
    init_repo,
    listing,
    local_store,
    open_repo,
    random_bytes,
    restored,
    tree_bytes,
    write_files,
)
from tests.support.faulty import FaultyStore

ZERO = MaxUnused(percent=0)


@pytest.fixture
def forgotten(tmp_path):
    """Three backups, the first one forgotten, plus one garbage pack no index names.

    ``gone.bin`` (only in the first snapshot) shares packs with ``keep.bin`` (in all), so
    prune must delete some packs and repack others.
    """
    src = tmp_path / "src"
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    write_files(src, {"keep.bin": random_bytes(400_000, 1), "gone.bin": random_bytes(400_000, 2), "d/small.txt": b"s"})
    s1 = backup(repo, src, day(0))
    (src / "gone.bin").unlink()
    write_files(src, {"new.bin": random_bytes(300_000, 3)})
    s2 = backup(repo, src, day(1))
    expect = {s2.id: tree_bytes(src)}
    write_files(src, {"d/small.txt": b"changed"})
    s3 = backup(repo, src, day(2))
    expect[s3.id] = tree_bytes(src)
    remove_snapshots(repo, [s1.id])
    some_pack = next(o.name for o in store.list("data/"))
    store.put("data/ff/" + "ff" * 32, store.get(some_pack))  # a crashed backup's leftover
    return store, src, (s2, s3), expect


def _assert_clean(store, tmp_path, snaps, src, expect):
    """check --read-data is clean and every kept snapshot restores byte-identical."""
    repo = open_repo(store)
    res = CheckManager(repo).run(CheckOptions(read_data=True))
    assert res.ok, res.errors
    for snap in snaps:
        assert restored(repo, snap, src, tmp_path / f"restore-{os.urandom(4).hex()}") == expect[snap.id]


def test_prune_deletes_repacks_and_compacts(forgotten, tmp_path):
    store, src, snaps, expect = forgotten
    before = listing(store)
    plan = PruneManager(open_repo(store)).plan(ZERO)
    s = plan.stats
    assert s.snapshots == 2 and s.packs_unindexed == 1 and s.index_objects > 1
    assert s.packs_delete + s.packs_repack > 0 and s.blobs_unused > 0

    res = PruneManager(open_repo(store)).execute(plan)

    after = listing(store)
    assert sum(after.values()) < sum(before.values())
    assert res.index_deleted == s.index_objects and len([n for n in after if n.startswith("index/")]) == 1
    again = PruneManager(open_repo(store)).plan(ZERO)
    assert again.nothing_to_do and again.stats.blobs_unused == 0 and again.stats.packs_unindexed == 0
    _assert_clean(store, tmp_path, snaps, src, expect)


def test_dry_run_plan_changes_nothing(forgotten):
    store, _src, _snaps, _expect = forgotten
    before = listing(store)
    plan = PruneManager(open_repo(store)).plan()
    assert plan.to_json()["stats"]["bytes_freed"] > 0
    assert listing(store) == before


def test_max_unused_limits_repacking(forgotten):
    store, *_ = forgotten
    unlimited = PruneManager(open_repo(store)).plan(parse_max_unused("unlimited"))
    zero = PruneManager(open_repo(store)).plan(ZERO)
    assert unlimited.repack == () and zero.repack != ()
    assert zero.stats.bytes_unused_after == 0
    assert unlimited.stats.bytes_unused_after > 0
    assert parse_max_unused("5%") == MaxUnused(percent=5.0)
    assert parse_max_unused("10M") == MaxUnused(percent=None, bytes=10 * 1024 * 1024)


def test_max_repack_size_bounds_each_run_and_later_runs_finish(tmp_path):
    """restic's --max-repack-size: the packs one prune repacks hold at most that many bytes
    (a pack that would pass it waits; a smaller one after it may still fit); the next
    prunes repack the rest, and every snapshot still restores byte-identical."""
    src = tmp_path / "src"
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    old = []
    for i in range(4):  # each backup writes its own pack: one blob kept, one forgotten
        write_files(src, {f"keep{i}.bin": random_bytes(150_000, 10 + i), f"gone{i}.bin": random_bytes(150_000, 20 + i)})
        old.append(backup(repo, src, day(i)))
    for i in range(4):
        (src / f"gone{i}.bin").unlink()
    last = backup(repo, src, day(5))
    expect = {last.id: tree_bytes(src)}
    remove_snapshots(repo, [s.id for s in old])
    everything = PruneManager(open_repo(store)).plan(ZERO)
    sizes = sorted(p.size for p in everything.repack)
    assert len(sizes) >= 4
    # every pack fits alone (a pack larger than the bound is never repacked, as in restic;
    # the two smallest as the bound left the largest behind when the padding made one
    # pack small: 1 run in ~1 of 30), but not all of them together
    bound = sizes[0] + sizes[-1]
    runs = 0
    while True:
        plan = PruneManager(open_repo(store)).plan(ZERO, RepackRules(max_bytes=bound))
        assert sum(p.size for p in plan.repack) <= bound and plan.to_json()["max_repack_size"] == bound
        if not plan.repack:
            break
        assert len(plan.repack) < len(everything.repack) or runs > 0
        PruneManager(open_repo(store)).execute(plan)
        runs += 1
        assert runs < 10
    assert runs >= 2  # the bound split the work
    assert PruneManager(open_repo(store)).plan(ZERO).repack == ()
    _assert_clean(store, tmp_path, [last], src, expect)


def test_max_repack_size_below_a_pack_never_repacks_it(forgotten):
    """A pack larger than --max-repack-size is not repacked by any run (restic's rule):
    below the smallest candidate nothing is; at its size, that one pack alone."""
    store = forgotten[0]
    every = PruneManager(open_repo(store)).plan(ZERO)
    assert every.repack  # one candidate or more, as the packing falls
    smallest = min(p.size for p in every.repack)
    assert PruneManager(open_repo(store)).plan(ZERO, RepackRules(max_bytes=smallest - 1)).repack == ()
    one = PruneManager(open_repo(store)).plan(ZERO, RepackRules(max_bytes=smallest)).repack
    assert [p.size for p in one] == [smallest]


def test_repack_cacheable_only_leaves_data_packs_alone(forgotten, tmp_path):
    """restic's --repack-cacheable-only: only metadata packs (the cached ones) are
    repacked; data packs keep their unused space, and the snapshots still restore."""
    store, src, snaps, expect = forgotten
    every = PruneManager(open_repo(store)).plan(ZERO)
    assert any(p.kind == "data" for p in every.repack)
    plan = PruneManager(open_repo(store)).plan(ZERO, RepackRules(cacheable_only=True))
    assert all(p.kind == "meta" for p in plan.repack)
    assert {p.id for p in every.repack if p.kind == "data"} <= {p.id for p in plan.keep}
    assert plan.stats.bytes_unused_after > 0 and plan.to_json()["repack_cacheable_only"] is True
    PruneManager(open_repo(store)).execute(plan)
    _assert_clean(store, tmp_path, snaps, src, expect)


def listing_packs(store) -> list[str]:
    return [n for n in listing(store) if n.startswith(("data/", "meta/"))]


@pytest.mark.parametrize("backups", [4, 12])
def test_repack_small_joins_ten_or_more_small_packs(tmp_path, backups):
    """restic's --repack-small: each backup leaves its own small packs (data and
    metadata); with ten or more in all (as restic counts) they are joined into full ones (fewer are left alone, else the new packs'
    own last one would be repacked on every run); the snapshots still restore."""
    src = tmp_path / "src"
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    snaps, expect = [], {}
    for i in range(backups):
        write_files(src, {f"f{i}.bin": random_bytes(20_000, 40 + i)})
        snaps.append(backup(repo, src, day(i)))
        expect[snaps[-1].id] = tree_bytes(src)
    before = [n for n in listing(store) if n.startswith("data/")]
    assert len(before) == backups
    assert not any(p.kind == "data" for p in PruneManager(open_repo(store)).plan(ZERO).repack)  # nothing unused
    plan = PruneManager(open_repo(store)).plan(ZERO, RepackRules(small=True))
    if len(listing_packs(store)) < 10:
        assert not any(p.kind == "data" for p in plan.repack)
        return
    assert sum(p.kind == "data" for p in plan.repack) == backups
    PruneManager(open_repo(store)).execute(plan)
    after = [n for n in listing(store) if n.startswith("data/")]
    assert len(after) < len(before)
    assert len(listing_packs(store)) < 10
    again = PruneManager(open_repo(store)).plan(ZERO, RepackRules(small=True))
    assert not any(p.kind == "data" for p in again.repack)  # too few small packs left
    _assert_clean(store, tmp_path, snaps[-3:], src, expect)


def test_nothing_to_do_on_a_fresh_repository(tmp_path):
    store = local_store(tmp_path / "repo")
    init_repo(store)
    plan = PruneManager(open_repo(store)).plan()
    assert plan.nothing_to_do
    assert PruneManager(open_repo(store)).execute(plan).index_written is None


# -- fail closed ----------------------------------------------------------------------------


def _refuses(store, exc=DamagedRepository, repo_store=None):
    before = listing(store)
    with pytest.raises(exc) as info:
        PruneManager(open_repo(repo_store or store)).run(ZERO)
    assert listing(store) == before, "prune deleted something while refusing"
    return info.value


def _data_pack_of(store, src, snap, name: str):
    repo = open_repo(store)
    e = SnapshotTree(repo, snap.root).require(os.fsencode(src / name))
    loc = repo.index.lookup(next(i for i in e.content if isinstance(i, bytes)))
    return repo, loc


def test_refuses_when_a_blob_was_deleted_from_a_pack(forgotten):
    store, src, (s2, s3), _ = forgotten
    repo, loc = _data_pack_of(store, src, s3, "new.bin")
    # rewrite the pack without that blob (a valid pack, one blob short)
    name = pack_name(loc.pack.kind, loc.pack.id)
    data = store.get(name)
    b = PackBuilder(loc.pack.kind)
    for other in repo.index.blobs():
        if other.pack.id == loc.pack.id and other.blob_id != loc.blob_id:
            b.add(TYPE_OF_KIND[loc.pack.kind], other.blob_id, data[other.offset : other.offset + other.length], other.raw_length)
    store.put_source(name, b.finish(repo.sealer)[1])
    err = _refuses(store)
    assert set(err.snapshots) == {s2.id, s3.id}
    assert "nothing was deleted" in str(err) and s3.id[:8] in str(err)


def test_refuses_when_an_index_object_is_missing(forgotten):
    store, _src, (s2, s3), _ = forgotten
    newest = max(store.list("index/"), key=lambda o: o.mtime).name
    store.delete(newest)
    err = _refuses(store)
    assert err.snapshots == (s3.id,)


def test_refuses_when_a_pack_is_missing(forgotten):
    store, src, (s2, s3), _ = forgotten
    _repo, loc = _data_pack_of(store, src, s2, "keep.bin")
    store.delete(pack_name(loc.pack.kind, loc.pack.id))
    err = _refuses(store)
    assert set(err.snapshots) == {s2.id, s3.id}


def test_refuses_when_the_index_listing_is_empty(forgotten):
    store, *_ = forgotten
    for o in list(store.list("index/")):
        store.delete(o.name)
    _refuses(store)


@pytest.mark.parametrize("prefix", ["index/", "snapshots/", "data/", "meta/"])
def test_refuses_when_a_listing_fails(forgotten, prefix):
    store, *_ = forgotten
    faulty = FaultyStore(store)
    faulty.break_list(prefix=prefix, after_items=1, count=100)
    _refuses(store, exc=StoreError, repo_store=faulty)


@pytest.mark.parametrize("prefix", ["index/", "snapshots/", "data/", "meta/"])
def test_refuses_when_a_listing_quietly_comes_back_empty(forgotten, prefix):
    store, *_ = forgotten
    faulty = FaultyStore(store)
    faulty.break_list(prefix=prefix, after_items=0, error=None, count=100)
    _refuses(store, repo_store=faulty)


def test_refuses_to_repack_a_damaged_blob(forgotten):
    store, src, (s2, s3), _ = forgotten
    plan = PruneManager(open_repo(store)).plan(ZERO)
    p = plan.repack[0]
    live = next(e for e in plan.entries[p.id] if e[0] in plan.live)
    path = os.path.join(store.root, pack_name(p.kind, p.id))
    with open(path, "r+b") as f:
        f.seek(live[1] + 30)
        c = f.read(1)
        f.seek(live[1] + 30)
        f.write(bytes([c[0] ^ 1]))
    _refuses(store)


# -- interrupted at each stage --------------------------------------------------------------

STAGES = {
    "repack upload": dict(op="put", name=lambda n: n.startswith(("data/", "meta/")), nth=1),
    "index write": dict(op="put", name=lambda n: n.startswith("index/"), nth=1),
    "index write, response lost": dict(op="put", name=lambda n: n.startswith("index/"), nth=1, after=True),
    "first index delete": dict(op="delete", name=lambda n: n.startswith("index/"), nth=1),
    "later index delete": dict(op="delete", name=lambda n: n.startswith("index/"), nth=3),
    "first pack delete": dict(op="delete", name=lambda n: n.startswith(("data/", "meta/")), nth=1),
    "later pack delete": dict(op="delete", name=lambda n: n.startswith(("data/", "meta/")), nth=3),
}


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("error", [StoreUnavailable, KeyboardInterrupt])
def test_interrupted_prune_leaves_a_valid_repository_and_the_next_prune_finishes(forgotten, tmp_path, stage, error):
    store, src, snaps, expect = forgotten
    faulty = FaultyStore(store)
    spec = dict(STAGES[stage])
    faulty.fail_call(spec.pop("op"), error=error, **spec)
    with pytest.raises(error):
        PruneManager(open_repo(faulty)).run(ZERO)
    assert faulty.injected == 1

    _assert_clean(store, tmp_path, snaps, src, expect)
    PruneManager(open_repo(store)).run(ZERO)
    final = PruneManager(open_repo(store)).plan(ZERO)
    assert final.nothing_to_do, final.stats
    assert final.stats.blobs_unused == 0 and final.stats.packs_unindexed == 0
    _assert_clean(store, tmp_path, snaps, src, expect)


def test_prune_removes_partial_writes_of_killed_writers(tmp_path):
    from backupkit.managers.prune import ABANDONED_AFTER

    store = local_store(tmp_path)
    repo = init_repo(store)
    src = tmp_path / "src"
    write_files(src, {"a": random_bytes(1000, 1)})
    backup(repo, src)
    old = tmp_path / "repo" / "data" / ".tmp-killed"
    new = tmp_path / "repo" / "index" / ".tmp-writing"
    for p in (old, new):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
    past = time.time() - ABANDONED_AFTER - 60
    os.utime(old, (past, past))
    res = PruneManager(open_repo(store)).run()
    assert res.abandoned_removed == 1
    assert not old.exists() and new.exists()  # a write that may still be going on stays


def test_prune_removes_the_packs_of_a_killed_first_backup(tmp_path):
    """Issue 9.10: no index object and no snapshot, but packs (a first backup killed
    before it wrote an index): the packs are garbage and prune removes them."""
    from backupkit.crypto import T_DATA_BLOB

    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    writer = repo.pack_writer()
    for i in range(40):
        data = random_bytes(20_000, i)
        bid = repo.sealer.blob_id(data)
        writer.add(T_DATA_BLOB, bid, repo.seal_object(T_DATA_BLOB, bid, data), len(data))
    packs = writer.flush()
    writer.close()
    assert len(packs) > 1 and not list(store.list("index/"))
    res = PruneManager(open_repo(store)).run()
    assert res.packs_deleted == len(packs)
    assert not list(store.list("data/")) and not list(store.list("index/"))


def test_prune_with_a_lost_lock_deletes_nothing(forgotten):
    """The lock is checked through repo.check_lock() before the index is written."""
    store, _src, _snaps, _expect = forgotten
    before = listing(store)
    repo = open_repo(store)

    def lost():
        raise RuntimeError("lock lost")

    repo.install_lock_check(lost)
    with pytest.raises(RuntimeError):
        PruneManager(repo).run(ZERO)
    after = listing(store)
    assert before.items() <= after.items()  # repacked packs may have been written; nothing deleted
    assert {n for n in after if n.startswith("index/")} == {n for n in before if n.startswith("index/")}


def test_prune_ignores_names_that_are_not_ours(forgotten, tmp_path):
    """Issue 10.3: junk under index/ or a pack prefix neither stops prune nor is deleted."""
    store, src, snaps, expect = forgotten
    junk = ["index/zz", "data/00/" + "11" * 32, "snapshots/x"]
    for n in junk:
        store.put(n, b"junk")
    repo = open_repo(store)
    PruneManager(repo).run(ZERO)
    assert all(store.exists(n) for n in junk)
    assert any("index/zz" in w for w in repo.warnings)
    _assert_clean(store, tmp_path, snaps, src, expect)


def test_prune_refuses_while_a_snapshot_object_is_missing(forgotten):
    """A catalog entry without its object is a lost snapshot (forget drops catalog
    entries first): its data may be needed to write it again, so prune refuses."""
    store, _src, (s2, _s3), _expect = forgotten
    store.delete(f"snapshots/{s2.id}")
    before = listing(store)
    with pytest.raises(DamagedRepository, match="in the catalog but its object is missing"):
        PruneManager(open_repo(store)).run(ZERO)
    assert listing(store) == before
