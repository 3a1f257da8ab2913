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
