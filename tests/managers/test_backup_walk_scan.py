"""The backup walk on ``backupkit.dirscan``: a directory listed and lstat'ed in one call,
read ahead by a thread; the snapshot is the same with and without the read-ahead, an
entry whose lstat fails is reported and left out, and the progress totals count what
the walk backs up."""

from __future__ import annotations

import dataclasses
import os
import shutil

from backupkit.managers.backup import BackupManager, BackupOptions, NullBackupReporter
from backupkit.tree import SnapshotTree
from backupkit.tuning import Tuning
from tests.support.kit import make_test_repo
from tests.test_dirscan import odd_tree


class Recorder(NullBackupReporter):
    def __init__(self) -> None:
        self.errors: list[tuple[str, str]] = []
        self.totals: list[tuple[int, int, bool]] = []

    def error(self, path: str, message: str) -> None:
        self.errors.append((path, message))

    def scan_total(self, files: int, size: int, done: bool) -> None:
        self.totals.append((files, size, done))


def snapshot_entries(repo, snap) -> dict[bytes, object]:
    return {p: e for p, e in SnapshotTree(repo, snap.root).walk(b"/")}


def make_tree(root) -> None:
    odd_tree(root)
    for i in range(300):  # more than one batch of unchanged files in one directory
        (root / "many").mkdir(exist_ok=True)
        (root / "many" / f"{i:04}").write_bytes(b"%d" % i)
    (root / "skipme").mkdir()
    (root / "skipme" / "x").write_bytes(b"excluded")
    (root / "tagged").mkdir()
    (root / "tagged" / ".nobackup").write_bytes(b"")
    (root / "tagged" / "gone").write_bytes(b"left out by the tag")


