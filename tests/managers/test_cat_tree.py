"""``LsManager.tree`` (``bk cat tree SNAP:PATH``): one directory's entries, a file's whole
content list, long ones read from their content blobs."""

from __future__ import annotations

import os

import pytest

from backupkit.crypto import T_DATA_BLOB
from backupkit.errors import BadArgument, PathNotFound
from backupkit.managers.ls import LsManager
from backupkit.tree import SnapshotTree
from tests.managers.lifecycle_util import backup, init_repo, local_store, random_bytes, write_files


def test_a_long_content_list_comes_from_its_content_blobs(tmp_path):
    src = tmp_path / "src"
    big = random_bytes(3 * 2**20, 7)  # > 64 chunks with the test chunker: a content blob
    write_files(src, {"big.bin": big, "small": b"s" * 100, "sub/x": b"x"})
    os.symlink("small", src / "link")
    repo = init_repo(local_store(tmp_path / "repo"))
    snap = backup(repo, src)
    assert SnapshotTree(repo, snap.root).require(os.fsencode(src / "big.bin")).content_blobs
    nodes = {n.name: n for n in LsManager(repo).tree(snap, str(src))}
    assert sorted(nodes) == ["big.bin", "link", "small", "sub"]
    assert (nodes["sub"].type, nodes["sub"].content) == ("dir", ())
    assert (nodes["link"].type, nodes["link"].link_target) == ("symlink", "small")
    ids = nodes["big.bin"].content
    assert len(ids) > 64 and nodes["big.bin"].size == len(big)
    assert b"".join(repo.read_blob(b, T_DATA_BLOB) for b in ids) == big
    j = nodes["big.bin"].to_json()
    assert j["content"] == [b.hex() for b in ids] and j["name"] == "big.bin"


def test_only_a_directory_of_the_snapshot(tmp_path):
    src = tmp_path / "src"
    write_files(src, {"f": b"f"})
    repo = init_repo(local_store(tmp_path / "repo"))
    snap = backup(repo, src)
    with pytest.raises(BadArgument, match="not a directory"):
        LsManager(repo).tree(snap, str(src / "f"))
    with pytest.raises(PathNotFound):
        LsManager(repo).tree(snap, str(src / "missing"))
    assert [n.name for n in LsManager(repo).tree(snap, "/")] == [src.parts[1]]


def test_a_hole_is_shown_as_its_length():
    from backupkit.managers.ls import TreeNode

    n = TreeNode("f", "file", 0o644, 0, 0, "", "", 10, 0, None, (b"\x01" * 32, 4096, b"\x02" * 32))
    assert n.to_json()["content"] == ["01" * 32, {"hole": 4096}, "02" * 32]
