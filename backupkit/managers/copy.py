"""Copy: snapshots from one repository to another (restic's ``copy``).

Vocabulary:
    source, target   the repository read from and the one written to; each has its
                     own keys, so blob ids, trie keys and node ids all differ between
                     them: every copied snapshot gets a new trie in the target.
    fingerprint      what says the target already has a snapshot: time, host, user,
                     paths and the first id the snapshot had (``meta["original"]``, or
                     its id). A copy records the source's as its own ``original``, so a
                     second copy, or one after a tag change in either, skips it.
    same chunker     both repositories cut files at the same places (same chunker key
                     and sizes: ``init --copy-chunker-params``). Blobs then move as they
                     are: each source blob is read once, stored under the target's id
                     for its bytes (deduplicated against the target), and remembered, so
                     a blob shared by files or snapshots is read once. Otherwise each
                     file's bytes go through the target's chunker.

Write order in the target: blobs, index, then the snapshot and the catalog. An
interrupted copy leaves packs the next run finds in the target's index (nothing is
uploaded twice; the source may be read again) and no partial snapshot. The caller holds
a shared lock on both repositories.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from backupkit.reporters import silent
from backupkit.crypto import T_DATA_BLOB, T_META_BLOB
from backupkit.entry import Keyer
from backupkit.managers.base import ContentReading, SnapshotSelection, select_snapshots
from backupkit.managers.json_fields import JsonFields
from backupkit.objects.content import with_content
from backupkit.objects.entry import Entry
from backupkit.objects.reader import ContentReader, Parts
from backupkit.objects.writer import ContentWriter
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot, list_snapshots, save_snapshot
from backupkit.tree import SnapshotTree, entry_change, make_hamt


def fingerprint(s: Snapshot) -> tuple:
    return (s.time_ns, s.host, s.user, s.paths, s.meta.get("original", s.id))


def same_chunker(a: Repository, b: Repository) -> bool:
    ca, cb = a.config, b.config
    return a.keys.chunker_key == b.keys.chunker_key and (ca.chunker_min, ca.chunker_avg, ca.chunker_max) == (
        cb.chunker_min, cb.chunker_avg, cb.chunker_max)


@dataclass(frozen=True)
class CopyOptions(SnapshotSelection, ContentReading):
    pass


@dataclass(frozen=True)
class Copied(JsonFields):
    """One snapshot copied: the source's snapshot and the one written in the target."""

    source: Snapshot
    target: Snapshot
    #: file entries with content (their blobs copied, or found in the target)
    files: int


@dataclass(frozen=True)
class CopyResult(JsonFields):
    """What ``bk copy`` did: the snapshots it wrote in the target and the blobs it added."""

    #: snapshots copied, in the order they were written
    copied: tuple[Copied, ...]
    #: selected snapshots the target already had
    skipped: tuple[Snapshot, ...]
    #: both repositories cut content alike (same chunker key and sizes): blobs were
    #: copied as they are, not cut again
    same_chunker: bool
    #: blobs the target did not have, and their stored bytes
    blobs_added: int
    bytes_added: int


class CopyReporter(Protocol):
    def copied(self, c: Copied) -> None: ...


NullCopyReporter = silent(CopyReporter)


class _PartsStream:
    """A read() over a file's parts, holes as zeros (for the target's chunker)."""

    def __init__(self, parts: Parts) -> None:
        self._parts = parts
        self._cur = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        while not self._cur:
            nxt = next(self._parts, None)
            if nxt is None:
                return b""
            self._cur = memoryview(bytes(nxt) if isinstance(nxt, int) else nxt)
        take = len(self._cur) if n < 0 else min(n, len(self._cur))
        out, self._cur = self._cur[:take], self._cur[take:]
        return bytes(out)


class CopyManager:
    def __init__(self, source: Repository, target: Repository, reporter: CopyReporter | None = None) -> None:
        self.source = source
        self.target = target
        self.reporter = reporter or NullCopyReporter()
        self.same_chunker = same_chunker(source, target)
        self._blob_map: dict[bytes, bytes] = {}  # source data blob id -> target id

    def run(self, opts: CopyOptions) -> CopyResult:
        snaps = select_snapshots(self.source, opts)
        have = {fingerprint(s) for s in list_snapshots(self.target)}
        before = dict(self.target.stats)
        copied: list[Copied] = []
        skipped: list[Snapshot] = []
        parents: dict[str, str] = {}
        for s in snaps:
            if fingerprint(s) in have:
                skipped.append(s)
                continue
            try:
                c = self._copy_one(s, parents, opts.connections)
            except BaseException:
                # index what was uploaded, so the next run finds it and sends it not again
                try:
                    self.target.flush()
                except Exception:  # noqa: BLE001 - the first error is the one to report
                    pass
                raise
            parents[s.id] = c.target.id
            have.add(fingerprint(s))
            copied.append(c)
            self.reporter.copied(c)
        st = self.target.stats
        return CopyResult(tuple(copied), tuple(skipped), self.same_chunker,
                          st["blobs_new"] - before["blobs_new"], st["bytes_stored_new"] - before["bytes_stored_new"])

    def _copy_one(self, snap: Snapshot, parents: dict[str, str], connections: int) -> Copied:
        entries = dict(SnapshotTree(self.source, snap.root).all_entries())
        files = [(p, e) for p, e in sorted(entries.items()) if e.is_file and e.has_content]
        with ContentReader(self.source, connections) as reader:
            if self.same_chunker:
                converted = self._move_blobs(reader, files)
            else:
                converted = self._rechunk(reader, files)
        entries.update(converted)
        hamt = make_hamt(self.target)
        keyer = Keyer(self.target.sealer.keyed_hash)
        root = hamt.build(entry_change(keyer, p, e) for p, e in entries.items())
        self.target.flush()  # blobs and index before the snapshot that names them
        doc = snap.to_doc()
        doc["root"] = root
        doc["parent"] = parents.get(snap.parent) if snap.parent else None
        doc["meta"] = {**snap.meta, "original": snap.meta.get("original", snap.id)}
        return Copied(snap, save_snapshot(self.target, doc), len(files))

    def _save_meta(self, data: bytes) -> bytes:
        return self.target.add_blob(T_META_BLOB, data)[0]

    def _move_blobs(self, reader: ContentReader, files) -> Iterator[tuple[bytes, Entry]]:
        lists: dict[bytes, list] = {}

        def items_of(p: bytes, e: Entry) -> list:
            if p not in lists:
                lists[p] = reader.content_list(e)
            return lists[p]

        def wants(p: bytes, e: Entry) -> bool:
            return any(type(i) is bytes and i not in self._blob_map for i in items_of(p, e))

        out = []
        for p, e, parts in reader.files(files, wants):
            items = items_of(p, e)
            if parts is not None:
                for item, part in zip(items, parts):
                    if type(item) is bytes and item not in self._blob_map:
                        self._blob_map[item] = self.target.add_blob(T_DATA_BLOB, part)[0]
            new = [self._blob_map[i] if type(i) is bytes else i for i in items]
            out.append((p, with_content(e, new, self._save_meta)))
            del lists[p]
        return out

    def _rechunk(self, reader: ContentReader, files) -> list[tuple[bytes, Entry]]:
        writer = ContentWriter(self.target)
        out = []
        try:
            for p, e, parts in reader.files(files):
                items, _size = writer.read_stream(_PartsStream(parts if parts is not None else iter(())))
                out.append((p, writer.with_content(e, items)))
        finally:
            writer.close()
        return out
