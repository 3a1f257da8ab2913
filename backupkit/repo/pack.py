"""Blob payloads and pack files.

Vocabulary:
    payload   what is sealed for a blob: 1 flag byte (0 = raw, 1 = zstd) + the bytes.
    pack      one stored object holding many sealed blobs of one kind (data or meta).

Pack layout (format v1)::

    sealed blob | sealed blob | ... | padding | sealed header | u32 LE length of sealed header

Blobs appear in random order; ``padding`` is random bytes bringing the pack to a Padmé
size, so the store learns neither chunk sizes nor their count from pack sizes. The
header plaintext is ``u32 LE n | msgpack([1, [[type, id, offset, length, raw_length],
...]]) | zero fill`` up to a power of two >= 4 KiB, sealed as T_PACK_HEADER with the pack
id. It repeats what the index says, so an index can be rebuilt from packs. Packs are
assembled by ``PackBuilder`` (packspool.py), their tail written by ``pack_tail``.
"""

from __future__ import annotations

import os
import struct
import threading
from dataclasses import dataclass

import msgpack
import zstandard

from backupkit.crypto import T_DATA_BLOB, T_META_BLOB, T_PACK_HEADER, Sealer, padme
from backupkit.errors import FormatError, ObjectTooLarge
from backupkit.limits import BLOB_MAX, PACK_HEADER_MAX

try:
    from backupkit.repo import _blobseal

    SEAL_C = bool(_blobseal.available())
except ImportError:  # not built (a source checkout without the extension)
    _blobseal = None  # type: ignore[assignment]
    SEAL_C = False

KIND_DATA = "data"
KIND_META = "meta"
KIND_OF_TYPE = {T_DATA_BLOB: KIND_DATA, T_META_BLOB: KIND_META}
TYPE_OF_KIND = {KIND_DATA: T_DATA_BLOB, KIND_META: T_META_BLOB}

_FLAG_RAW = 0
_FLAG_ZSTD = 1
_local = threading.local()


def _compressor(level: int) -> zstandard.ZstdCompressor:
    c = getattr(_local, "cctx", None)
    if c is None or _local.level != level:
        c = _local.cctx = zstandard.ZstdCompressor(level=level)
        _local.level = level
    return c


def _decompressor() -> zstandard.ZstdDecompressor:
    d = getattr(_local, "dctx", None)
    if d is None:
        d = _local.dctx = zstandard.ZstdDecompressor()
    return d


def encode_payload(data: bytes | memoryview, level: int) -> bytes:
    """Compress with zstd when it shrinks the data, else store raw; prefix the flag."""
    if level > 0 and len(data) >= 64:
        z = _compressor(level).compress(data)
        if len(z) < len(data):
            return b"\x01" + z
    return b"\x00" + data  # bytes + any buffer: one copy


def seal_payloads(
    sealer: Sealer, obj_type: int, items: list[tuple[bytes, bytes | memoryview]], level: int, native: bool = True
) -> list[bytes]:
    """``sealer.seal(obj_type, id, encode_payload(data, level))`` of each (id, data) item.

    The C module ``_blobseal`` does the whole batch with the GIL released once (Python's
    AES-GCM keeps the GIL, and the Python path copies each blob three times while
    holding it: a backup's walk waited on that); the Python path is the reference
    (``native=False``, and wherever the extension or its libraries are missing). Both
    write the same format; the zstd frames may differ in bytes, never in what they hold."""
    if native and SEAL_C:
        return _blobseal.seal_blobs(sealer.keys.enc_key, obj_type, level, items)
    seal = sealer.seal
    return [seal(obj_type, oid, encode_payload(data, level)) for oid, data in items]


def blob_ids(sealer: Sealer, datas: list[bytes | memoryview], native: bool = True) -> list[bytes]:
    """``sealer.blob_id`` of each of ``datas``: one GIL-free call for a batch of small
    blobs (``_blobseal``), where hashlib keeps the GIL for inputs under 2 KiB."""
    if native and SEAL_C:
        return _blobseal.blob_ids(sealer.keys.id_key, datas)
    blob_id = sealer.blob_id
    return [blob_id(d) for d in datas]


