"""bk copy at the manager level: same chunker (blobs moved), different chunker
(re-chunked), only missing snapshots, and an interrupted copy resumed."""

from __future__ import annotations

import pytest

from backupkit.crypto import T_DATA_BLOB
from backupkit.managers.copy import CopyManager, CopyOptions, same_chunker
from backupkit.repo.repository import Repository
from backupkit.snapshot import list_snapshots
from tests.managers.lifecycle_util import (
    PASSWORD, backup, day, init_repo, local_store, open_repo, random_bytes, restored, write_files,
)
from tests.support.kit import INSECURE_TEST_KDF

CHUNKS = (16 * 1024, 32 * 1024, 128 * 1024)


@pytest.fixture
def source(tmp_path):
    src = tmp_path / "src"
    big = random_bytes(900_000, 9)
    write_files(src, {"big": big, "copy-of-big": big, "small": b"s", "empty": b"", "d/x": random_bytes(70_000, 2)})
    with open(src / "sparse", "wb") as f:
        f.truncate(2_000_000)
        f.seek(1_000_000)
        f.write(b"middle")
    r = init_repo(local_store(tmp_path / "source"))
    s1 = backup(r, src, day(0), tags=("a",))
    first = {p.name: p.read_bytes() for p in src.rglob("*") if p.is_file()}
    (src / "small").write_bytes(b"changed")
    s2 = backup(r, src, day(1), host="h2")
    r.close()
    return open_repo(local_store(tmp_path / "source")), src, (s1, s2)


def target_repo(tmp_path, source=None, pack_size=256 * 1024, name="target") -> Repository:
    kw = {}
    chunker = CHUNKS
    if source is not None:
        kw["chunker_key"] = source.keys.chunker_key
        c = source.config
        chunker = (c.chunker_min, c.chunker_avg, c.chunker_max)
    return Repository.init(local_store(tmp_path / name), PASSWORD, kdf=INSECURE_TEST_KDF, pack_size=pack_size,
                           chunker=chunker, cache_root=False, **kw)


def check_restores(src_repo, tgt, src, tmp_path, tag):
    by_time = {s.time_ns: s for s in list_snapshots(tgt)}
    for s in list_snapshots(src_repo):
        t = by_time[s.time_ns]
        assert (t.host, t.tags, t.paths, t.meta["original"]) == (s.host, s.tags, s.paths, s.id)
        assert restored(tgt, t, src, tmp_path / f"{tag}-t-{s.short_id}") == restored(src_repo, s, src, tmp_path / f"{tag}-s-{s.short_id}")


def test_same_chunker_moves_blobs_and_second_copy_adds_nothing(source, tmp_path):
    s_repo, src, (s1, s2) = source
    tgt = target_repo(tmp_path, s_repo)
    assert same_chunker(s_repo, tgt)
    res = CopyManager(s_repo, tgt).run(CopyOptions())
    assert res.same_chunker and [c.source.id for c in res.copied] == [s1.id, s2.id] and not res.skipped
    assert res.copied[1].target.parent == (res.copied[0].target.id if s2.parent == s1.id else None)
    # the data blobs are the source's, no more: big is stored once though two files hold it
    src_data = sum(1 for loc in s_repo.index.blobs() if loc.pack.kind == "data")
    tgt_data = sum(1 for loc in tgt.index.blobs() if loc.pack.kind == "data")
    assert tgt_data == src_data
    check_restores(s_repo, tgt, src, tmp_path, "same")
    again = CopyManager(s_repo, open_repo(tgt.store)).run(CopyOptions())
    assert not again.copied and len(again.skipped) == 2 and again.blobs_added == 0


def test_other_chunker_rechunks_and_filters_select(source, tmp_path):
    s_repo, src, (s1, s2) = source
    tgt = target_repo(tmp_path)
    assert not same_chunker(s_repo, tgt)
    res = CopyManager(s_repo, tgt).run(CopyOptions(hosts=("h2",)))
    assert [c.source.id for c in res.copied] == [s2.id] and res.copied[0].target.parent is None
    res = CopyManager(s_repo, tgt).run(CopyOptions(refs=(s1.id[:8], s2.id[:8])))
    assert [c.source.id for c in res.copied] == [s1.id] and [s.id for s in res.skipped] == [s2.id]
    check_restores(s_repo, tgt, src, tmp_path, "other")


def test_interrupted_copy_resumes_without_sending_again(source, tmp_path):
    s_repo, src, _snaps = source
    tgt = target_repo(tmp_path, s_repo, pack_size=64 * 1024)
    real = tgt.add_blob
    calls = [0]

    def failing(blob_type, data, blob_id=None):
        calls[0] += 1
        if calls[0] == 15:
            raise KeyboardInterrupt
        return real(blob_type, data, blob_id)

    tgt.add_blob = failing
    with pytest.raises(KeyboardInterrupt):
        CopyManager(s_repo, tgt).run(CopyOptions())
    assert list_snapshots(tgt) == []
    again = open_repo(tgt.store)
    indexed = sum(1 for loc in again.index.blobs() if loc.pack.kind == "data")
    assert indexed > 0  # what was sent before the interruption was indexed
    real2, sent_now = again.add_blob, []

    def counting(blob_type, data, blob_id=None):
        r = real2(blob_type, data, blob_id)
        if blob_type == T_DATA_BLOB and r[1]:
            sent_now.append(r[0])
        return r

    again.add_blob = counting
    res = CopyManager(s_repo, again).run(CopyOptions())
    assert len(res.copied) == 2
    full = sum(1 for loc in s_repo.index.blobs() if loc.pack.kind == "data")
    assert len(sent_now) == full - indexed  # nothing sent twice
    check_restores(s_repo, again, src, tmp_path, "resumed")
