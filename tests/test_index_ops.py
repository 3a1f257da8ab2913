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


def _py_decode(monkeypatch, data: bytes):
    from backupkit.errors import FormatError
    from backupkit.repo import index_codec

    monkeypatch.setattr(index_codec, "_indexops", None)
    try:
        obj = index_codec.decode_index(data, "index/x")
        return [(p, list(e)) for p, e in obj.packs], obj.supersedes
    except FormatError as e:
        return str(e)
    finally:
        monkeypatch.setattr(index_codec, "_indexops", index_mod._indexops)


def _c_decode(data: bytes):
    from backupkit.repo import index_codec

    fast = index_mod._indexops.decode_index(
        data, index_codec.OVERHEAD, index_codec._SEALED_BLOB_MAX, index_codec.BLOB_MAX, index_codec.PACK_MAX, index_codec._KINDS
    )
    if fast is None:
        return None
    obj = index_codec.decode_index(data, "index/x")
    return [(p, list(e)) for p, e in obj.packs], obj.supersedes


def test_index_objects_read_in_c_as_in_python(monkeypatch):
    """Every object C reads, Python reads alike; what Python refuses, C leaves to it."""
    import msgpack

    from backupkit.repo.index_codec import encode_index

    rnd = random.Random(12)
    made = []
    for _p in range(6):
        entries = [(rnd.randbytes(32), i * 1000, 100 + rnd.randrange(900), rnd.randrange(1 << 20)) for i in range(40)]
        made.append((PackInfo(rnd.randbytes(32), "data", 1 << 22), PackedEntries(b"".join(ENT.pack(*e) for e in entries))))
    sizes = [PackInfo(p.id, rnd.choice(["data", "meta"]), rnd.choice([40_000, 1 << 22, 1 << 26])) for p, _e in made]
    good = encode_index([(s, e) for s, (_p, e) in zip(sizes, made)], [rnd.randbytes(32) for _ in range(3)])
    assert _c_decode(good) == _py_decode(monkeypatch, good) and _c_decode(good) is not None
    rows = [[s.id, s.kind, s.size, [list(x) for x in e]] for s, (_p, e) in zip(sizes, made)]
    variants = [
        msgpack.packb({"packs": rows, "v": 1}),  # other order, no supersedes: C reads it
        msgpack.packb({"v": 1, "packs": rows, "supersedes": [], "note": "x"}),  # an unknown key: Python's
        msgpack.packb({"v": True, "packs": rows}),
        msgpack.packb({"v": 2, "packs": rows}),
        msgpack.packb({"v": 1, "packs": rows}) + b"\x00",
        msgpack.packb({"v": 1, "packs": [[r[0], r[1].encode(), r[2], r[3]] for r in rows]}),
        msgpack.packb({"v": 1, "packs": [[r[0], "other", r[2], r[3]] for r in rows]}),
        msgpack.packb({"v": 1, "packs": [[r[0], r[1], 0, r[3]] for r in rows]}),
        msgpack.packb({"v": 1, "packs": [[r[0], r[1], r[2], [[b, -1, ln, x] for b, o, ln, x in r[3]]] for r in rows]}),
        msgpack.packb({"v": 1, "packs": [[r[0], r[1], 100, r[3]] for r in rows]}),  # blobs past the pack's end
        msgpack.packb({"v": 1, "packs": [[r[0], r[1], r[2], [[b, o, 1, x] for b, o, ln, x in r[3]]] for r in rows]}),
        msgpack.packb({"v": 1, "packs": rows, "supersedes": [b"short"]}),
        msgpack.packb({"v": 1, "packs": [[r[0][:31], r[1], r[2], r[3]] for r in rows]}),
        msgpack.packb([1, rows]),
    ]
    c_read = 0
    for data in variants:
        got, want = _c_decode(data), _py_decode(monkeypatch, data)
        assert got is None or got == want
        c_read += got is not None
    assert c_read == 1  # the reordered one
    damaged_read = 0
    for _ in range(400):
        b = bytearray(good)
        for _j in range(rnd.randrange(1, 3)):
            b[rnd.randrange(len(b))] = rnd.randrange(256)
        got = _c_decode(bytes(b))
        if got is not None:
            damaged_read += 1
            assert got == _py_decode(monkeypatch, bytes(b))
    assert damaged_read > 20  # damage to ids and numbers that stay in range is read alike