def decode_payload(payload: bytes, what: str, limit: int = BLOB_MAX, view: bool = False) -> bytes | memoryview:
    """Undo encode_payload, producing at most ``limit`` bytes: a blob's raw length where
    the index or pack header gives it, else a maximum for the kind (``limits.plain_max``).

    A zstd frame that declares a larger content size is refused before anything is
    allocated; one that declares none is decompressed into a buffer of ``limit`` bytes
    and refused if it needs more (ObjectTooLarge, a FormatError). The blob id is checked
    only after decompression, so this bound is what stops a zstd bomb.

    ``view``: a raw payload's bytes come back as a memoryview of ``payload`` instead of a
    copy (for callers that only hash them: the copy is made holding the GIL).
    """
    if not payload:
        raise FormatError(f"{what}: empty payload")
    flag = payload[0]
    if flag == _FLAG_RAW:
        if len(payload) - 1 > limit:
            raise ObjectTooLarge(f"{what}: {len(payload) - 1} bytes, at most {limit} expected")
        return memoryview(payload)[1:] if view else payload[1:]
    if flag == _FLAG_ZSTD:
        body = memoryview(payload)[1:]
        try:
            declared = zstandard.frame_content_size(body)
            if declared > limit:
                raise ObjectTooLarge(f"{what}: compressed data declares {declared} bytes, at most {limit} expected")
            if declared >= 0:
                return _decompressor().decompress(body)
            # max_output_size is the output buffer's size and a hard bound
            return _decompressor().decompress(body, max_output_size=max(1, limit))
        except zstandard.ZstdError as e:
            raise FormatError(f"{what}: bad zstd data: {e}") from None
    raise FormatError(f"{what}: unknown payload flag {flag}")


@dataclass(frozen=True, slots=True)
class PackEntry:
    """Where one blob sits inside a pack. Slotted: a backup keeps one per uploaded blob
    until the next index checkpoint (up to ``Tuning.index_checkpoint_blobs``), and a slot
    object is ~80 bytes smaller than one with a ``__dict__``."""

    blob_type: int
    blob_id: bytes
    offset: int
    length: int
    raw_length: int


def pack_name(kind: str, pack_id: bytes) -> str:
    """Store name of a pack: ``data/3f/3fab...`` or ``meta/3f/3fab...``."""
    h = pack_id.hex()
    return f"{kind}/{h[:2]}/{h}"


def pack_id_from_name(name: str) -> tuple[str, bytes]:
    kind, _, h = name.split("/")
    return kind, bytes.fromhex(h)


def pack_tail(sealer: Sealer, pack_id: bytes, entries: list[PackEntry], blobs_size: int) -> bytes:
    """What follows a pack's blobs (``blobs_size`` bytes of them, laid out as ``entries``
    say): the random padding, the sealed header and its length (``read_pack_header``
    reads it back)."""
    body = msgpack.packb([1, [[e.blob_type, e.blob_id, e.offset, e.length, e.raw_length] for e in entries]])
    plain_len = 4 + len(body)
    fill = max(4096, 1 << (plain_len - 1).bit_length())
    header_plain = struct.pack("<I", len(body)) + body + bytes(fill - plain_len)
    header = sealer.seal(T_PACK_HEADER, pack_id, header_plain)
    unpadded = blobs_size + len(header) + 4
    return os.urandom(padme(unpadded) - unpadded) + header + struct.pack("<I", len(header))


def read_pack_header(sealer: Sealer, pack_id: bytes, tail: bytes, pack_size: int) -> list[PackEntry]:
    """Parse the header from the pack's last bytes (``tail`` must hold all of it)."""
    what = f"pack {pack_id.hex()[:16]}"
    if len(tail) < 4:
        raise FormatError(f"{what}: too short")
    (hlen,) = struct.unpack("<I", tail[-4:])
    if hlen + 4 > len(tail) or hlen + 4 > pack_size or hlen > PACK_HEADER_MAX:
        raise FormatError(f"{what}: header length {hlen} out of range")
    plain = sealer.open(T_PACK_HEADER, pack_id, tail[-4 - hlen : -4], what + " header")
    try:
        (n,) = struct.unpack("<I", plain[:4])
        if 4 + n > len(plain):
            raise ValueError(f"body length {n} past the header's end")
        doc = msgpack.unpackb(plain[4 : 4 + n])
        if type(doc) is not list or len(doc) != 2:
            raise ValueError("not a header")
        version, rows = doc
        if version != 1:
            raise FormatError(f"{what}: header version {version}")
        if type(rows) is not list:
            raise ValueError("rows are not a list")
        return [_header_row(row, pack_size) for row in rows]
    except (ValueError, TypeError, struct.error, RecursionError) as e:
        raise FormatError(f"{what}: bad header: {e}") from None


def _header_row(row: object, pack_size: int) -> PackEntry:
    if type(row) is not list or len(row) != 5:
        raise ValueError("a row is not a 5-list")
    t, i, o, ln, r = row
    if t not in (T_DATA_BLOB, T_META_BLOB) or type(i) is not bytes or len(i) != 32:
        raise ValueError("a row's type or blob id is invalid")
    if not all(type(v) is int for v in (o, ln, r)) or not (0 <= o and 0 < ln and o + ln <= pack_size and 0 <= r <= BLOB_MAX):
        raise ValueError(f"a row's position {o}+{ln} (raw {r}) is out of range")
    return PackEntry(t, i, o, ln, r)
