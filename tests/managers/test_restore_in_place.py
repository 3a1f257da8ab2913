"""Restore writes a file under its real name when nothing is at its place (no temporary
name, no rename), and through a temporary name only over something that is there; a
restore killed in the middle leaves partial files under their real names, which a re-run
rewrites; files this restore created in a fresh target are not chowned to the owner they
already have."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import backupkit.managers.restore_write as restore_write
from backupkit.managers.restore import RestoreManager, RestoreOptions
from tests.managers.lifecycle_util import backup, init_repo, local_store, open_repo, random_bytes, tree_bytes, write_files

KiB = 1024
ROOT = Path(__file__).resolve().parents[2]


def _created_names(monkeypatch) -> list[bytes]:
    """Record the name every restored file is created under."""
    names: list[bytes] = []
    real = restore_write.create_pending

    def spy(pfd: int, tmp: bytes, *mode) -> int:
        names.append(tmp)
        return real(pfd, tmp, *mode)

    monkeypatch.setattr(restore_write, "create_pending", spy)
    return names


def test_a_fresh_target_gets_every_file_under_its_real_name(tmp_path, monkeypatch):
    src = tmp_path / "src"
    files = {f"d{i % 3}/f{i}": random_bytes(1000 * i, i) for i in range(12)}  # f0 is empty
    write_files(src, files)
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    names = _created_names(monkeypatch)
    renames: list = []
    real_rename = os.rename
    monkeypatch.setattr(os, "rename", lambda *a, **kw: (renames.append(a), real_rename(*a, **kw)))
    out = tmp_path / "out"
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(out), connections=2))
    assert not res.errors, res.errors
    assert tree_bytes(out / src.relative_to("/")) == tree_bytes(src)
    assert sorted(names) == sorted(os.fsencode(Path(n).name) for n in files)
    assert renames == []


def test_only_a_file_that_is_there_is_written_through_a_temporary_name(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_files(src, {"a": b"new a" * 100, "b": b"new b" * 100, "c": b"c" * 10})
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    out = tmp_path / "out"
    old = out / src.relative_to("/")
    write_files(old, {"a": b"old a"})
    os.symlink("/nonexistent-elsewhere", old / "b")  # replaced by the file, never followed
    names = _created_names(monkeypatch)
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(out), connections=2, overwrite="always"))
    assert not res.errors, res.errors
    assert tree_bytes(old) == tree_bytes(src)
    assert not os.path.lexists("/nonexistent-elsewhere")
    temps = [n for n in names if n.startswith(b".bk-restore-")]
    assert len(temps) == 2 and sorted(n for n in names if n not in temps) == [b"c"]


def test_a_file_is_sized_only_when_its_last_bytes_were_not_written(tmp_path, monkeypatch):
    """No ``ftruncate`` for a file whose data reaches its end (one system call a file);
    one for a file ending in a hole, or in zeros a sparse restore skips, which still ends
    at the snapshot's size."""
    src = tmp_path / "src"
    files = {"a": random_bytes(300 * KiB, 1), "b": b"b" * 5000, "c": random_bytes(10, 2), "zeros": bytes(512 * KiB)}
    write_files(src, files)
    with open(src / "holey", "wb") as f:  # data, then a hole to the end
        f.write(random_bytes(64 * KiB, 3))
        f.truncate(64 * KiB + 1024 * KiB)
    files["holey"] = (src / "holey").read_bytes()
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    sized: list[int] = []
    real = os.ftruncate
    monkeypatch.setattr(os, "ftruncate", lambda fd, n: (sized.append(n), real(fd, n))[1])
    out = tmp_path / "out"
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(out), connections=2))
    assert not res.errors, res.errors
    assert tree_bytes(out / src.relative_to("/")) == files
    assert sorted(sized) == sorted([len(files["zeros"]), len(files["holey"])])


def test_files_reach_the_create_pool_in_batches(tmp_path, monkeypatch):
    """One task per ``restore_create_batch`` files, not one per file (each hand-off woke
    the pool's thread and passed the GIL); every file still restored exactly."""
    import backupkit.managers.restore_dir as restore_dir

    src = tmp_path / "src"
    files = {f"d{i % 4}/f{i}": random_bytes(100 + i, i) for i in range(70)}
    write_files(src, files)
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    tasks: list[int] = []

    class Counting(restore_dir.ThreadPoolExecutor):
        def submit(self, fn, *args, **kw):
            if self._thread_name_prefix == "bk-create":
                tasks.append(len(args[0]) if args else 1)
            return super().submit(fn, *args, **kw)

    monkeypatch.setattr(restore_dir, "ThreadPoolExecutor", Counting)
    out = tmp_path / "out"
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(out), connections=2))
    assert not res.errors, res.errors
    assert tree_bytes(out / src.relative_to("/")) == files
    assert sum(tasks) == 70 and len(tasks) == 5  # 16 + 16 + 16 + 16 + 6


