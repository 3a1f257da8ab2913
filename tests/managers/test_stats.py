"""bk stats at the manager level: the modes' numbers on a known tree, the repository
summary, and that no data blob is read."""

from __future__ import annotations

import os

import pytest

from backupkit.errors import BadArgument, SnapshotNotFound
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
    # a backup may leave a small trie node no snapshot uses (an intermediate update)
    assert s.unused_bytes < 1000 and s.packs == s.data_packs + s.meta_packs >= 2
    assert s.data_blobs + s.meta_blobs == res.blobs + s.unused_blobs
    one = StatsManager(r).run(StatsOptions(mode="raw-data", refs=(s1.id,)))
    assert one.data_bytes_raw == 401_000 and one.blobs < res.blobs
    # forget the second snapshot: its new file's blobs and its trie nodes become unused
    remove_snapshots(r, [s2.id])
    after = StatsManager(r).run(StatsOptions()).repository
    assert after.unused_blobs > s.unused_blobs and after.unused_bytes >= 100_000 and after.snapshots == 1


def test_bad_input(repo):
    r, _src, _ = repo
    with pytest.raises(BadArgument):
        StatsManager(r).run(StatsOptions(mode="blobs"))
    with pytest.raises(SnapshotNotFound):
        StatsManager(r).run(StatsOptions(refs=("abcd1234",)))
