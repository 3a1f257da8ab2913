"""CoalescingReader: wanted blobs of one pack fetched with one range request."""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from backupkit.crypto import T_DATA_BLOB
from backupkit.repo.coalesce import CoalescingReader
from backupkit.repo.repository import Repository
from backupkit.store.memory import MemoryObjectStore
from tests.support.faulty import FaultyStore
from tests.support.kit import PASSWORD, make_test_repo


@pytest.fixture(scope="module")
def stored():
    """A repository holding 300 small blobs and 3 large ones (a few packs)."""
    store = MemoryObjectStore()
    repo = make_test_repo(store, pack_size=1024 * 1024)
    rnd = random.Random(1)
    blobs = {}
    for i in range(300):
        data = rnd.randbytes(rnd.randrange(100, 3000))
        blobs[repo.add_blob(T_DATA_BLOB, data)[0]] = data
    for _ in range(3):
        data = os.urandom(400_000)
        blobs[repo.add_blob(T_DATA_BLOB, data)[0]] = data
    repo.flush()
    return store, blobs


def reopen(store, slow=0.0):
    faulty = FaultyStore(store)
    ranges = []
    def hook(op, name):
        if op == "get_range":
            ranges.append(name)
            time.sleep(slow)
    faulty.set_hook(hook)
    return Repository.open(faulty, PASSWORD, cache_root=False), ranges


def test_expected_blobs_of_a_pack_come_in_few_requests(stored):
    store, blobs = stored
    repo, ranges = reopen(store)
    reader = CoalescingReader(repo, gap=1 << 20)
    ids = list(blobs)
    for bid in ids:
        reader.expect(bid)
    got = {bid: reader.read(bid, T_DATA_BLOB) for bid in ids}
    assert got == blobs
    packs = {repo.index.lookup(b).pack.id for b in ids}
    assert len(ranges) <= 2 * len(packs), (len(ranges), len(packs))  # not one per blob
    assert reader.coalesced >= len(ids) - len(ranges)
    assert reader._arrived == {} and not reader._expected and not reader._pending


def test_unexpected_reads_and_a_zero_gap_read_alone(stored):
    store, blobs = stored
    repo, ranges = reopen(store)
    reader = CoalescingReader(repo, gap=0)
    for bid in list(blobs)[:50]:
        assert reader.read(bid, T_DATA_BLOB) == blobs[bid]  # never expected
    assert len(ranges) == 50


def test_a_blob_expected_twice_is_served_twice(stored):
    store, blobs = stored
    repo, _ranges = reopen(store)
    reader = CoalescingReader(repo, gap=1 << 20)
    ids = list(blobs)[:20]
    for bid in ids + ids:
        reader.expect(bid)
    for bid in ids + ids:
        assert reader.read(bid, T_DATA_BLOB) == blobs[bid]
    assert not reader._expected and reader._arrived == {}


def test_budget_bounds_what_is_held(stored):
    store, blobs = stored
    repo, _ranges = reopen(store)
    reader = CoalescingReader(repo, gap=1 << 20, budget=10_000)
    ids = list(blobs)
    for bid in ids:
        reader.expect(bid)
    for bid in reversed(ids):  # worst order: most runs fetched early are dropped
        assert reader.read(bid, T_DATA_BLOB) == blobs[bid]
        assert reader._held <= 10_000 + 3000


def test_damaged_run_bytes_fall_back_to_a_verified_read(stored):
    store, blobs = stored
    faulty = FaultyStore(store)
    faulty.corrupt_reads(lambda n: n.startswith("data/"), mode="flip", nth=1, count=1)
    repo = Repository.open(faulty, PASSWORD, cache_root=False)
    reader = CoalescingReader(repo, gap=1 << 20)
    ids = list(blobs)
    for bid in ids:
        reader.expect(bid)
    assert {bid: reader.read(bid, T_DATA_BLOB) for bid in ids} == blobs


def test_concurrent_readers_on_a_slow_store(stored):
    store, blobs = stored
    repo, ranges = reopen(store, slow=0.005)
    reader = CoalescingReader(repo, gap=1 << 20)
    ids = list(blobs) * 2
    random.Random(3).shuffle(ids)
    for bid in ids:
        reader.expect(bid)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(lambda b: (b, reader.read(b, T_DATA_BLOB)), ids))
    assert all(blobs[b] == d for b, d in got)
    assert len(ranges) < len(ids) / 5, len(ranges)
    assert not reader._expected and reader._arrived == {} and not reader._fetching


def test_restore_of_many_small_files_makes_few_requests(tmp_path):
    from backupkit.managers.backup import BackupManager, BackupOptions
    from backupkit.managers.restore import RestoreManager, RestoreOptions
    from backupkit.snapshot import find_snapshot

    src = tmp_path / "src"
    rnd = random.Random(5)
    files = {}
    for i in range(400):
        p = src / f"d{i % 8}" / f"f{i}.txt"
        p.parent.mkdir(parents=True, exist_ok=True)
        files[p] = rnd.randbytes(rnd.randrange(10, 4000))
        p.write_bytes(files[p])
    store = MemoryObjectStore()
    repo = make_test_repo(store)
    BackupManager(repo).run(BackupOptions(paths=(str(src),)))
    repo.flush()
    slow, ranges = reopen(store, slow=0.002)
    snap = find_snapshot(slow, "latest")
    res = RestoreManager(slow).restore(snap, RestoreOptions(target=str(tmp_path / "out"), connections=8))
    assert res.errors == () and res.files == 400
    for p, data in files.items():
        assert (tmp_path / "out" / str(p).lstrip("/")).read_bytes() == data
    print(f"{len(ranges)} range requests for 400 files")
    assert len(ranges) < 400 / 4, len(ranges)  # one request per file before
