"""bk repair index: rebuild the index from the packs themselves (restic ``repair index``).

Vocabulary:
    header      the sealed table at the end of each pack (``pack.read_pack_header``):
                which blobs it holds, where, and how long. The index repeats it, so the
                index can be rebuilt from the headers alone.
    old index   every index object listed at planning time, read tolerantly: damaged
                ones are reported and superseded like the rest.
    salvaged    a pack whose header cannot be read (damaged or cut off) but which the old
                index still describes: its old entries that lie inside the pack are kept
                (never lose a pack that still reads), and ``bk repair packs`` is named as
                the next step, since check --read-data will flag its header.
    lost        a pack whose header cannot be read and that no readable index object
                names: nothing can locate its blobs; it is left out (and named).

Plan, then execute. Planning reads one range at the end of every pack (``--read-all-
packs``: the whole pack, and every blob is decrypted and re-hashed; blobs that fail are
left out, so a later backup writes them again). Execution writes the new index objects
(the last one written lists every old object in ``supersedes``), then deletes the old
ones. Interrupted before the last new object lands, the old index is still the truth;
after it, the leftovers are superseded and the next run or prune deletes them.
"""

from __future__ import annotations

import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from backupkit.errors import FormatError, IntegrityError, ObjectNotFound, ObjectTooLarge
from backupkit.limits import PACK_MAX
from backupkit.concurrency import bounded_map
from backupkit.managers.repair_common import RepairManager, RepairResult, delete_objects
from backupkit.repo.index import PackInfo
from backupkit.repo.indexload import load_index
from backupkit.repo.pack import TYPE_OF_KIND, PackEntry, decode_payload, pack_id_from_name, pack_name, read_pack_header

#: Bytes read from the end of a pack to find its header in one request (a header of up to
#: ~1,400 blobs fits; larger ones cost a second, exact read).
TAIL = 64 * 1024


@dataclass(frozen=True)
class RepairIndexOptions:
    #: download every pack and verify every blob (not only the pack headers); leave out
    #: the damaged blobs
    read_all_packs: bool = False


@dataclass(frozen=True)
class PackProblem:
    """A pack whose header could not be used, and what became of it; ``bk repair index``
    lists each one, with its reason and outcome."""

    name: str
    #: why the header could not be used (a one-line error)
    reason: str
    #: "salvaged" (old index entries kept: run repair packs) or "lost" (left out)
    outcome: str

    def to_json(self) -> dict:
        return {"pack": self.name, "reason": self.reason, "outcome": self.outcome}


@dataclass(frozen=True)
class RepairIndexPlan:
    """The rebuilt index, before it is written."""

    #: every index object listed while planning (all are superseded)
    old_index: tuple[str, ...]
    #: old index objects that could not be read: name -> reason
    damaged_index: dict[str, str]
    packs: tuple[tuple[PackInfo, tuple[PackEntry, ...]], ...]
    problems: tuple[PackProblem, ...]
    #: indexed packs the store no longer lists
    gone: tuple[str, ...]
    #: packs listed in the store that the old index did not name (now indexed)
    added: tuple[str, ...]
    #: blobs left out by --read-all-packs: (pack name, blob id hex, reason)
    bad_blobs: tuple[tuple[str, str, str], ...]
    packs_read: int
    bytes_read: int
    blobs_before: int

    @property
    def blobs(self) -> int:
        return sum(len(e) for _p, e in self.packs)

    @property
    def nothing_to_do(self) -> bool:
        return False  # the index is always rewritten (it is cheap and compacts it)

    @property
    def repair_packs(self) -> tuple[str, ...]:
        """Packs ``bk repair packs`` should salvage next (header damaged, blobs damaged)."""
        names = {p.name for p in self.problems if p.outcome == "salvaged"} | {b[0] for b in self.bad_blobs}
        return tuple(sorted(names))

    def to_json(self) -> dict:
        return {
            "old_index": list(self.old_index),
            "damaged_index": dict(self.damaged_index),
            "packs": len(self.packs),
            "blobs": self.blobs,
            "blobs_before": self.blobs_before,
            "problems": [p.to_json() for p in self.problems],
            "gone": list(self.gone),
            "added": list(self.added),
            "bad_blobs": [{"pack": p, "blob": b, "reason": r} for p, b, r in self.bad_blobs],
            "packs_read": self.packs_read,
            "bytes_read": self.bytes_read,
            "repair_packs": [pack_id_from_name(n)[1].hex() for n in self.repair_packs],
        }


