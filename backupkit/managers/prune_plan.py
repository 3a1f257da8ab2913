"""The values prune computes: the ``--max-unused`` limit, the plan and its statistics,
and the result of executing it (see ``prune`` for what they mean)."""

from __future__ import annotations

import re
import struct
import threading
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from backupkit.errors import BadArgument
from backupkit.repo.index import Index, PackedEntries, PackInfo
from backupkit.repo.pack import pack_name
from backupkit.units import is_size, parse_size

IndexEntry = tuple[bytes, int, int, int]  # blob id, offset, length, raw length


class PackEntries(Mapping[bytes, Sequence[IndexEntry]]):
    """pack id -> its entries in ``index``, for the packs in ``pack_ids`` (each maps to a
    possibly empty sequence). Grouped in one pass over the index on first use, so
    planning and a dry run hold no per-blob entries; executing holds each pack's
    entries packed (``PackedEntries``, 44 bytes a blob), and the index they came from is
    let go once grouped (the repository reloads its own after the prune)."""

    def __init__(self, index: Index, pack_ids: Iterable[bytes]) -> None:
        self._index: Index | None = index
        self._ids = frozenset(pack_ids)
        self._map: dict[bytes, Sequence[IndexEntry]] | None = None
        self._lock = threading.Lock()

    def group(self) -> dict[bytes, Sequence[IndexEntry]]:
        """Group (once) and return the mapping."""
        with self._lock:
            if self._map is None:
                assert self._index is not None
                ids = self._ids
                m: dict[bytes, bytearray] = {pid: bytearray() for pid in ids}
                wide: dict[bytes, list[IndexEntry]] = {}  # entries the packed record cannot hold
                pack = PackedEntries._ENT.pack
                for loc in self._index.blobs():
                    if loc.pack.id in ids:
                        e = (loc.blob_id, loc.offset, loc.length, loc.raw_length)
                        try:
                            m[loc.pack.id] += pack(*e)
                        except struct.error:
                            wide.setdefault(loc.pack.id, []).append(e)
                self._map = {pid: PackedEntries(bytes(m.pop(pid))) for pid in list(m)}
                for pid, es in wide.items():
                    self._map[pid] = (*self._map[pid], *es)
                self._index = None
            return self._map

    def __getitem__(self, pack_id: bytes) -> Sequence[IndexEntry]:
        if pack_id not in self._ids:
            raise KeyError(pack_id)
        return self.group()[pack_id]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._ids)

    def __len__(self) -> int:
        return len(self._ids)


@dataclass(frozen=True)
class MaxUnused:
    """``--max-unused``: how much unused data prune may leave in partly used packs.

    ``percent`` is of the *used* data's share, as in restic: 5% leaves at most
    used * 5 / 95 unused bytes. ``bytes`` is an absolute limit; both None is unlimited.
    """

    percent: float | None = 5.0
    bytes: int | None = None

    def limit(self, used: int) -> float:
        if self.bytes is not None:
            return float(self.bytes)
        if self.percent is None:
            return float("inf")
        if self.percent >= 100:
            return float("inf")
        return used * self.percent / (100 - self.percent)

    def __str__(self) -> str:
        if self.bytes is not None:
            return f"{self.bytes} bytes"
        return "unlimited" if self.percent is None else f"{self.percent:g}%"


def parse_max_unused(s: str) -> MaxUnused:
    """Parse ``5%``, ``0%``, ``100M``, ``2G``, ``1234`` or ``unlimited``."""
    text = s.strip().lower()
    if text == "unlimited":
        return MaxUnused(percent=None)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
    if m:
        p = float(m.group(1))
        if p > 100:
            raise BadArgument(f"invalid --max-unused {s!r}: a percentage must be at most 100%")
        return MaxUnused(percent=p)
    if is_size(text):
        return MaxUnused(percent=None, bytes=parse_size(text, "--max-unused"))
    raise BadArgument(f"invalid --max-unused {s!r}: use a percentage (5%), a size (100M) or 'unlimited'")


