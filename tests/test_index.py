"""The compact blob index against a dict model: adds, lookups, first location wins,
``blobs()`` complete, bulk loading equal to one-by-one adds, shard rebuilds."""

from __future__ import annotations

import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from backupkit.repo.index import Index, PackInfo

# few distinct first bytes and short tails so ids collide within shards and across packs
ids = st.builds(lambda head, tail: bytes([head]) + tail.ljust(31, b"\x00"), st.sampled_from([0, 1, 7, 255]), st.binary(min_size=0, max_size=3))
entry = st.tuples(ids, st.integers(0, 2**33), st.integers(0, 2**32 + 1), st.integers(0, 2**32))
packs = st.lists(st.tuples(st.integers(0, 5), st.lists(entry, max_size=40), st.booleans()), max_size=12)


def pack_info(n: int) -> PackInfo:
    return PackInfo(bytes([n]) * 32, "data" if n % 2 else "tree", 1000 + n)


def model_of(adds):
    """First location wins, unless the add overrides (then the last)."""
    model: dict[bytes, tuple[PackInfo, int, int, int]] = {}
    for n, entries, override in adds:
        for bid, off, ln, raw in entries:
            if override:
                model[bid] = (pack_info(n), off, ln, raw)
            else:
                model.setdefault(bid, (pack_info(n), off, ln, raw))
    return model


def check_against(index: Index, model, adds) -> None:
    assert len(index) == len(model)
    for bid, (p, off, ln, raw) in model.items():
        assert bid in index
        loc = index.lookup(bid)
        assert (loc.blob_id, loc.pack, loc.offset, loc.length, loc.raw_length) == (bid, p, off, ln, raw)
    got = {loc.blob_id: (loc.pack, loc.offset, loc.length, loc.raw_length) for loc in index.blobs()}
    assert got == model and sum(1 for _ in index.blobs()) == len(model)
    assert {p.id for p in index.packs()} == {pack_info(n).id for n, *_ in adds}
    for n in range(6):
        assert index.has_pack(pack_info(n).id) == any(m == n for m, *_ in adds)
    for absent in (b"\x07" * 32, b"\x01" + b"\xff" * 31, b"", b"short"):
        if absent not in model:
            assert absent not in index and index.lookup(absent) is None


class SmallIndex(Index):
    MIN_MERGE = 2  # rebuild shards all the time


@settings(max_examples=150, deadline=None)
@given(packs, st.booleans(), st.integers(0, 12))
def test_index_matches_dict_model(adds, small, bulk_upto) -> None:
    """Some packs inside bulk() (as loading does), the rest one by one (as a backup
    does), some overriding (as loading and healing do), some relocated: the same answers
    as a dict where the first location of an id wins, or the last with override."""
    index = SmallIndex() if small else Index()
    with index.bulk():
        for n, entries, override in adds[:bulk_upto]:
            index.add_pack(pack_info(n), entries, override=override)
    for n, entries, override in adds[bulk_upto:]:
        if override and index.has_pack(pack_info(n).id):
            index.relocate(pack_info(n), entries)
        else:
            index.add_pack(pack_info(n), entries, override=override)
    check_against(index, model_of(adds), adds)


def test_many_random_blobs_survive_rebuilds() -> None:
    import random

    rng = random.Random(5)
    adds = [(i % 6, [(rng.randbytes(32), j, j + 1, j + 2) for j in range(300)], i % 7 == 3) for i in range(40)]
    adds.append((3, adds[0][1][:50], False))  # repeats from another pack keep their first pack
    adds.append((4, [(b, o + 1, ln, r) for b, o, ln, r in adds[1][1][:60]], True))  # ... unless overriding
    adds.append((5, [(b, o + 2, ln, r) for b, o, ln, r in adds[25][1][:60]], True))
    index = Index()
    with index.bulk():
        for n, entries, override in adds[:20]:
            index.add_pack(pack_info(n), entries, override=override)
    for n, entries, override in adds[20:]:
        index.add_pack(pack_info(n), entries, override=override)
    check_against(index, model_of(adds), adds)


