"""Small files read and sealed in worker processes (``objects/sealprocs.py``): real
processes, real files; what the snapshot holds and which errors are reported are those
of the reader threads, and a process that dies costs nothing but time."""

from __future__ import annotations

import os
import signal
from pathlib import Path

from backupkit.crypto import T_DATA_BLOB
from backupkit.errors import FileReadError
from backupkit.managers.backup import BackupManager, BackupOptions
from backupkit.managers.backup_reads import SEALING_STOPPED
from backupkit.managers.check import CheckManager, CheckOptions
from backupkit.managers.restore import RestoreManager, RestoreOptions
from backupkit.objects.writer import ContentWriter, FileContent
from backupkit.tuning import Tuning
from tests.support.kit import diff_trees, make_every_kind_tree, make_test_repo, record_tree, write_file

def sealing_children(pid: int | None = None) -> list[int]:
    """The sealing processes whose parent is ``pid`` (this process)."""
    pid = os.getpid() if pid is None else pid
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and b"sealworker" in cmd:
            out.append(int(d))
    return out


#: processes from the first small file on
AT_ONCE = Tuning(seal_processes=1, small_files_before_processes=0, small_files_per_job=16)
THREADS = Tuning(seal_processes=0)


def _small_tree(root: Path, n: int = 400) -> None:
    for i in range(n):
        write_file(root / f"d{i % 5}" / f"f{i:04d}", f"small file {i}\n".encode() * (1 + i % 30))
    write_file(root / "d0" / "dup-a", b"same content\n")
    write_file(root / "d1" / "dup-b", b"same content\n")


class OnFile:
    """A backup reporter that calls ``fn(path)`` for each file done and ignores the rest."""

    def __init__(self, fn) -> None:
        self.fn = fn

    def __getattr__(self, name):
        return lambda *a, **k: None

    def file_done(self, path, size, status):
        self.fn(path)


def _restore(repo, snap, dest: Path) -> None:
    res = RestoreManager(repo).restore(snap, RestoreOptions(target=str(dest), connections=2))
    assert not res.errors, res.errors


def test_sealed_small_gives_what_the_reader_thread_gives(tmp_path):
    src = tmp_path / "src"
    _small_tree(src, 30)
    write_file(src / "empty", b"")
    write_file(src / "big", os.urandom(3 << 20))  # more than one chunk: read by the thread
    os.setxattr(src / "d0" / "f0000", "user.note", b"\x00binary\xff")
    os.mkdir(src / "was_a_file")
    gone = src / "gone"
    batch = sorted(p for p in src.rglob("*") if p.is_file()) + [src / "was_a_file", gone]
    stats = {p: os.lstat(p) for p in batch if p != gone}
    stats[gone] = os.lstat(batch[0])  # deleted before the read
    files = [(os.fsencode(p), stats[p]) for p in batch]
    repo = make_test_repo()
    writer = ContentWriter(repo, AT_ONCE)
    procs = writer.seal_processes(1)
    try:
        assert sealing_children() == procs.pids
        sealed = procs.submit(files, [True] * len(files)).result(timeout=60)
    finally:
        procs.close(cancel=False)
    got = writer.sealed_small(files, sealed)
    threads = ContentWriter(repo, THREADS).read_small(files)
    assert len(got) == len(threads) == len(batch)
    for p, g, t in zip(batch, got, threads):
        if isinstance(t, FileReadError):
            assert isinstance(g, FileReadError) and str(g) == str(t), p
            continue
        assert isinstance(g, FileContent), p
        assert (g.items, g.bytes_read, g.size, g.changed) == (t.items, t.bytes_read, t.size, t.changed), p
    by_path = dict(zip(batch, got))
    assert by_path[src / "d0" / "f0000"].xattrs == ((b"user.note", b"\x00binary\xff"),)
    assert by_path[src / "d0" / "f0000"].xattrs_read
    assert not by_path[src / "big"].xattrs_read, "a file the thread read has its xattrs asked for by the caller"
    assert by_path[src / "empty"].items == []
    assert by_path[src / "empty"].xattrs_read, "an empty file is answered by the process, not opened again"
    assert "cannot read" in str(by_path[gone]) and "changed type" in str(by_path[src / "was_a_file"])
    # the sealed blobs are in the repository: every id the processes gave can be read
    repo.flush()
    for g in got:
        if isinstance(g, FileContent):
            for bid in g.items:
                assert repo.read_blob(bid, T_DATA_BLOB)


