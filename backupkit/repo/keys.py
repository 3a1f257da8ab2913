"""Key files: the master keys wrapped under a password.

A key file ``keys/<id>`` is JSON, the only thing in a repository that is not sealed::

    {"version": 1,
     "kdf": {"name": "argon2id", "salt": b64, "iterations": t, "memory_kib": m, "lanes": p},
     "data": b64(nonce | AES-256-GCM(kek, msgpack(master keys), aad="bk-keyfile-v1" | id)),
     "meta": b64(sealed T_KEY_META object: host, user, created, binds)}

``kek = Argon2id(password, salt, t, m, p)``. The KDF parameters are all a store operator
can read. Host and user names are sealed with the master key (``meta``) so ``key list``
shows them with any valid password while the store learns nothing.

``binds`` (key files written since issue 9.5; older ones lack it) is SHA-256 over the
version, KDF fields and ``data`` (``_binding``): sealed with the master keys, it lets
anyone holding them (``check``, ``key list``) verify every byte of a key file whose
password they do not know. With the canonical layout (``json.dumps(doc, indent=1)``,
base64 re-encoded) checked too, ``verify_key_file`` notices a change at any position.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import json
import os
import socket
import time
from dataclasses import dataclass

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from backupkit.crypto import T_KEY_META, MasterKeys, Sealer
from backupkit import limits
from backupkit.errors import FormatError, IntegrityError, WrongPassword
from backupkit.repo import kdfahead


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


def check_kdf_params(p: KdfParams, what: str = "key file") -> None:
    """FormatError unless t, m and p are within the bounds of ``backupkit.limits``."""
    problem = kdfahead.bounds_problem(p.iterations, p.memory_kib, p.lanes)
    if problem is not None:
        raise FormatError(f"{what}: {problem}")


def _derive(password: bytes, salt: bytes, p: KdfParams) -> bytes:
    """The key-encryption key (``kdfahead``: one derivation at a time, or the one the
    command line started ahead with these inputs)."""
    check_kdf_params(p)
    return kdfahead.derive(password, salt, p.iterations, p.memory_kib, p.lanes)


@dataclass(frozen=True)
class KeyInfo:
    """What ``bk key list`` shows about one key file."""

    id: str
    host: str
    user: str
    created: float
    kdf: KdfParams


def make_key_file(
    key_id: str, keys: MasterKeys, password: bytes, kdf: KdfParams, host: str | None = None, user: str | None = None
) -> bytes:
    """Return the bytes of a new key file wrapping ``keys`` under ``password``; its sealed
    metadata names ``host`` and ``user`` (default: this machine's, as restic's)."""
    salt = os.urandom(16)
    kek = _derive(password, salt, kdf)
    nonce = os.urandom(12)
    wrapped = nonce + AESGCM(kek).encrypt(nonce, msgpack.packb(keys.to_dict()), b"bk-keyfile-v1" + key_id.encode())
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
    }
    meta = {
        "host": host or socket.gethostname(),
        "user": user or getpass.getuser(),
        "created": time.time(),
        "binds": _binding(doc),
    }
    doc["meta"] = _b64(Sealer(keys).seal(T_KEY_META, key_id.encode(), msgpack.packb(meta)))
    return json.dumps(doc, indent=1).encode()


def _binding(doc: dict) -> bytes:
    """SHA-256 over what the store can read and the password protects: the version, the
    KDF fields and the wrapped master keys (sealed into ``meta`` as ``binds``)."""
    bound = {"version": doc["version"], "kdf": doc["kdf"], "data": doc["data"]}
    return hashlib.sha256(json.dumps(bound, sort_keys=True, separators=(",", ":")).encode()).digest()


def _field(doc: dict, key: str, lo: int, hi: int, key_id: str) -> bytes:
    value = doc[key]
    if not isinstance(value, str) or len(value) > 4 * hi // 3 + 4:
        raise FormatError(f"damaged key file {key_id}: field {key!r} is not a short string")
    raw = _unb64(value)
    if not lo <= len(raw) <= hi:
        raise FormatError(f"damaged key file {key_id}: field {key!r} has {len(raw)} bytes")
    return raw


def _parse(key_id: str, raw: bytes) -> tuple[dict, KdfParams]:
    """The key file's JSON and KDF parameters; FormatError("damaged key file ...") if it
    does not parse or any field is out of bounds."""
    if len(raw) > limits.KEY_FILE_MAX:
        raise FormatError(f"damaged key file {key_id}: {len(raw)} bytes")
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or not isinstance(doc.get("kdf"), dict):
            raise ValueError("not a key file")
        k = doc["kdf"]
        if doc.get("version") != 1 or k.get("name") != "argon2id":
            raise FormatError(f"damaged key file {key_id}: unsupported version or KDF")
        nums = [k["iterations"], k["memory_kib"], k["lanes"]]
        if not all(type(n) is int for n in nums):
            raise ValueError("KDF parameters are not integers")
        params = KdfParams(*nums)
        check_kdf_params(params, f"damaged key file {key_id}")
        _field(k, "salt", limits.KDF_SALT_MIN, limits.KDF_SALT_MAX, key_id)
        _field(doc, "data", 12 + 16, limits.KEY_DATA_MAX, key_id)
        return doc, params
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        raise FormatError(f"damaged key file {key_id}: {e}") from None


def _check_canonical(key_id: str, doc: dict, raw: bytes) -> None:
    """FormatError unless ``raw`` is exactly what ``make_key_file`` writes for ``doc``
    (layout, whitespace, key order, base64 re-encoded from the decoded bytes): a changed
    byte in whitespace or in a base64 string's unused bits then shows too."""
    try:
        canon = dict(doc)
        canon["kdf"] = dict(doc["kdf"], salt=_b64(_unb64(doc["kdf"]["salt"])))
        canon["data"] = _b64(_unb64(doc["data"]))
        canon["meta"] = _b64(_unb64(doc["meta"]))
        same = set(canon) == {"version", "kdf", "data", "meta"} and json.dumps(canon, indent=1).encode() == raw
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"damaged key file {key_id}: {e}") from None
    if not same:
        raise FormatError(f"damaged key file {key_id}: not laid out as bk writes key files (a changed byte?)")