def test_concurrent_adds_and_lookups() -> None:
    import random

    rng = random.Random(9)
    batches = [[(rng.randbytes(32), j, 1, 1) for j in range(200)] for _ in range(40)]
    index = SmallIndex()
    errors: list[str] = []

    def add(k: int) -> None:
        for i in range(k, len(batches), 4):
            index.add_pack(pack_info(i % 6), batches[i])
            if any(bid not in index for bid, *_ in batches[i]):  # never lost by a rebuild elsewhere
                errors.append(f"batch {i}")

    threads = [threading.Thread(target=add, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(index) == 40 * 200 == sum(1 for _ in index.blobs())


def test_decoded_entries_pack_when_they_fit() -> None:
    import msgpack
    import pytest

    from backupkit.errors import FormatError
    from backupkit.repo.index import PackedEntries
    from backupkit.repo.index_codec import decode_index, encode_index
    from backupkit.repo.pack import PackEntry

    rows = [(bytes([i]) * 32, 100 * i, 60 + i, 3 * i) for i in range(5)]
    obj = decode_index(encode_index([(pack_info(1), [PackEntry(0, *r) for r in rows])]), "x")
    entries = obj.packs[0][1]
    assert isinstance(entries, PackedEntries) and list(entries) == rows and len(entries) == 5
    assert entries[-1] == rows[-1] and entries[1:3] == rows[1:3]
    wide = [(b"\x01" * 32, 2**40, 1, 1), (b"short", 1, 2, 3)]  # out of range: refused on decode
    with pytest.raises(FormatError):
        decode_index(encode_index([(pack_info(1), [PackEntry(0, *r) for r in wide])]), "x")
    bad = msgpack.packb({"v": 1, "packs": [[b"p" * 32, "data", 1, [["a" * 32, 1, 2, 3]]]]})
    with pytest.raises(FormatError):
        decode_index(bad, "y")


def _old_encoding(packs, supersedes=()) -> bytes:
    """The documented layout, built the way encode_index built it before it streamed."""
    import msgpack

    rows = [[p.id, p.kind, p.size, [[e.blob_id, e.offset, e.length, e.raw_length] for e in es]] for p, es in packs]
    return msgpack.packb({"v": 1, "packs": rows, "supersedes": list(supersedes)})


def test_streamed_encoding_is_the_documented_msgpack_and_decodes_back() -> None:
    import random
    import struct

    from backupkit.repo.index import PackedEntries
    from backupkit.repo.index_codec import decode_index, encode_index
    from backupkit.repo.pack import PackEntry

    rng = random.Random(5)
    packs = []
    for i in range(30):
        size = rng.randrange(1 << 20, 1 << 28)
        es = [PackEntry(0, rng.randbytes(32), rng.randrange(size - 10_000), rng.randrange(100, 5000), rng.choice([0, 5, 70_000, 2**25]))
              for _ in range(rng.randrange(0, 30))]
        packs.append((PackInfo(rng.randbytes(32), rng.choice(["data", "meta"]), size), es))
    sup = [rng.randbytes(32) for _ in range(3)]
    want = _old_encoding(packs, sup)
    assert encode_index(packs, sup) == want
    packed = [(p, PackedEntries(b"".join(struct.pack("<32sIII", e.blob_id, e.offset, e.length, e.raw_length) for e in es)))
              for p, es in packs]
    assert encode_index(packed, sup) == want  # the rows prune writes for the packs it keeps
    assert encode_index([]) == _old_encoding([])
    obj = decode_index(want, "x")
    assert obj.supersedes == sup
    assert [(p, [(e.blob_id, e.offset, e.length, e.raw_length) for e in es]) for p, es in packs] == [
        (p, list(es)) for p, es in obj.packs
    ]


def test_streamed_decoding_checks_what_the_whole_object_decode_checked() -> None:
    import msgpack
    import pytest

    from backupkit.errors import FormatError
    from backupkit.repo.index_codec import decode_index

    row = [b"p" * 32, "data", 1000, [[b"b" * 32, 0, 100, 10]]]
    ok = {"supersedes": [b"s" * 32], "packs": [row], "v": 1, "later": {"x": 1}}  # any key order, unknown keys
    obj = decode_index(msgpack.packb(ok), "x")
    assert obj.supersedes == [b"s" * 32] and list(obj.packs[0][1]) == [(b"b" * 32, 0, 100, 10)]
    assert decode_index(msgpack.packb({"v": 1, "packs": []}), "x").packs == []
    for bad in (
        msgpack.packb({"v": 1, "packs": [row]}) + b"\x00",  # data after the object
        msgpack.packb({"v": 1, "packs": [row]})[:-3],  # cut short
        msgpack.packb({"v": 2, "packs": [row]}),
        msgpack.packb({"packs": [row]}),
        msgpack.packb({"v": 1}),  # no packs at all (the whole-object decode's KeyError)
        msgpack.packb([1, [row]]),
        msgpack.packb({"v": 1, "packs": [row[:3]]}),
        msgpack.packb({"v": 1, "packs": [[b"p" * 32, "data", 1000, [[b"b" * 32, 950, 100, 10]]]]}),  # past the pack
        msgpack.packb({"v": 1, "packs": [[b"p" * 32, "data", 1000, {"a": 1}]]}),
        msgpack.packb({"v": 1, "packs": [row], "supersedes": [b"short"]}),
        b"",
    ):
        with pytest.raises(FormatError):
            decode_index(bad, "x")


def test_a_newer_index_version_is_named_as_such_not_as_malformed() -> None:
    """The version is checked as soon as it is read: a newer layout of ``packs`` must
    say "unsupported index version" (upgrade bk), not "malformed" (which points at
    bk repair index)."""
    import msgpack
    import pytest

    from backupkit.errors import FormatError
    from backupkit.repo.index_codec import decode_index

    newer = msgpack.packb({"v": 2, "packs": [{"id": b"p" * 32, "blobs": []}]})
    with pytest.raises(FormatError, match="unsupported index version 2"):
        decode_index(newer, "x")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([bytes([i]) * 32 for i in range(6)]), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1), st.integers(0, 2**32 - 1)), max_size=12),
    st.lists(st.tuples(st.sampled_from([bytes([i]) * 32 for i in range(4, 9)]), st.integers(0, 99), st.integers(0, 99), st.integers(0, 99)), max_size=6),
)
def test_pack_entry_map_is_the_dict_updated_row_by_row(first, second) -> None:
    """check's packed entries of a pack (two index objects listing it: ``merged``) hold
    what the dict it replaced held: first places, last values, lookups and items alike."""
    import struct

    from backupkit.repo.index import PackedEntries, PackEntryMap

    def packed(rows):
        return PackedEntries(b"".join(struct.pack("<32sIII", *r) for r in rows))

    want: dict[bytes, tuple[int, int, int]] = {}
    for bid, off, ln, raw in first:
        want[bid] = (off, ln, raw)
    got = PackEntryMap.of(packed(first))
    assert dict(got.items()) == want and list(got) == list(want) and len(got) == len(want)
    assert PackEntryMap.of(first) == want  # plain tuples too
    for bid, off, ln, raw in second:
        want[bid] = (off, ln, raw)
    both = got.merged(packed(second))
    assert list(both.items()) == list(want.items()) and len(both) == len(want)
    assert all(both[bid] == v for bid, v in want.items()) and (b"\xff" * 32 in both) is False
    for bid, v in want.items():  # ItemsView's membership: through the lookup
        assert (bid, v) in both.items() and (bid, (v[0] + 1, v[1], v[2])) not in both.items()
