"""check --read-data with verifying processes (``repo/packverify.py``): real processes,
real packs; they find exactly what the check's own threads find, and one that dies or
answers nonsense costs nothing but time."""

from __future__ import annotations

import os
import signal
from concurrent.futures import Future

import pytest

from backupkit.managers.check import CheckManager, CheckOptions
from backupkit.procs import BrokenWorker
from backupkit.repo.pack import pack_name
from backupkit.repo.packverify import verify_pack
from backupkit.repo.verifyprocs import VerifyProcesses
from backupkit.tuning import Tuning
from tests.managers.lifecycle_util import open_repo
from tests.managers.repair_util import blob_location, flip, repo3  # noqa: F401 (repo3 is a fixture)
from tests.support.procs import worker_children

#: every pack to a verifying process while one is idle, however little is read
PROCS = Tuning(verify_processes=1, verify_processes_from_bytes=0)
THREADS = Tuning(verify_processes=0)


class Watch:
    """A check reporter that calls ``on_pack()`` after each pack read and counts the
    verifying processes it saw alive."""

    def __init__(self, on_pack=None) -> None:
        self.on_pack = on_pack
        self.seen: set[int] = set()

    def phase(self, name, total):
        pass

    def finding(self, finding):
        pass

    def advance(self, n=1):
        self.seen.update(worker_children("verify"))
        if self.on_pack is not None:
            self.on_pack()


def _findings(res):
    return [(f.severity, f.kind, f.object, f.message, f.snapshots, f.paths) for f in res.findings]


def _damage(store, repo, snaps, src) -> None:
    """A flipped byte in a data blob and one in another pack's header."""
    s1 = snaps[0]
    loc = blob_location(repo, s1, os.fsencode(src / "only12.bin"))
    flip(store, pack_name(loc.pack.kind, loc.pack.id), loc.offset + loc.length // 2)
    other = next(p for p in repo.index.packs() if p.id != loc.pack.id)
    flip(store, pack_name(other.kind, other.id), other.size - 10)


def test_processes_find_exactly_what_threads_find(repo3):
    store, repo, snaps, src = repo3
    watch = Watch()
    clean = CheckManager(open_repo(store), watch, PROCS).run(CheckOptions(read_data=True))
    assert clean.ok and clean.findings == () and clean.packs_read == clean.packs
    assert watch.seen, "no verifying process ran"
    assert worker_children("verify") == []  # ended with the check

    _damage(store, repo, snaps, src)
    by_threads = CheckManager(open_repo(store), Watch(), THREADS).run(CheckOptions(read_data=True))
    watch = Watch()
    by_procs = CheckManager(open_repo(store), watch, PROCS).run(CheckOptions(read_data=True))
    assert watch.seen
    kinds = {f.kind for f in by_procs.errors}
    assert {"blob_corrupt", "pack_header"} <= kinds
    assert _findings(by_procs) == _findings(by_threads)
    assert by_procs.packs_read == by_threads.packs_read and by_procs.bytes_read == by_threads.bytes_read


def test_a_killed_verifying_process_costs_nothing_but_time(repo3):
    store, repo, snaps, src = repo3
    _damage(store, repo, snaps, src)
    expected = _findings(CheckManager(open_repo(store), Watch(), THREADS).run(CheckOptions(read_data=True)))
    killed: list[int] = []

    def kill_them():
        for pid in worker_children("verify"):
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    res = CheckManager(open_repo(store), Watch(kill_them), PROCS).run(CheckOptions(read_data=True))
    assert killed
    assert _findings(res) == expected
    assert res.packs_read == res.packs
    assert worker_children("verify") == []


class _Answers:
    """A pool whose process answers ``answer`` (the nonsense a broken process could send)."""

    def __init__(self, answer) -> None:
        self.answer = answer

    def submit(self, job, raw=b"", idle_only=False):
        fut: Future = Future()
        fut.set_result(self.answer)
        return fut


@pytest.mark.parametrize(
    "answer",
    [[], [None], [7, []], [None, [[b"not a blob of this pack", "bad"]]], [None, [[None, "x"]]], [None, 5], [None, [[b"x"]]]],
)
def test_a_nonsense_answer_is_a_broken_process_not_a_verdict(repo3, answer):
    _store, repo, _snaps, _src = repo3
    p = next(iter(repo.index.packs()))
    entries = {b.blob_id: (b.offset, b.length, b.raw_length) for b in repo.index.blobs() if b.pack.id == p.id}
    procs = VerifyProcesses.__new__(VerifyProcesses)
    procs._pool = _Answers(answer)
    with pytest.raises(BrokenWorker):
        procs.verify_pack(p.id, p.kind, p.size, b"", entries)


def test_a_verifying_process_judges_a_pack_as_this_process_does(repo3):
    store, repo, snaps, src = repo3
    _damage(store, repo, snaps, src)
    procs = VerifyProcesses(1, repo.keys)
    try:
        for p in repo.index.packs():
            data = store.get(pack_name(p.kind, p.id))
            entries = {b.blob_id: (b.offset, b.length, b.raw_length) for b in repo.index.blobs() if b.pack.id == p.id}
            here = verify_pack(repo.sealer, p.id, p.kind, p.size, data, entries)
            assert procs.verify_pack(p.id, p.kind, p.size, data, entries) == here
            short = data[: len(data) // 2]  # a short read: the size and every blob past it
            assert procs.verify_pack(p.id, p.kind, p.size, short, entries) == verify_pack(
                repo.sealer, p.id, p.kind, p.size, short, entries
            )
    finally:
        procs.close()
