"""open_blobs: the C path (``_blobopen``, the GIL released once per span) against the
Python reference (``verify_blob`` per blob), on the same spans: good blobs (raw and zstd,
empty, large), and every way a blob can be wrong. The C path may only ever say "good";
whatever it refuses, the reference words, so both must give the same plaintext or the
same error, message included."""

from __future__ import annotations

import os
import random
import threading

import pytest
import zstandard

from backupkit.crypto import T_DATA_BLOB, T_META_BLOB, MasterKeys, Sealer
from backupkit.errors import FormatError, IntegrityError
from backupkit.repo import packverify
from backupkit.repo.pack import encode_payload
from backupkit.repo.packverify import open_blobs, verify_pack

SEALER = Sealer(MasterKeys.generate())


def _blob(data: bytes, level: int = 3, obj_type: int = T_DATA_BLOB, sealer: Sealer = SEALER) -> tuple[bytes, bytes]:
    bid = sealer.blob_id(data)
    return bid, sealer.seal(obj_type, bid, encode_payload(data, level))


def _span(blobs: list[tuple[bytes, bytes, int]]) -> tuple[bytes, list]:
    """(span bytes, items) for blobs given as (id, sealed, raw length), with a few
    bytes of padding between them as a pack would not have (offsets must be honoured)."""
    out, items = bytearray(), []
    for bid, sealed, raw in blobs:
        out += b"\x55" * 7
        items.append((len(out), len(sealed), bid, raw))
        out += sealed
    return bytes(out), items


def _same(data, items, obj_type=T_DATA_BLOB, want=True):
    c = open_blobs(SEALER, obj_type, data, items, want=want)
    py = open_blobs(SEALER, obj_type, data, items, want=want, native=False)
    assert len(c) == len(py) == len(items)
    for a, b in zip(c, py):
        if isinstance(b, Exception):
            assert type(a) is type(b) and str(a) == str(b)
        else:
            assert a == b
    return c


def test_the_c_path_is_built_and_finds_its_libraries():
    # the build must give it and this machine has libcrypto (hashlib's) and libzstd:
    # without them every figure of performance-limits.md's restore and check rows is off
    assert packverify.C_AVAILABLE


def test_good_blobs_open_alike_raw_compressed_empty_and_large():
    rnd = random.Random(5)
    datas = [b"", os.urandom(1), os.urandom(5000), b"abc" * 7000, bytes(rnd.randrange(4) for _ in range(200_000)),
             os.urandom(3 * 1024 * 1024), b"\x00" * (2 * 1024 * 1024)]
    blobs = []
    for d in datas:
        for level in (0, 3):
            bid, sealed = _blob(d, level)
            blobs.append((bid, sealed, len(d)))
    data, items = _span(blobs)
    got = _same(data, items)
    assert got == [d for d in datas for _ in (0, 3)]
    keys = SEALER.keys  # and it is the C path that opened them, not the fallback
    assert packverify._blobopen.open_blobs(keys.enc_key, keys.id_key, T_DATA_BLOB, data, items, True, 1 << 26) == got
    assert _same(data, items, want=False) == [True] * len(items)
    assert _same(memoryview(bytearray(data)), items) == got  # any buffer


def _flip(sealed: bytes, at: int) -> bytes:
    b = bytearray(sealed)
    b[at] ^= 1
    return bytes(b)


