"""backupkit.repo._indexops: the index's lookup and loading loops in C, held to the Python
loops they replace (Index with ``_indexops`` set to None)."""

from __future__ import annotations

import os
import random
import struct

import pytest

from backupkit.repo import index as index_mod
from backupkit.repo.index import Index, PackedEntries, PackInfo

pytest.importorskip("backupkit.repo._indexops")

ENT = struct.Struct("<32sIII")


def packs(rnd: random.Random, n_packs: int, per_pack: int, reuse: list[bytes]) -> list[tuple[PackInfo, PackedEntries]]:
    out = []
    for p in range(n_packs):
        rows = bytearray()
        for i in range(per_pack):
            # some ids again (a blob in two packs), some sharing their first bytes
            if reuse and rnd.random() < 0.1:
                bid = rnd.choice(reuse)
            elif reuse and rnd.random() < 0.1:
                bid = rnd.choice(reuse)[:3] + os.urandom(29)
            else:
                bid = rnd.randbytes(32)
            reuse.append(bid)
            rows += ENT.pack(bid, i * 100, 50 + i, rnd.randrange(1 << 32))
        out.append((PackInfo(rnd.randbytes(32), "data", 1 << 20), PackedEntries(bytes(rows))))
    return out


def build(monkeypatch, c: bool, loaded, added, override_every: int = 3) -> Index:
    monkeypatch.setattr(index_mod, "_indexops", index_mod._indexops if c else None)
    ix = Index()
    with ix.bulk():
        for i, (pack, entries) in enumerate(loaded):
            ix.add_pack(pack, entries, override=(i % override_every == 0))
    for pack, entries in added:  # one by one, after the bulk (the recent dicts)
        ix.add_pack(pack, list(entries))
    return ix


def state(ix: Index) -> list:
    return sorted((b.blob_id, b.pack.id, b.offset, b.length, b.raw_length) for b in ix.blobs())


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_loading_and_lookups_match_the_python_loops(monkeypatch, seed):
    ids: list[bytes] = []
    rnd = random.Random(seed)
    loaded = packs(rnd, 40, 300, ids)
    added = packs(rnd, 5, 50, ids)
    c_ix = build(monkeypatch, True, loaded, added)
    py_ix = build(monkeypatch, False, loaded, added)
    assert len(c_ix) == len(py_ix) and state(c_ix) == state(py_ix)
    probes = ids[::3] + [rnd.randbytes(32) for _ in range(2000)] + [b[:3] + rnd.randbytes(29) for b in ids[:500]]
    probes += [b"short", ids[0] + b"x", "not bytes"]
    rnd.shuffle(probes)
    monkeypatch.setattr(index_mod, "_indexops", pytest.importorskip("backupkit.repo._indexops"))
    got = c_ix.missing(probes)
    monkeypatch.setattr(index_mod, "_indexops", None)
    want = py_ix.missing(probes)
    assert got == want
    assert len(want) >= 2000  # the random ids are missing, the known ones are not
    assert not c_ix.missing(iter(ids))  # any iterable


def test_an_empty_index_misses_everything(monkeypatch):
    ix = Index()
    ids = [os.urandom(32) for _ in range(10)]
    assert ix.missing(ids) == ids


REC = struct.Struct("<32sIIII")


def records(rnd: random.Random, n: int, ids: list[bytes]) -> bytes:
    out = bytearray()
    for i in range(n):
        bid = rnd.choice(ids) if ids and rnd.random() < 0.3 else bytes([7]) + rnd.randbytes(31)
        ids.append(bid)
        out += REC.pack(bid, rnd.randrange(9), i, rnd.randrange(100), rnd.randrange(100))
    return bytes(out)


@pytest.mark.parametrize("keep_last", [False, True])
def test_sort_records_keeps_the_first_or_the_last_of_each_id(keep_last):
    from backupkit.repo import _indexops

    rnd = random.Random(5)
    ids: list[bytes] = []
    parts = [records(rnd, 700, ids), b"", bytearray(records(rnd, 300, ids)), records(rnd, 1, ids)]
    seq = [bytes(p[i : i + 48]) for p in parts for i in range(0, len(p), 48)]
    want: dict[bytes, bytes] = {}
    for r in seq:
        if keep_last or r[:32] not in want:
            want[r[:32]] = r
    got = _indexops.sort_records(parts, keep_last)
    assert got == b"".join(sorted(want.values()))
    assert len(set(seq)) > len(want)  # the input did repeat ids
    with pytest.raises(ValueError):
        _indexops.sort_records([b"x" * 47], keep_last)
    assert _indexops.sort_records([], keep_last) == b""


def test_directory_is_the_bisect_of_every_slot():
    from bisect import bisect_left
    from array import array

    from backupkit.repo import _indexops

    rnd = random.Random(6)
    for n in (0, 1, 15, 16, 17, 500, 5000):
        recs = sorted(bytes([9]) + rnd.randbytes(47) for _ in range(n))
        for bits in {index_mod._dir_bits(n), 1, 16}:
            step = 16 - bits
            want = [bisect_left(recs, bytes((9, (j << step) >> 8, (j << step) & 255))) for j in range(1 << bits)] + [n]
            got = array("I")
            got.frombytes(_indexops.directory(b"".join(recs), 9, bits))
            assert got.tolist() == want


def test_rebuilds_after_one_by_one_adds_match_the_python_loops(monkeypatch):
    """The recent dicts merged into tables past their bound, entries that shadow a
    table's (relocate), and a bulk after them: the C rebuild and the Python one agree."""
    rnd = random.Random(7)
    ids: list[bytes] = []
    first = packs(rnd, 4, 400, ids)
    later = packs(rnd, 30, 400, ids)  # many per shard: the dicts pass MIN_MERGE
    moved_ids = ids[:3000:2]
    last = packs(rnd, 6, 300, list(ids))

    def run(c: bool) -> Index:
        monkeypatch.setattr(index_mod, "_indexops", index_mod._indexops if c else None)
        ix = Index()
        with ix.bulk():
            for pack, entries in first:
                ix.add_pack(pack, entries)
        for pack, entries in later:
            ix.add_pack(pack, list(entries))
        moved = PackInfo(b"m" * 32, "data", 1)
        ix.add_pack(moved, [])
        ix.relocate(moved, [(bid, 1, 2, 3) for bid in moved_ids])
        with ix.bulk():
            for i, (pack, entries) in enumerate(last):
                ix.add_pack(pack, entries, override=bool(i % 2))
        return ix

    c_ix, py_ix = run(True), run(False)
    assert len(c_ix) == len(py_ix) and state(c_ix) == state(py_ix)
    assert c_ix.missing(ids) == [] and len(c_ix) == len({b.blob_id for b in c_ix.blobs()})
    overridden = {e[0] for i, (_p, es) in enumerate(last) if i % 2 for e in es}
    kept = [bid for bid in moved_ids if bid not in overridden]
    assert kept and all(c_ix.lookup(bid).pack.id == b"m" * 32 for bid in kept)
