"""Tag: add, remove or replace the tags of existing snapshots.

A snapshot's id is the keyed MAC of its document, so changing its tags makes a new
snapshot object with a new id. The new object is written (and added to the catalog)
first; the old one is deleted only after that, so an interruption leaves both, never
neither. The new document's ``meta["original"]`` names the first id the snapshot had
(restic's ``original`` field): kept through any number of tag changes.

The caller holds the exclusive lock (as restic does); its check is the repository's
(``Manager``'s default) unless one is passed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from backupkit.reporters import silent
from backupkit.errors import BadArgument
from backupkit.managers.base import Manager, SnapshotSelection, select_snapshots
from backupkit.managers.json_fields import replaced_ids
from backupkit.snapshot import Snapshot, remove_snapshots, save_snapshot


def split_tags(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """``("a,b", "c")`` -> ``("a", "b", "c")``: restic's comma-separated tag lists, in
    order, without repeats or empty names."""
    out: list[str] = []
    for v in values:
        for t in v.split(","):
            t = t.strip()
            if t and t not in out:
                out.append(t)
    return tuple(out)


@dataclass(frozen=True)
class TagOptions(SnapshotSelection):
    add: tuple[str, ...] = ()
    remove: tuple[str, ...] = ()
    #: None: leave the tags but for ``add``/``remove``; a tuple (maybe empty): the new tags
    set: tuple[str, ...] | None = None


@dataclass(frozen=True)
class TagChange:
    old: Snapshot
    new: Snapshot

    def to_json(self) -> dict:
        return {
            **replaced_ids(self.old, self.new),
            "original": self.new.meta.get("original"),
            "old_tags": list(self.old.tags),
            "tags": list(self.new.tags),
        }


@dataclass(frozen=True)
class TagResult:
    changed: tuple[TagChange, ...]
    #: snapshots selected whose tags were already as asked
    unchanged: tuple[Snapshot, ...]

    def to_json(self) -> dict:
        return {
            "changed": [c.to_json() for c in self.changed],
            "unchanged": [s.id for s in self.unchanged],
            "changed_snapshots": len(self.changed),
        }


class TagReporter(Protocol):
    def changed(self, change: TagChange) -> None: ...


NullTagReporter = silent(TagReporter)


def new_tags(current: tuple[str, ...], opts: TagOptions) -> tuple[str, ...]:
    if opts.set is not None:
        return split_tags(opts.set)
    out = [t for t in current if t not in set(split_tags(opts.remove))]
    for t in split_tags(opts.add):
        if t not in out:
            out.append(t)
    return tuple(out)


class TagManager(Manager[TagReporter]):
    null_reporter = NullTagReporter

    def run(self, opts: TagOptions) -> TagResult:
        if opts.set is not None and (opts.add or opts.remove):
            raise BadArgument("--set cannot be combined with --add or --remove")
        if opts.set is None and not split_tags(opts.add) and not split_tags(opts.remove):
            raise BadArgument("nothing to do: give --add, --remove or --set")
        changed: list[TagChange] = []
        unchanged: list[Snapshot] = []
        for snap in select_snapshots(self.repo, opts):
            tags = new_tags(snap.tags, opts)
            if tags == snap.tags:
                unchanged.append(snap)
                continue
            doc = snap.to_doc()
            doc["tags"] = list(tags)
            doc["meta"] = {**snap.meta, "original": snap.meta.get("original", snap.id)}
            self.lock_check()
            new = save_snapshot(self.repo, doc)  # published (object, then catalog) ...
            if new.id != snap.id:
                self.lock_check()
                remove_snapshots(self.repo, [snap.id])  # ... before the old one goes
            change = TagChange(snap, new)
            changed.append(change)
            self.reporter.changed(change)
        return TagResult(tuple(changed), tuple(unchanged))