def test_the_snapshot_is_the_same_with_and_without_the_read_ahead(tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    opts = dict(paths=(str(src),), excludes=("*/skipme",), exclude_if_present=(".nobackup",))
    got = {}
    for label, tuning in (("ahead", Tuning()), ("none", Tuning(walk_read_ahead=0))):
        repo = make_test_repo(tmp_path / f"repo-{label}")
        first = BackupManager(repo, tuning=tuning).run(BackupOptions(**opts))
        assert not first.errors
        again = BackupManager(repo, tuning=tuning).run(BackupOptions(**opts))
        assert again.files_read == 0 and again.files_unchanged == first.files_new
        got[label] = {
            p: (e.type, e.size, e.mode, e.mtime, e.inode, e.target)
            for p, e in snapshot_entries(repo, again.snapshot).items()
            if p.startswith(os.fsencode(src))  # (its ancestors change as the repositories are made)
        }
        repo.close()
    assert got["ahead"] == got["none"]
    paths = set(got["ahead"])
    assert os.fsencode(src / "many" / "0299") in paths and os.fsencode(src / "a-b" / "f") in paths
    assert not any(b"skipme" in p or p.endswith(b"/gone") for p in paths)


def test_an_entry_whose_lstat_fails_is_reported_and_left_out(tmp_path):
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    for n in ("a", "b", "c"):
        (src / "d" / n).write_bytes(n.encode())
    bad = os.fsencode(src / "d" / "b")

    class FailingLstat:
        def __getattr__(self, name):
            return getattr(os, name)

        def lstat(self, p, *a, **kw):
            if os.fsencode(p) == bad:
                raise PermissionError(13, "Permission denied", p)
            return os.lstat(p, *a, **kw)

    repo = make_test_repo(tmp_path / "repo")
    rec = Recorder()
    res = BackupManager(repo, rec, fs=FailingLstat()).run(BackupOptions(paths=(str(src),), scan_totals=False))
    assert [(e.path, e.message) for e in res.errors] == [(str(src / "d" / "b"), "Permission denied")]
    paths = set(snapshot_entries(repo, res.snapshot))
    assert os.fsencode(src / "d" / "a") in paths and bad not in paths


def test_the_progress_totals_count_what_the_walk_backs_up(tmp_path):
    src = tmp_path / "src"
    make_tree(src)
    repo = make_test_repo(tmp_path / "repo")
    rec = Recorder()
    res = BackupManager(repo, rec).run(BackupOptions(paths=(str(src),), excludes=("*/skipme",)))
    files, size, done = rec.totals[-1]
    assert done
    assert (files, size) == (res.files_new, res.bytes_total)
    # many/*, a/file, a-b/f, the non-UTF-8 one, top and its hard link, tagged/* (no tag
    # rule in this run); not skipme/x
    assert files == 300 + 5 + 2


def test_the_warming_started_before_the_repository_opened_stops_when_the_walk_begins(tmp_path):
    """``run(opts, warming)``: a backup started with ``dirscan.warm`` of its sources stops
    the warmer before it walks (the walk's read-ahead takes over), and the snapshot is
    the one a run without it makes."""
    from backupkit import dirscan

    make_tree(tmp_path / "src")
    repo = make_test_repo()
    events: list[str] = []

    class Spy(dirscan.Warming):
        def close(self) -> None:
            events.append("closed")
            super().close()

    class Seen(Recorder):
        def file_done(self, path: str, size: int, status: str) -> None:
            events.append("file")

    warming = Spy(dirscan.warm([str(tmp_path / "src")])._handles)
    assert len(warming.counts()) == 1
    opts = BackupOptions(paths=(str(tmp_path / "src"),))
    res = BackupManager(repo, Seen()).run(opts, warming)
    assert events[0] == "closed" and "file" in events and warming.counts() == []
    plain = BackupManager(repo, Recorder()).run(dataclasses.replace(opts, force=True))
    assert snapshot_entries(repo, res.snapshot) == snapshot_entries(repo, plain.snapshot)


def test_files_matched_a_directory_at_once_back_up_as_one_by_one(tmp_path, monkeypatch):
    """The walk's whole-directory match (``Matcher.directory``, no exclusions) and its
    loop over each entry give the same snapshots and counts: files changed in content,
    metadata or type, added, removed, and files whose blobs the index no longer holds
    (read again, their lstats taken from the listing)."""
    from backupkit.managers import backup_walk

    src = tmp_path / "src"

    def make() -> None:
        shutil.rmtree(src, ignore_errors=True)
        odd_tree(src)
        (src / "many").mkdir()
        for i in range(600):
            (src / "many" / f"{i:04}").write_bytes(b"%d" % i)

    def change() -> None:
        (src / "many" / "0001").write_bytes(b"new content")
        os.chmod(src / "many" / "0002", 0o600)
        (src / "many" / "0003").unlink()
        (src / "many" / "0004").unlink()
        (src / "many" / "0004").mkdir()
        (src / "many" / "new").write_bytes(b"added")
        os.utime(src / "many" / "0005", ns=(1, 2))

    got = {}
    for label in ("whole", "one by one"):
        if label == "one by one":
            monkeypatch.setattr(backup_walk, "content_matcher", lambda: None)
        make()
        repo = make_test_repo(tmp_path / f"repo-{label}")
        opts = BackupOptions(paths=(str(src),))
        runs = [BackupManager(repo).run(opts)]
        change()
        runs.append(BackupManager(repo).run(opts))
        # blobs of two unchanged files treated as damaged: those files are read again
        lost = {e.content[0] for p, e in snapshot_entries(repo, runs[-1].snapshot).items()
                if p.endswith((b"/0100", b"/0101")) and e.content}
        repo.damaged.update(lost)
        runs.append(BackupManager(repo).run(opts))
        assert len(lost) == 2 and runs[-1].files_read == 2
        got[label] = (
            [(r.files_new, r.files_changed, r.files_unchanged, r.files_read, len(r.errors)) for r in runs],
            {p: (e.type, e.size, e.mode) for p, e in snapshot_entries(repo, runs[-1].snapshot).items()
             if p.startswith(os.fsencode(src))},
        )
        repo.close()
    assert got["whole"] == got["one by one"]
    assert got["whole"][0][1][1] == 3  # 0001 (content), 0002 (mode), 0005 (times)
