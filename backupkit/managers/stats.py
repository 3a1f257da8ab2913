"""Stats: sizes of snapshots and of the repository, from the index and the trie alone.

Modes (restic's names), over the selected snapshots:
    restore-size        files, directories and others a restore would create, and the
                        bytes it would write; summed over snapshots, a file with several
                        names (hard links) counted once per snapshot.
    files-by-contents   distinct file contents (equal content lists) and their bytes.
    blobs-per-file      restic's combination of the two: each distinct content once, at
                        the first path it is found under, and per path each of its data
                        blobs once (a later content of that path adds only its new
                        blobs); files (paths), blob references and their plaintext bytes.
                        An empty file has no blob and is not counted.
    raw-data            the blobs the snapshots reference (trie nodes, content lists and
                        data): how many, their bytes before and after compression and
                        encryption, and the deduplication ratio (restore size / raw
                        bytes of data blobs).

Every result also has the repository summary, from the index alone: packs and their
bytes, blobs by kind, compression ratio, pack bytes that are no indexed blob (headers,
duplicates) and snapshots per host. Unused space (bytes of indexed blobs no snapshot
references) only when asked (``unused``): it needs every snapshot's trie and content
blobs (``reachable.mark``), which a raw-data run over every snapshot has already read.

No data blob is read. The trie is walked once per distinct node (restore-size memoizes
per node id, since a node's totals do not depend on the snapshot); raw-data collects the
blobs in that same walk (``reachable.mark_entry``), so each entry is decoded once and
each node read once; content blobs are read only for raw-data, blobs-per-file and the
unused space.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass

from backupkit.crypto import T_META_BLOB
from backupkit.errors import BadArgument, BlobNotFound
from backupkit.managers.reachable import Reachable, mark, mark_entry
from backupkit.managers.base import SnapshotSelection, TrieReader, select_snapshots
from backupkit.objects.content import content_list
from backupkit.objects.entry import Entry
from backupkit.repo.pack import KIND_DATA, KIND_META
from backupkit.snapshot import Snapshot

MODES = ("restore-size", "files-by-contents", "blobs-per-file", "raw-data")


@dataclass(frozen=True)
class StatsOptions(SnapshotSelection):
    #: one of MODES (restic's four)
    mode: str = "restore-size"
    #: also count the unused space of the repository (reads every snapshot's trie)
    unused: bool = False


@dataclass(frozen=True)
class RepoSummary:
    """The repository as a whole, from its index and catalog: what ``bk stats`` shows
    besides a snapshot mode's totals (``compression_ratio``: raw over stored bytes)."""

    #: packs in the index and their stored bytes, split by kind (data: file content;
    #: meta: trie nodes and content lists)
    packs: int
    pack_bytes: int
    data_packs: int
    meta_packs: int
    data_blobs: int
    meta_blobs: int
    #: every indexed blob's bytes before and after compression and sealing
    blob_bytes_raw: int
    blob_bytes_stored: int
    #: None unless asked for (``StatsOptions.unused``)
    unused_blobs: int | None
    unused_bytes: int | None
    #: pack bytes that are not blob bytes (headers, padding)
    pack_overhead_bytes: int
    snapshots: int
    snapshots_per_host: dict[str, int]

    @property
    def compression_ratio(self) -> float:
        return self.blob_bytes_raw / self.blob_bytes_stored if self.blob_bytes_stored else 1.0

    def to_json(self) -> dict:
        d = dict(self.__dict__)
        d["compression_ratio"] = round(self.compression_ratio, 4)
        return d