def test_a_file_that_cannot_be_restored_leaves_nothing_under_its_real_name(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_files(src, {"bad": random_bytes(300 * KiB, 1), "good": random_bytes(50 * KiB, 2)})
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    real_write = restore_write.PendingFile.write

    def write(self, offset: int, data: bytes) -> None:
        if self.name == b"bad" and offset:
            raise OSError(5, "Input/output error")  # after its first blob is on disk
        real_write(self, offset, data)

    monkeypatch.setattr(restore_write.PendingFile, "write", write)
    out = tmp_path / "out"
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(out), connections=2))
    assert [p for p, _m in res.errors] == [str(src / "bad")]
    assert tree_bytes(out / src.relative_to("/")) == {"good": (src / "good").read_bytes()}


@pytest.mark.parametrize("overwrite", ["if-changed", "always"])
def test_a_restore_killed_midway_leaves_partial_files_a_rerun_rewrites(tmp_path, overwrite):
    src = tmp_path / "src"
    files = {"big": random_bytes(600 * KiB, 1), "small": b"s" * 100}
    write_files(src, files)
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    out = tmp_path / "out"
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(ROOT)!r})
        import backupkit.managers.restore_write as rw
        from backupkit.managers.restore import RestoreManager, RestoreOptions
        from backupkit.snapshot import load_snapshot
        from tests.managers.lifecycle_util import local_store, open_repo

        real = rw.PendingFile.write
        def write(self, offset, data):
            real(self, offset, data)
            if self.name == b"big":  # killed once part of it is written
                os.kill(os.getpid(), signal.SIGKILL)
        rw.PendingFile.write = write
        repo = open_repo(local_store({str(tmp_path / "repo")!r}))
        RestoreManager(repo).restore(load_snapshot(repo, {snap.id!r}),
                                     RestoreOptions(target={str(out)!r}, connections=1))
    """)
    p = subprocess.run([sys.executable, "-c", script], capture_output=True, cwd=ROOT, timeout=120)
    assert p.returncode == -signal.SIGKILL, p.stderr.decode()
    partial = out / src.relative_to("/") / "big"
    # sized only when complete: what was written so far, at most the snapshot's size
    assert 0 < partial.stat().st_size <= len(files["big"]) and partial.read_bytes() != files["big"]
    assert partial.stat().st_mtime_ns != (src / "big").stat().st_mtime_ns
    assert not partial.stat().st_mode & 0o7022  # 0600 or its final mode: never set-id, never writable by others

    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(out), connections=2, overwrite=overwrite))
    assert not res.errors, res.errors
    assert tree_bytes(out / src.relative_to("/")) == files
    assert partial.stat().st_mtime_ns == (src / "big").stat().st_mtime_ns


def _chowns(monkeypatch) -> list:
    calls: list = []
    real = os.chown
    monkeypatch.setattr(os, "chown", lambda target, *a, **kw: (calls.append(target), real(target, *a, **kw)))
    return calls


def test_files_created_in_a_fresh_target_are_not_chowned_to_the_owner_they_have(tmp_path, monkeypatch):
    src = tmp_path / "src"
    write_files(src, {f"d/f{i}": b"%d" % i * 50 for i in range(6)})
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    dirs = len(src.relative_to("/").parts) + 2  # the target's "/", the path to src, src, d
    calls = _chowns(monkeypatch)
    out = tmp_path / "fresh"
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(out), connections=2, owners=True))
    assert not res.errors, res.errors
    assert len(calls) == dirs and all(isinstance(c, int) for c in calls)  # directories only

    calls.clear()
    empty = tmp_path / "empty"
    empty.mkdir()  # given empty: as fresh as one the restore makes (but its "/" is not applied)
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(empty), connections=2, owners=True))
    assert not res.errors, res.errors
    assert len(calls) == dirs - 1 and all(isinstance(c, int) for c in calls)  # directories only
    assert tree_bytes(empty) == tree_bytes(out)

    calls.clear()
    there = tmp_path / "there"
    there.mkdir()
    (there / "other").write_bytes(b"not the snapshot's")  # not empty: each place is looked at
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(there), connections=2, owners=True))
    assert not res.errors, res.errors
    assert len(calls) == dirs - 1 + 6  # not the target itself; every file
    (there / "other").unlink()
    assert tree_bytes(there) == tree_bytes(out)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give the target another group")
def test_files_in_an_empty_target_of_another_group_are_chowned(tmp_path, monkeypatch):
    """A target whose group is not the running one (a file system with BSD group
    semantics gives new files the directory's group): every file's owner is set."""
    src = tmp_path / "src"
    write_files(src, {f"d/f{i}": b"%d" % i * 50 for i in range(6)})
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    dirs = len(src.relative_to("/").parts) + 2
    target = tmp_path / "other-group"
    target.mkdir()
    os.chown(target, -1, os.getegid() + 1)
    calls = _chowns(monkeypatch)
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(target), connections=2, owners=True))
    assert not res.errors, res.errors
    assert len(calls) == dirs - 1 + 6
    assert all(os.lstat(p).st_gid == os.getegid() for p in target.rglob("f*"))
