"""Prune's repack (prune_repack.py): it reads only the live blobs' ranges, a run at a
time, retries a damaged read once from the store, and groups blobs into runs exactly."""

from __future__ import annotations

import pytest

from backupkit.managers.prune import DamagedRepository, PruneManager
from backupkit.managers.prune_repack import REPACK_SPAN, runs
from backupkit.repo.pack import KIND_DATA, pack_name
from tests.managers.lifecycle_util import open_repo
from tests.managers.test_prune import ZERO, _assert_clean, _refuses, forgotten, listing  # noqa: F401 - the fixture
from tests.support.faulty import FaultyStore


def test_runs_join_close_blobs_up_to_the_span():
    b = lambda off, ln: (off, ln, bytes([off % 256]) * 32, ln)  # noqa: E731
    blobs = [b(500, 100), b(0, 100), b(100, 100), b(250, 50), b(2000, 10), b(2010, 5000), b(9000, 50)]
    got = [(s, e, [x[0] for x in r]) for s, e, r in runs(blobs, gap=50, span=3000)]
    # sorted by offset; 250 is 50 past 200 (joins), 500 is 200 past 300 (new run);
    # 2010's blob would take the run past 3000 bytes (alone); 9000 is far
    assert got == [(0, 300, [0, 100, 250]), (500, 600, [500]), (2000, 2010, [2000]), (2010, 7010, [2010]), (9000, 9050, [9000])]
    assert list(runs([], 10, 10)) == []
    assert [(s, e) for s, e, _r in runs([b(0, 100)], 0, 10)] == [(0, 100)]  # a blob over the span still goes
    # adjacent blobs (gap 0) join; every blob is in exactly one run
    adj = [b(i * 10, 10) for i in range(100)]
    out = list(runs(adj, 0, 250))
    assert [len(r) for _s, _e, r in out] == [25, 25, 25, 25]
    assert sorted(x for _s, _e, r in out for x in r) == sorted(adj)


def _recording(store):
    """A FaultyStore recording (op, name, bytes) of every read."""
    faulty = FaultyStore(store)
    reads = []
    get, get_range = faulty.get, faulty.get_range

    def rec_get(name, max_size=None):
        data = get(name, max_size=max_size)
        reads.append(("get", name, len(data)))
        return data

    def rec_range(name, offset, length):
        reads.append(("range", name, length))
        return get_range(name, offset, length)

    faulty.get, faulty.get_range = rec_get, rec_range
    return faulty, reads


def test_repack_reads_only_the_live_ranges(forgotten, tmp_path):
    store, src, snaps, expect = forgotten
    faulty, reads = _recording(store)
    mgr = PruneManager(open_repo(faulty))
    plan = mgr.plan(ZERO)
    assert plan.repack
    names = {pack_name(p.kind, p.id): p for p in plan.repack}
    live = sum(ln for p in plan.repack for bid, _o, ln, _r in plan.entries[p.id] if bid in plan.live)
    # exactly the runs of live blobs (gap and span limits), one range read each
    want = sorted(
        (pack_name(p.kind, p.id), end - start)
        for p in plan.repack
        for start, end, _run in runs(
            [(o, ln, bid, r) for bid, o, ln, r in plan.entries[p.id] if bid in plan.live], mgr.repo.join_gap, REPACK_SPAN
        )
    )
    reads.clear()
    mgr.execute(plan)
    got = [(op, n, size) for op, n, size in reads if n in names]
    assert got and all(op == "range" for op, _n, _s in got), got  # never a whole pack
    read = sum(size for _op, _n, size in got)
    assert live <= read < sum(p.size for p in plan.repack)
    assert sorted((n, size) for _op, n, size in got) == want
    _assert_clean(store, tmp_path, snaps, src, expect)


@pytest.mark.parametrize("damaged_reads", [1, 2])
def test_repack_retries_a_damaged_read_once_from_the_store(forgotten, tmp_path, damaged_reads):
    store, src, snaps, expect = forgotten
    plan = PruneManager(open_repo(store)).plan(ZERO)
    p = next(p for p in plan.repack if p.kind == KIND_DATA)  # marking reads no data pack
    first = pack_name(p.kind, p.id)
    faulty = FaultyStore(store)
    faulty.corrupt_reads(first, nth=1, count=damaged_reads)
    if damaged_reads == 2:  # the retry is damaged too: refused, nothing deleted
        _refuses(store, repo_store=faulty)
        return
    PruneManager(open_repo(faulty)).run(ZERO)
    assert faulty.injected == 1
    _assert_clean(store, tmp_path, snaps, src, expect)
    assert PruneManager(open_repo(store)).plan(ZERO).nothing_to_do


def test_a_refused_repack_removes_the_packs_it_already_wrote(tmp_path):
    """Half of every pack stays live; the damaged pack is the last one copied (one
    connection: in plan order), so the packs before it fill and upload new packs first:
    the refusal takes them away again."""
    from backupkit.repo.repository import Repository
    from backupkit.snapshot import remove_snapshots
    from tests.managers.lifecycle_util import PASSWORD, backup, day, init_repo, local_store, random_bytes, write_files

    src = tmp_path / "src"
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    write_files(src, {f"f{i}.bin": random_bytes(150_000, i) for i in range(16)})
    s1 = backup(repo, src, day(0))
    for i in range(0, 16, 2):
        (src / f"f{i}.bin").unlink()
    backup(repo, src, day(1))
    remove_snapshots(repo, [s1.id])
    plan = PruneManager(open_repo(store)).plan(ZERO)
    data = [p for p in plan.repack if p.kind == KIND_DATA]
    live = sum(ln for p in data[:-1] for bid, _o, ln, _r in plan.entries[p.id] if bid in plan.live)
    assert live >= 2 * repo.config.pack_size, "the packs before the damaged one fill new packs"
    faulty = FaultyStore(store)
    faulty.corrupt_reads(pack_name(KIND_DATA, data[-1].id), nth=1, count=2)
    wrote: list[str] = []
    put_source = faulty.put_source
    faulty.put_source = lambda name, src: (wrote.append(name), put_source(name, src))[1]
    before = listing(store)
    with pytest.raises(DamagedRepository):
        PruneManager(Repository.open(faulty, PASSWORD, cache_root=False, connections=1)).run(ZERO)
    assert any(n.startswith("data/") for n in wrote), "new packs were written before the refusal"
    assert listing(store) == before, "a refused prune leaves the store as it found it"
