"""Keys, sealing and keyed hashes.

Vocabulary:
    master keys   three random 32-byte secrets made at ``init``: ``enc_key`` (sealing),
                  ``id_key`` (blob ids and keyed path hashes), ``chunker_key`` (gear table).
    seal / open   authenticated encryption of one object with AES-256-GCM.
    object type   one byte naming what an object is (data blob, HAMT node, index, ...).
    object id     the bytes that name an object (a blob id, a pack id, a snapshot id).

Envelope of every sealed object (format v1)::

    version (1 byte = 1) | salt (16 random bytes) | nonce (12 random bytes) | ciphertext+tag

The AES key for one envelope is ``HMAC-SHA256(enc_key, "bk-obj-v1" | type | id | salt)``:
a fresh key for every object written, so no (key, nonce) pair can repeat however many
clients write at once (kopia derives per object too). The associated data is
``"bk1" | type | len(id) | id``, so the store cannot swap objects between names or
re-type them (borg CVE-2016-10099 / CVE-2023-36811 were type confusions).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backupkit.errors import IntegrityError

ENVELOPE_VERSION = 1
SALT_LEN = 16
NONCE_LEN = 12
TAG_LEN = 16
OVERHEAD = 1 + SALT_LEN + NONCE_LEN + TAG_LEN

# Object types: bound into every envelope's key derivation and associated data.
T_CONFIG = 1
T_DATA_BLOB = 2
T_META_BLOB = 3
T_PACK_HEADER = 4
T_INDEX = 5
T_SNAPSHOT = 6
T_CATALOG = 7
T_LOCK = 8
T_KEY_META = 9

TYPE_NAMES = {
    T_CONFIG: "config",
    T_DATA_BLOB: "data blob",
    T_META_BLOB: "metadata blob",
    T_PACK_HEADER: "pack header",
    T_INDEX: "index",
    T_SNAPSHOT: "snapshot",
    T_CATALOG: "catalog",
    T_LOCK: "lock",
    T_KEY_META: "key metadata",
}


@dataclass(frozen=True)
class MasterKeys:
    """The repository's secrets; never written anywhere unwrapped."""

    enc_key: bytes
    id_key: bytes
    chunker_key: bytes

    @classmethod
    def generate(cls) -> MasterKeys:
        return cls(os.urandom(32), os.urandom(32), os.urandom(32))

    def to_dict(self) -> dict[str, bytes]:
        return {"enc": self.enc_key, "id": self.id_key, "chunker": self.chunker_key}

    @classmethod
    def from_dict(cls, d: dict) -> MasterKeys:
        if not isinstance(d, dict) or not all(isinstance(d.get(k), bytes) for k in ("enc", "id", "chunker")):
            raise IntegrityError("key file holds no master keys")
        keys = cls(d["enc"], d["id"], d["chunker"])
        if not all(len(k) == 32 for k in (keys.enc_key, keys.id_key, keys.chunker_key)):
            raise IntegrityError("key file holds master keys of the wrong length")
        return keys


def _aad(obj_type: int, obj_id: bytes) -> bytes:
    return b"bk1" + bytes((obj_type, len(obj_id))) + obj_id


class HmacSha256:
    """HMAC-SHA256 with one key, its two padded-key blocks hashed once (RFC 2104).

    ``digest(a, b, ...)`` is HMAC over the concatenation of its arguments. It copies two
    precomputed hashlib states per call, about half the cost of ``hmac.HMAC.copy``;
    blob ids, path keys and per-object keys are computed for every file and chunk.
    hashlib releases the GIL for large inputs, so chunk ids hash in parallel.
    """

    __slots__ = ("_inner", "_outer")

    def __init__(self, key: bytes, prefix: bytes = b"") -> None:
        if len(key) > 64:
            key = hashlib.sha256(key).digest()
        key = key.ljust(64, b"\x00")
        self._inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
        self._outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))
        if prefix:
            self._inner.update(prefix)

    def digest(self, *parts: bytes | memoryview) -> bytes:
        inner = self._inner.copy()
        for p in parts:
            inner.update(p)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


