"""A backup on a parent snapshot whose tree cannot be read (``backup_parent.py``): the run
says so and starts again without a parent, reading every file, and the snapshot it
writes is whole."""

from __future__ import annotations

import os
from pathlib import Path

from backupkit.managers.backup import BackupManager, BackupOptions, NullBackupReporter
from backupkit.repo.pack import pack_name
from backupkit.tree import SnapshotTree
from tests.support.kit import make_test_repo, reopen

FILES = {"a.txt": b"alpha\n", "d/b.bin": os.urandom(70_000), "d/e/c.txt": b"gamma\n"}


class Errors(NullBackupReporter):
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))


def _flip_blob(root: Path, repo, blob_id: bytes) -> None:
    """Flip one byte inside blob ``blob_id`` where its pack is stored."""
    loc = repo.index.lookup(blob_id)
    path = root / pack_name(loc.pack.kind, loc.pack.id)
    data = bytearray(path.read_bytes())
    data[loc.offset + loc.length // 2] ^= 0x55
    path.write_bytes(bytes(data))


def test_an_unreadable_parent_tree_means_a_backup_without_parent(tmp_path):
    src = tmp_path / "src"
    for rel, data in FILES.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    repo = make_test_repo(tmp_path / "repo")
    first = BackupManager(repo).run(BackupOptions(paths=(str(src),)))
    assert first.snapshot is not None and first.files_new == len(FILES)
    _flip_blob(tmp_path / "repo", repo, first.snapshot.root)
    repo.close()

    repo = reopen(repo)
    reporter = Errors()
    second = BackupManager(repo, reporter).run(BackupOptions(paths=(str(src),)))
    assert second.parent is None, "a damaged parent is not built on"
    assert second.files_read == len(FILES) and second.files_unchanged == 0
    assert not second.errors, "the restart is not a file error"
    [(path, message)] = reporter.errors
    assert path == "(parent snapshot)"
    assert "the parent snapshot's tree cannot be read" in message and "without a parent" in message
    tree = SnapshotTree(repo, second.snapshot.root)
    for rel, data in FILES.items():
        entry = tree.require(os.fsencode(src / rel))
        assert entry.size == len(data)
    repo.close()
