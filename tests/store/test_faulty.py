"""FaultyStore: every fault it offers does what it says, and only that."""

from __future__ import annotations

import pytest

from backupkit.errors import ObjectNotFound, StoreError, StoreUnavailable
from backupkit.store import MemoryObjectStore
from tests.support.faulty import FaultyStore


@pytest.fixture
def faulty():
    inner = MemoryObjectStore()
    for i in range(5):
        inner.put(f"data/{i}", bytes([i]) * 10)
    return FaultyStore(inner)


def test_no_faults_is_transparent(faulty):
    assert faulty.get("data/1") == b"\x01" * 10
    faulty.put("x", b"y")
    assert faulty.put_if_absent("x", b"z") is False
    assert len(list(faulty.list("data/"))) == 5
    assert faulty.stat("x").size == 1
    faulty.delete("x")
    assert faulty.calls["get"] == 1 and faulty.injected == 0


def test_fail_nth_call(faulty):
    faulty.fail_call("get", nth=2)
    faulty.get("data/0")
    with pytest.raises(StoreUnavailable, match="injected"):
        faulty.get("data/0")
    faulty.get("data/0")
    assert faulty.injected == 1


def test_fail_by_name_and_count(faulty):
    faulty.fail_call(("get", "get_range"), name=lambda n: n.endswith("3"), count=2, error=StoreError)
    faulty.get("data/1")
    with pytest.raises(StoreError):
        faulty.get("data/3")
    with pytest.raises(StoreError):
        faulty.get_range("data/3", 0, 1)
    assert faulty.get("data/3") == b"\x03" * 10


def test_fail_after_the_work_happened(faulty):
    faulty.fail_call("put", after=True)
    with pytest.raises(StoreUnavailable):
        faulty.put("landed", b"yes")
    assert faulty.inner.get("landed") == b"yes"


def test_crash_like_errors(faulty):
    faulty.fail_call("put", error=KeyboardInterrupt)
    with pytest.raises(KeyboardInterrupt):
        faulty.put("a", b"b")


def test_fail_rate_is_seeded_and_reproducible():
    def pattern(seed):
        store = FaultyStore(MemoryObjectStore(), fail_rate=0.3, seed=seed, fail_ops=("put",))
        out = []
        for i in range(50):
            try:
                store.put(f"o/{i}", b"x")
                out.append(True)
            except StoreUnavailable:
                out.append(False)
        return out

    first = pattern(7)
    assert first == pattern(7)
    assert 5 < first.count(False) < 30
    assert first != pattern(8)


def test_fail_rate_only_for_chosen_ops(faulty):
    faulty.fail_rate, faulty.fail_ops = 1.0, ("put",)
    assert faulty.get("data/0")
    with pytest.raises(StoreUnavailable):
        faulty.put("a", b"b")


def test_corrupt_first_read_only(faulty):
    faulty.corrupt_reads("data/2")
    damaged = faulty.get("data/2")
    assert damaged != b"\x02" * 10 and len(damaged) == 10
    assert sum(a != b for a, b in zip(damaged, b"\x02" * 10)) == 1
    assert faulty.get("data/2") == b"\x02" * 10
    assert faulty.inner.get("data/2") == b"\x02" * 10


def test_truncate_reads_and_ranges(faulty):
    faulty.corrupt_reads(mode="truncate", count=2)
    assert faulty.get("data/1") == b"\x01" * 5
    assert faulty.get_range("data/1", 0, 4) == b"\x01" * 2
    assert faulty.get("data/1") == b"\x01" * 10


def test_break_list_after_items(faulty):
    faulty.break_list(after_items=2)
    seen = []
    with pytest.raises(StoreUnavailable):
        for info in faulty.list("data/"):
            seen.append(info.name)
    assert len(seen) == 2
    assert len(list(faulty.list("data/"))) == 5


def test_lying_list(faulty):
    faulty.break_list(after_items=0, error=None, prefix="data/")
    assert list(faulty.list("data/")) == []
    assert len(list(faulty.list("data/"))) == 5


def test_list_fails_before_any_item(faulty):
    faulty.fail_call("list")
    with pytest.raises(StoreUnavailable):
        list(faulty.list())


def test_drop_deletes(faulty):
    faulty.drop_deletes = True
    faulty.delete("data/0")
    assert faulty.get("data/0")
    with pytest.raises(ObjectNotFound):
        faulty.delete("missing")


def test_lie_put_if_absent(faulty):
    faulty.lie_put_if_absent = True
    assert faulty.put_if_absent("data/0", b"over") is True
    assert faulty.get("data/0") == b"over"
    assert faulty.atomic_put_if_absent is True  # the lie: it claims to be atomic


def test_hook_sees_every_call(faulty):
    seen = []
    faulty.set_hook(lambda op, name: seen.append((op, name)))
    faulty.get("data/0")
    faulty.exists("nope")
    assert seen == [("get", "data/0"), ("stat", "nope")]


def test_clear(faulty):
    faulty.fail_call("get", count=100)
    faulty.fail_rate = 1.0
    faulty.clear()
    assert faulty.get("data/0")


def test_stats(faulty):
    faulty.fail_call("get")
    with pytest.raises(StoreUnavailable):
        faulty.get("data/0")
    stats = faulty.stats()
    assert stats["faults_injected"] == 1 and stats["GET"] == 1 and stats["PUT"] == 0


def test_unknown_op_rejected(faulty):
    with pytest.raises(ValueError):
        faulty.fail_call("gett")
