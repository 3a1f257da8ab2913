"""The index object's codec: its plaintext (before the payload encoding) to and from
packs with their entries, checked field by field.

    msgpack({"v": 1,
             "packs": [[pack_id, kind, pack_size, [[blob_id, offset, length, raw_length], ...]], ...],
             "supersedes": [index_id, ...]})

Both directions stream a row at a time (a prune's one index object names every blob), so
neither holds the object as msgpack lists; ``index.py`` keeps the decoded entries.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgpack

from backupkit.crypto import OVERHEAD
from backupkit.errors import FormatError
from backupkit.limits import BLOB_MAX, PACK_MAX
from backupkit.repo.index import PackedEntries, PackInfo
from backupkit.repo.pack import KIND_DATA, KIND_META, PackEntry

try:
    from backupkit.repo import _indexops
except ImportError:  # pragma: no cover - the extension is built by pip install
    _indexops = None


@dataclass(frozen=True)
class IndexObject:
    """The decoded content of one index object."""

    packs: list[tuple[PackInfo, Sequence[tuple[bytes, int, int, int]]]]
    supersedes: list[bytes]


def encode_index(
    packs: Sequence[tuple[PackInfo, Sequence[PackEntry] | Sequence[tuple[bytes, int, int, int]]]],
    supersedes: Iterable[bytes] = (),
) -> bytes:
    """The plaintext of an index object naming ``packs``, each with its entries as
    ``PackEntry`` or (blob_id, offset, length, raw_length) tuples (``PackedEntries``).

    Streamed into one buffer, a row at a time: the bytes of
    ``msgpack.packb({"v": 1, "packs": [[id, kind, size, [[blob_id, offset, length,
    raw_length], ...]], ...], "supersedes": [...]})`` without building those lists (a
    prune's one index names every blob: ~250 bytes of Python lists per blob before)."""
    packer = msgpack.Packer(autoreset=False)
    packer.pack_map_header(3)
    packer.pack("v")
    packer.pack(1)
    packer.pack("packs")
    packer.pack_array_header(len(packs))
    pack = packer.pack
    for p, entries in packs:
        packer.pack_array_header(4)
        pack(p.id)
        pack(p.kind)
        pack(p.size)
        packer.pack_array_header(len(entries))
        for e in entries:
            pack((e.blob_id, e.offset, e.length, e.raw_length) if isinstance(e, PackEntry) else e)
    pack("supersedes")
    pack(list(supersedes))
    return packer.bytes()


#: A sealed blob is its plaintext (or less, compressed) plus the envelope and flag byte.
_SEALED_BLOB_MAX = BLOB_MAX + OVERHEAD + 64
_KINDS = (KIND_DATA, KIND_META)


def _check_blob_row(row: object, size: int) -> tuple[bytes, int, int, int]:
    """One ``[blob_id, offset, length, raw_length]`` row, every field checked."""
    if type(row) is not list or len(row) != 4:
        raise ValueError("a blob row is not a 4-list")
    b, o, ln, r = row
    if type(b) is not bytes or len(b) != 32:
        raise ValueError("a blob id is not 32 bytes")
    if not (type(o) is int and type(ln) is int and type(r) is int):
        raise ValueError("a blob position is not an integer")
    if not (0 <= o and OVERHEAD < ln <= _SEALED_BLOB_MAX and o + ln <= size and 0 <= r <= BLOB_MAX):
        raise ValueError(f"blob {b.hex()[:16]} at {o}+{ln} (raw {r}) is out of range of its pack ({size} bytes)")
    return b, o, ln, r


def decode_index(data: bytes, what: str) -> IndexObject:
    """Parse one index object; FormatError unless every field has its type and range
    (ids of 32 bytes, each blob inside its pack, packs at most ``limits.PACK_MAX``).

    Streamed: a row is decoded, checked and packed into its pack's ``PackedEntries``
    before the next is read, so decoding holds ~44 bytes per blob, not the ~250 of
    the whole object as msgpack lists (an object prune wrote names every blob)."""
    if _indexops is not None:
        # the shape bk writes, read in C in one pass (None: anything else, read below)
        fast = _indexops.decode_index(data, OVERHEAD, _SEALED_BLOB_MAX, BLOB_MAX, PACK_MAX, _KINDS)
        if fast is not None:
            packs, supersedes = fast
            return IndexObject(
                [(PackInfo(pid, _KINDS[k], size), PackedEntries(rows)) for pid, k, size, rows in packs], supersedes
            )
    try:
        u = msgpack.Unpacker(io.BytesIO(data), max_buffer_size=max(len(data), 1))
        version: object = None
        packs: list[tuple[PackInfo, Sequence[tuple[bytes, int, int, int]]]] | None = None
        supersedes: object = []
        for _ in range(u.read_map_header()):
            key = u.unpack()
            if key == "packs":
                packs = _read_packs(u, what)
            elif key == "v":
                version = u.unpack()
                if version != 1:  # before the rest: a newer layout is not "malformed"
                    raise FormatError(f"{what}: unsupported index version {version}")
            else:
                value = u.unpack()
                if key == "supersedes":
                    supersedes = value
        try:
            u.unpack()
        except msgpack.OutOfData:
            pass
        else:
            raise ValueError("data after the index")
        if version != 1:
            raise FormatError(f"{what}: unsupported index version {version}")
        if packs is None:
            raise ValueError("no packs")
        if type(supersedes) is not list or not all(type(s) is bytes and len(s) == 32 for s in supersedes):
            raise ValueError("supersedes is not a list of ids")
        return IndexObject(packs, supersedes)
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, struct.error, msgpack.UnpackException) as e:
        raise FormatError(f"{what}: malformed index: {e}") from None


def _read_packs(u: msgpack.Unpacker, what: str) -> list[tuple[PackInfo, Sequence[tuple[bytes, int, int, int]]]]:
    """The ``packs`` array, read row by row from ``u``."""
    packs = []
    pack = PackedEntries._ENT.pack
    for _ in range(u.read_array_header()):
        if u.read_array_header() != 4:
            raise ValueError("a pack row is not a 4-list")
        pid, kind, size = u.unpack(), u.unpack(), u.unpack()
        if kind not in (KIND_DATA, KIND_META):
            raise FormatError(f"{what}: unknown pack kind {kind!r}")
        if type(pid) is not bytes or len(pid) != 32 or type(size) is not int or not 0 < size <= PACK_MAX:
            raise ValueError("a pack id or size is out of range")
        # every checked row fits the packed record (ids of 32 bytes, u32 numbers)
        rows = bytearray()
        for _ in range(u.read_array_header()):
            rows += pack(*_check_blob_row(u.unpack(), size))
        packs.append((PackInfo(pid, kind, size), PackedEntries(bytes(rows))))
    return packs
