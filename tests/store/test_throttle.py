"""Bandwidth limits (``--limit-upload`` / ``--limit-download``): the rate's arithmetic on a
fake clock, the wrapper keeping the store contract, and real transfers held to the rate."""

from __future__ import annotations

import io
import time

import pytest

from backupkit.store.base import ObjectSource
from backupkit.store.local import LocalObjectStore
from backupkit.store.throttle import BURST_SECONDS, Rate, ThrottledStore, _PacedSource
from tests.support.store_contract import StoreContract

MIB = 1 << 20


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.now += s


def test_a_rate_lets_a_burst_through_then_holds_the_average():
    c = FakeClock()
    r = Rate(MIB, clock=c.clock, sleep=c.sleep)
    start = c.now
    for _ in range(10):
        r.take(MIB)
    # ten MiB at 1 MiB/s: ten seconds, less the one-second burst allowance
    assert c.now - start == pytest.approx(10 - BURST_SECONDS)
    c.now += 60  # idle: the credit does not grow past the burst
    before = c.now
    for _ in range(5):
        r.take(MIB)
    assert c.now - before == pytest.approx(5 - BURST_SECONDS)


def test_a_rate_refuses_nonsense():
    with pytest.raises(ValueError):
        Rate(0)


class TestThrottledStoreKeepsTheContract(StoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        (tmp_path / "repo").mkdir()
        return ThrottledStore(LocalObjectStore(tmp_path / "repo"), Rate(1 << 30), Rate(1 << 30))


class TestThrottledS3StoreKeepsTheContract(StoreContract):
    """boto reads a streamed source twice (MD5, then the body): the wrapper's readers
    must serve both, against a real S3 server (SeaweedFS, tests/conftest_s3.py)."""

    @pytest.fixture
    def store(self, s3_store):
        return ThrottledStore(s3_store, Rate(1 << 30), Rate(1 << 30))


class BytesSource(ObjectSource):
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def reader(self):
        return io.BytesIO(self.data)

    def copy_to(self, fd: int) -> None:  # the fast path a throttled upload must not take
        raise AssertionError("copy_to bypasses the rate")


def test_real_uploads_and_downloads_are_held_to_the_rate(tmp_path):
    (tmp_path / "repo").mkdir()
    rate = 8 * MIB
    store = ThrottledStore(LocalObjectStore(tmp_path / "repo"), Rate(rate), Rate(rate))
    data = bytes(range(256)) * (4 * 4096)  # 4 MiB
    t = time.monotonic()
    store.put_source("data/00/a", BytesSource(data))  # streamed: the reader is paced
    store.put("data/00/b", data)
    store.put("data/00/c", data)
    up = time.monotonic() - t
    # 12 MiB at 8 MiB/s: 1.5 s less the burst allowance (unlimited: ~0.05 s here)
    assert up >= 12 / 8 - BURST_SECONDS - 0.1
    t = time.monotonic()
    for name in ("data/00/a", "data/00/b", "data/00/c"):
        assert store.get(name) == data
    down = time.monotonic() - t
    assert down >= 12 / 8 - BURST_SECONDS - 0.1
    assert store.get_range("data/00/a", 10, 5) == data[10:15]
    assert sorted(o.name for o in store.list("data/")) == ["data/00/a", "data/00/b", "data/00/c"]


def test_bytes_read_again_are_taken_once():
    """S3 reads a source for its MD5 and again to send it; a retry reads it again."""
    taken: list[int] = []
    rate = Rate(1 << 30)
    rate.take = taken.append  # type: ignore[method-assign]
    data = bytes(range(256)) * 40
    src = _PacedSource(BytesSource(data), rate)
    with src.reader() as r:
        assert r.read() == data
        r.seek(0)
        assert r.read(100) == data[:100]
    with src.reader() as r:
        r.seek(5000)
        buf = bytearray(200)
        assert r.readinto(buf) == 200 and bytes(buf) == data[5000:5200]
    assert sum(taken) == len(data)


def test_lock_objects_are_never_held_back(tmp_path):
    """A lock's refresh must not queue behind packs: the stale-lock rules count on it."""
    (tmp_path / "repo").mkdir()
    c = FakeClock()
    rate = Rate(1024, clock=c.clock, sleep=c.sleep)
    store = ThrottledStore(LocalObjectStore(tmp_path / "repo"), rate, rate, exempt=("locks/",))
    store.put("data/00/x", b"x" * 10 * 1024)  # ten seconds' worth: the bucket is in debt
    waited = sum(c.slept)
    store.put_if_absent("locks/" + "ab" * 32, b"lock")
    store.rewrite_existing("locks/" + "ab" * 32, b"lock again")
    assert store.get("locks/" + "ab" * 32) == b"lock again"
    assert sum(c.slept) == waited
    store.put("index/" + "cd" * 32, b"i" * 100)  # anything else waits its turn
    assert sum(c.slept) > waited
