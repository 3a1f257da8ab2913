"""Pack assembly and payload decoding: PackBuilder.finish puts every blob where its entry
says, whichever way the spooled pack is read or copied; decode_payload / verify_blob with
``view`` give the same bytes without a copy."""

from __future__ import annotations

import os

import pytest

from backupkit.crypto import T_DATA_BLOB, MasterKeys, Sealer, padme
from backupkit.errors import IntegrityError
from backupkit.repo.pack import KIND_DATA, decode_payload, encode_payload, read_pack_header
from backupkit.repo.packspool import PackBuilder
from backupkit.repo.repository import Repository
from backupkit.store.local import LocalObjectStore
from tests.support.kit import INSECURE_TEST_KDF


def test_finish_places_every_blob_at_its_entry_and_empties_the_builder(tmp_path):
    sealer = Sealer(MasterKeys.generate())
    b = PackBuilder(KIND_DATA, str(tmp_path))
    # sizes around the 1 MiB a source is copied by; one memoryview
    # (prune's repack hands over slices of a downloaded pack)
    blobs = {os.urandom(32): os.urandom(n) for n in (1, 100, 70_000, (1 << 20) - 1, 3 << 20)}
    view_id = os.urandom(32)
    view_src = os.urandom(5000)
    for blob_id, data in blobs.items():
        b.add(T_DATA_BLOB, blob_id, data, len(data) + 7)
    b.add(T_DATA_BLOB, view_id, memoryview(view_src)[1000:3000], 2000)
    blobs[view_id] = view_src[1000:3000]

    pack_id, pack, entries = b.finish(sealer)
    data = pack.read_all()
    copied = tmp_path / "copied"
    with open(copied, "wb") as f:
        pack.copy_to(f.fileno())  # what the local store and the cache do
    with pack.reader() as r:  # what S3, sftp and rest stream, from an odd position
        r.seek(70_001)
        tail = r.read()
    pack.close()

    assert copied.read_bytes() == data and tail == data[70_001:] and len(data) == pack.size
    assert os.listdir(tmp_path) == ["copied"], "the spool is not an unnamed temporary file"
    assert len(b) == 0 and b.size == 0
    assert {e.blob_id for e in entries} == set(blobs)
    for e in entries:
        assert bytes(data[e.offset : e.offset + e.length]) == blobs[e.blob_id]
    assert {(e.blob_id, e.offset, e.length, e.raw_length) for e in read_pack_header(sealer, pack_id, data, len(data))} == {
        (e.blob_id, e.offset, e.length, e.raw_length) for e in entries
    }
    # blobs are packed back to back from offset 0, then padding to a Padmé size
    assert sorted(e.offset for e in entries)[0] == 0
    assert len(data) == padme(len(data))
    assert len(data) >= sum(len(v) for v in blobs.values())


def test_decode_payload_view_gives_the_same_bytes_without_copying_a_raw_payload():
    raw = os.urandom(5000)  # incompressible: stored raw
    text = b"abc" * 5000  # compressible: stored as zstd
    for data in (raw, text):
        payload = encode_payload(data, 3)
        assert decode_payload(payload, "x") == data
        v = decode_payload(payload, "x", view=True)
        assert bytes(v) == data
    v = decode_payload(encode_payload(raw, 3), "x", view=True)
    assert isinstance(v, memoryview)  # the raw case: a view of the payload, no copy


def test_verify_blob_view_accepts_a_good_blob_and_refuses_a_changed_one(tmp_path):
    repo = Repository.init(LocalObjectStore(str(tmp_path / "repo")), b"pw", kdf=INSECURE_TEST_KDF, cache_root=False)
    data = os.urandom(3000)
    bid = repo.sealer.blob_id(data)
    sealed = repo.sealer.seal(T_DATA_BLOB, bid, encode_payload(data, 3))
    assert bytes(repo.verify_blob(bid, T_DATA_BLOB, memoryview(sealed), "b", len(data), view=True)) == data
    other = os.urandom(3000)
    bad = repo.sealer.seal(T_DATA_BLOB, bid, encode_payload(other, 3))
    with pytest.raises(IntegrityError):
        repo.verify_blob(bid, T_DATA_BLOB, bad, "b", len(other), view=True)


def test_no_place_for_a_spool_is_a_store_error(tmp_path, monkeypatch):
    """Neither the store's spool directory nor TMPDIR can hold a spool: a StoreError
    naming the place (the CLI's one-line message), not an OSError traceback."""
    import tempfile

    from backupkit.errors import StoreError

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "no-tmp"))
    for spool_dir in (str(tmp_path / "missing"), None):
        b = PackBuilder(KIND_DATA, spool_dir)
        with pytest.raises(StoreError, match="spooling a pack in .*no-tmp"):
            b.add(T_DATA_BLOB, b"\x01" * 32, b"sealed", 6)
        with pytest.raises(StoreError, match="spooling a pack in .*no-tmp"):
            b.finish(Sealer(MasterKeys.generate()))  # an empty pack opens its spool here
