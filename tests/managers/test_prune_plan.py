"""The plan's per-pack entries (``PackEntries``): grouped from the index as packed
records, exactly the index's entries, and the index let go once grouped."""

from __future__ import annotations

import gc
import weakref

import pytest

from backupkit.managers.prune_plan import PackEntries
from backupkit.repo.index import Index, PackedEntries, PackInfo


def _pid(i: int) -> bytes:
    return bytes([i]) * 32


def test_grouped_entries_are_the_index_entries_packed():
    index = Index()
    rows = {i: [(bytes([i, j]) + b"\0" * 30, 100 * j, 50 + j, 7 * j) for j in range(5 * i)] for i in range(1, 4)}
    for i, rs in rows.items():
        index.add_pack(PackInfo(_pid(i), "data", 1 << 20), rs)
    index.add_pack(PackInfo(_pid(9), "data", 1 << 20), [(b"\x09" * 32, 2**33, 60, 1)])  # past u32: not packable
    entries = PackEntries(index, [_pid(1), _pid(3), _pid(9)])
    ref = weakref.ref(index)
    del index
    m = entries.group()
    gc.collect()
    assert ref() is None  # the plan does not keep the old index alive
    assert sorted(m) == sorted([_pid(1), _pid(3), _pid(9)]) and len(entries) == 3
    assert isinstance(entries[_pid(1)], PackedEntries)
    for i in (1, 3):
        assert sorted(entries[_pid(i)]) == sorted(rows[i])
    assert list(entries[_pid(9)]) == [(b"\x09" * 32, 2**33, 60, 1)]
    assert entries.group() is m  # grouped once
    with pytest.raises(KeyError):
        entries[_pid(2)]  # a pack outside the plan's set
