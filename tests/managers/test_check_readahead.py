"""check --read-data reads packs while the trees are walked: the findings stay those of
one phase after the other, an interrupted walk stops the reads, memory stays bounded."""

from __future__ import annotations

import threading
import time

import pytest

from backupkit.managers.check import CheckManager, CheckOptions
from backupkit.managers.check_reads import ReadAhead
from backupkit.repo.pack import pack_name
from tests.managers.lifecycle_util import open_repo
from tests.managers.repair_util import flip, repo3  # noqa: F401 (repo3 is a fixture)


class SlowTrees:
    """A reporter whose trees phase is slow: every pack read finishes before the walk."""

    def __init__(self, delay: float = 0.0, interrupt: bool = False) -> None:
        self.delay, self.interrupt = delay, interrupt
        self.current = ""
        self.phases: list[str] = []

    def phase(self, name: str, total) -> None:
        self.current = name
        self.phases.append(name)

    def advance(self, n: int = 1) -> None:
        if self.current == "trees":
            if self.interrupt:
                raise KeyboardInterrupt
            time.sleep(self.delay)

    def finding(self, finding) -> None:
        pass


def _kinds(res):
    return [(f.kind, f.object, f.snapshots, f.paths) for f in res.findings]


def test_a_tree_blob_damaged_is_charged_to_the_walk_however_fast_the_reads_are(repo3):
    store, repo, (_s1, _s2, s3), _src = repo3
    loc = repo.index.lookup(s3.root)
    flip(store, pack_name(loc.pack.kind, loc.pack.id), loc.offset + 40)
    quick = CheckManager(open_repo(store), SlowTrees()).run(CheckOptions(read_data=True))
    slow_reporter = SlowTrees(delay=0.05)
    slow = CheckManager(open_repo(store), slow_reporter).run(CheckOptions(read_data=True))
    assert _kinds(slow) == _kinds(quick)
    assert slow_reporter.phases.index("trees") < slow_reporter.phases.index("read data")
    root = {f.kind: f for f in slow.errors if s3.root.hex() in f.object}
    # the walk met it first and names what it costs, whatever the pack read found meanwhile
    # (recorded as the reads finished, the walk would have skipped a blob already marked)
    assert root["tree_unreadable"].snapshots == (s3.id,)
    assert root["blob_corrupt"].snapshots == ()
    assert slow.packs_read == quick.packs_read == slow.packs > 0


def test_an_interrupted_walk_stops_the_reads(repo3):
    store, _repo, _snaps, _src = repo3
    with pytest.raises(KeyboardInterrupt):
        CheckManager(open_repo(store), SlowTrees(interrupt=True)).run(CheckOptions(read_data=True))
    assert not [t for t in threading.enumerate() if t.name == "check-read-ahead"]


def _counting(n: int, pulled: list[int], fail_at: int | None = None):
    for i in range(n):
        if i == fail_at:
            raise OSError("the store went away")
        pulled[0] += 1
        yield i


def _wait_for(cond, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_read_ahead_keeps_at_most_keep_results_and_hands_them_out_in_order():
    pulled = [0]
    ra = ReadAhead(_counting(100, pulled), size=0, keep=3)
    _wait_for(lambda: pulled[0] >= 4)
    time.sleep(0.2)
    assert pulled[0] == 4  # three kept, one waiting to be put: nothing more is read
    assert list(ra) == list(range(100))
    ra.close()


def test_read_ahead_raises_the_error_after_the_results_before_it():
    ra = ReadAhead(_counting(10, [0], fail_at=5), size=0)
    got = []
    with pytest.raises(OSError, match="went away"):
        for r in ra:
            got.append(r)
    assert got == [0, 1, 2, 3, 4]
    ra.close()


def test_closing_the_read_ahead_stops_it_early():
    pulled = [0]
    ra = ReadAhead(_counting(1000, pulled), size=0, keep=2)
    _wait_for(lambda: pulled[0] >= 3)
    ra.close()
    assert not ra._thread.is_alive()  # noqa: SLF001
    assert pulled[0] <= 3