def verify_key_file(key_id: str, raw: bytes, sealer: Sealer) -> KeyInfo:
    """``key_info`` with every byte checked (``check``, ``key list``): FormatError
    ("damaged key file ...") for any change bk can see without the key file's password."""
    return key_info(key_id, raw, sealer, strict=True)


def open_key_file(key_id: str, raw: bytes, password: bytes) -> MasterKeys:
    """Unwrap the master keys; WrongPassword if this password does not open it,
    FormatError ("damaged key file ...") if it does not parse or its bounds are exceeded."""
    doc, params = _parse(key_id, raw)
    salt = _field(doc["kdf"], "salt", limits.KDF_SALT_MIN, limits.KDF_SALT_MAX, key_id)
    wrapped = _field(doc, "data", 12 + 16, limits.KEY_DATA_MAX, key_id)
    try:
        kek = _derive(password, salt, params)
    except (ValueError, MemoryError, OverflowError) as e:  # bounds passed, the library refused
        raise FormatError(f"damaged key file {key_id}: Argon2id: {e}") from None
    try:
        plain = AESGCM(kek).decrypt(wrapped[:12], wrapped[12:], b"bk-keyfile-v1" + key_id.encode())
    except InvalidTag:
        raise WrongPassword("wrong password or no key found") from None
    try:
        return MasterKeys.from_dict(msgpack.unpackb(plain))
    except (ValueError, KeyError, TypeError, IntegrityError) as e:
        raise FormatError(f"damaged key file {key_id}: bad payload: {e}") from None


def key_info(key_id: str, raw: bytes, sealer: Sealer, strict: bool = False) -> KeyInfo:
    """Read a key file's sealed metadata with the (already known) master keys.

    ``strict`` (``verify_key_file``): also FormatError ("damaged key file ...") unless the
    file is byte for byte as bk writes it and, where its metadata binds them (``binds``),
    the KDF fields and wrapped keys are the ones sealed with it. A metadata that does not
    authenticate gives host and user "?" (the caller decides)."""
    doc, params = _parse(key_id, raw)
    if strict:
        _check_canonical(key_id, doc, raw)
    try:
        sealed = _field(doc, "meta", 0, limits.KEY_META_MAX, key_id)
        meta = msgpack.unpackb(sealer.open(T_KEY_META, key_id.encode(), sealed, f"key file {key_id}"))
        if not isinstance(meta, dict):
            raise ValueError("metadata is not a map")
    except (ValueError, KeyError, TypeError) as e:
        raise FormatError(f"key file {key_id} is malformed: {e}") from None
    except IntegrityError:
        return KeyInfo(key_id, "?", "?", 0.0, params)
    binds = meta.get("binds")
    if strict and binds is not None and binds != _binding(doc):
        raise FormatError(f"damaged key file {key_id}: its KDF fields or wrapped keys are not the ones sealed with it")
    host, user, created = meta.get("host"), meta.get("user"), meta.get("created")
    return KeyInfo(
        key_id,
        host if isinstance(host, str) else "?",
        user if isinstance(user, str) else "?",
        float(created) if isinstance(created, (int, float)) and abs(created) < 1e11 else 0.0,
        params,
    )
