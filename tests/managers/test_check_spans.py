"""check --read-data reading a pack in ranges (a local store): the ranges cover the pack
once, and every finding is the one a whole read makes (packverify.pack_spans,
verify_pack_spans; CheckManager with Tuning.check_span_max_local)."""

from __future__ import annotations

import os
import random

import pytest

from backupkit.errors import ObjectNotFound, StoreError
from backupkit.managers.check import CheckManager, CheckOptions
from backupkit.repo.index import PackEntryMap
from backupkit.repo.pack import pack_name
from backupkit.repo.packverify import pack_spans, verify_pack, verify_pack_spans
from backupkit.store.local import LocalObjectStore
from backupkit.tuning import Tuning
from tests.managers.lifecycle_util import open_repo
from tests.managers.repair_util import blob_location, flip, repo3  # noqa: F401 (repo3 is a fixture)
from tests.support.faulty import FaultyStore

WHOLE = Tuning(check_span_max_local=1 << 40)
RANGES = Tuning(check_span_max_local=100)  # every pack of repo3 in several ranges


def _entries(rows):
    return PackEntryMap.of([(bytes([i]) * 32, off, ln, ln) for i, (off, ln) in enumerate(rows)])


def test_pack_spans_cover_the_pack_once_ending_after_blobs():
    spans = pack_spans(1000, _entries([(0, 40), (40, 30), (75, 50), (125, 300), (430, 10)]), 100)
    assert [(s, n) for s, n, _ in spans] == [(0, 70), (70, 55), (125, 300), (425, 575)]
    # each blob in the span that holds it, at its offset within the span
    assert [[(o, ln) for o, ln, _b, _r in items] for _s, _n, items in spans] == [[(0, 40), (40, 30)], [(5, 50)], [(0, 300)], [(5, 10)]]
    assert pack_spans(50, _entries([]), 100) == [(0, 50, [])]  # the header alone
    assert pack_spans(100, _entries([(0, 40), (30, 20)]), 1000) is None  # overlapping
    assert pack_spans(100, _entries([(60, 41)]), 1000) is None  # past the end


def _pack_entries(repo, p):
    return PackEntryMap.of([(b.blob_id, b.offset, b.length, b.raw_length) for b in repo.index.blobs() if b.pack.id == p.id])


def _packs(store):
    return [o.name for prefix in ("data/", "meta/") for o in store.list(prefix)]


def test_ranges_find_what_a_whole_read_finds_byte_by_byte(repo3):
    """A byte flipped anywhere in a pack (blob, gap, header, its length): the same header
    problem and the same bad blobs, read whole or in ranges of several sizes."""
    store, repo, _snaps, _src = repo3
    rng = random.Random(7)
    by_id = {p.id: p for p in repo.index.packs()}
    for name in _packs(store):
        p = by_id[bytes.fromhex(name.split("/")[-1])]
        entries = _pack_entries(repo, p)
        clean = store.get(name)
        places = {0, len(clean) - 1, len(clean) - 4, len(clean) - 30, *(rng.randrange(len(clean)) for _ in range(6))}
        for at in sorted(places):
            data = bytearray(clean)
            data[at] ^= 0x20
            data = bytes(data)
            want = verify_pack(repo.sealer, p.id, p.kind, p.size, data, entries)
            for span_max in (1, 333, 5000, 1 << 30):
                spans = pack_spans(p.size, entries, span_max)
                got = verify_pack_spans(
                    repo.sealer, p.id, p.kind, p.size, entries, spans,
                    (data[s : s + n] for s, n, _ in spans), lambda o, n, d=data: d[o : o + n],
                )
                assert got[:2] == want, (name, at, span_max)
                assert got[2] >= len(data)  # every byte once (and a header longer than the last range: its start again)


def _summary(res):
    return sorted((f.kind, f.object, f.snapshots, f.paths) for f in res.findings)


