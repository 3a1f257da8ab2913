"""Crypto helpers: the fast HMAC equals RFC 2104's, sealing round-trips, shuffles permute."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections import Counter

import pytest

from backupkit.crypto import T_DATA_BLOB, T_META_BLOB, HmacSha256, MasterKeys, Sealer, secure_shuffle
from backupkit.errors import IntegrityError


@pytest.mark.parametrize("key_len", [0, 1, 32, 63, 64, 65, 200])
@pytest.mark.parametrize("data_len", [0, 1, 55, 64, 3000, 1 << 20])
def test_hmac_matches_the_standard_library(key_len, data_len):
    key, data = os.urandom(key_len), os.urandom(data_len)
    want = hmac.new(key, data, hashlib.sha256).digest()
    h = HmacSha256(key)
    assert h.digest(data) == want
    assert h.digest(data[:7], memoryview(data)[7:]) == want  # parts concatenate
    assert h.digest(data) == want  # the precomputed state is not consumed
    assert HmacSha256(key, b"pre").digest(data) == hmac.new(key, b"pre" + data, hashlib.sha256).digest()


def test_sealer_ids_and_object_keys_are_the_format_v1_macs():
    keys = MasterKeys.generate()
    s = Sealer(keys)
    data = os.urandom(1000)
    assert s.blob_id(data) == hmac.new(keys.id_key, data, hashlib.sha256).digest()
    assert s.keyed_hash(b"path", b"/a/b") == hmac.new(keys.id_key, b"path\x00/a/b", hashlib.sha256).digest()
    salt, obj_id = os.urandom(16), os.urandom(32)
    want = hmac.new(keys.enc_key, b"bk-obj-v1" + bytes((T_DATA_BLOB, 32)) + obj_id + salt, hashlib.sha256).digest()
    assert s._object_key(T_DATA_BLOB, obj_id, salt) == want


def test_seal_round_trip_binds_type_and_id():
    s = Sealer(MasterKeys.generate())
    bid = os.urandom(32)
    env = s.seal(T_DATA_BLOB, bid, b"secret")
    assert s.open(T_DATA_BLOB, bid, env) == b"secret"
    assert len({s.seal(T_DATA_BLOB, bid, b"secret")[1:29] for _ in range(100)}) == 100  # fresh salt+nonce
    with pytest.raises(IntegrityError):
        s.open(T_META_BLOB, bid, env)
    with pytest.raises(IntegrityError):
        s.open(T_DATA_BLOB, os.urandom(32), env)


def test_secure_shuffle_is_a_uniform_permutation():
    items = list(range(1000))
    secure_shuffle(items)
    assert sorted(items) == list(range(1000)) and items != list(range(1000))
    counts = Counter()
    for _ in range(12000):
        x = [0, 1, 2]
        secure_shuffle(x)
        counts[tuple(x)] += 1
    assert len(counts) == 6 and all(1700 < c < 2300 for c in counts.values()), counts
    for n in (0, 1):
        x = list(range(n))
        secure_shuffle(x)
        assert x == list(range(n))