def test_backup_with_sealing_processes_restores_every_kind_of_file(tmp_path):
    src = tmp_path / "src"
    every = make_every_kind_tree(src, big_size=300_000, sparse_size=1 << 20)
    _small_tree(src / "many")
    repo = make_test_repo()
    seen: list[int] = []
    watch = OnFile(lambda _p: seen.append(len(sealing_children())))
    res = BackupManager(repo, watch, tuning=AT_ONCE).run(BackupOptions(paths=(str(src),)))
    assert max(seen) >= 1, "the small files went to a sealing process"
    assert not sealing_children(), "the processes end with the run"
    assert not res.errors
    _restore(repo, res.snapshot, tmp_path / "out")
    assert diff_trees(record_tree(every.root), record_tree(tmp_path / "out" / src.relative_to("/"))) == []
    check = CheckManager(repo).run(CheckOptions(read_data=True))
    assert not check.findings


def test_a_sealing_process_killed_midway_costs_nothing_but_time(tmp_path):
    src = tmp_path / "src"
    _small_tree(src, 600)
    repo = make_test_repo()
    killed: list[int] = []
    seen_files: list[str] = []

    def kill_after_200(path):
        kids = sealing_children()
        if len(seen_files) == 200 and kids and not killed:
            for k in kids:
                os.kill(k, signal.SIGKILL)
                killed.append(k)
        seen_files.append(path)

    res = BackupManager(repo, OnFile(kill_after_200), tuning=AT_ONCE).run(BackupOptions(paths=(str(src),)))
    assert killed, "a sealing process was running when the test killed it"
    assert not res.errors
    assert repo.warnings == [SEALING_STOPPED]  # said once, not per batch
    _restore(repo, res.snapshot, tmp_path / "out")
    want = {p.relative_to(src): p.read_bytes() for p in src.rglob("*") if p.is_file()}
    out = tmp_path / "out" / src.relative_to("/")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == want
    assert not CheckManager(repo).run(CheckOptions(read_data=True)).findings


def test_short_backups_start_no_process(tmp_path):
    src = tmp_path / "src"
    _small_tree(src, 50)
    repo = make_test_repo()
    seen: list[int] = []
    watch = OnFile(lambda _p: seen.append(len(sealing_children())))
    BackupManager(repo, watch, tuning=Tuning(seal_processes=1, small_files_before_processes=4096)).run(
        BackupOptions(paths=(str(src),))
    )
    assert seen and max(seen) == 0


_KILLED_SCRIPT = """
import sys, time
from backupkit.managers.backup import BackupManager, BackupOptions
from backupkit.tuning import Tuning
from tests.managers.test_sealprocs import sealing_children
from tests.support.kit import make_test_repo

class Hold:
    def __getattr__(self, name):
        return lambda *a, **k: None

    def file_done(self, path, size, status):
        kids = sealing_children()
        if kids:
            print(" ".join(str(k) for k in kids), flush=True)
            time.sleep(60)  # killed here

tuning = Tuning(seal_processes=1, small_files_before_processes=0, small_files_per_job=16)
BackupManager(make_test_repo(), Hold(), tuning=tuning).run(BackupOptions(paths=(sys.argv[1],)))
"""


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_sealing_processes_end_when_the_backup_is_killed(tmp_path):
    import subprocess
    import sys
    import time

    src = tmp_path / "src"
    _small_tree(src, 200)
    p = subprocess.Popen([sys.executable, "-c", _KILLED_SCRIPT, str(src)], stdout=subprocess.PIPE, text=True,
                         cwd=Path(__file__).resolve().parents[2])
    try:
        pids = [int(x) for x in p.stdout.readline().split()]
        assert pids, "the backup started a sealing process"
        p.kill()
        p.wait(timeout=30)
        deadline = time.monotonic() + 10
        alive = pids
        while alive and time.monotonic() < deadline:
            time.sleep(0.1)
            alive = [pid for pid in pids if _running(pid)]
        assert not alive, f"sealing processes {alive} outlived their killed backup"
    finally:
        if p.poll() is None:
            p.kill()


