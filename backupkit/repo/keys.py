"""Key files: the master keys wrapped under a password.

A key file ``keys/<id>`` is JSON, the only thing in a repository that is not sealed::

    {"version": 1,
     "kdf": {"name": "argon2id", "salt": b64, "iterations": t, "memory_kib": m, "lanes": p},
     "data": b64(nonce | AES-256-GCM(kek, msgpack(master keys), aad="bk-keyfile-v1" | id)),
     "meta": b64(sealed T_KEY_META object: host, user, created)}

``kek = Argon2id(password, salt, t, m, p)``. The KDF parameters are all a store operator
can read. Host and user names are sealed with the master key (``meta``) so ``key list``
shows them with any valid password while the store learns nothing.
"""

from __future__ import annotations

import base64
import getpass
import json
import os
import socket
import time
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from backupkit.crypto import T_KEY_META, MasterKeys, Sealer
from backupkit.errors import FormatError, IntegrityError, WrongPassword


@dataclass(frozen=True)
class KdfParams:
    """Argon2id cost parameters (borg 2's defaults: t=3, 64 MiB, 4 lanes)."""

    iterations: int = 3
    memory_kib: int = 64 * 1024
    lanes: int = 4


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _unb64(s: str) -> bytes:
    return base64.b64decode(s.encode(), validate=True)


def _derive(password: bytes, salt: bytes, p: KdfParams) -> bytes:
    kdf = Argon2id(salt=salt, length=32, iterations=p.iterations, lanes=p.lanes, memory_cost=p.memory_kib)
    return kdf.derive(password)


@dataclass(frozen=True)
class KeyInfo:
    """What ``bk key list`` shows about one key file."""

    id: str
    host: str
    user: str
    created: float
    kdf: KdfParams


def make_key_file(key_id: str, keys: MasterKeys, password: bytes, kdf: KdfParams) -> bytes:
    """Return the bytes of a new key file wrapping ``keys`` under ``password``."""
    salt = os.urandom(16)
    kek = _derive(password, salt, kdf)
    nonce = os.urandom(12)
    wrapped = nonce + AESGCM(kek).encrypt(nonce, msgpack.packb(keys.to_dict()), b"bk-keyfile-v1" + key_id.encode())
    meta = {"host": socket.gethostname(), "user": getpass.getuser(), "created": time.time()}
    sealed_meta = Sealer(keys).seal(T_KEY_META, key_id.encode(), msgpack.packb(meta))
    doc = {
        "version": 1,
        "kdf": {
            "name": "argon2id",
            "salt": _b64(salt),
            "iterations": kdf.iterations,
            "memory_kib": kdf.memory_kib,
            "lanes": kdf.lanes,
        },
        "data": _b64(wrapped),
        "meta": _b64(sealed_meta),
    }
    return json.dumps(doc, indent=1).encode()


def _parse(key_id: str, raw: bytes) -> tuple[dict, KdfParams]:
    try:
        doc = json.loads(raw)
        k = doc["kdf"]
        if doc.get("version") != 1 or k.get("name") != "argon2id":
            raise FormatError(f"key file {key_id}: unsupported version or KDF")
        params = KdfParams(int(k["iterations"]), int(k["memory_kib"]), int(k["lanes"]))
        return doc, params
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"key file {key_id} is malformed: {e}") from None


def open_key_file(key_id: str, raw: bytes, password: bytes) -> MasterKeys:
    """Unwrap the master keys; WrongPassword if this password does not open it."""
    doc, params = _parse(key_id, raw)
    try:
        salt = _unb64(doc["kdf"]["salt"])
        wrapped = _unb64(doc["data"])
    except (ValueError, KeyError) as e:
        raise FormatError(f"key file {key_id} is malformed: {e}") from None
    kek = _derive(password, salt, params)
    try:
        plain = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], b"bk-keyfile-v1" + key_id.encode())
    except InvalidTag:
        raise WrongPassword("wrong password or no key found") from None
    try:
        return MasterKeys.from_dict(msgpack.unpackb(plain))
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"key file {key_id}: bad payload: {e}") from None


def key_info(key_id: str, raw: bytes, sealer: Sealer) -> KeyInfo:
    """Read a key file's sealed metadata with the (already known) master keys."""
    doc, params = _parse(key_id, raw)
    try:
        meta = msgpack.unpackb(sealer.open(T_KEY_META, key_id.encode(), _unb64(doc["meta"]), f"key file {key_id}"))
    except (ValueError, KeyError) as e:
        raise FormatError(f"key file {key_id} is malformed: {e}") from None
    except IntegrityError:
        return KeyInfo(key_id, "?", "?", 0.0, params)
    return KeyInfo(key_id, meta.get("host", "?"), meta.get("user", "?"), float(meta.get("created", 0)), params)
