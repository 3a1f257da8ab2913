"""Rewrite: remove paths from existing snapshots (restic's ``rewrite``).

For each selected snapshot, the entries the exclude patterns match (restic's rules: a
matched directory takes everything below it) are found as ``find`` finds them, then
deleted from the snapshot's trie with one ``Hamt.update`` (``new_host``/``new_time``
change the document alone, as restic's ``--new-host``/``--new-time``): only the nodes on the paths to
removed keys are written, every other subtree is shared with the original. The new
snapshot keeps the original's document but for its root, gets the tag ``rewrite`` and
``meta["original"]`` (the first id it had), and is published (packs, index, snapshot,
catalog) before anything is removed. With ``forget`` the original snapshot is removed
afterwards (the caller then holds the exclusive lock); the data only it used becomes
garbage for ``prune``. A snapshot nothing matches is left alone. ``dry_run`` writes
nothing and says what would go.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from backupkit.reporters import silent
from backupkit.entry import Keyer, display_path
from backupkit.errors import BadArgument, UsageError
from backupkit.managers.find import FindManager, FindMatch, FindOptions
from backupkit.managers.base import Manager, SnapshotSelection, select_snapshots
from backupkit.managers.json_fields import JsonFields, replaced_ids
from backupkit.snapshot import Snapshot, remove_snapshots, save_snapshot, time_ns_of
from backupkit.tree import make_hamt

REWRITE_TAG = "rewrite"


@dataclass(frozen=True)
class RewriteOptions(SnapshotSelection):
    excludes: tuple[str, ...] = ()
    iexcludes: tuple[str, ...] = ()
    #: restic's ``--new-host`` / ``--new-time``: the rewritten snapshots' host and time
    #: (every selected snapshot whose host or time differs is rewritten, excludes or not)
    new_host: str | None = None
    new_time: datetime | None = None
    forget: bool = False
    dry_run: bool = False


@dataclass(frozen=True)
class RewriteChange:
    old: Snapshot
    #: None with dry_run
    new: Snapshot | None
    removed: tuple[FindMatch, ...]

    @property
    def removed_bytes(self) -> int:
        return sum(m.size for m in self.removed if m.type == "file")

    def to_json(self) -> dict:
        return {
            **replaced_ids(self.old, self.new),
            "removed_entries": len(self.removed),
            "removed_bytes": self.removed_bytes,
            "removed": [display_path(m.path) for m in self.removed],
        }


@dataclass(frozen=True)
class RewriteResult(JsonFields):
    """What ``bk rewrite`` did (or, with ``dry_run``, would do) to the selected snapshots."""

    #: as asked: nothing written (``dry_run``); the rewritten snapshots' originals forgotten
    dry_run: bool
    forget: bool
    #: snapshots that lost entries (rewritten, or with dry_run: would be)
    changed: tuple[RewriteChange, ...]
    #: selected snapshots no exclude matched (left as they are)
    unchanged: tuple[Snapshot, ...]


class RewriteReporter(Protocol):
    def rewritten(self, change: RewriteChange) -> None: ...


NullRewriteReporter = silent(RewriteReporter)


class RewriteManager(Manager[RewriteReporter]):
    null_reporter = NullRewriteReporter

    def run(self, opts: RewriteOptions) -> RewriteResult:
        if not (opts.excludes or opts.iexcludes or opts.new_host or opts.new_time):
            raise BadArgument("nothing to rewrite: give --exclude, --iexclude, --exclude-file, --new-host or --new-time")
        new_ns = None if opts.new_time is None else time_ns_of(opts.new_time)
        snaps = select_snapshots(self.repo, opts)
        finder = FindManager(self.repo)
        removed: dict[str, dict[bytes, FindMatch]] = {s.id: {} for s in snaps}
        for pats, icase in ((opts.excludes, False), (opts.iexcludes, True)):
            if pats:
                for s, matches in finder.by_name(snaps, FindOptions(tuple(pats), ignore_case=icase)):
                    removed[s.id].update((m.path, m) for m in matches)
        hamt = make_hamt(self.repo)
        keyer = Keyer(self.repo.sealer.keyed_hash)
        changed: list[RewriteChange] = []
        unchanged: list[Snapshot] = []
        for s in snaps:
            gone = sorted(removed[s.id].values(), key=lambda m: m.path)
            relabel = (opts.new_host is not None and opts.new_host != s.host) or (new_ns is not None and new_ns != s.time_ns)
            if not gone and not relabel:
                unchanged.append(s)
                continue
            if gone and (b"/" in removed[s.id] or hamt.count(s.root) - len(gone) <= 1):
                raise UsageError(f"the excludes remove everything from snapshot {s.short_id}: refused")
            new = None
            if not opts.dry_run:
                doc = s.to_doc()
                if gone:
                    doc["root"] = hamt.update(s.root, [(keyer.key(m.path), m.path, None) for m in gone])
                    self.repo.flush()  # nodes and index before the snapshot that names them
                if opts.new_host is not None:
                    doc["host"] = opts.new_host
                if new_ns is not None:
                    doc["time"] = new_ns
                if not opts.forget and REWRITE_TAG not in s.tags:
                    doc["tags"] = [*s.tags, REWRITE_TAG]
                doc["meta"] = {**s.meta, "original": s.meta.get("original", s.id)}
                self.lock_check()
                new = save_snapshot(self.repo, doc)
                if opts.forget and new.id != s.id:
                    self.lock_check()
                    remove_snapshots(self.repo, [s.id])
            change = RewriteChange(s, new, tuple(gone))
            changed.append(change)
            self.reporter.rewritten(change)
        return RewriteResult(dry_run=opts.dry_run, forget=opts.forget, changed=tuple(changed), unchanged=tuple(unchanged))
