"""bk list at the engine level: the store's names, the index's blobs, foreign names left out."""

from __future__ import annotations

import pytest

from backupkit.errors import BadArgument
from backupkit.managers.listing import KINDS, list_blobs, list_objects
from tests.managers.lifecycle_util import backup, day, init_repo, local_store, write_files


@pytest.fixture
def repo(tmp_path):
    src = tmp_path / "src"
    write_files(src, {"a.txt": b"a" * 10_000, "d/b.txt": b"b"})
    r = init_repo(local_store(tmp_path / "repo"))
    r.snaps = [backup(r, src, day(0)), backup(r, src, day(1))]
    yield r
    r.close()


def test_each_kind_lists_ids(repo):
    got = {k: list(list_objects(repo, k)) for k in KINDS if k != "blobs"}
    got["blobs"] = [f"{t} {i}" for t, i in list_blobs(repo)]
    assert sorted(got["snapshots"]) == sorted(s.id for s in repo.snaps)
    assert got["locks"] == [] and len(got["keys"]) == 1 and got["index"]
    pack_ids = set(got["packs"])
    assert {b.pack.id.hex() for b in repo.index.blobs()} <= pack_ids
    assert sorted(got["blobs"]) == sorted(
        f"{'data' if b.pack.kind == 'data' else 'meta'} {b.blob_id.hex()}" for b in repo.index.blobs())


def test_a_name_bk_does_not_write_is_left_out_with_a_warning(repo):
    repo.store.put("snapshots/not-an-id", b"x")
    assert sorted(list_objects(repo, "snapshots")) == sorted(s.id for s in repo.snaps)
    assert any("not-an-id" in w for w in repo.warnings)


def test_an_unknown_kind_is_refused(repo):
    with pytest.raises(BadArgument, match="give one of"):
        list(list_objects(repo, "trees"))
    with pytest.raises(BadArgument, match="list_blobs"):
        list(list_objects(repo, "blobs"))