@dataclass(frozen=True)
class RepairIndexResult(RepairResult):
    plan: RepairIndexPlan
    index_written: tuple[str, ...]
    index_deleted: int
    seconds: float
    dry_run: bool = False


@dataclass
class _Scan:
    info: PackInfo | None = None
    entries: list[PackEntry] = field(default_factory=list)
    problem: PackProblem | None = None
    bad: list[tuple[str, str, str]] = field(default_factory=list)
    nread: int = 0


class RepairIndexManager(RepairManager):
    """Plans and executes ``repair index``. The caller holds the exclusive lock."""

    def run(self, opts: RepairIndexOptions | None = None, dry_run: bool = False) -> RepairIndexResult:
        plan = self.plan(opts)
        return self.execute(plan) if not dry_run else RepairIndexResult(plan, (), 0, 0.0, dry_run=True)

    # -- planning ----------------------------------------------------------------------------
    def plan(self, opts: RepairIndexOptions | None = None) -> RepairIndexPlan:
        opts = opts or RepairIndexOptions()
        repo = self.repo
        self.reporter.phase("load index", None)
        loaded = load_index(repo, tolerant=True, keep_objects=True)
        old_names = tuple(sorted([*loaded.objects, *loaded.failures]))
        old = loaded.index
        old_entries: dict[bytes, list[PackEntry]] = {}
        for loc in old.blobs():
            t = TYPE_OF_KIND[loc.pack.kind]
            old_entries.setdefault(loc.pack.id, []).append(PackEntry(t, loc.blob_id, loc.offset, loc.length, loc.raw_length))
        # packs an index object names even when a duplicate blob points elsewhere
        for obj in loaded.objects.values():
            for p, rows in obj.packs:
                if p.id not in old_entries or not old.has_pack(p.id):
                    old_entries[p.id] = [PackEntry(TYPE_OF_KIND[p.kind], b, o, ln, r) for b, o, ln, r in rows]
        old_packs = {pack_name(p.kind, p.id) for p in old.packs()}
        listed = repo.list_packs()
        names = sorted(listed)
        self.reporter.phase("read packs" if opts.read_all_packs else "read pack headers", len(names))

        def scan(name: str) -> _Scan:
            try:
                return self._scan(name, listed[name], old_entries, opts.read_all_packs)
            finally:
                self.reporter.advance(1)

        scans: list[_Scan] = []
        with ThreadPoolExecutor(max_workers=max(2, repo.connections)) as pool:
            for s in bounded_map(pool, scan, names, 2 * max(2, repo.connections)):
                scans.append(s)
        packs = tuple((s.info, tuple(s.entries)) for s in scans if s.info is not None and s.entries)
        return RepairIndexPlan(
            old_index=old_names,
            damaged_index=dict(loaded.failures),
            packs=packs,  # type: ignore[arg-type]
            problems=tuple(s.problem for s in scans if s.problem is not None),
            gone=tuple(sorted(old_packs - set(listed))),
            added=tuple(sorted(set(listed) - old_packs - {s.problem.name for s in scans if s.problem and s.problem.outcome == "lost"})),
            bad_blobs=tuple(b for s in scans for b in s.bad),
            packs_read=len(scans),
            bytes_read=sum(s.nread for s in scans),
            blobs_before=len(old),
        )

    def _scan(self, name: str, size: int, old_entries: dict[bytes, list[PackEntry]], read_all: bool) -> _Scan:
        kind, pack_id = pack_id_from_name(name)
        out = _Scan()
        repo = self.repo
        try:
            data = repo.read_raw(name, max_size=PACK_MAX) if read_all else None
        except ObjectNotFound:
            return out  # deleted meanwhile (we hold the lock: a store hiccup); not indexed
        except ObjectTooLarge as e:  # not a pack bk wrote; never read whole (issue 10.2)
            out.problem = PackProblem(name, str(e), "lost")
            return out
        if data is not None:
            out.nread = len(data)
            size = len(data)
            tail = memoryview(data)[max(0, size - TAIL) :]
        else:
            n = min(size, TAIL)
            tail = repo.read_raw_range(name, size - n, n) if n else b""
            out.nread = len(tail)
        try:
            entries = self._header(pack_id, name, tail, size)
        except (IntegrityError, FormatError, ObjectNotFound) as e:
            kept = [e2 for e2 in old_entries.get(pack_id, ()) if e2.offset + e2.length <= size]
            if not kept:
                out.problem = PackProblem(name, str(e), "lost")
                return out
            out.problem = PackProblem(name, str(e), "salvaged")
            entries = kept
        if any(e.blob_type != TYPE_OF_KIND[kind] for e in entries):
            out.problem = PackProblem(name, f"the header lists blobs of the wrong kind for a {kind} pack", "lost")
            return out
        out.info = PackInfo(pack_id, kind, size)
        if data is None:
            out.entries = entries
            return out
        sealer = self.repo.sealer
        for e in entries:
            what = f"blob {e.blob_id.hex()[:16]}"
            try:
                sealed = data[e.offset : e.offset + e.length]
                if len(sealed) != e.length:
                    raise IntegrityError(f"{what}: beyond the end of the pack")
                plain = decode_payload(sealer.open(e.blob_type, e.blob_id, sealed, what), what)
                if sealer.blob_id(plain) != e.blob_id or len(plain) != e.raw_length:
                    raise IntegrityError(f"{what}: content does not match its id")
                out.entries.append(e)
            except (IntegrityError, FormatError) as err:
                out.bad.append((name, e.blob_id.hex(), str(err)))
        return out

    def _header(self, pack_id: bytes, name: str, tail, size: int) -> list[PackEntry]:
        if len(tail) < 4:
            raise FormatError(f"pack {pack_id.hex()[:16]}: too short")
        (hlen,) = struct.unpack("<I", bytes(tail[-4:]))
        if hlen + 4 > len(tail) and hlen + 4 <= size:
            tail = self.repo.read_raw_range(name, size - hlen - 4, hlen + 4)
        entries = read_pack_header(self.repo.sealer, pack_id, bytes(tail), size)
        header_start = size - 4 - hlen
        if any(e.offset + e.length > header_start for e in entries):
            raise FormatError(f"pack {pack_id.hex()[:16]}: the header points past the blobs")
        return entries

    # -- executing ---------------------------------------------------------------------------
    def execute(self, plan: RepairIndexPlan) -> RepairIndexResult:
        t0 = time.monotonic()
        repo = self.repo
        self.reporter.phase("write index", None)
        rows = [(p, list(e)) for p, e in plan.packs]
        per = repo.tuning.index_checkpoint_packs  # packs per index object, as a backup writes them
        chunks = [rows[i : i + per] for i in range(0, len(rows), per)] or [[]]
        supersedes = [bytes.fromhex(n.split("/", 1)[1]) for n in plan.old_index]
        written = []
        for i, chunk in enumerate(chunks):
            self.lock_check()
            last = i == len(chunks) - 1
            written.append(repo.write_index(chunk, supersedes if last else ()))
        self.lock_check()
        self.reporter.phase("delete old index", len(plan.old_index))
        deleted = delete_objects(repo, plan.old_index, self.reporter)
        repo.reload_index()
        return RepairIndexResult(plan, tuple(written), deleted, time.monotonic() - t0)


__all__ = ["RepairIndexManager", "RepairIndexOptions", "RepairIndexPlan", "RepairIndexResult", "PackProblem"]
