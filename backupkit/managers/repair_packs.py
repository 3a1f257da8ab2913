"""bk repair packs ID...: salvage what still authenticates from damaged packs, then remove
them (restic ``repair packs``).

Vocabulary:
    salvage     a blob of a damaged pack that still decrypts and whose content still
                hashes to its id: its sealed bytes are copied unchanged into a new pack
                (``PackWriter``, as prune's repack does).
    lost        a blob of a damaged pack that does not: it leaves the index, so the next
                backup of a source that still has the data writes it again, and
                ``bk repair snapshots`` can rewrite the snapshots that keep needing it.

Where a pack's blobs are: its header when it still reads, else the index's entries for
it (both, when both read: the union). Plan, then execute: (1) copy salvaged blobs into
new packs; (2) write one index object naming every pack of the current index except the
damaged ones, plus the new packs, superseding every current index object; (3) delete the
old index objects; (4) delete the damaged packs. Until (2) lands the old index is the
truth and the new packs are unindexed garbage; nothing is deleted before it.

Refuses to run while an index object is unreadable (its packs would be dropped from the
new index): run ``bk repair index`` first.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass

from backupkit.errors import BadArgument, FormatError, IntegrityError, ObjectNotFound, ObjectTooLarge, RepositoryError
from backupkit.limits import PACK_MAX
from backupkit.managers.repair_common import RepairManager, RepairResult, delete_objects
from backupkit.repo.index import PackInfo
from backupkit.repo.indexload import load_index
from backupkit.repo.pack import TYPE_OF_KIND, PackEntry, decode_payload, pack_id_from_name, read_pack_header


@dataclass(frozen=True)
class DamagedPack:
    """One pack to repair and what becomes of its blobs."""

    name: str
    size: int
    #: the header's problem, or None when it read
    header_problem: str | None
    #: (blob id, type, sealed bytes, raw length) of blobs that verify
    salvage: tuple[tuple[bytes, int, bytes, int], ...]
    #: blob id -> reason, for blobs that do not
    lost: dict[bytes, str]

    def to_json(self) -> dict:
        return {
            "pack": self.name,
            "size": self.size,
            "header_problem": self.header_problem,
            "salvaged": len(self.salvage),
            "lost": {b.hex(): r for b, r in sorted(self.lost.items())},
        }


@dataclass(frozen=True)
class RepairPacksPlan:
    packs: tuple[DamagedPack, ...]
    #: every index object listed while planning (all are superseded)
    index_names: tuple[str, ...]
    #: the current index without the damaged packs
    keep: tuple[tuple[PackInfo, tuple[PackEntry, ...]], ...]

    @property
    def salvaged(self) -> int:
        return sum(len(p.salvage) for p in self.packs)

    @property
    def lost(self) -> int:
        return sum(len(p.lost) for p in self.packs)

    def to_json(self) -> dict:
        return {
            "packs": [p.to_json() for p in self.packs],
            "salvaged": self.salvaged,
            "lost": self.lost,
            "index_objects": list(self.index_names),
        }


@dataclass(frozen=True)
class RepairPacksResult(RepairResult):
    plan: RepairPacksPlan
    packs_written: int
    index_written: str | None
    index_deleted: int
    packs_deleted: int
    seconds: float
    dry_run: bool = False


class RepairPacksManager(RepairManager):
    """Plans and executes ``repair packs``. The caller holds the exclusive lock."""

    def run(self, ids: Iterable[str], dry_run: bool = False) -> RepairPacksResult:
        plan = self.plan(ids)
        if dry_run:
            return RepairPacksResult(plan, 0, None, 0, 0, 0.0, dry_run=True)
        return self.execute(plan)

    def resolve(self, ids: Iterable[str]) -> dict[str, int]:
        """Pack names (with sizes) for ids or unique prefixes (>= 8 hex digits)."""
        listed = self.repo.list_packs()
        by_id = {n.rsplit("/", 1)[1]: n for n in listed}
        out: dict[str, int] = {}
        for raw in ids:
            ref = raw.strip().lower().rsplit("/", 1)[-1]
            if len(ref) < 8 or any(c not in "0123456789abcdef" for c in ref):
                raise BadArgument(f"invalid pack id {raw!r}: give the id (or a prefix of at least 8 hex digits)")
            hits = [n for i, n in by_id.items() if i.startswith(ref)]
            if not hits:
                raise BadArgument(f"no pack {raw!r} in the repository")
            if len(hits) > 1:
                raise BadArgument(f"pack id {raw!r} is ambiguous: give more digits")
            out[hits[0]] = listed[hits[0]]
        if not out:
            raise BadArgument("give the ids of the packs to repair (bk check names them)")
        return out

    def plan(self, ids: Iterable[str]) -> RepairPacksPlan:
        repo = self.repo
        targets = self.resolve(ids)
        loaded = load_index(repo, tolerant=True, keep_objects=True)
        if loaded.failures:
            raise RepositoryError(
                f"{len(loaded.failures)} index object(s) cannot be read ({', '.join(sorted(loaded.failures))}); "
                "run bk repair index first"
            )
        index = loaded.index
        by_pack: dict[bytes, list[PackEntry]] = {}
        for loc in index.blobs():
            by_pack.setdefault(loc.pack.id, []).append(
                PackEntry(TYPE_OF_KIND[loc.pack.kind], loc.blob_id, loc.offset, loc.length, loc.raw_length)
            )
        self.reporter.phase("read packs", len(targets))
        damaged = []
        for name, size in sorted(targets.items()):
            damaged.append(self._examine(name, size, by_pack.get(pack_id_from_name(name)[1], [])))
            self.reporter.advance(1)
        doomed = {pack_id_from_name(p.name)[1] for p in damaged}
        keep = tuple((p, tuple(by_pack.get(p.id, ()))) for p in index.packs() if p.id not in doomed and by_pack.get(p.id))
        return RepairPacksPlan(tuple(damaged), tuple(sorted([*loaded.objects])), keep)

    def _examine(self, name: str, size: int, indexed: list[PackEntry]) -> DamagedPack:
        kind, pack_id = pack_id_from_name(name)
        try:
            data = self.repo.read_raw(name, max_size=PACK_MAX)
        except ObjectNotFound:
            return DamagedPack(name, size, "the pack is gone", (), {e.blob_id: "the pack is gone" for e in indexed})
        except ObjectTooLarge as e:  # not a pack bk wrote; never read whole (issue 10.2)
            return DamagedPack(name, size, str(e), (), {x.blob_id: str(e) for x in indexed})
        header_problem = None
        try:
            entries = read_pack_header(self.repo.sealer, pack_id, data, len(data))
        except (IntegrityError, FormatError) as e:
            header_problem, entries = str(e) or "unreadable header", []
        where = {e.blob_id: e for e in indexed}
        for e in entries:
            where.setdefault(e.blob_id, e)
        t = TYPE_OF_KIND[kind]
        sealer = self.repo.sealer
        salvage, lost = [], {}
        for bid, e in sorted(where.items()):
            what = f"blob {bid.hex()[:16]}"
            candidates = [e] + [x for x in entries if x.blob_id == bid and x != e]
            reason = ""
            for c in candidates:
                sealed = data[c.offset : c.offset + c.length]
                try:
                    if c.blob_type != t or len(sealed) != c.length:
                        raise IntegrityError(f"{what}: beyond the end of the pack" if len(sealed) != c.length else f"{what}: wrong type")
                    plain = decode_payload(sealer.open(t, bid, sealed, what), what)
                    if sealer.blob_id(plain) != bid:
                        raise IntegrityError(f"{what}: content does not match its id")
                    salvage.append((bid, t, bytes(sealed), len(plain)))
                    break
                except (IntegrityError, FormatError) as err:
                    reason = str(err)
            else:
                lost[bid] = reason
        return DamagedPack(name, len(data), header_problem, tuple(salvage), lost)

    def execute(self, plan: RepairPacksPlan) -> RepairPacksResult:
        t0 = time.monotonic()
        repo = self.repo
        self.reporter.phase("write packs", plan.salvaged)
        writer = repo.pack_writer()
        try:
            for p in plan.packs:
                for bid, t, sealed, raw in p.salvage:
                    writer.add(t, bid, sealed, raw)
                    self.reporter.advance(1)
            new = writer.flush()
        finally:
            writer.close()
        rows = [(p, list(e)) for p, e in plan.keep] + new
        self.lock_check()
        written = repo.write_index(rows, [bytes.fromhex(n.split("/", 1)[1]) for n in plan.index_names])
        self.lock_check()
        self.reporter.phase("delete", len(plan.index_names) + len(plan.packs))
        index_deleted = delete_objects(repo, plan.index_names, self.reporter)
        packs_deleted = delete_objects(repo, [p.name for p in plan.packs], self.reporter)
        repo.reload_index()
        return RepairPacksResult(plan, len(new), written, index_deleted, packs_deleted, time.monotonic() - t0)


__all__ = ["DamagedPack", "RepairPacksManager", "RepairPacksPlan", "RepairPacksResult"]
