"""Small files read in batches (``FileReads`` / ``ContentWriter.read_small``): the batch
changes how files are read, never what the snapshot holds or which errors are reported."""

from __future__ import annotations

import os
from pathlib import Path

from backupkit.errors import FileReadError
from backupkit.managers.backup import BackupManager, BackupOptions
from backupkit.objects.writer import ContentWriter, FileContent
from backupkit.repo.pack import KIND_DATA
from backupkit.tree import SnapshotTree
from backupkit.tuning import Tuning
from tests.support.kit import make_test_repo, write_file

#: one small file per job, nothing opened ahead: the reads as they were before batches
ONE_BY_ONE = Tuning(small_files_per_job=1, small_reads_ahead=1)


class FailingOpen:
    """Stands in for ``os``; opening a path in ``fail`` raises PermissionError."""

    def __init__(self, fail: set[bytes]) -> None:
        self.fail = fail
        self.opened: list[bytes] = []

    def __getattr__(self, name):
        return getattr(os, name)

    def open(self, path, flags, *a, **kw):
        p = os.fsencode(path)
        self.opened.append(p)
        if p in self.fail:
            raise PermissionError(13, "Permission denied")
        return os.open(path, flags, *a, **kw)


def _tree(root: Path, n: int = 300) -> list[Path]:
    """``n`` small files in three directories, two of them with equal content."""
    files = []
    for i in range(n):
        p = root / f"d{i % 3}" / f"f{i:04d}.txt"
        write_file(p, (b"same\n" if i in (5, 6) else f"file {i}\n".encode() * (1 + i % 40)))
        files.append(p)
    write_file(root / "d0" / "empty", b"")
    return files


def test_read_small_gives_what_read_file_gives_and_errors_in_place(tmp_path):
    src = tmp_path / "src"
    files = _tree(src, 40)
    sparse = src / "sparse"
    with open(sparse, "wb") as f:  # a small file with a hole: read through SEEK_DATA, not as one chunk
        f.truncate(40_000)
        f.seek(36_000)
        f.write(b"tail")
    os.mkdir(src / "was_a_file")
    gone = src / "gone.txt"
    batch = [*files[:20], src / "d0" / "empty", sparse, gone, src / "was_a_file", *files[20:]]
    stats = {p: os.lstat(p) for p in batch if p != gone}
    stats[gone] = os.lstat(files[0])  # lstat of a file that is deleted before the read
    repo = make_test_repo()
    writer = ContentWriter(repo, Tuning(small_reads_ahead=4))
    got = writer.read_small([(os.fsencode(p), stats[p]) for p in batch])
    assert len(got) == len(batch)
    for p, g in zip(batch, got):
        if p == gone:
            assert isinstance(g, FileReadError) and "cannot read" in str(g)
        elif p == src / "was_a_file":
            assert isinstance(g, FileReadError) and "changed type" in str(g)
        else:
            assert isinstance(g, FileContent)
            assert g == writer.read_file(os.fsencode(p), stats[p]), p
    hole = got[batch.index(sparse)].items[0]
    assert type(hole) is int and 0 < hole <= 36_000, "holes stay holes"
    assert got[batch.index(src / "d0" / "empty")].items == []
    writer.close()


def test_batched_backup_holds_what_one_by_one_holds(tmp_path):
    src = tmp_path / "src"
    _tree(src)
    repo = make_test_repo()
    sizes: list[int] = []  # blobs per Repository.add_blobs call: what the batching changes
    add_blobs = repo.add_blobs

    def recording(blob_type, datas, level=None):
        sizes.append(len(datas))
        return add_blobs(blob_type, datas, level)

    repo.add_blobs = recording
    one = BackupManager(repo, tuning=ONE_BY_ONE).run(BackupOptions(paths=(str(src),)))
    assert set(sizes) == {1} and sum(sizes) == 300  # every non-empty file alone
    sizes.clear()
    batched = BackupManager(repo, tuning=Tuning(small_files_per_job=7, small_reads_ahead=3)).run(
        BackupOptions(paths=(str(src),), force=True)
    )
    assert max(sizes) == 7 and sum(sizes) == 300, sizes  # 7 files' blobs a call
    assert one.errors == batched.errors == ()
    assert batched.files_new == one.files_new == 301 and batched.files_read == 301
    assert batched.snapshot.root == one.snapshot.root, "same entries, same content, same trie"
    # the equal files were stored once, by the first backup
    assert batched.blobs_added == 0
    data_blobs = [loc for loc in repo.index.blobs() if loc.pack.kind == KIND_DATA]
    assert len(data_blobs) == 299


def test_an_unreadable_file_of_a_batch_is_reported_alone(tmp_path):
    src = tmp_path / "src"
    files = _tree(src)
    bad = {os.fsencode(files[10]), os.fsencode(files[11]), os.fsencode(files[200])}
    fs = FailingOpen(bad)
    repo = make_test_repo()
    res = BackupManager(repo, tuning=Tuning(small_files_per_job=50, small_reads_ahead=8), fs=fs).run(
        BackupOptions(paths=(str(src),))
    )
    assert sorted(e.path for e in res.errors) == sorted(os.fsdecode(b) for b in bad)
    assert all("cannot read" in e.message for e in res.errors)
    assert res.files_new == 301 - 3 and res.snapshot is not None
    tree = SnapshotTree(repo, res.snapshot.root)
    for p in files:
        e = tree.get(os.fsencode(p))
        if os.fsencode(p) in bad:
            assert e is None
        else:
            assert e is not None and e.size == p.stat().st_size
            assert b"".join(repo.read_blob(b) for b in tree.content(e)) == p.read_bytes()
    # every other file was opened once (the failing ones twice: with and without O_NOATIME)
    assert sorted(fs.opened) == sorted([os.fsencode(p) for p in files] + [os.fsencode(src / "d0" / "empty")] + sorted(bad))



def test_add_blobs_on_a_repository_whose_index_is_not_loaded_yet():
    """``add_blobs`` loads the index itself (the index property takes the repository's
    lock, so it must not be read under that lock: that hung until something else had
    loaded the index). In a child process, so a hang fails the test instead of holding
    the suite."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        from backupkit.crypto import T_DATA_BLOB
        from tests.support.kit import make_test_repo, reopen
        repo = make_test_repo()
        first = repo.add_blobs(T_DATA_BLOB, [b"one", b"two"])
        repo.flush()
        fresh = reopen(repo)
        assert fresh._index is None  # the state the first batch of a new backup meets
        ids = fresh.add_blobs(T_DATA_BLOB, [b"two", b"three", b"two"])
        assert ids[0] == first[1] == ids[2] and fresh.stats["blobs_new"] == 1  # only "three" is new
        print("ok")
    """)
    root = Path(__file__).resolve().parents[2]
    try:
        r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise AssertionError("add_blobs waited on its own lock") from None
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr
