"""Check: prove the repository intact, or say exactly what is damaged and what it costs.

Vocabulary:
    finding     one problem or remark, as data (:class:`Finding`): severity, kind, the
                object concerned, a message, and the snapshots and paths it affects.
    severity    ``error`` (data or structure is damaged: exit 1), ``warning``
                (suspicious but nothing lost), ``info`` (normal leftovers such as
                unreferenced packs, which the next prune removes).
    structure   what check verifies without reading pack contents: config, key
                files, snapshot objects and the catalog, every index object, every
                indexed pack listed at its indexed size, every snapshot's trie
                readable, every referenced blob indexed in a pack of its kind.
    read data   ``--read-data`` (or a subset): download whole packs, verify the
                header against the index, decrypt every blob and re-hash its id
                (``packverify.verify_pack``).

Check reads through its own view of the index (``load_index(tolerant=True)``, from the
store, never the cache), so a damaged index object is one finding instead of a failure
to open the repository. Key files, the config and the snapshot objects are read from
the store too (a damaged key file must not hide behind the cached copy that opened the
repository). Names under our prefixes that bk does not write are listed as warnings. Every
read that fails is retried once from the store; damage that a retry does not show is
reported as ``read_retry_ok`` (info), never as damage (restic #5467).

Findings name affected snapshots and paths: the ids of bad blobs (missing, corrupt, in a
missing pack, unreadable tree nodes) are mapped back to (snapshot, path) by walking the
trees (``reachable.find_affected``), only when something is wrong.

With ``--read-data`` the packs are read and verified on a pool while the trees are
walked (the walk holds the GIL; verification mostly does not): what the reads find is
recorded after the walk, in the order the packs were chosen, so the findings are those of
one phase after the other whichever reads finished first.

Check never writes to the repository (the catalog is compared, not repaired). One run's
state lives in a ``_CheckRun``; the manager keeps none. What a run returns and reports
(findings, options, result, reporter) is in ``check_result.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from backupkit.catalog import load_catalog
from backupkit.concurrency import bounded_map
from backupkit.crypto import T_CONFIG, T_META_BLOB
from backupkit.entry import display_path
from backupkit.errors import BlobNotFound, FormatError, IntegrityError, ObjectNotFound, ObjectTooLarge, StoreError
from backupkit.managers.check_result import (
    ERROR,
    INFO,
    SEVERITY_ORDER,
    WARNING,
    CheckOptions,
    CheckReporter,
    CheckResult,
    Finding,
    NullCheckReporter,
)
from backupkit.managers.check_reads import PackRead, ReadAhead
from backupkit.managers.reachable import find_affected, mark
from backupkit.managers.subset import parse_subset, select_packs
from backupkit.repo.index import Index, PackEntryMap, PackInfo
from backupkit.repo.indexload import load_index
from backupkit.repo.keymanager import KEY_DAMAGED, check_key_file
from backupkit.repo.pack import KIND_DATA, KIND_META, pack_name
from backupkit.repo.packverify import pack_spans, verify_pack, verify_pack_spans
from backupkit.repo.config import RepoConfig
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot, load_snapshot
from backupkit.tuning import DEFAULT_TUNING, Tuning


class CheckManager:
    """Runs checks. The caller holds a shared lock."""

    def __init__(self, repo: Repository, reporter: CheckReporter | None = None, tuning: Tuning = DEFAULT_TUNING) -> None:
        self.repo = repo
        self.reporter = reporter or NullCheckReporter()
        self.tuning = tuning

    def run(self, opts: CheckOptions | None = None) -> CheckResult:
        return _CheckRun(self.repo, self.reporter, self.tuning).run(opts or CheckOptions())


class _CheckRun:
    """The state of one check: findings, and damage waiting to be attributed."""

    def __init__(self, repo: Repository, reporter: CheckReporter, tuning: Tuning = DEFAULT_TUNING) -> None:
        self.repo = repo
        self.reporter = reporter
        self.tuning = tuning
        self._lock = threading.Lock()
        self.findings: list[Finding] = []
        #: bad blob id -> problem key; problem key -> message
        self.bad: dict[bytes, tuple[str, str]] = {}
        self.problems: dict[tuple[str, str], str] = {}
        self.retried_ok: set[str] = set()
        self.index = Index()
        #: pack id -> PackInfo, and pack id -> {blob id: (offset, length, raw length)}
        self.packs: dict[bytes, PackInfo] = {}
        self.pack_entries: dict[bytes, PackEntryMap] = {}

    def run(self, opts: CheckOptions) -> CheckResult:
        t0 = time.monotonic()
        self._check_config()
        self._check_keys()
        snaps = self._check_snapshots()
        index_names = self._load_index()
        listed = self._check_packs()
        packs_read = bytes_read = 0
        if not (opts.read_data or opts.read_data_subset):
            self._check_trees(snaps)
        else:
            workers = max(2, self.repo.connections)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                reads = self._start_reads(pool, workers, listed, opts)
                try:
                    self._check_trees(snaps)  # while the first packs are read and verified
                    packs_read, bytes_read = self._read_data(reads)
                finally:
                    reads.close()
        for name in sorted(self.retried_ok):
            self._add(INFO, "read_retry_ok", name, f"{name}: the first read was damaged, the retry was clean (not damage)")
        self._attribute(snaps)
        self._list_foreign()
        findings = sorted(self.findings, key=lambda f: (SEVERITY_ORDER[f.severity], f.kind, f.object))
        return CheckResult(
            findings=tuple(findings),
            snapshots=len(snaps),
            index_objects=len(index_names),
            packs=len(self.packs),
            blobs=len(self.index),
            packs_read=packs_read,
            bytes_read=bytes_read,
            seconds=time.monotonic() - t0,
        )

    def _add(self, severity: str, kind: str, obj: str, message: str, snapshots=(), paths=()) -> None:
        f = Finding(severity, kind, obj, message, tuple(snapshots), tuple(paths))
        with self._lock:
            self.findings.append(f)
        self.reporter.finding(f)

    def _mark_bad(self, blob_ids: Iterable[bytes], kind: str, obj: str, message: str) -> None:
        """Record damage whose affected snapshots and paths are found at the end."""
        key = (kind, obj)
        with self._lock:
            self.problems.setdefault(key, message)
            for bid in blob_ids:
                self.bad.setdefault(bid, key)

    # -- structure ---------------------------------------------------------------------------
    def _check_config(self) -> None:
        try:
            cfg = RepoConfig.decode(self.repo.get_object(T_CONFIG, "config", b"config"))
        except (IntegrityError, FormatError, ObjectNotFound) as e:
            self._add(ERROR, "config_unreadable", "config", str(e) if str(e).startswith("config") else f"config: {e}")
            return
        if cfg != self.repo.config:
            self._add(ERROR, "config_mismatch", "config", "the config in the store differs from the one this run opened (cached)")

    def _check_keys(self) -> None:
        """Open every key file of the store (with the password that opened the repository,
        where it fits); a damaged key file is an error even when a cached copy hid it."""
        self.reporter.phase("keys", None)
        for name in sorted(self.repo.list_names("keys")):
            problem = check_key_file(self.repo, name)
            if problem is not None:
                kind, message = problem
                self._add(ERROR if kind == KEY_DAMAGED else WARNING, kind, name, message)

    def _check_snapshots(self) -> list[Snapshot]:
        repo = self.repo
        listed = sorted(i.hex() for i in repo.list_ids("snapshots"))
        self.reporter.phase("snapshots", len(listed))
        snaps: list[Snapshot] = []

        def load(sid: str) -> Snapshot | Exception:
            try:
                return load_snapshot(repo, sid)
            except (IntegrityError, FormatError, ObjectNotFound) as e:
                return e
            finally:
                self.reporter.advance(1)

        with ThreadPoolExecutor(max_workers=repo.connections) as pool:
            for sid, r in zip(listed, pool.map(load, listed)):
                if isinstance(r, Exception):
                    self._add(ERROR, "snapshot_unreadable", f"snapshots/{sid}", f"snapshot {sid[:8]}: {r}", (sid,), ((sid, None),))
                else:
                    snaps.append(r)
        got = load_catalog(repo)
        catalog = got.entries
        if catalog is None:
            if got.problem is not None:
                self._add(ERROR, "catalog_unreadable", "catalog", f"{got.problem}; bk snapshots rewrites it")
            elif listed:
                self._add(INFO, "catalog_stale", "catalog", f"there is no catalog but {len(listed)} snapshot{'s' if len(listed) != 1 else ''}; bk snapshots writes it")
            return snaps
        for sid in sorted(set(catalog) - set(listed)):
            self._add(
                ERROR,
                "snapshot_missing",
                f"snapshots/{sid}",
                f"snapshot {sid[:8]} is in the catalog but its object is missing from the store",
                (sid,),
                ((sid, None),),
            )
        missing = sorted(set(listed) - set(catalog))
        if missing:
            self._add(
                INFO,
                "catalog_stale",
                "catalog",
                f"the catalog lacks {len(missing)} snapshot(s) (an interrupted backup or forget); "
                "bk snapshots brings it up to date",
            )
        for s in snaps:
            doc = catalog.get(s.id)
            if doc is None:
                continue
            try:
                same = Snapshot.from_doc(s.id, doc) == s
            except FormatError:
                same = False
            if not same:
                self._add(ERROR, "catalog_mismatch", "catalog", f"the catalog's entry for snapshot {s.short_id} differs from the snapshot object", (s.id,))
        return snaps

    def _load_index(self) -> list[str]:
        """Load every index object on its own; merge the good ones into check's index."""
        loaded = load_index(self.repo, tolerant=True, from_store=True, on_object=self.reporter.advance, keep_objects=True)
        for name, why in sorted(loaded.failures.items()):
            self._add(ERROR, "index_unreadable", name, why)
        self.index = loaded.index
        for name in loaded.merged:
            for p, entries in loaded.objects[name].packs:
                old = self.packs.get(p.id)
                if old is not None and old != p:
                    self._add(ERROR, "index_conflict", pack_name(p.kind, p.id), f"index objects disagree about pack {p.id.hex()[:16]}: {old} vs {p}")
                self.packs.setdefault(p.id, p)
                mine = self.pack_entries.get(p.id)
                self.pack_entries[p.id] = PackEntryMap.of(entries) if mine is None else mine.merged(entries)
        if not loaded.names and self.repo.exists("catalog"):
            self._add(ERROR, "index_missing", "index/", "the repository has snapshots or a catalog but no index object")
        return loaded.names

    def _check_packs(self) -> dict[str, int]:
        listed = self.repo.list_packs()
        known = set()
        for p in self.packs.values():
            name = pack_name(p.kind, p.id)
            known.add(name)
            entries = self.pack_entries[p.id]
            size = listed.get(name)
            if size is None:
                lost = self._not_stored_elsewhere(p, entries, listed)
                if not lost:
                    self._add(
                        WARNING, "pack_missing_redundant", name,
                        f"pack {name} is indexed but missing from the store; each of its {len(entries)} blobs is "
                        "read from another pack (nothing is lost; `bk repair index` drops it from the index)",
                    )
                    continue
                also = f", {len(entries) - len(lost)} of them read from other packs" if len(lost) < len(entries) else ""
                self._mark_bad(lost, "pack_missing", name, f"pack {name} is indexed but missing from the store ({len(entries)} blobs{also})")
                continue
            if size != p.size:
                # only the blobs past the end are lost (the rest still reads; --read-data
                # verifies them); the pack itself is an error either way
                msg = f"pack {name} is {size} bytes, the index says {p.size} (truncated or replaced)"
                past = {bid: entries[bid] for bid, (off, ln, _r) in entries.items() if off + ln > size}
                lost = self._not_stored_elsewhere(p, past, listed)
                if lost:
                    self._mark_bad(lost, "pack_size", name, msg)
                elif past:
                    self._add(ERROR, "pack_size", name, msg + "; the blobs past its end are read from other packs")
                else:
                    self._add(ERROR, "pack_size", name, msg + "; every indexed blob lies inside what is left")
                continue
            outside = [bid for bid, (off, ln, _r) in entries.items() if off + ln > size]
            if outside:
                self._mark_bad(outside, "index_entry_out_of_range", name, f"{len(outside)} index entries point past the end of pack {name}")
        for name in sorted(set(listed) - known):
            self._add(INFO, "pack_unreferenced", name, f"pack {name} is not in any index (left by an interrupted backup or prune; prune removes it)")
        return listed

    def _not_stored_elsewhere(self, p: PackInfo, entries, listed: dict[str, int]) -> list[bytes]:
        """Those of ``entries`` (blobs of pack ``p``, which is missing or cut short) that
        the index does not place in another pack, of the same kind, that the store lists
        at its indexed size: a later backup that wrote a lost blob again (``backup
        --force``, or one that found the pack gone) made it readable, because the newer
        index object's location is the one every reader gets (``load_index``)."""
        lost = []
        for bid in entries:
            loc = self.index.lookup(bid)
            if (
                loc is None
                or loc.pack.id == p.id
                or loc.pack.kind != p.kind
                or listed.get(pack_name(loc.pack.kind, loc.pack.id)) != loc.pack.size
                or loc.offset + loc.length > loc.pack.size
            ):
                lost.append(bid)
        return lost

    def _list_foreign(self) -> None:
        """Names under our prefixes that bk does not write (met by the listings above)."""
        self.repo.list_names("locks")
        for name, why in sorted(self.repo.foreign.items()):
            self._add(WARNING, "foreign_object", name, f"{name!r} is {why}; every command ignores it")

    def _read_meta(self, blob_id: bytes) -> bytes:
        """A metadata blob through check's own index (cached meta packs, one retry)."""
        loc = self.index.lookup(blob_id)
        if loc is None:
            raise BlobNotFound(f"blob {blob_id.hex()[:16]} is not in the index")
        return self.repo.read_blob_at(loc, T_META_BLOB, on_retry_ok=self._retry_ok)

    def _retry_ok(self, name: str) -> None:
        with self._lock:
            self.retried_ok.add(name)

    def _check_trees(self, snaps: list[Snapshot]) -> None:
        self.reporter.phase("trees", None)
        reach = mark(self.repo, snaps, on_node=self.reporter.advance, strict=False, read_meta=self._read_meta)
        if reach.malformed:
            self._malformed(snaps, reach.malformed)
        for bid in reach.unreadable:
            if bid in self.bad:
                continue  # already explained (missing pack, ...)
            loc = self.index.lookup(bid)
            if loc is None:
                self._mark_bad([bid], "blob_missing", f"blob {bid.hex()}", f"tree blob {bid.hex()[:16]} is not in the index")
            else:
                where = pack_name(loc.pack.kind, loc.pack.id)
                self._mark_bad([bid], "tree_unreadable", f"blob {bid.hex()}", f"tree blob {bid.hex()[:16]} cannot be read or verified (in pack {where})")
        for kind, ids in ((KIND_META, reach.meta), (KIND_DATA, reach.data)):
            for bid in ids:
                if bid in reach.unreadable or bid in self.bad:
                    continue
                loc = self.index.lookup(bid)
                if loc is None:
                    self._mark_bad([bid], "blob_missing", f"blob {bid.hex()}", f"blob {bid.hex()[:16]} is referenced but not in the index")
                elif loc.pack.kind != kind:
                    self._mark_bad([bid], "blob_wrong_kind", f"blob {bid.hex()}", f"{kind} blob {bid.hex()[:16]} is indexed in a {loc.pack.kind} pack")

    def _malformed(self, snaps: list[Snapshot], malformed: list[tuple[bytes, bytes, str]]) -> None:
        """A finding per path whose entry does not decode, naming every snapshot that has
        such an entry there (the trees are walked again to find them: a node shared by
        several snapshots was marked once)."""
        where = {(nid, path) for nid, path, _m in malformed}
        message: dict[bytes, str] = {}
        for _nid, path, m in malformed:
            message.setdefault(path, m)
        owners: dict[bytes, set[str]] = {}
        for h in find_affected(self.repo, snaps, set(), read_meta=self._read_meta):
            if h.path is not None and (h.blob, h.path) in where:
                owners.setdefault(h.path, set()).add(h.snapshot)
        for path in sorted(message):
            ids = sorted(owners.get(path, ()))
            shown = display_path(path)
            self._add(
                ERROR, "entry_malformed", f"entry {shown}", f"{message[path]}; affects {len(ids)} snapshot(s)",
                ids, tuple((s, shown) for s in ids),
            )

    # -- read data ---------------------------------------------------------------------------
    def _verify_pack(self, p: PackInfo, data: bytes) -> tuple[str | None, dict[bytes, str]]:
        """(header problem, {blob id: problem}) for one downloaded pack."""
        return verify_pack(self.repo.sealer, p.id, p.kind, p.size, data, self.pack_entries[p.id])

    def _read_one(self, p: PackInfo, listed_size: int | None = None) -> PackRead:
        """Read and verify one pack (on a worker: nothing recorded here, see ``_record``).
        Where a request costs nothing and the store lists the pack at its indexed size,
        it is read a range at a time (``verify_pack_spans``: one range held, not the
        pack); a range that cannot be read, or any damage found, and the pack is read
        whole, which words the findings (the damage seen in ranges was its first read)."""
        first = 0
        span_max = self.tuning.check_span_max_local
        if listed_size == p.size > span_max and self.repo.free_requests:
            spans = pack_spans(p.size, self.pack_entries[p.id], span_max)
            if spans is not None:
                name = pack_name(p.kind, p.id)
                try:
                    header_problem, bad, first = verify_pack_spans(
                        self.repo.sealer, p.id, p.kind, p.size, self.pack_entries[p.id], spans,
                        self.repo.read_raw_ranges(name, [(start, length) for start, length, _items in spans]),
                        lambda off, n: self.repo.read_raw_range(name, off, n),
                    )
                except ObjectNotFound:
                    return PackRead(p, gone=True)
                except StoreError:
                    first = 0  # (cut short or replaced meanwhile) read whole below
                else:
                    if not (header_problem or bad):
                        return PackRead(p, first)
        try:
            data = self.repo.read_pack(p, refresh=True)
        except ObjectNotFound:
            return PackRead(p, gone=True)  # reported by the structure check
        except ObjectTooLarge as e:  # the store lists it far larger than a pack may be
            return PackRead(p, too_large=str(e))
        header_problem, bad = self._verify_pack(p, data)
        n = first + len(data)
        retried_ok = False
        if first:  # the ranges found damage: this whole read was the second
            return PackRead(p, n, header_problem, bad, not (header_problem or bad))
        if header_problem or bad:
            try:
                again = self.repo.read_pack(p, refresh=True)
            except StoreError:
                again = None
            if again is not None:
                n += len(again)
                header_problem, bad = self._verify_pack(p, again)
                retried_ok = not (header_problem or bad)
        return PackRead(p, n, header_problem, bad, retried_ok)

    def _record(self, r: PackRead) -> int:
        """What one pack's read found, as findings and marks (bytes read)."""
        name = pack_name(r.pack.kind, r.pack.id)
        if r.too_large is not None:
            entries = self.pack_entries[r.pack.id]
            self._mark_bad(
                entries, "pack_unreadable", name,
                f"pack {name} cannot be read whole ({r.too_large}); its {len(entries)} blobs are not verified and count as lost",
            )
            return 0
        if r.gone:
            return 0
        if r.retried_ok:
            self._retry_ok(name)
        if r.header_problem:
            self._add(ERROR, "pack_header", name, f"pack {name}: {r.header_problem}")
        for bid, msg in r.bad.items():
            self._mark_bad([bid], "blob_corrupt", f"blob {bid.hex()}", f"{msg} (in pack {name})")
        self.reporter.advance(r.pack.size)
        return r.bytes_read

    def _start_reads(self, pool: ThreadPoolExecutor, workers: int, listed: dict[str, int], opts: CheckOptions) -> ReadAhead:
        present = [p for p in self.packs.values() if pack_name(p.kind, p.id) in listed]
        chosen = select_packs(present, opts.read_data_subset, opts.seed)
        return ReadAhead(
            bounded_map(pool, lambda p: self._read_one(p, listed.get(pack_name(p.kind, p.id))), chosen, workers * 2),
            sum(p.size for p in chosen),
        )

    def _read_data(self, reads: ReadAhead) -> tuple[int, int]:
        """Record every pack's read, in the order chosen (the findings do not depend on
        which reads finished while the trees were walked)."""
        self.reporter.phase("read data", reads.size)
        read = total = 0
        for r in reads:
            n = self._record(r)
            read += n > 0  # 0: gone meanwhile, or too large to read (a finding)
            total += n
        return read, total

    # -- attribution -------------------------------------------------------------------------
    def _attribute(self, snaps: list[Snapshot]) -> None:
        """Turn recorded damage into findings that name snapshots and paths."""
        if not self.problems:
            return
        self.reporter.phase("affected paths", None)
        hits = find_affected(self.repo, snaps, set(self.bad), read_meta=self._read_meta)
        by_key: dict[tuple[str, str], set[tuple[str, bytes | None]]] = {k: set() for k in self.problems}
        for h in hits:
            key = self.bad.get(h.blob)
            if key is None:  # an unreadable node found only now (e.g. a content blob)
                continue
            by_key[key].add((h.snapshot, h.path))
        for (kind, obj), message in sorted(self.problems.items()):
            pairs = sorted(by_key[(kind, obj)], key=lambda sp: (sp[0], sp[1] or b""))
            snapshots = sorted({s for s, _p in pairs})
            paths = tuple((s, display_path(p) if p is not None else None) for s, p in pairs)
            suffix = f"; affects {len(snapshots)} snapshot(s), {len(paths)} path(s)" if pairs else "; no snapshot uses it"
            self._add(ERROR, kind, obj, message + suffix, snapshots, paths)


__all__ = ["CheckManager", "CheckOptions", "CheckResult", "Finding", "parse_subset", "select_packs"]
