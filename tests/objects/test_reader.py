"""ContentReader's read-ahead: contents of upcoming files fetched in parallel, in order,
within a budget; failures stay with their file."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace
from concurrent.futures import ThreadPoolExecutor

import pytest

from backupkit.objects.reader import _ReadAhead
from backupkit.tuning import Tuning


def _files(n_files: int, blobs_per_file: int, size: int):
    """Entries and a blob store: file i has blobs b"i:j" of ``size`` bytes and one hole."""
    store = {}
    entries = []
    for i in range(n_files):
        items = []
        for j in range(blobs_per_file):
            bid = b"%d:%d" % (i, j)
            store[bid] = bytes([i % 251]) * size
            items.append(bid)
        items.append(7)  # a hole
        entries.append((b"/f%d" % i, SimpleNamespace(type="f", is_file=True, items=items)))
        entries.append((b"/d%d" % i, SimpleNamespace(type="d", is_file=False)))
    return entries, store


class Reader:
    def __init__(self, store, delay=0.0, fail=()):
        self.store, self.delay, self.fail = store, delay, set(fail)
        self.lock = threading.Lock()
        self.active = self.peak_active = 0
        self.calls = []

    def __call__(self, bid):
        with self.lock:
            self.active += 1
            self.peak_active = max(self.peak_active, self.active)
            self.calls.append(bid)
        try:
            time.sleep(self.delay)
            if bid in self.fail:
                raise OSError(f"cannot read {bid!r}")
            return self.store[bid]
        finally:
            with self.lock:
                self.active -= 1


class FakeContentReader:
    """What _ReadAhead uses of a ContentReader, over a dict of blobs."""

    def __init__(self, store, read, pool, budget, lookahead=4096, content=None):
        self.budget = budget
        self.tuning = Tuning(readahead_entries=lookahead)
        self._pool = pool
        self.read_blob = read
        self.blob_size = lambda bid: len(store.get(bid, b""))
        self.content_list = content or (lambda e: e.items)
        self.joined = SimpleNamespace(expect=lambda bid: None)


def _ra(entries, store, reader, pool, budget, wants_content=None, lookahead=4096, content=None):
    return _ReadAhead(FakeContentReader(store, reader, pool, budget, lookahead, content), iter(entries), wants_content)


def test_order_holes_and_non_files():
    entries, store = _files(20, 3, 100)
    with ThreadPoolExecutor(4) as pool:
        out = [(k, e.type, None if parts is None else list(parts)) for k, e, parts in _ra(entries, store, Reader(store), pool, 1000)]
    assert [k for k, _t, _p in out] == [k for k, _e in entries]
    for (k, t, parts), (_k, e) in zip(out, entries):
        if t == "d":
            assert parts is None
        else:
            assert parts == [store[b] if isinstance(b, bytes) else b for b in e.items]


def test_reads_run_ahead_in_parallel_within_the_budget():
    entries, store = _files(40, 2, 1000)
    reader = Reader(store, delay=0.01)
    inflight_seen = []
    with ThreadPoolExecutor(8) as pool:
        ra = _ra(entries, store, reader, pool, budget=8000)
        t0 = time.monotonic()
        for _k, _e, parts in ra:
            for _p in parts or ():
                inflight_seen.append(ra._inflight)
        elapsed = time.monotonic() - t0
    assert len(reader.calls) == 80 and len(set(reader.calls)) == 80  # each blob read once
    assert reader.peak_active >= 4  # small files no longer wait for each other
    assert max(inflight_seen) <= 8000  # never more than the budget in flight
    assert elapsed < 80 * 0.01 * 0.6, elapsed  # well under the serial time


def test_a_blob_larger_than_the_budget_is_still_read():
    entries, store = _files(3, 2, 5000)
    with ThreadPoolExecutor(2) as pool:
        got = [list(p) for _k, _e, p in _ra(entries, store, Reader(store), pool, budget=1000) if p is not None]
    assert [len(x) for x in got] == [3, 3, 3]


def test_unwanted_files_get_no_content_and_a_writer_may_skip_parts():
    entries, store = _files(10, 3, 100)
    reader = Reader(store)
    with ThreadPoolExecutor(2) as pool:
        ra = _ra(entries, store, reader, pool, 10_000, wants_content=lambda k, e: k != b"/f3")
        seen = {}
        for k, e, parts in ra:
            if e.type != "f":
                continue
            seen[k] = parts
            if k == b"/f5":
                next(parts)  # the writer gives up after one part
            elif parts is not None:
                list(parts)
        assert seen[b"/f3"] is None
    assert not any(c.startswith(b"3:") for c in reader.calls)
    assert ra._inflight == 0  # what /f5 left is no longer counted


def test_a_failed_read_raises_in_the_writer_for_that_file_only():
    entries, store = _files(5, 2, 100)
    reader = Reader(store, fail={b"2:1"})
    ok, failed = [], []
    with ThreadPoolExecutor(2) as pool:
        for k, _e, parts in _ra(entries, store, reader, pool, 10_000):
            if parts is None:
                continue
            try:
                list(parts)
                ok.append(k)
            except OSError:
                failed.append(k)
    assert failed == [b"/f2"] and ok == [b"/f0", b"/f1", b"/f3", b"/f4"]


def test_lookahead_bounds_entries_held():
    entries = [(b"/d%d" % i, SimpleNamespace(type="d", is_file=False)) for i in range(10_000)]
    with ThreadPoolExecutor(1) as pool:
        ra = _ra(entries, {}, lambda b: b"", pool, 1000, lookahead=100)
        n = 0
        for _k, _e, _p in ra:
            assert len(ra._queue) <= 101
            n += 1
    assert n == 10_000


@pytest.mark.parametrize("budget", [1, 150, 10_000])
def test_every_budget_gives_the_same_bytes(budget):
    entries, store = _files(15, 4, 50)
    with ThreadPoolExecutor(3) as pool:
        got = [b"".join(x if isinstance(x, bytes) else bytes(x) for x in p) for _k, _e, p in _ra(entries, store, Reader(store), pool, budget) if p is not None]
    want = [b"".join(store[b] if isinstance(b, bytes) else bytes(b) for b in e.items) for _k, e in entries if e.type == "f"]
    assert got == want


def test_a_content_list_that_cannot_be_loaded_fails_that_file_only():
    entries, store = _files(5, 2, 100)

    def content(e):
        if e.items[0] == b"2:0":
            raise ValueError("damaged content blob")
        return e.items

    ok, failed = [], []
    with ThreadPoolExecutor(2) as pool:
        for k, _e, parts in _ra(entries, store, Reader(store), pool, 10_000, content=content):
            if parts is None:
                continue
            try:
                list(parts)
                ok.append(k)
            except ValueError:
                failed.append(k)
    assert failed == [b"/f2"] and ok == [b"/f0", b"/f1", b"/f3", b"/f4"]


def test_a_failing_source_raises_in_its_place_not_in_a_file():
    """The walk failing while a file is read ahead is not that file's failure, and every
    entry before the failure is still handed out."""
    entries, store = _files(6, 2, 100)

    def source():
        yield from entries[:7]
        raise RuntimeError("walk failed")

    got = []
    with ThreadPoolExecutor(2) as pool:
        ra = _ra(source(), store, Reader(store), pool, 10_000)
        with pytest.raises(RuntimeError, match="walk failed"):
            for k, _e, parts in ra:
                list(parts or ())  # never raises: the files are intact
                got.append(k)
    assert got == [k for k, _e in entries[:7]]


def test_content_reader_reads_whole_files_and_byte_ranges(tmp_path):
    import os
    import random

    from backupkit.objects.reader import ContentReader
    from backupkit.tree import SnapshotTree
    from tests.managers.lifecycle_util import backup, init_repo, local_store, open_repo

    src = tmp_path / "src"
    src.mkdir()
    data = random.Random(5).randbytes(400_000)
    with open(src / "f", "wb") as f:  # data, a 1 MiB hole, data
        f.write(data[:200_000])
        f.seek(200_000 + 2**20)
        f.write(data[200_000:])
    want = data[:200_000] + bytes(2**20) + data[200_000:]
    repo = init_repo(local_store(tmp_path / "repo"))
    snap = backup(repo, src)
    repo = open_repo(repo.store)
    e = SnapshotTree(repo, snap.root).require(os.fsencode(src / "f"))
    with ContentReader(repo, connections=2) as reader:
        assert b"".join(bytes(p) if isinstance(p, int) else p for p in reader.parts(e)) == want
        rng = random.Random(1)
        for _ in range(30):
            off = rng.randrange(len(want) + 10)
            n = rng.randrange(300_000)
            assert reader.read_range(e, off, n) == want[off : off + n], (off, n)
