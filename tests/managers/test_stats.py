"""bk stats at the manager level: the modes' numbers on a known tree, the repository
summary, and that no data blob is read."""

from __future__ import annotations

import os

import pytest

from backupkit.errors import BadArgument, BlobNotFound, SnapshotNotFound
from backupkit.managers.stats import StatsManager, StatsOptions
from backupkit.repo.pack import KIND_DATA
from backupkit.snapshot import remove_snapshots
from tests.managers.lifecycle_util import backup, day, init_repo, local_store, open_repo, random_bytes, write_files


@pytest.fixture
def repo(tmp_path):
    src = tmp_path / "src"
    big = random_bytes(400_000, 3)
    write_files(src, {"a": big, "d/b": big, "d/c": b"c" * 1000, "e": b""})
    os.link(src / "d/c", src / "d/c2")  # a hard link: counted once
    os.symlink("a", src / "l")
    r = init_repo(local_store(tmp_path / "repo"))
    s1 = backup(r, src, day(0))
    (src / "new").write_bytes(random_bytes(100_000, 4))
    s2 = backup(r, src, day(1), host="h2")
    r.close()
    r = open_repo(local_store(tmp_path / "repo"))
    data_reads = []
    real = r.read_blob

    def read_blob(bid, blob_type=None):
        loc = r.index.lookup(bid)
        if loc is not None and loc.pack.kind == KIND_DATA:
            data_reads.append(bid)
        return real(bid, blob_type)

    r.read_blob = read_blob
    yield r, src, (s1, s2)
    assert data_reads == []


def dirs_above(src) -> int:
    return len(src.parts)  # "/", and each component of src (the source directory included)


def test_restore_size(repo):
    r, src, (s1, s2) = repo
    res = StatsManager(r).run(StatsOptions(refs=(s1.id,)))
    assert (res.files, res.others, res.bytes) == (4, 1, 800_000 + 1000)  # a, d/b, d/c(+c2 once), e; the symlink
    assert res.dirs == dirs_above(src) + 1
    both = StatsManager(r).run(StatsOptions())
    assert both.files == 4 + 5 and both.bytes == 2 * 801_000 + 100_000
    j = both.to_json()
    assert j["total_size"] == both.bytes and j["snapshots_count"] == 2


def test_files_by_contents(repo):
    r, _src, (s1, s2) = repo
    res = StatsManager(r).run(StatsOptions(mode="files-by-contents"))
    # big (a and d/b), c, the empty file, new
    assert (res.files, res.bytes) == (4, 400_000 + 1000 + 100_000)
    res = StatsManager(r).run(StatsOptions(mode="files-by-contents", hosts=("h1",)))
    assert res.files == 3


def test_blobs_per_file(repo):
    """restic's blobs-per-file: each distinct content once, at the first path found, its
    blobs once per path; an empty file has no blob and is not counted."""
    r, _src, (s1, s2) = repo
    res = StatsManager(r).run(StatsOptions(mode="blobs-per-file"))
    # big (a or d/b), c (d/c or d/c2), new; no blob is shared between them
    assert (res.files, res.bytes) == (3, 400_000 + 1000 + 100_000)
    data_ids = _data_blob_ids(r)
    assert data_ids and res.blobs == len(data_ids)
    j = res.to_json()
    assert (j["total_file_count"], j["total_blob_count"], j["total_size"]) == (3, res.blobs, res.bytes)
    one = StatsManager(r).run(StatsOptions(mode="blobs-per-file", refs=(s1.id,)))
    assert (one.files, one.bytes) == (2, 401_000)


def _data_blob_ids(r) -> set[bytes]:
    return {loc.blob_id for loc in r.index.blobs() if loc.pack.kind == KIND_DATA}


def test_blobs_per_file_counts_a_path_whose_content_changed_by_its_new_blobs(tmp_path):
    """The same path with new content in a later snapshot: not a new file, its new blobs
    only (restic keys the blob sets by path)."""
    src = tmp_path / "src"
    head, tail1, tail2 = random_bytes(3_000_000, 5), random_bytes(2_000_000, 6), random_bytes(2_000_000, 7)
    write_files(src, {"f": head + tail1})
    r = init_repo(local_store(tmp_path / "repo"))
    backup(r, src, day(0))
    write_files(src, {"f": head + tail2})
    backup(r, src, day(1))
    res = StatsManager(r).run(StatsOptions(mode="blobs-per-file"))
    index = r.index
    every = sum(loc.raw_length for loc in index.blobs() if loc.pack.kind == KIND_DATA)
    assert res.files == 1
    assert res.bytes == every  # each blob of f's two contents once
    assert res.blobs == sum(1 for loc in index.blobs() if loc.pack.kind == KIND_DATA)
    assert res.bytes < 2 * 5_000_000  # the shared head's blobs counted once