class Sealer:
    """Seals and opens objects and computes keyed ids with one set of master keys."""

    def __init__(self, keys: MasterKeys) -> None:
        self.keys = keys
        self._id_hmac = HmacSha256(keys.id_key)
        self._enc_hmac = HmacSha256(keys.enc_key, b"bk-obj-v1")

    # -- keyed hashes -----------------------------------------------------------------
    def blob_id(self, data: bytes | memoryview) -> bytes:
        """HMAC-SHA256(id_key, plaintext): the id of a blob."""
        return self._id_hmac.digest(data)

    def keyed_hash(self, domain: bytes, data: bytes) -> bytes:
        """HMAC-SHA256(id_key, domain | 0x00 | data) for names that must not leak."""
        return self._id_hmac.digest(domain, b"\x00", data)

    # -- envelopes --------------------------------------------------------------------
    def _object_key(self, obj_type: int, obj_id: bytes, salt: bytes) -> bytes:
        return self._enc_hmac.digest(bytes((obj_type, len(obj_id))), obj_id, salt)

    def seal(self, obj_type: int, obj_id: bytes, plaintext: bytes | memoryview) -> bytes:
        """Encrypt and authenticate ``plaintext`` as an object of this type and id."""
        rnd = os.urandom(SALT_LEN + NONCE_LEN)  # one getrandom call: this runs per blob
        salt, nonce = rnd[:SALT_LEN], rnd[SALT_LEN:]
        key = self._object_key(obj_type, obj_id, salt)
        ct = AESGCM(key).encrypt(nonce, bytes(plaintext), _aad(obj_type, obj_id))
        return b"".join((bytes((ENVELOPE_VERSION,)), salt, nonce, ct))

    def open(self, obj_type: int, obj_id: bytes, envelope: bytes | memoryview, what: str = "") -> bytes:
        """Decrypt and verify an envelope; IntegrityError names ``what`` on failure."""
        env = memoryview(envelope)
        label = what or f"{TYPE_NAMES.get(obj_type, obj_type)} {obj_id.hex()[:16]}"
        if len(env) < OVERHEAD or env[0] != ENVELOPE_VERSION:
            raise IntegrityError(f"{label}: not a valid sealed object")
        salt = bytes(env[1 : 1 + SALT_LEN])
        nonce = bytes(env[1 + SALT_LEN : 1 + SALT_LEN + NONCE_LEN])
        key = self._object_key(obj_type, obj_id, salt)
        try:
            return AESGCM(key).decrypt(nonce, env[1 + SALT_LEN + NONCE_LEN :], _aad(obj_type, obj_id))
        except InvalidTag:
            raise IntegrityError(f"{label}: authentication failed (corrupt or tampered)") from None


def secure_shuffle(items: list) -> None:
    """Shuffle ``items`` in place with randomness from the OS, in one getrandom call.

    Fisher-Yates over 64-bit random words (the modulo bias is below 2**-40 for any
    list that fits in memory); ``random.SystemRandom().shuffle`` makes one system call
    per item, which costs more than the rest of a small pack's assembly.
    """
    n = len(items)
    if n < 2:
        return
    words = memoryview(os.urandom(8 * n)).cast("Q")
    for i in range(n - 1, 0, -1):
        j = words[i] % (i + 1)
        items[i], items[j] = items[j], items[i]


def padme(length: int) -> int:
    """Padmé padding: the smallest size >= length whose low bits are zero.

    Leaks O(log log L) bits of a length with at most ~12% overhead (~3% at 16 MiB).
    """
    if length < 2:
        return length
    e = length.bit_length() - 1
    s = e.bit_length()
    last_bits = e - s
    mask = (1 << last_bits) - 1
    return (length + mask) & ~mask
