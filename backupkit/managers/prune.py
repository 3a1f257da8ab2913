"""Prune: delete the packs no snapshot needs, repack the partly used ones.

Vocabulary:
    live blob       a blob some snapshot reaches (HAMT node, content blob, data blob),
                    found by ``reachable.mark``; every other indexed blob is unused.
    used / unused   sealed bytes of a pack's live / unused index entries (pack header
                    and padding count as neither).
    delete          an indexed pack with no live blob.
    repack          a pack with live and unused blobs whose live blobs are copied into
                    new packs, so the pack can be deleted.
    unindexed pack  a pack no index object names: left by a backup or prune that died
                    before writing its index. Garbage; deleted (also when there is no
                    index at all, as after a killed first backup, provided there is no
                    snapshot either).
    missing pack    an indexed pack the store does not list. Fatal if a live blob is in
                    it; otherwise it is simply left out of the new index.

Plan, then execute (restic ``PlanPrune`` / ``PrunePlan.Execute``); ``--dry-run`` renders
the plan. Execution order (each step is safe to interrupt; the next prune finishes):

    1. repack: read the live blobs of each pack to repack (their ranges only, a run at a
       time: prune_repack.py), verify each (decrypt, re-hash) and copy its sealed bytes
       unchanged into new packs, uploaded as they fill;
    2. write ONE index object naming every kept and new pack, superseding every index
       object listed at planning time (readers ignore superseded objects);
    3. delete the old index objects;
    4. delete unused, repacked and unindexed packs.

Until step 2 lands, the old index is the truth and new packs are unindexed garbage;
after it, the old packs are unindexed garbage. Nothing is deleted before step 2.

Fail closed (BRIEF section 2): a failed listing, an empty listing of ``index/`` or of the
packs while the other side says there is data, a snapshot listing that lost snapshots
the catalog still knows, an unreadable snapshot or tree node, a live blob the index does
not know, or a live blob in a pack the store does not list (or lists at another size)
abort with nothing deleted and a ``DamagedRepository`` naming the damaged snapshots.

Repacking copies sealed blobs byte for byte instead of ``read_blob`` + ``add_blob``: the
envelope is bound to (type, blob id), not to a pack, so the copy is a valid blob of the
new pack; nothing is re-compressed or re-encrypted (no new nonces), and ``add_blob``'s
dedup against the current index (which still lists the old copies) does not get in the
way. Each blob is still decrypted and re-hashed before it is copied, so a damaged blob
aborts the prune instead of being carried forward.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from backupkit.catalog import read_catalog
from backupkit.entry import display_path
from backupkit.errors import DamagedRepository, FormatError, IntegrityError, RepositoryError
from backupkit.managers.base import Manager, NullPhaseReporter, PhaseReporter
from backupkit.managers.prune_plan import (
    SMALL_PACKS_MIN,
    IndexEntry,
    MaxUnused,
    PackEntries,
    PrunePlan,
    PruneResult,
    PruneStats,
    RepackRules,
    parse_max_unused,
)
from backupkit.managers.prune_repack import repack
from backupkit.managers.reachable import Reachable, find_affected, mark
from backupkit.repo.index import Index, PackInfo
from backupkit.repo.pack import KIND_DATA, KIND_META, PackEntry, pack_name
from backupkit.snapshot import Snapshot, load_snapshot

#: Seconds after which a store's partial write (a temp file) is surely abandoned: a
#: writer that has not finished one object in two lock TTLs has lost its lock anyway.
ABANDONED_AFTER = 3600.0


#: Progress of prune: a phase starts (total units or None), then advances.
PruneReporter = PhaseReporter
NullPruneReporter = NullPhaseReporter


class PruneManager(Manager[PhaseReporter]):
    """Plans and executes one prune. The caller holds the exclusive lock; the lock is
    checked (``self.lock_check``, by default ``repo.check_lock``) right before the new index is written and before
    anything is deleted. Keeps no state between calls: a plan is a value."""

    def run(self, max_unused: MaxUnused | None = None, rules: RepackRules | None = None) -> PruneResult:
        return self.execute(self.plan(max_unused, rules))

    # -- planning ----------------------------------------------------------------------------
    def plan(self, max_unused: MaxUnused | None = None, rules: RepackRules | None = None) -> PrunePlan:
        """Mark, check that nothing needed is missing, and decide each pack's fate
        (``rules``: restic's repacking options, ``RepackRules``).

        Reads only; raises DamagedRepository (or a StoreError from a failed listing).
        """
        max_unused = max_unused or MaxUnused()
        rules = rules or RepackRules()
        repo = self.repo
        # Read order: snapshots, then the index, then the packs (restic's design.rst).
        snaps = self._snapshots()
        index_names = tuple(sorted(repo.index_names()))
        index = repo.reload_index()
        if repo.index_failures:
            # the packs of an unreadable index object would look unindexed and be deleted
            raise DamagedRepository(
                f"refusing to prune: {len(repo.index_failures)} index object(s) cannot be read "
                f"({', '.join(sorted(repo.index_failures))}); run bk repair index first; nothing was deleted"
            )
        if tuple(sorted(repo.index_names())) != index_names:
            raise RepositoryError("the index changed while prune was reading it; is another process writing?")
        listed = repo.list_packs()
        packs = index.packs()
        if not index_names and snaps:
            # with no snapshot either, every pack is garbage (a killed first backup)
            raise DamagedRepository(
                f"refusing to prune: the store lists no index objects but {len(listed)} packs and "
                f"{len(snaps)} snapshots; nothing was deleted (bk repair index rebuilds the index)"
            )
        for kind in (KIND_DATA, KIND_META):
            indexed = sum(1 for p in packs if p.kind == kind)
            if indexed and not any(n.startswith(kind + "/") for n in listed):
                raise DamagedRepository(
                    f"refusing to prune: the index names {indexed} {kind} packs but the store lists none under "
                    f"{kind}/; nothing was deleted"
                )

        self.reporter.phase("mark", None)
        reach = mark(repo, snaps, on_node=self.reporter.advance, strict=False)
        self._require_complete(snaps, reach, index, listed)

        live = reach.meta  # one set of every live id: the data ids join the meta ones
        live |= reach.data
        reach.data.clear()
        # per pack: used and unused bytes, in one pass (no per-blob tuples kept)
        used_of = dict.fromkeys((p.id for p in packs), 0)
        unused_of = dict(used_of)
        blobs_used = blobs_unused = 0
        for loc in index.blobs():
            if loc.blob_id in live:
                used_of[loc.pack.id] += loc.length
                blobs_used += 1
            else:
                unused_of[loc.pack.id] += loc.length
                blobs_unused += 1
        keep: list[PackInfo] = []
        delete: list[PackInfo] = []
        missing: list[PackInfo] = []
        candidates: list[tuple[PackInfo, int, int]] = []
        full: list[tuple[PackInfo, int, int]] = []  # used, nothing unused
        bytes_used = bytes_unused = 0
        for p in packs:
            used, unused = used_of[p.id], unused_of[p.id]
            bytes_used += used
            bytes_unused += unused
            if pack_name(p.kind, p.id) not in listed:
                missing.append(p)  # _require_complete made sure nothing live is in it
            elif used == 0:
                delete.append(p)
            elif unused == 0:
                full.append((p, used, 0))
            else:
                candidates.append((p, used, unused))
        # --repack-small: every pack each backup's last, partly filled pack leaves behind
        # costs a request and a listing row; ten or more of them are joined (fewer are
        # left: the new packs' own last one would be repacked again and again)
        small_below = repo.config.pack_size * 8 // 10 if rules.small else 0
        smalls = {c[0].id for c in (*candidates, *full) if c[0].size < small_below}
        if len(smalls) < SMALL_PACKS_MIN:
            smalls = set()
        keep.extend(c[0] for c in full if c[0].id not in smalls)
        candidates.extend(c for c in full if c[0].id in smalls)

        # restic's rule: repack the packs with the largest unused share first, until the
        # unused bytes left in kept packs are within the limit; a pack that would take the
        # repacked bytes past rules.max_bytes is kept (a smaller one after it may still fit).
        limit = max_unused.limit(bytes_used)
        remaining = sum(u for _p, _used, u in candidates)
        candidates.sort(key=lambda c: (-c[2] / (c[1] + c[2]), -c[2], c[0].id))
        repack: list[PackInfo] = []
        repack_live = repack_bytes = 0
        for p, used, unused in candidates:
            wanted = (remaining > limit or p.id in smalls) and not (rules.cacheable_only and p.kind != KIND_META)
            if wanted and (rules.max_bytes is None or repack_bytes + p.size <= rules.max_bytes):
                repack.append(p)
                repack_live += used
                repack_bytes += p.size
                remaining -= unused
            else:
                keep.append(p)
        known = {pack_name(p.kind, p.id) for p in packs}
        unindexed = sorted(n for n in listed if n not in known)
        stats = PruneStats(
            snapshots=len(snaps),
            index_objects=len(index_names),
            packs=len(packs),
            blobs_used=blobs_used,
            blobs_unused=blobs_unused,
            bytes_used=bytes_used,
            bytes_unused=bytes_unused,
            packs_delete=len(delete),
            bytes_delete=sum(p.size for p in delete),
            packs_repack=len(repack),
            bytes_repack=sum(p.size for p in repack),
            bytes_repack_live=repack_live,
            packs_unindexed=len(unindexed),
            bytes_unindexed=sum(listed[n] for n in unindexed),
            packs_missing=len(missing),
            bytes_unused_after=int(remaining),
        )
        return PrunePlan(
            max_unused=max_unused,
            stats=stats,
            index_names=index_names,
            keep=tuple(keep),
            repack=tuple(repack),
            delete=tuple(delete),
            unindexed=tuple(unindexed),
            missing=tuple(missing),
            entries=PackEntries(index, (p.id for p in (*keep, *repack))),
            live=live,
            rules=rules,
        )

    def _snapshots(self) -> list[Snapshot]:
        """Every snapshot, each read from its own object (never trusting the catalog alone).

        A snapshot the catalog knows but the listing lacks must really be gone (a forget
        that died before updating the catalog); if it can still be read, the listing
        lied (restic #4612) and prune stops.
        """
        repo = self.repo
        listed = sorted(i.hex() for i in repo.list_ids("snapshots"))
        self._check_unlisted(listed)
        snaps: list[Snapshot] = []
        damaged: list[str] = []
        with ThreadPoolExecutor(max_workers=repo.connections) as pool:

            def load(sid: str) -> Snapshot | str:
                try:
                    return load_snapshot(repo, sid)
                except (IntegrityError, FormatError) as e:
                    return f"snapshot {sid[:8]}: {e}"

            for sid, r in zip(listed, pool.map(load, listed)):
                if isinstance(r, str):
                    damaged.append(sid)
                else:
                    snaps.append(r)
        if damaged:
            raise DamagedRepository(
                f"refusing to prune: {len(damaged)} snapshot object(s) cannot be read: "
                f"{', '.join(d[:8] for d in damaged)}; nothing was deleted",
                damaged,
            )
        return snaps

    def _check_unlisted(self, listed: list[str]) -> None:
        """Refuse when the catalog knows a snapshot the listing lacks: either the listing
        lied (the object exists) or the snapshot object was lost (forget drops snapshots
        from the catalog before deleting them), and its data may be needed to repair it."""
        catalog = read_catalog(self.repo)
        if catalog is None and not listed and self.repo.index_names():
            raise DamagedRepository(
                "refusing to prune: the store lists no snapshots and the catalog cannot be read, so an "
                "empty listing cannot be told from a failed one; nothing was deleted"
            )
        for sid in sorted(set(catalog or ()) - set(listed)):
            if self.repo.exists(f"snapshots/{sid}"):
                raise DamagedRepository(
                    f"refusing to prune: snapshot {sid[:8]} exists but the store's listing of snapshots/ "
                    "left it out; nothing was deleted"
                )
            raise DamagedRepository(
                f"refusing to prune: snapshot {sid[:8]} is in the catalog but its object is missing "
                "(run bk check); nothing was deleted",
                [sid],
            )

    def _require_complete(self, snaps: list[Snapshot], reach: Reachable, index: Index, listed: dict[str, int]) -> None:
        """Raise DamagedRepository unless every live blob is indexed in a listed pack."""
        bad: set[bytes] = set(reach.unreadable)
        details: list[str] = [f"{sid[:8]} {path}: {msg}".replace(" : ", ": ") for sid, path, msg in reach.problems]
        problems: dict[str, int] = {}
        for kind, ids in ((KIND_META, reach.meta), (KIND_DATA, reach.data)):
            for bid in ids:
                if bid in reach.unreadable:
                    continue
                loc = index.lookup(bid)
                if loc is None:
                    why = "not in the index"
                elif loc.pack.kind != kind:
                    why = f"indexed in a {loc.pack.kind} pack"
                else:
                    name = pack_name(loc.pack.kind, loc.pack.id)
                    size = listed.get(name)
                    if size is None:
                        why = f"in pack {name}, which the store does not list"
                    elif size != loc.pack.size:
                        why = f"in pack {name}, which is {size} bytes, not {loc.pack.size}"
                    else:
                        continue
                bad.add(bid)
                problems[why] = problems.get(why, 0) + 1
        if not bad:
            return
        details += [f"{n} blob(s) {why}" for why, n in sorted(problems.items())]
        affected = find_affected(self.repo, snaps, bad)
        damaged = sorted({a.snapshot for a in affected})
        for a in affected[:50]:
            where = display_path(a.path) if a.path is not None else "(tree node; paths below it unknown)"
            details.append(f"snapshot {a.snapshot[:8]}: {where} (blob {a.blob.hex()[:16]})")
        raise DamagedRepository(
            f"refusing to prune, nothing was deleted: {len(bad)} blob(s) that snapshots need are missing or "
            f"unreadable; damaged snapshots: {', '.join(s[:8] for s in damaged) or '?'} (run bk check)",
            damaged,
            details,
        )

    # -- executing ---------------------------------------------------------------------------
    def execute(self, plan: PrunePlan) -> PruneResult:
        """Repack, write the new index, delete old index objects, delete packs."""
        t0 = time.monotonic()
        repo = self.repo
        if plan.nothing_to_do:
            abandoned = self._remove_abandoned()
            return PruneResult(plan, 0, 0, None, 0, 0, 0, time.monotonic() - t0, abandoned)
        if isinstance(plan.entries, PackEntries):
            plan.entries.group()  # now, from the index the plan was made from
        new_packs = self._repack(plan)
        # kept packs' entries go to the index as grouped (packed records, no PackEntry each)
        rows: list[tuple[PackInfo, Sequence[PackEntry] | Sequence[IndexEntry]]] = [(p, plan.entries[p.id]) for p in plan.keep]
        rows.extend(new_packs)
        supersedes = [bytes.fromhex(n.split("/", 1)[1]) for n in plan.index_names]
        self.reporter.phase("write index", None)
        index_written = None
        if rows or plan.index_names:
            index_written = repo.write_index(rows, supersedes)  # checks the repository's lock first
        self.lock_check()

        self.reporter.phase("delete index", len(plan.index_names))
        index_deleted = self._delete(plan.index_names)
        doomed = [pack_name(p.kind, p.id) for p in (*plan.delete, *plan.repack)] + list(plan.unindexed)
        self.reporter.phase("delete packs", len(doomed))
        sizes = {pack_name(p.kind, p.id): p.size for p in (*plan.delete, *plan.repack)}
        packs_deleted = self._delete(doomed)
        repo.drop_index()  # the next use loads the new one (nothing here needs it)
        abandoned = self._remove_abandoned()
        return PruneResult(
            plan=plan,
            packs_written=len(new_packs),
            bytes_written=sum(p.size for p, _e in new_packs),
            index_written=index_written,
            index_deleted=index_deleted,
            packs_deleted=packs_deleted,
            bytes_deleted=sum(sizes.get(n, 0) for n in doomed) + plan.stats.bytes_unindexed,
            seconds=time.monotonic() - t0,
            abandoned_removed=abandoned,
        )

    def _remove_abandoned(self) -> int:
        """Partial writes of killed writers: safe to remove under the exclusive lock once
        older than any live write could be (two lock TTLs)."""
        self.lock_check()
        return self.repo.remove_abandoned(ABANDONED_AFTER)

    def _delete(self, names: Iterable[str]) -> int:
        """Delete objects (and their cached copies) in parallel; gone already is fine."""
        return self.repo.delete_objects(names, on_deleted=lambda _n: self.reporter.advance(1))

    def _repack(self, plan: PrunePlan) -> list[tuple[PackInfo, list[PackEntry]]]:
        """Copy the live blobs of the packs to repack into new packs; returns them."""
        if not plan.repack:
            return []
        self.reporter.phase("repack", sum(p.size for p in plan.repack))
        return repack(self.repo, plan.repack, plan.entries.__getitem__, plan.live, self.reporter.advance)

__all__ = [
    "DamagedRepository",
    "MaxUnused",
    "PrunePlan",
    "PruneManager",
    "PruneReporter",
    "PruneResult",
    "PruneStats",
    "NullPruneReporter",
    "RepackRules",
    "parse_max_unused",
]