def test_an_answer_for_other_files_breaks_the_process_not_the_backup(tmp_path):
    from backupkit.objects.sealprocs import _BrokenSealProcess

    src = tmp_path / "src"
    _small_tree(src, 3)
    files = [(os.fsencode(p), os.lstat(p)) for p in sorted(src.rglob("f*"))]
    writer = ContentWriter(make_test_repo(), AT_ONCE)
    for bad in ([None, None], [None, None, None, None], [[b"x" * 32, 10**9, b"", False, None], None, None], [7, None, None]):
        try:
            writer.sealed_small(files, bad)
        except _BrokenSealProcess:
            continue
        raise AssertionError(f"{bad!r} was taken")


_FLOOD_SCRIPT = """
import sys
from backupkit.managers.backup import BackupManager, BackupOptions
from backupkit.tuning import Tuning
from tests.support.kit import make_test_repo

tuning = Tuning(seal_processes=1, small_files_before_processes=0)
res = BackupManager(make_test_repo(), tuning=tuning).run(BackupOptions(paths=(sys.argv[1],)))
print(res.files_new, len(res.errors))
"""


def test_many_batches_in_flight_never_block_the_pipes(tmp_path):
    """Batches are handed over faster than the process answers: its input pipe fills
    while it waits to write an answer (its output pipe full too). The backup must go on
    reading answers while it writes batches (it once held one lock for both, and hung)."""
    import subprocess
    import sys

    src = tmp_path / "src"
    for i in range(4000):  # incompressible: each answer frame is as large as its files
        write_file(src / f"d{i % 4}" / f"f{i:05d}", os.urandom(2000 + i % 500))
    r = subprocess.run([sys.executable, "-c", _FLOOD_SCRIPT, str(src)], capture_output=True, text=True, timeout=120,
                       cwd=Path(__file__).resolve().parents[2])
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["4000", "0"]


def test_answers_not_yet_taken_stay_within_their_budget(tmp_path):
    """Reader threads slower than the process: the walk waits instead of letting sealed
    answers pile up (``Tuning.sealed_batches_in_flight``)."""
    import time

    from backupkit.managers.backup_reads import FileReads
    from backupkit.managers.backup_walk import WalkStats
    from backupkit.objects.entry import entry_from_stat
    from backupkit.reporters import silent
    from backupkit.managers.backup import BackupReporter

    src = tmp_path / "src"
    _small_tree(src, 400)
    tuning = Tuning(seal_processes=1, small_files_before_processes=0, small_files_per_job=8, sealed_batches_in_flight=2)
    writer = ContentWriter(make_test_repo(), tuning)
    seen: list[int] = []
    recorded: list[bytes] = []

    def change(path, e, old):
        seen.append(reads._sealed_out)
        time.sleep(0.002)  # a slow reader thread
        return (b"k" * 16, path)

    reads = FileReads(writer, 2, WalkStats(silent(BackupReporter)()), change, lambda k, p, v: recorded.append(p))
    paths = sorted(src.rglob("*"))
    try:
        for p in paths:
            if p.is_file():
                st = os.lstat(p)
                reads.add(os.fsencode(p), None, st, entry_from_stat(st))
        reads.drain(0)
    finally:
        reads.close(cancel=False)
        writer.close()
    assert recorded == [os.fsencode(p) for p in paths if p.is_file()]
    assert max(seen) <= 2, max(seen)


def test_a_sealing_process_imports_nothing_from_the_working_directory(tmp_path):
    """A backup run from a directory someone else can write (a shared /tmp) must not run
    code from there: the process is started with -P."""
    import subprocess
    import sys

    src = tmp_path / "src"
    _small_tree(src, 100)
    evil = tmp_path / "evil"
    marker = tmp_path / "imported"
    write_file(evil / "msgpack.py", f"open({str(marker)!r}, 'w').close()\nraise SystemExit(3)\n".encode())
    write_file(evil / "backupkit" / "__init__.py", f"open({str(marker)!r}, 'w').close()\n".encode())
    root = str(Path(__file__).resolve().parents[2])
    r = subprocess.run([sys.executable, "-P", "-c", _FLOOD_SCRIPT, str(src)], capture_output=True, text=True, timeout=120,
                       cwd=evil, env={**os.environ, "PYTHONPATH": root})
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["102", "0"]  # and two of equal content
    assert not marker.exists(), "a sealing process imported a module from the working directory"
