"""Shared by the repair tests: a three-snapshot repository and ways to damage it."""

from __future__ import annotations

import os

import pytest

from backupkit.tree import SnapshotTree
from tests.managers.lifecycle_util import backup, day, init_repo, local_store, random_bytes, write_files


@pytest.fixture
def repo3(tmp_path):
    """Three snapshots: ``only12.bin`` in the first two, ``shared.bin`` in all three,
    ``only3.bin`` in the last (each with unique content); small packs, so many of them."""
    src = tmp_path / "src"
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    write_files(src, {"shared.bin": random_bytes(100_000, 1), "only12.bin": random_bytes(60_000, 2), "sub/x.txt": b"x"})
    s1 = backup(repo, src, day(0))
    write_files(src, {"sub/y.txt": b"y"})
    s2 = backup(repo, src, day(1))
    (src / "only12.bin").unlink()
    write_files(src, {"only3.bin": random_bytes(70_000, 3)})
    s3 = backup(repo, src, day(2))
    return store, repo, (s1, s2, s3), src


def flip(store, name: str, offset: int) -> None:
    """Flip one byte of a stored object (a LocalObjectStore)."""
    path = os.path.join(store.root, name)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x55]))


def blob_location(repo, snap, path: bytes):
    """Where the first data blob of file ``path`` of ``snap`` is stored."""
    e = SnapshotTree(repo, snap.root).require(path)
    bid = next(i for i in e.content if isinstance(i, bytes))
    return repo.index.lookup(bid)