@dataclass(frozen=True)
class PruneStats:
    """Counts and bytes of a plan (sizes are stored bytes)."""

    #: snapshots whose blobs are kept, and index objects read
    snapshots: int = 0
    index_objects: int = 0
    #: indexed packs
    packs: int = 0
    #: blobs a kept snapshot reaches (used) or none does (unused), and their stored bytes
    blobs_used: int = 0
    blobs_unused: int = 0
    bytes_used: int = 0
    bytes_unused: int = 0
    #: packs with no used blob: deleted whole
    packs_delete: int = 0
    bytes_delete: int = 0
    #: packs with both kinds, rewritten without their unused blobs; ``bytes_repack_live``
    #: is what the rewrite writes again
    packs_repack: int = 0
    bytes_repack: int = 0
    bytes_repack_live: int = 0
    #: packs in the store that no index names (left by an interrupted backup): deleted
    packs_unindexed: int = 0
    bytes_unindexed: int = 0
    #: indexed packs the store no longer has (none of their blobs is used)
    packs_missing: int = 0
    #: unused bytes left in kept packs after the plan (within ``--max-unused``)
    bytes_unused_after: int = 0

    @property
    def bytes_freed(self) -> int:
        """Estimate: deleted + unindexed + repacked packs, minus what repacking rewrites."""
        return self.bytes_delete + self.bytes_unindexed + self.bytes_repack - self.bytes_repack_live

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["bytes_freed"] = self.bytes_freed
        return d


@dataclass(frozen=True)
class RepackRules:
    """Which packs prune may repack besides what ``--max-unused`` asks (restic's options)."""

    #: ``--max-repack-size``: the packs one run repacks hold at most this many bytes (a
    #: pack that would pass it is kept for a later run; a smaller one after it may fit)
    max_bytes: int | None = None
    #: ``--repack-small``: join packs below 80% of the pack size when there are at least
    #: SMALL_PACKS_MIN of them (restic's count: data and metadata together)
    small: bool = False
    #: ``--repack-cacheable-only``: repack metadata packs only (data packs keep their
    #: unused space; for a store where downloads cost: metadata packs are in the cache)
    cacheable_only: bool = False


#: ``RepackRules.small`` joins small packs only when there are at least this many
SMALL_PACKS_MIN = 10


@dataclass(frozen=True)
class PrunePlan:
    """What prune will do; execute it with ``PruneManager.execute``."""

    max_unused: MaxUnused
    stats: PruneStats
    #: every index object listed while planning; all are superseded by the new one
    index_names: tuple[str, ...]
    keep: tuple[PackInfo, ...]
    repack: tuple[PackInfo, ...]
    delete: tuple[PackInfo, ...]
    #: names of packs no index object names
    unindexed: tuple[str, ...]
    #: indexed packs the store does not list (none holds a live blob)
    missing: tuple[PackInfo, ...]
    #: pack id -> its entries in the merged index
    entries: Mapping[bytes, Sequence[IndexEntry]] = field(default_factory=dict, repr=False, compare=False)
    #: ids of every blob a snapshot reaches (membership only)
    live: Container[bytes] = field(default_factory=frozenset, repr=False, compare=False)
    #: restic's repacking options as given
    rules: RepackRules = field(default_factory=lambda: RepackRules())

    @property
    def nothing_to_do(self) -> bool:
        return not (self.repack or self.delete or self.unindexed or self.missing) and len(self.index_names) <= 1

    def to_json(self) -> dict:
        return {
            "max_unused": str(self.max_unused),
            "max_repack_size": self.rules.max_bytes,
            "repack_small": self.rules.small,
            "repack_cacheable_only": self.rules.cacheable_only,
            "stats": self.stats.to_json(),
            "delete": [pack_name(p.kind, p.id) for p in self.delete],
            "repack": [pack_name(p.kind, p.id) for p in self.repack],
            "unindexed": list(self.unindexed),
            "missing": [pack_name(p.kind, p.id) for p in self.missing],
            "index_objects": list(self.index_names),
            "nothing_to_do": self.nothing_to_do,
        }


@dataclass(frozen=True)
class PruneResult:
    plan: PrunePlan
    packs_written: int
    bytes_written: int
    index_written: str | None
    index_deleted: int
    packs_deleted: int
    bytes_deleted: int
    seconds: float
    #: partial writes of killed processes removed (a local store's temp files)
    abandoned_removed: int = 0

    def to_json(self) -> dict:
        return {
            "plan": self.plan.to_json(),
            "packs_written": self.packs_written,
            "bytes_written": self.bytes_written,
            "index_written": self.index_written,
            "index_deleted": self.index_deleted,
            "packs_deleted": self.packs_deleted,
            "bytes_deleted": self.bytes_deleted,
            "abandoned_removed": self.abandoned_removed,
            "seconds": round(self.seconds, 3),
        }