@dataclass(frozen=True)
class StatsResult:
    """``bk stats``: the totals of one mode (``mode``, one of MODES) over the chosen
    snapshots, and the repository's summary."""

    mode: str
    #: ids of the snapshots counted
    snapshots: tuple[str, ...]
    #: restore-size and files-by-contents: entries counted and bytes; blobs-per-file:
    #: paths counted and the plaintext bytes of their blobs
    files: int
    dirs: int
    others: int
    bytes: int
    #: raw-data: blobs referenced, their raw and stored bytes, data blobs' raw bytes;
    #: blobs-per-file: blob references counted (each blob once per path)
    blobs: int
    blob_bytes_raw: int
    blob_bytes_stored: int
    data_bytes_raw: int
    #: restore-size bytes of these snapshots (raw-data: for the dedup ratio)
    restore_bytes: int
    repository: RepoSummary

    def to_json(self) -> dict:
        d = {"mode": self.mode, "snapshots": list(self.snapshots), "snapshots_count": len(self.snapshots)}
        if self.mode == "raw-data":
            d.update(
                blobs=self.blobs, total_blob_count=self.blobs, total_uncompressed_size=self.blob_bytes_raw, total_size=self.blob_bytes_stored,
                compression_ratio=round(self.blob_bytes_raw / self.blob_bytes_stored, 4) if self.blob_bytes_stored else 1.0,
                restore_size=self.restore_bytes,
                dedup_ratio=round(self.restore_bytes / self.data_bytes_raw, 4) if self.data_bytes_raw else 1.0,
            )
        elif self.mode == "blobs-per-file":
            d.update(total_file_count=self.files, files=self.files, total_blob_count=self.blobs, blobs=self.blobs, total_size=self.bytes)
        else:
            d.update(total_file_count=self.files, files=self.files, dirs=self.dirs, others=self.others, total_size=self.bytes)
        d["repository"] = self.repository.to_json()
        return d


# per node: (files, dirs, others, bytes) without hard links, and the hard links as ((dev, ino), size)
_Totals = tuple[int, int, int, int, tuple]