def test_check_in_ranges_reports_damage_as_whole_reads_do(repo3, monkeypatch):
    store, repo, (s1, s2, _s3), src = repo3
    loc = blob_location(repo, s1, os.fsencode(src / "only12.bin"))
    data_pack = pack_name(loc.pack.kind, loc.pack.id)
    flip(store, data_pack, loc.offset + loc.length // 2)
    meta = repo.index.lookup(s2.root)
    meta_pack = pack_name(meta.pack.kind, meta.pack.id)
    flip(store, meta_pack, meta.pack.size - 10)  # in the sealed header
    ranged = []
    real = LocalObjectStore.get_ranges

    def counting(self, name, ranges):
        ranged.append(name)
        return real(self, name, ranges)

    monkeypatch.setattr(LocalObjectStore, "get_ranges", counting)
    whole = CheckManager(open_repo(store), tuning=WHOLE).run(CheckOptions(read_data=True))
    assert ranged == []
    res = CheckManager(open_repo(store), tuning=RANGES).run(CheckOptions(read_data=True))
    assert set(ranged) == set(_packs(store))
    assert _summary(res) == _summary(whole)
    kinds = {(f.kind, f.object) for f in res.errors}
    assert ("pack_header", meta_pack) in kinds and ("blob_corrupt", f"blob {loc.blob_id.hex()}") in kinds
    assert res.bytes_read == whole.bytes_read == 2 * sum(p.size for p in repo.index.packs()) - sum(
        p.size for p in repo.index.packs() if pack_name(p.kind, p.id) not in (data_pack, meta_pack)
    )  # the two damaged packs: their ranges, then read whole (the second read)


class FlipInRange(FaultyStore):
    """Flips the byte at ``at`` of ``target`` in the first range read that holds it
    (``get_range``: check's range reads; its whole read, ``get``, stays clean)."""

    def __init__(self, inner, target: str, at: int) -> None:
        super().__init__(inner)
        self.target, self.at, self.flipped = target, at, 0

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        data = super().get_range(name, offset, length)
        if name == self.target and not self.flipped and offset <= self.at < offset + length:
            self.flipped += 1
            i = self.at - offset
            data = data[:i] + bytes([data[i] ^ 1]) + data[i + 1 :]
        return data


def test_a_damaged_range_read_then_a_clean_whole_read_is_not_damage(repo3):
    store, repo, (s1, _s2, _s3), src = repo3
    loc = blob_location(repo, s1, os.fsencode(src / "shared.bin"))
    name = pack_name(loc.pack.kind, loc.pack.id)
    assert len(pack_spans(loc.pack.size, _pack_entries(repo, loc.pack), RANGES.check_span_max_local)) > 1
    faulty = FlipInRange(store, name, loc.offset + loc.length // 2)  # inside a blob
    res = CheckManager(open_repo(faulty), tuning=RANGES).run(CheckOptions(read_data=True))
    assert faulty.flipped == 1
    assert res.ok, res.errors
    assert [(f.kind, f.object) for f in res.findings] == [("read_retry_ok", name)]


def test_a_short_range_read_has_the_pack_read_whole_and_is_not_damage(repo3):
    """A range cut short: the ranges stop there and the pack is read whole (the next read),
    which is clean: nothing was seen damaged, nothing is reported."""
    store, repo, (s1, _s2, _s3), src = repo3
    loc = blob_location(repo, s1, os.fsencode(src / "shared.bin"))
    name = pack_name(loc.pack.kind, loc.pack.id)
    faulty = FaultyStore(store, seed=11)
    faulty.corrupt_reads(name, mode="truncate", nth=1, count=1)
    res = CheckManager(open_repo(faulty), tuning=RANGES).run(CheckOptions(read_data=True))
    assert faulty.injected == 1
    assert res.ok, res.errors
    assert res.findings == ()


def test_local_get_ranges_reads_in_turn_and_refuses_what_get_range_refuses(tmp_path):
    store = LocalObjectStore(str(tmp_path / "s"))
    blob = os.urandom(1000)
    store.put("data/aa", blob)
    assert list(store.get_ranges("data/aa", [(0, 10), (10, 990), (500, 0)])) == [blob[:10], blob[10:], b""]
    with pytest.raises(StoreError, match="past the end|invalid range"):
        list(store.get_ranges("data/aa", [(0, 10), (995, 10)]))
    with pytest.raises(ObjectNotFound):
        list(store.get_ranges("data/bb", [(0, 1)]))
    gen = store.get_ranges("data/aa", [(0, 1), (1, 1)])
    assert next(gen) == blob[:1]
    gen.close()  # a reader that stops early closes the file
