"""The blob index: blob id -> (pack, offset, length, raw length); the pack's kind gives
the blob's type.

Stored as immutable sealed objects ``index/<id>`` (id random), one or more per writing
session, merged in memory on open. Their plaintext and its codec: ``index_codec.py``.

``supersedes`` lists index objects this one replaces (written by prune's compaction); a
reader ignores superseded objects that still exist (prune deletes them after writing the
new one). Memory: ~49 bytes per blob in memory (see ``Index``).
"""

from __future__ import annotations

import struct
import threading
from array import array
from bisect import bisect_left
from contextlib import contextmanager
from collections.abc import ItemsView, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

try:
    from backupkit.repo import _indexops
except ImportError:  # pragma: no cover - the extension is built by pip install
    _indexops = None


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
    """The in-memory union of all index objects; thread-safe for concurrent add/lookup.

    Compact: blobs live in ``SHARDS`` shards by the id's first byte. A shard is a sorted
    ``bytes`` of fixed ``RECORD``-byte records (blob id, then pack number, offset,
    length, raw length as little-endian u32), found through a small directory of record
    numbers by the id's next bits, plus a dict of the blobs added since the shard was
    last rebuilt; the dict is merged into the sorted table when it grows past an eighth
    of it (so each rebuild costs one shard, and a blob is copied ~8 times over the
    index's life). ~49 bytes per blob at 10M blobs instead of ~200 for a dict of tuples.
    A blob whose numbers do not fit in u32 stays in a dict for good (``_wide``).
    """

    SHARDS = 256
    MIN_MERGE = 256  # a shard's dict is merged into its table past max(this, table / 8)

    def __init__(self) -> None:
        self._packs: list[PackInfo] = []
        self._pack_no: dict[bytes, int] = {}
        self._tables: list[bytes] = [b""] * self.SHARDS
        self._dirs: list[tuple[int, array[int]]] = [(0, _EMPTY_DIR)] * self.SHARDS
        self._recent: list[dict[bytes, tuple[int, int, int, int]]] = [{} for _ in range(self.SHARDS)]
        self._wide: dict[bytes, tuple[int, int, int, int]] = {}
        self._count = 0
        self._pending: list[bytearray] | None = None
        self._pending_override: bool | None = None
        self._shadowing = [False] * self.SHARDS
        self._lock = threading.Lock()

    def add_pack(self, pack: PackInfo, entries: Iterable[tuple[bytes, int, int, int]], override: bool = False) -> None:
        """Register a pack and its blobs (blob_id, offset, length, raw_length); a blob
        already known keeps its location unless ``override``. Inside ``bulk()`` the blobs
        are only queued (lookups do not see them until the bulk ends)."""
        with self._lock:
            no = self._pack_no.get(pack.id)
            if no is None:
                no = len(self._packs)
                self._packs.append(pack)
                self._pack_no[pack.id] = no
            self._add(no, entries, override)

    def relocate(self, pack: PackInfo, entries: Iterable[tuple[bytes, int, int, int]]) -> None:
        """Point blobs at their copy in ``pack`` (already added), replacing a damaged one."""
        with self._lock:
            self._add(self._pack_no[pack.id], entries, True)

    def _add(self, no: int, entries: Iterable[tuple[bytes, int, int, int]], override: bool) -> None:
        pending = self._pending
        if pending is not None:
            if self._pending_override is not override:
                self._flush_pending()  # one rule per batch of queued records
                self._pending_override = override
            if _indexops is not None and type(entries) is PackedEntries:
                # every packed entry fits a record (32-byte id, u32 numbers): the loop
                # below without its checks, in C
                _indexops.queue_records(pending, entries.data, no)
                return
            for blob_id, offset, length, raw_length in entries:
                if len(blob_id) != _ID or max(offset, length, raw_length) > _U32 or min(offset, length, raw_length) < 0:
                    self._flush_pending()  # keeps the order for a blob that does not pack
                    self._put(no, blob_id, offset, length, raw_length, override)
                else:
                    pending[blob_id[0]] += _REC.pack(blob_id, no, offset, length, raw_length)
            return
        for blob_id, offset, length, raw_length in entries:
            self._put(no, blob_id, offset, length, raw_length, override)

    def _put(self, no: int, blob_id: bytes, offset: int, length: int, raw_length: int, override: bool) -> None:
        old = self._find(blob_id)
        if old is not None and not override:
            return
        if old is None:
            self._count += 1
        v = (no, offset, length, raw_length)
        if len(blob_id) != _ID or max(offset, length, raw_length) > _U32 or min(offset, length, raw_length) < 0:
            self._wide[blob_id] = v  # looked up first: shadows an older location
            return
        if self._wide:
            self._wide.pop(blob_id, None)
        shard = blob_id[0]
        recent = self._recent[shard]
        if old is not None and blob_id not in recent:
            self._shadowing[shard] = True  # the dict's entry shadows the table's
        recent[blob_id] = v
        if len(recent) > self.MIN_MERGE and len(recent) * 8 > len(self._tables[shard]) // RECORD:
            self._rebuild(shard, b"", False)

    @contextmanager
    def bulk(self) -> Iterator[None]:
        """Add many packs at once (loading): ``add_pack`` appends packed records to one
        buffer per shard, and each shard is sorted once when the block ends. The index
        is complete (and duplicates resolved as one by one adds would) only after it."""
        with self._lock:
            if self._pending is not None:
                raise RuntimeError("Index.bulk() does not nest")
            self._pending = [bytearray() for _ in range(self.SHARDS)]
            self._pending_override = None
        try:
            yield
        finally:
            with self._lock:
                self._flush_pending()
                self._pending = None

    def _flush_pending(self) -> None:
        """Sort the bulk's queued records into their shards (lock held)."""
        pending = self._pending
        assert pending is not None
        for shard in range(self.SHARDS):
            buf = pending[shard]
            if buf:
                pending[shard] = bytearray()
                self._rebuild(shard, buf, bool(self._pending_override))

    def _rebuild(self, shard: int, extra: bytes | bytearray, override: bool) -> None:
        """Rebuild one shard's sorted table from the table, its dict and ``extra`` (queued
        records, in the order added; lock held). The dict's entries win over the
        table's; ``extra``'s win over both with ``override``, else the earliest wins."""
        table = self._tables[shard]
        recent = self._recent[shard]
        pack = _REC.pack
        if _indexops is not None and not self._wide:
            # the branches below, in C: the dict's records after the table's, the last
            # of an id kept; then ``extra``'s after those, the last kept with
            # ``override``, else the first (which is the table's or the dict's, or the
            # earliest of ``extra``)
            fresh = b"".join([pack(bid, *v) for bid, v in recent.items()])
            new = _indexops.sort_records([table, fresh], True) if fresh else table
            if extra:
                base = len(new)
                new = _indexops.sort_records([new, extra], override)
                self._count += (len(new) - base) // RECORD
            self._install(shard, new)
            return
        recs = [table[i : i + RECORD] for i in range(0, len(table), RECORD)]
        if not extra and not self._shadowing[shard] and not self._wide:
            recs.extend([pack(bid, *v) for bid, v in recent.items()])
            recs.sort()  # two sorted runs, no repeats: timsort merges them in one pass
        else:
            d = {r[:_ID]: r for r in recs}
            d.update((bid, pack(bid, *v)) for bid, v in recent.items())
            wide = self._wide
            for bid in wide.keys() & d.keys() if wide else ():
                del d[bid]  # the wide entry was added later (lookups see it first)
            base = len(d)
            popped = 0
            if extra:
                ex = [bytes(extra[i : i + RECORD]) for i in range(0, len(extra), RECORD)]
                if override:
                    e = {r[:_ID]: r for r in ex}  # the last wins
                    for bid in wide.keys() & e.keys() if wide else ():
                        del wide[bid]
                        popped += 1
                    d.update(e)
                else:
                    e = {r[:_ID]: r for r in reversed(ex)}  # the earliest wins
                    for bid in wide.keys() & e.keys() if wide else ():
                        del e[bid]
                    e.update(d)
                    d = e
                del ex, e
            self._count += len(d) - base - popped
            recs = sorted(d.values())
            del d
        n = len(recs)
        bits = _dir_bits(n)
        step = 16 - bits
        bounds = array("I", [bisect_left(recs, bytes((shard, (j << step) >> 8, (j << step) & 255))) for j in range(1 << bits)])
        bounds.append(n)
        new = b"".join(recs)
        del recs
        self._set_table(shard, new, bits, bounds)

    def _install(self, shard: int, table: bytes) -> None:
        """Make ``table`` (sorted records, one per id) the shard's, with its directory
        made in C (``_rebuild``'s bisects)."""
        bits = _dir_bits(len(table) // RECORD)
        bounds = array("I")
        bounds.frombytes(_indexops.directory(table, shard, bits))
        self._set_table(shard, table, bits, bounds)

    def _set_table(self, shard: int, table: bytes, bits: int, bounds: array) -> None:
        self._tables[shard], self._dirs[shard] = table, (bits, bounds)
        self._recent[shard] = {}
        self._shadowing[shard] = False

    def _find(self, blob_id: bytes) -> tuple[int, int, int, int] | None:
        if self._wide:
            v = self._wide.get(blob_id)
            if v is not None or len(blob_id) != _ID:
                return v
        elif len(blob_id) != _ID:
            return None
        shard = blob_id[0]
        v = self._recent[shard].get(blob_id)
        if v is not None:
            return v
        bits, bounds = self._dirs[shard]
        table = self._tables[shard]
        if table:
            j = ((blob_id[1] << 8) | blob_id[2]) >> (16 - bits)
            lo, hi = bounds[j] * RECORD, bounds[j + 1] * RECORD
            pos = table.find(blob_id, lo, hi)
            while pos >= 0 and pos % RECORD:  # an id that spans two records: not a match
                pos = table.find(blob_id, pos + 1, hi)
            if pos >= 0:
                return _VAL.unpack_from(table, pos + _ID)
        return None

    def __contains__(self, blob_id: bytes) -> bool:
        return self._locked_find(blob_id) is not None

    def __len__(self) -> int:
        return self._count

    def missing(self, blob_ids: Iterable[bytes]) -> list[bytes]:
        """Those of ``blob_ids`` the index does not hold (one lock for all).

        ``_find``'s steps inlined, without reading the location: an unchanged backup
        asks this for every blob of every file."""
        with self._lock:
            if self._wide:
                find = self._find
                return [b for b in blob_ids if find(b) is None]
            if _indexops is not None:  # the loop below, in C (_indexops.c)
                return _indexops.missing(blob_ids, self._recent, self._dirs, self._tables)
            recents, dirs, tables = self._recent, self._dirs, self._tables
            out = []
            for b in blob_ids:
                if len(b) == _ID:
                    shard = b[0]
                    if b in recents[shard]:
                        continue
                    table = tables[shard]
                    if table:
                        bits, bounds = dirs[shard]
                        j = ((b[1] << 8) | b[2]) >> (16 - bits)
                        hi = bounds[j + 1] * RECORD
                        pos = table.find(b, bounds[j] * RECORD, hi)
                        while pos >= 0 and pos % RECORD:  # an id that spans two records
                            pos = table.find(b, pos + 1, hi)
                        if pos >= 0:
                            continue
                out.append(b)
            return out

    def _locked_find(self, blob_id: bytes) -> tuple[int, int, int, int] | None:
        with self._lock:
            return self._find(blob_id)

    def lookup(self, blob_id: bytes) -> BlobLocation | None:
        with self._lock:
            v = self._find(blob_id)
            if v is None:
                return None
            pack = self._packs[v[0]]
        return BlobLocation(blob_id, pack, v[1], v[2], v[3])

    def packs(self) -> list[PackInfo]:
        with self._lock:
            return [p for p in self._packs]

    def has_pack(self, pack_id: bytes) -> bool:
        return pack_id in self._pack_no

    def blobs(self) -> Iterator[BlobLocation]:
        """Every blob with its location (a snapshot of the current state)."""
        with self._lock:
            tables = list(self._tables)  # immutable bytes: a snapshot for free
            recents = [dict(r) for r in self._recent]
            shadowing = list(self._shadowing)
            wide = dict(self._wide)
            packs = list(self._packs)
        unpack = _REC.unpack_from
        for shard, table in enumerate(tables):
            hidden = recents[shard] if shadowing[shard] else None
            for pos in range(0, len(table), RECORD):
                blob_id, no, offset, length, raw_length = unpack(table, pos)
                if (hidden is not None and blob_id in hidden) or (wide and blob_id in wide):
                    continue  # a later location shadows this one
                yield BlobLocation(blob_id, packs[no], offset, length, raw_length)
        for recent in recents:
            for blob_id, (no, offset, length, raw_length) in recent.items():
                if not (wide and blob_id in wide):
                    yield BlobLocation(blob_id, packs[no], offset, length, raw_length)
        for blob_id, (no, offset, length, raw_length) in wide.items():
            yield BlobLocation(blob_id, packs[no], offset, length, raw_length)

_ID = 32
_U32 = 0xFFFFFFFF
_REC = struct.Struct("<32sIIII")
_VAL = struct.Struct("<IIII")
RECORD = _REC.size
_EMPTY_DIR = array("I", [0, 0])


def _dir_bits(n: int) -> int:
    """How many bits of the id (after its first byte) a table of ``n`` records is
    directed by: ~16 records per directory slot, 2 to 65,536 slots."""
    return max(1, min(16, (n // 16).bit_length()))


class PackedEntries(Sequence[tuple[bytes, int, int, int]]):
    """A pack's entries (blob_id, offset, length, raw_length) packed in one ``bytes``:
    a decoded index object holds ~44 bytes per blob instead of a tuple's ~200 while it
    waits to be merged."""

    __slots__ = ("_data",)
    _ENT = struct.Struct("<32sIII")

    def __init__(self, data: bytes) -> None:
        self._data = data

    @property
    def data(self) -> bytes:
        """The packed entries, 44 bytes each (``_ENT``)."""
        return self._data

    def __len__(self) -> int:
        return len(self._data) // self._ENT.size

    def __getitem__(self, i):  # type: ignore[override]
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(len(self)))]
        n = len(self)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(i)
        return self._ENT.unpack_from(self._data, i * self._ENT.size)

    def __iter__(self) -> Iterator[tuple[bytes, int, int, int]]:
        return self._ENT.iter_unpack(self._data)

    def __eq__(self, other: object) -> bool:
        return list(self) == list(other) if isinstance(other, Sequence) else NotImplemented


class PackEntryMap(Mapping[bytes, tuple[int, int, int]]):
    """One pack's entries as blob id -> (offset, length, raw_length), held packed as
    ``PackedEntries`` are (44 bytes a blob; a dict of tuples costs ~240): check keeps
    every pack's entries for the whole run. Iterating and ``items()`` unpack as they go;
    a lookup by id builds the pack's dict once (the paths that look up are the ones
    that found damage). Built with ``of`` or ``merged``: a blob listed twice keeps its
    first place and its last values, as a dict updated row by row would."""

    __slots__ = ("_data", "_dict")
    _ENT = PackedEntries._ENT

    def __init__(self, data: bytes) -> None:
        self._data = data  # unique ids (``of`` and ``merged`` see to it)
        self._dict: dict[bytes, tuple[int, int, int]] | None = None

    @classmethod
    def of(cls, rows: Sequence[tuple[bytes, int, int, int]]) -> PackEntryMap:
        """The map of ``rows`` (a ``PackedEntries`` is taken as it is when its ids are unique)."""
        if isinstance(rows, PackedEntries):
            if len({r[0] for r in rows}) == len(rows):
                return cls(rows.data)
        return cls._packed(rows)

    def merged(self, rows: Sequence[tuple[bytes, int, int, int]]) -> PackEntryMap:
        """This map with ``rows`` added after it (another index object listing the pack)."""
        return self._packed([*self._rows(), *rows])

    @classmethod
    def _packed(cls, rows: Iterable[tuple[bytes, int, int, int]]) -> PackEntryMap:
        d: dict[bytes, tuple[int, int, int]] = {}
        for bid, off, ln, raw in rows:
            d[bid] = (off, ln, raw)
        pack = cls._ENT.pack
        return cls(b"".join(pack(bid, *v) for bid, v in d.items()))

    def _rows(self) -> Iterator[tuple[bytes, int, int, int]]:
        return self._ENT.iter_unpack(self._data)

    def __len__(self) -> int:
        return len(self._data) // self._ENT.size

    def __iter__(self) -> Iterator[bytes]:
        return (r[0] for r in self._rows())

    def __getitem__(self, bid: bytes) -> tuple[int, int, int]:
        if self._dict is None:
            self._dict = {b: (o, ln, r) for b, o, ln, r in self._rows()}
        return self._dict[bid]

    def items(self) -> _PackEntryItems:  # type: ignore[override]
        return _PackEntryItems(self)


class _PackEntryItems(ItemsView):
    """``PackEntryMap.items()``: unpacked as iterated, no lookup per key."""

    def __iter__(self) -> Iterator[tuple[bytes, tuple[int, int, int]]]:
        return ((b, (o, ln, r)) for b, o, ln, r in self._mapping._rows())
