"""The blob index: blob id -> (pack, offset, length, raw length); the pack's kind gives
the blob's type.

Stored as immutable sealed objects ``index/<id>`` (id random), one or more per writing
session, merged in memory on open. Plaintext (before the payload encoding)::

    msgpack({"v": 1,
             "packs": [[pack_id, kind, pack_size, [[blob_id, offset, length, raw_length], ...]], ...],
             "supersedes": [index_id, ...]})

``supersedes`` lists index objects this one replaces (written by prune's compaction); a
reader ignores superseded objects that still exist (prune deletes them after writing the
new one). Memory: one dict entry per blob whose value is a small tuple.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import msgpack

from backupkit.errors import FormatError
from backupkit.repo.pack import KIND_DATA, KIND_META, PackEntry


@dataclass(frozen=True)
class PackInfo:
    """One pack as the index knows it."""

    id: bytes
    kind: str
    size: int


@dataclass(frozen=True)
class BlobLocation:
    """Where a blob is stored."""

    blob_id: bytes
    pack: PackInfo
    offset: int
    length: int
    raw_length: int


class Index:
    """The in-memory union of all index objects; thread-safe for concurrent add/lookup."""

    def __init__(self) -> None:
        self._packs: list[PackInfo] = []
        self._pack_no: dict[bytes, int] = {}
        self._blobs: dict[bytes, tuple[int, int, int, int]] = {}
        self._lock = threading.Lock()

    def add_pack(self, pack: PackInfo, entries: Iterable[tuple[bytes, int, int, int]], override: bool = False) -> None:
        """Register a pack and its blobs (blob_id, offset, length, raw_length); a blob
        already known keeps its location unless ``override``."""
        with self._lock:
            no = self._pack_no.get(pack.id)
            if no is None:
                no = len(self._packs)
                self._packs.append(pack)
                self._pack_no[pack.id] = no
            blobs = self._blobs
            for blob_id, offset, length, raw_length in entries:
                if override or blob_id not in blobs:
                    blobs[blob_id] = (no, offset, length, raw_length)

    def relocate(self, pack: PackInfo, entries: Iterable[tuple[bytes, int, int, int]]) -> None:
        """Point blobs at their copy in ``pack`` (already added), replacing a damaged one."""
        with self._lock:
            no = self._pack_no[pack.id]
            for blob_id, offset, length, raw_length in entries:
                self._blobs[blob_id] = (no, offset, length, raw_length)

    def __contains__(self, blob_id: bytes) -> bool:
        return blob_id in self._blobs

    def __len__(self) -> int:
        return len(self._blobs)

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        v = self._blobs.get(blob_id)
        if v is None:
            return None
        no, offset, length, raw_length = v
        return BlobLocation(blob_id, self._packs[no], offset, length, raw_length)

    def packs(self) -> list[PackInfo]:
        with self._lock:
            return [p for p in self._packs]

    def has_pack(self, pack_id: bytes) -> bool:
        return pack_id in self._pack_no

    def blobs(self) -> Iterator[BlobLocation]:
        """Every blob with its location (a snapshot of the current state)."""
        with self._lock:
            items = list(self._blobs.items())
            packs = list(self._packs)
        for blob_id, (no, offset, length, raw_length) in items:
            yield BlobLocation(blob_id, packs[no], offset, length, raw_length)


@dataclass(frozen=True)
class IndexObject:
    """The decoded content of one index object."""

    packs: list[tuple[PackInfo, list[tuple[bytes, int, int, int]]]]
    supersedes: list[bytes]


def encode_index(packs: Iterable[tuple[PackInfo, Iterable[PackEntry]]], supersedes: Iterable[bytes] = ()) -> bytes:
    rows = [
        [p.id, p.kind, p.size, [[e.blob_id, e.offset, e.length, e.raw_length] for e in entries]]
        for p, entries in packs
    ]
    return msgpack.packb({"v": 1, "packs": rows, "supersedes": list(supersedes)})


def decode_index(data: bytes, what: str) -> IndexObject:
    try:
        doc = msgpack.unpackb(data)
        if doc.get("v") != 1:
            raise FormatError(f"{what}: unsupported index version {doc.get('v')}")
        packs = []
        for pid, kind, size, blobs in doc["packs"]:
            if kind not in (KIND_DATA, KIND_META):
                raise FormatError(f"{what}: unknown pack kind {kind!r}")
            packs.append((PackInfo(bytes(pid), kind, int(size)), [(bytes(b), int(o), int(ln), int(r)) for b, o, ln, r in blobs]))
        return IndexObject(packs, [bytes(s) for s in doc.get("supersedes", [])])
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise FormatError(f"{what}: malformed index: {e}") from None