def test_blobs_per_file_stops_at_a_blob_the_index_lacks(repo):
    r, _src, _snaps = repo
    victim = next(iter(_data_blob_ids(r)))
    index = r.index
    real = index.lookup
    index.lookup = lambda bid: None if bid == victim else real(bid)
    with pytest.raises(BlobNotFound, match="not in the index; run bk check"):
        StatsManager(r).run(StatsOptions(mode="blobs-per-file"))


def test_raw_data_and_summary(repo):
    r, _src, (s1, s2) = repo
    res = StatsManager(r).run(StatsOptions(mode="raw-data"))
    assert res.data_bytes_raw == 400_000 + 1000 + 100_000
    assert res.blob_bytes_raw > res.data_bytes_raw and res.blob_bytes_stored > 0
    assert res.restore_bytes == 2 * 801_000 + 100_000
    j = res.to_json()
    assert j["dedup_ratio"] == round(res.restore_bytes / res.data_bytes_raw, 4)
    s = res.repository
    assert s.snapshots == 2 and s.snapshots_per_host == {"h1": 1, "h2": 1}
    assert s.unused_blobs is None and s.unused_bytes is None  # not asked for
    assert res.to_json()["repository"]["unused_bytes"] is None and j["total_blob_count"] == res.blobs
    s = StatsManager(r).run(StatsOptions(mode="raw-data", unused=True)).repository
    # a backup may leave a small trie node no snapshot uses (an intermediate update)
    assert s.unused_bytes < 1000 and s.packs == s.data_packs + s.meta_packs >= 2
    assert s.data_blobs + s.meta_blobs == res.blobs + s.unused_blobs
    one = StatsManager(r).run(StatsOptions(mode="raw-data", refs=(s1.id,)))
    assert one.data_bytes_raw == 401_000 and one.blobs < res.blobs
    # forget the second snapshot: its new file's blobs and its trie nodes become unused
    remove_snapshots(r, [s2.id])
    after = StatsManager(r).run(StatsOptions(unused=True)).repository
    assert after.unused_blobs > s.unused_blobs and after.unused_bytes >= 100_000 and after.snapshots == 1


def test_bad_input(repo):
    r, _src, _ = repo
    with pytest.raises(BadArgument):
        StatsManager(r).run(StatsOptions(mode="blobs"))
    with pytest.raises(SnapshotNotFound):
        StatsManager(r).run(StatsOptions(refs=("abcd1234",)))


def counting_meta_reads(r):
    """Wrap ``r.read_blob``: a Counter of the metadata blobs read, by id."""
    from collections import Counter

    reads: Counter = Counter()
    inner = r.read_blob

    def read_blob(bid, blob_type=None):
        reads[bid] += 1
        return inner(bid, blob_type)

    r.read_blob = read_blob
    return reads


def test_the_reachability_walk_only_when_asked(repo):
    """restore-size of one snapshot reads only that snapshot's trie, not every snapshot's
    (the unused space, which needs them all, is counted with ``unused`` only); raw-data
    reads each trie node and content blob once, and counts the same blobs as ``mark``."""
    from backupkit.managers.reachable import mark

    r, _src, (s1, s2) = repo
    only_s1 = mark(r, [s1]).meta
    only_s2 = mark(r, [s2]).meta - only_s1
    assert only_s2
    reads = counting_meta_reads(r)
    StatsManager(r).run(StatsOptions(refs=(s1.id,)))
    assert not set(reads) & only_s2
    reads.clear()
    StatsManager(r).run(StatsOptions(refs=(s1.id,), unused=True))
    assert set(reads) >= only_s2
    reads.clear()
    res = StatsManager(r).run(StatsOptions(mode="raw-data", unused=True))
    assert reads and max(reads.values()) == 1
    assert res.blobs == len(mark(r, [s1, s2]).all)
