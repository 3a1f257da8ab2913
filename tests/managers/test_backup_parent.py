"""A backup on a parent snapshot whose tree cannot be read (``backup_parent.py``): the run
says so and starts again without a parent, reading every file, and the snapshot it
writes is whole."""

from __future__ import annotations

import os
from pathlib import Path

from backupkit.managers.backup import BackupManager, BackupOptions, NullBackupReporter
from backupkit.managers.backup_parent import file_unchanged, unchanged
from backupkit.objects.entry import Entry, entry_from_stat
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


def test_one_file_whose_blob_is_damaged_is_read_again_and_its_neighbours_are_not(tmp_path):
    """The blobs of a directory's unchanged files are checked in the index all at once
    (``ParentView.all_items_indexed``); when one of them fails, each file is looked at
    on its own: only the file with the damaged blob is read again."""
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}.txt").write_bytes(f"file {i}\n".encode())
    repo = make_test_repo(tmp_path / "repo")
    first = BackupManager(repo).run(BackupOptions(paths=(str(src),)))
    assert first.files_new == 5
    entry = SnapshotTree(repo, first.snapshot.root).require(os.fsencode(src / "f3.txt"))
    repo.damaged.add(entry.content[0])
    second = BackupManager(repo).run(BackupOptions(paths=(str(src),)))
    assert (second.files_unchanged, second.files_read, second.files_changed) == (4, 1, 1)
    repo.close()


def _stat(**kw) -> os.stat_result:
    base = os.lstat(__file__)
    fields = list(base)
    names = ("st_mode", "st_ino", "st_dev", "st_nlink", "st_uid", "st_gid", "st_size")
    for i, n in enumerate(names):
        if n in kw:
            fields[i] = kw[n]
    extra = {"st_mtime_ns": kw.get("st_mtime_ns", base.st_mtime_ns), "st_ctime_ns": kw.get("st_ctime_ns", base.st_ctime_ns)}
    st = os.stat_result(fields[:10], extra | {"st_rdev": 0, "st_atime_ns": base.st_atime_ns})
    return st


def test_file_unchanged_agrees_with_unchanged_field_by_field():
    """``file_unchanged`` (the walk's shortcut for a regular file) says what ``unchanged``
    says, for a matching map and for maps differing in one field, missing one, with an
    unknown key or a device number."""
    st = _stat(st_mode=0o100644)
    m = Entry.from_wire(entry_from_stat(st).to_wire()).to_wire() | {"c": [os.urandom(32)]}
    assert unchanged(m, st, "f") and file_unchanged(m, st)
    variants = [m | {k: (v + 1 if type(v) is int else v + "x")} for k, v in m.items() if k not in ("c", "t")]
    variants += [{k: v for k, v in m.items() if k != drop} for drop in m if drop != "c"]
    variants += [m | {"zz": 1}, m | {"rd": 5}, m | {"rd": None}, m | {"t": "l"}]
    for v in variants:
        assert file_unchanged(v, st) == unchanged(v, st, "f"), v
    assert sum(file_unchanged(v, st) for v in variants) == 1  # only "rd": None still matches
