"""seal_payloads and blob_ids: the C path (``_blobseal``, the GIL released once per
batch) against the Python reference (``Sealer.seal`` of ``encode_payload``, and
``Sealer.blob_id``). What the C path seals must open with the Python path to the same
data, stored the same way (raw or zstd, by the same rule), under fresh salts and nonces;
what it hashes must equal the reference's ids."""

from __future__ import annotations

import os
import random
import threading

import pytest

from backupkit.crypto import OVERHEAD, T_DATA_BLOB, T_META_BLOB, T_SNAPSHOT, MasterKeys, Sealer
from backupkit.errors import IntegrityError
from backupkit.repo import pack
from backupkit.repo.pack import blob_ids, decode_payload, encode_payload, seal_payloads

SEALER = Sealer(MasterKeys.generate())


def _datas() -> list:
    rnd = random.Random(11)
    return [
        b"",
        b"a",
        b"x" * 63,  # below the compression minimum: raw
        b"x" * 64,  # the first size compressed
        rnd.randbytes(64),  # incompressible: raw
        rnd.randbytes(5000),
        b"hello world " * 10_000,
        rnd.randbytes(1 << 20) + b"\x00" * (1 << 20),
        bytearray(b"a bytearray " * 50),
        memoryview(b"....a view of part of a buffer....")[4:-4],
    ]


def test_the_c_path_is_built_and_finds_its_libraries():
    # the build must give it (performance-limits.md's first-backup rows assume it)
    assert pack.SEAL_C


def test_blob_ids_equal_the_reference():
    datas = _datas()
    want = [SEALER.blob_id(d) for d in datas]
    assert blob_ids(SEALER, datas) == want
    assert blob_ids(SEALER, datas, native=False) == want
    assert blob_ids(SEALER, []) == []


@pytest.mark.parametrize("level", [3, 0, -1, 19])
def test_sealed_blobs_open_with_the_reference_to_the_same_data(level):
    datas = _datas()
    ids = [SEALER.blob_id(d) for d in datas]
    for native in (True, False):
        sealed = seal_payloads(SEALER, T_DATA_BLOB, list(zip(ids, datas)), level, native=native)
        assert len(sealed) == len(datas)
        for bid, data, env in zip(ids, datas, sealed):
            assert type(env) is bytes
            payload = SEALER.open(T_DATA_BLOB, bid, env)
            assert decode_payload(payload, "t") == bytes(data)
            # stored compressed exactly when the reference would
            assert payload[0] == encode_payload(data, level)[0]
            if payload[0] == 0:
                assert len(env) == OVERHEAD + 1 + len(data)


def test_each_envelope_has_its_own_salt_and_nonce():
    data = b"same data " * 100
    bid = SEALER.blob_id(data)
    sealed = seal_payloads(SEALER, T_DATA_BLOB, [(bid, data)] * 50, 3)
    sealed += seal_payloads(SEALER, T_DATA_BLOB, [(bid, data)] * 50, 3)
    heads = {env[1:29] for env in sealed}
    assert len(heads) == 100
    assert all(env[0] == 1 for env in sealed)


def test_the_type_and_id_are_bound():
    data = b"bound to its name " * 10
    bid = SEALER.blob_id(data)
    (env,) = seal_payloads(SEALER, T_META_BLOB, [(bid, data)], 3)
    assert decode_payload(SEALER.open(T_META_BLOB, bid, env), "t") == data
    with pytest.raises(IntegrityError):
        SEALER.open(T_DATA_BLOB, bid, env)
    with pytest.raises(IntegrityError):
        SEALER.open(T_META_BLOB, bytes(32), env)
    other = Sealer(MasterKeys.generate())
    with pytest.raises(IntegrityError):
        other.open(T_META_BLOB, bid, env)
    # a flipped bit anywhere is refused
    bad = bytearray(env)
    bad[len(bad) // 2] ^= 1
    with pytest.raises(IntegrityError):
        SEALER.open(T_META_BLOB, bid, bytes(bad))


def test_ids_of_any_length_up_to_255():
    for oid in (b"", b"k", os.urandom(64), os.urandom(255)):
        (env,) = seal_payloads(SEALER, T_SNAPSHOT, [(oid, b"doc")], 3)
        assert decode_payload(SEALER.open(T_SNAPSHOT, oid, env), "t") == b"doc"


def test_bad_arguments_are_refused_without_sealing():
    with pytest.raises(ValueError):
        seal_payloads(SEALER, T_DATA_BLOB, [(os.urandom(256), b"x")], 3)
    with pytest.raises(ValueError):
        seal_payloads(SEALER, T_DATA_BLOB, [("an id as str", b"x")], 3)
    with pytest.raises(TypeError):
        seal_payloads(SEALER, T_DATA_BLOB, [(b"id", "text is not bytes")], 3)
    with pytest.raises(TypeError):
        seal_payloads(SEALER, T_DATA_BLOB, [(b"id", b"x", b"extra")], 3)
    with pytest.raises(ValueError):
        seal_payloads(SEALER, 256, [(b"id", b"x")], 3)
    with pytest.raises(TypeError):
        blob_ids(SEALER, [b"ok", 5])


def test_threads_seal_at_once_each_with_its_own_contexts():
    """Each thread keeps its own zstd and cipher contexts: eight threads sealing
    different data at once must each get back exactly their own blobs."""
    errors: list = []

    def work(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(20):
                datas = [rnd.randbytes(rnd.randrange(0, 3000)) * rnd.randrange(1, 40) for _ in range(8)]
                ids = blob_ids(SEALER, datas)
                for bid, data, env in zip(ids, datas, seal_payloads(SEALER, T_DATA_BLOB, list(zip(ids, datas)), 3)):
                    assert decode_payload(SEALER.open(T_DATA_BLOB, bid, env), "t") == data
        except BaseException as err:  # noqa: BLE001 - reported by the main thread
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