def test_every_bad_blob_fails_as_the_reference_says_and_the_good_ones_beside_it_open():
    good = os.urandom(4000)
    text = b"hello world " * 500
    gid, gsealed = _blob(good)
    tid, tsealed = _blob(text)
    other_id, other_sealed = _blob(os.urandom(4000))
    bomb = b"\x01" + zstandard.ZstdCompressor().compress(b"\x00" * 1_000_000)
    bomb_id = os.urandom(32)
    unknown = b"\x07" + b"x" * 100
    unknown_id = os.urandom(32)
    blobs = [
        (gid, gsealed, len(good)),
        (gid, _flip(gsealed, 40), len(good)),  # ciphertext changed
        (gid, _flip(gsealed, len(gsealed) - 1), len(good)),  # tag changed
        (gid, _flip(gsealed, 3), len(good)),  # salt changed: another key
        (gid, b"\x02" + gsealed[1:], len(good)),  # unknown envelope version
        (gid, gsealed[:20], len(good)),  # shorter than an envelope
        (other_id, gsealed, len(good)),  # filed under another id
        (gid, other_sealed, 4000),  # sealed for another id
        (gid, gsealed, len(good) + 1),  # the index's raw length is wrong
        (gid, gsealed, len(good) - 1),
        (tid, tsealed, len(text) - 10),  # compressed, raw length too small
        (tid, tsealed, len(text) + 10),  # compressed, too large
        (tid, tsealed, 0),
        (bomb_id, SEALER.seal(T_DATA_BLOB, bomb_id, bomb), 4096),  # zstd bomb, bounded
        (unknown_id, SEALER.seal(T_DATA_BLOB, unknown_id, unknown), 100),  # unknown payload flag
        (unknown_id, SEALER.seal(T_DATA_BLOB, unknown_id, b"\x01not zstd at all"), 100),  # bad zstd
        (tid, tsealed, len(text)),
    ]
    data, items = _span(blobs)
    items.append((len(data) - 10, 100, gid, len(good)))  # beyond the end of the span
    items.append((0, 0, gid, len(good)))  # empty
    got = _same(data, items)
    assert got[0] == good and got[16] == text
    assert all(isinstance(r, (IntegrityError, FormatError)) for r in got[1:16] + got[17:])
    got = _same(data, items, want=False)
    assert [r is True for r in got] == [True] + [False] * 15 + [True, False, False]
    keys = SEALER.keys  # the C path refuses every bad one itself
    raw = packverify._blobopen.open_blobs(keys.enc_key, keys.id_key, T_DATA_BLOB, data, items, False, 1 << 26)
    assert raw == [True] + [None] * 15 + [True, None, None]


def test_a_blob_of_another_type_or_another_repository_is_refused():
    bid, sealed = _blob(b"x" * 100, obj_type=T_META_BLOB)
    data, items = _span([(bid, sealed, 100)])
    assert isinstance(_same(data, items, obj_type=T_DATA_BLOB)[0], IntegrityError)
    assert _same(data, items, obj_type=T_META_BLOB)[0] == b"x" * 100
    stranger = Sealer(MasterKeys.generate())
    sid, ssealed = _blob(b"y" * 100, sealer=stranger)
    data, items = _span([(sid, ssealed, 100)])
    assert isinstance(_same(data, items)[0], IntegrityError)


def test_many_threads_at_once_each_get_their_own_blobs():
    spans = []
    for n in range(8):
        datas = [os.urandom(random.randrange(1, 50_000)) + bytes([n]) * 1000 for _ in range(40)]
        spans.append((_span([(*_blob(d), len(d)) for d in datas]), datas))
    errors: list[str] = []

    def work(k: int) -> None:
        for _ in range(5):
            (data, items), datas = spans[k]
            if open_blobs(SEALER, T_DATA_BLOB, data, items) != datas:
                errors.append(f"span {k}")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_without_the_c_module_the_python_path_gives_the_same(monkeypatch):
    datas = [os.urandom(3000), b"z" * 9000]
    data, items = _span([(*_blob(d), len(d)) for d in datas])
    monkeypatch.setattr(packverify, "C_AVAILABLE", False)
    assert open_blobs(SEALER, T_DATA_BLOB, data, items) == datas


def test_verify_pack_names_each_bad_blob_with_the_reference_message():
    good, other = os.urandom(3000), os.urandom(3000)
    gid, gsealed = _blob(good)
    oid, osealed = _blob(other)
    data, items = _span([(gid, gsealed, 3000), (oid, _flip(osealed, 50), 3000)])
    entries = {bid: (off, ln, raw) for off, ln, bid, raw in items}
    header_problem, bad = verify_pack(SEALER, os.urandom(32), "data", len(data), data, entries)
    assert header_problem is not None  # no pack header in this span: said, not raised
    assert list(bad) == [oid]
    with pytest.raises(IntegrityError) as ref:
        packverify.verify_blob(SEALER, oid, T_DATA_BLOB, _flip(osealed, 50), f"blob {oid.hex()[:16]}", 3000)
    assert bad[oid] == str(ref.value)