class StatsManager(TrieReader):
    node_cache = 1 << 16

    def run(self, opts: StatsOptions) -> StatsResult:
        if opts.mode not in MODES:
            raise BadArgument(f"unknown --mode {opts.mode!r}: use one of {', '.join(MODES)}")
        all_snaps = self.every_snapshot()
        snaps = select_snapshots(self.repo, opts, all_snaps)
        files = dirs = others = nbytes = 0
        blobs = raw = stored = data_raw = restore = 0
        used = Reachable() if opts.mode == "raw-data" else None
        if opts.mode in ("restore-size", "raw-data"):
            files, dirs, others, nbytes = self._restore_size(snaps, used)
            restore = nbytes
        if opts.mode == "files-by-contents":
            files, nbytes = self._by_contents(snaps)
        if opts.mode == "blobs-per-file":
            files, blobs, nbytes = self._blobs_per_file(snaps)
        everything = None
        if opts.unused:
            # snaps is a subset of all_snaps: the same length means the same snapshots
            everything = used if used is not None and len(snaps) == len(all_snaps) else mark(self.repo, all_snaps)
        summary = self._summary(all_snaps, everything.all if everything is not None else None)
        if used is not None:
            index = self.repo.index
            for bid in used.all:
                loc = index.lookup(bid)
                if loc is None:
                    continue
                blobs += 1
                raw += loc.raw_length
                stored += loc.length
                if bid in used.data:
                    data_raw += loc.raw_length
        return StatsResult(opts.mode, tuple(s.id for s in snaps), files, dirs, others, nbytes,
                           blobs, raw, stored, data_raw, restore, summary)

    # -- restore-size ----------------------------------------------------------------------
    def _restore_size(self, snaps: list[Snapshot], used: Reachable | None = None) -> tuple[int, int, int, int]:
        """Restore-size totals of ``snaps``; with ``used``, also every blob they reference
        is added to it (raw-data), in the same walk."""
        memo: dict[bytes, _Totals] = {}
        files = dirs = others = nbytes = 0
        for s in snaps:
            f, d, o, b, links = self._totals(s.root, memo, used)
            seen: dict = {}
            for key, size in links:
                seen.setdefault(key, size)
            files += f + len(seen)
            dirs += d
            others += o
            nbytes += b + sum(seen.values())
        return files, dirs, others, nbytes

    def _totals(self, nid: bytes, memo: dict[bytes, _Totals], used: Reachable | None, ctx: tuple | None = None) -> _Totals:
        """(files, dirs, others, bytes, hard links) below node ``nid``; ``ctx``: (parent
        node, slot, count) where its parent lists it, checked (``Hamt.child``: a child is
        deeper than its parent, which bounds this recursion on a hostile tree)."""
        got = memo.get(nid)
        if got is not None:
            return got
        n = self.hamt.at(nid, ctx)
        f = d = o = b = 0
        links: list = []
        if used is not None:
            used.meta.add(nid)
        if n[0] == 0:
            for _k, p, v in n[1]:
                e = Entry.decode(v, p)
                if used is not None:
                    mark_entry(used, e, p, self._read_meta)
                if e.is_file:
                    hl = e.hardlink_key
                    if hl is not None:
                        links.append((hl, e.size or 0))
                    else:
                        f += 1
                        b += e.size or 0
                elif e.is_dir:
                    d += 1
                else:
                    o += 1
        else:
            for slot, cid, count in n[4]:
                cf, cd, co, cb, cl = self._totals(cid, memo, used, (n, slot, count))
                f, d, o, b = f + cf, d + cd, o + co, b + cb
                links.extend(cl)
        got = memo[nid] = (f, d, o, b, tuple(links))
        return got

    # -- files-by-contents and blobs-per-file ------------------------------------------------
    def _files(self, snaps: list[Snapshot]) -> Iterator[tuple[Snapshot, bytes, Entry, tuple]]:
        """(snapshot, path, entry, content key) of each file entry of ``snaps``, each trie
        node read once however many snapshots share it; the key is equal for equal
        content lists."""
        seen_nodes: set[bytes] = set()
        for s in snaps:
            # each child checked against its parent (``Hamt.visit``): a hostile chain of
            # nodes is a FormatError, as in the other modes, not a tree counted
            for _nid, n in self.hamt.visit(s.root, seen_nodes):
                if isinstance(n, Exception):
                    raise n
                if n is None or n[0] != 0:
                    continue
                for _k, p, v in n[1]:
                    e = Entry.decode(v, p)
                    if e.is_file:
                        yield s, p, e, (("cb", e.content_blobs) if e.content_blobs is not None else ("c", e.content or ()))

    def _by_contents(self, snaps: list[Snapshot]) -> tuple[int, int]:
        contents: dict[tuple, int] = {}
        for _s, _p, e, key in self._files(snaps):
            contents.setdefault(key, e.size or 0)
        return len(contents), sum(contents.values())

    def _blobs_per_file(self, snaps: list[Snapshot]) -> tuple[int, int, int]:
        """(paths, blob references, bytes) as restic's blobs-per-file counts them: a file
        whose content was seen before (anywhere) is skipped; else each data blob of it
        not yet counted for its path adds its plaintext length (BlobNotFound for a blob
        the index does not know, as restic stops there)."""
        index = self.repo.index
        contents: set[tuple] = set()
        per_path: dict[bytes, set[bytes]] = {}
        refs = nbytes = 0
        for s, p, e, key in self._files(snaps):
            if key in contents:
                continue
            contents.add(key)
            counted = per_path.get(p)  # made at the path's first blob: an empty file is not counted
            for item in content_list(e, self._read_meta):
                if not isinstance(item, bytes):
                    continue  # a hole: no blob
                if counted is None:
                    counted = per_path[p] = set()
                elif item in counted:
                    continue
                loc = index.lookup(item)
                if loc is None:
                    raise BlobNotFound(f"blob {item.hex()[:16]} of {p.decode(errors='replace')} in snapshot {s.id[:8]} is not in the index; run bk check")
                counted.add(item)
                refs += 1
                nbytes += loc.raw_length
        return len(per_path), refs, nbytes

    # -- the repository ----------------------------------------------------------------------
    def _read_meta(self, bid: bytes) -> bytes:
        return self.repo.read_blob(bid, T_META_BLOB)

    def _summary(self, snaps: list[Snapshot], used: set[bytes] | None) -> RepoSummary:
        """From the index; the unused blobs only if ``used`` (every blob referenced) is given."""
        index = self.repo.index
        packs = index.packs()
        data_blobs = meta_blobs = raw = stored = unused = unused_bytes = 0
        for loc in index.blobs():
            raw += loc.raw_length
            stored += loc.length
            if loc.pack.kind == KIND_DATA:
                data_blobs += 1
            else:
                meta_blobs += 1
            if used is not None and loc.blob_id not in used:
                unused += 1
                unused_bytes += loc.length
        pack_bytes = sum(p.size for p in packs)
        return RepoSummary(
            packs=len(packs), pack_bytes=pack_bytes,
            data_packs=sum(1 for p in packs if p.kind == KIND_DATA), meta_packs=sum(1 for p in packs if p.kind == KIND_META),
            data_blobs=data_blobs, meta_blobs=meta_blobs, blob_bytes_raw=raw, blob_bytes_stored=stored,
            unused_blobs=unused if used is not None else None,
            unused_bytes=unused_bytes if used is not None else None, pack_overhead_bytes=pack_bytes - stored,
            snapshots=len(snaps), snapshots_per_host=dict(sorted(Counter(s.host for s in snaps).items())),
        )
