"""Diff: what changed between two snapshots.

Vocabulary:
    added       a path only the second snapshot has.
    removed     a path only the first snapshot has.
    modified    a path both have whose content differs: type, content list (``c`` or
                ``cb``), symlink target, device number or size.
    metadata    a path both have with the same content but other fields changed
                (mode, owner, times, inode, xattrs, ...).

Both snapshots' HAMTs are walked together with ``Hamt.diff``, which skips subtrees whose
node ids are equal without reading them, so the cost follows the size of the change
(times the trie depth), not the size of the snapshots. ``DiffResult.nodes_visited``
counts the nodes the walk touched.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

from backupkit.reporters import silent
from backupkit.crypto import T_META_BLOB
from backupkit.entry import display_path
from backupkit.managers.json_fields import json_fields
from backupkit.objects.content import content_list
from backupkit.objects.entry import TYPE_NAMES, Entry
from backupkit.managers.base import Manager
from backupkit.snapshot import Snapshot
from backupkit.tree import make_hamt

ADDED = "added"
REMOVED = "removed"
MODIFIED = "modified"
METADATA = "metadata"

#: Entry fields whose change means the content changed (everything else is metadata).
CONTENT_FIELDS = frozenset({"t", "c", "cb", "l", "rd", "s"})


@dataclass(frozen=True)
class Change:
    """One path that differs between the two snapshots."""

    path: bytes
    kind: str
    type_a: str | None
    type_b: str | None
    size_a: int
    size_b: int
    #: entry fields that differ (short names, see ``backupkit.entry``), sorted
    fields: tuple[str, ...] = ()

    @property
    def display(self) -> str:
        return display_path(self.path)

    def to_json(self) -> dict:
        return json_fields(
            self,
            path=self.display,
            type_a=TYPE_NAMES.get(self.type_a or "", None),
            type_b=TYPE_NAMES.get(self.type_b or "", None),
        )


@dataclass(frozen=True)
class DiffResult:
    """The changes from snapshot ``a`` to snapshot ``b``, sorted by path."""

    a: Snapshot
    b: Snapshot
    changes: tuple[Change, ...]
    added: int
    removed: int
    modified: int
    metadata: int
    #: sum of file sizes: of added files, and of removed files
    size_added: int
    size_removed: int
    #: plaintext bytes of data blobs the changed entries of b use and those of a do not
    #: (new data), and the reverse (data no longer used by the changed paths)
    data_added: int
    data_removed: int
    nodes_visited: int

    def to_json(self) -> dict:
        return {
            "a": self.a.id,
            "b": self.b.id,
            "changes": [c.to_json() for c in self.changes],
            "summary": json_fields(
                self, "added", "removed", "modified", "metadata", "size_added", "size_removed",
                "data_added", "data_removed", "nodes_visited",
            ),
        }


class DiffReporter(Protocol):
    def change(self, change: Change) -> None: ...


NullDiffReporter = silent(DiffReporter)


def classify(ea: Entry | None, eb: Entry | None) -> tuple[str, tuple[str, ...]]:
    """The kind of change between two entries of one path, and the fields that differ."""
    if ea is None:
        return ADDED, ()
    if eb is None:
        return REMOVED, ()
    fields = ea.differing_keys(eb)
    if any(f in CONTENT_FIELDS for f in fields):
        return MODIFIED, fields
    return METADATA, fields


class DiffManager(Manager[DiffReporter]):
    """Compares two snapshots of one repository."""

    null_reporter = NullDiffReporter

    def diff(self, a: Snapshot, b: Snapshot, data_sizes: bool = True) -> DiffResult:
        """Compare ``a`` (older) with ``b`` (newer).

        Args:
            data_sizes: also compute ``data_added``/``data_removed`` (loads the index and
                the content blobs of changed files with long content lists).
        """
        hamt = make_hamt(self.repo)
        changes: list[Change] = []
        counts = {ADDED: 0, REMOVED: 0, MODIFIED: 0, METADATA: 0}
        size_added = size_removed = 0
        blobs_a: set[bytes] = set()
        blobs_b: set[bytes] = set()
        for _key, path, va, vb in hamt.diff(a.root, b.root):
            ea = Entry.decode(va, path) if va is not None else None
            eb = Entry.decode(vb, path) if vb is not None else None
            kind, fields = classify(ea, eb)
            counts[kind] += 1
            c = Change(
                path=path,
                kind=kind,
                type_a=ea.type if ea else None,
                type_b=eb.type if eb else None,
                size_a=(ea.size or 0) if ea else 0,
                size_b=(eb.size or 0) if eb else 0,
                fields=fields,
            )
            if kind == ADDED:
                size_added += c.size_b
            elif kind == REMOVED:
                size_removed += c.size_a
            if data_sizes and kind in (ADDED, REMOVED, MODIFIED):
                if ea is not None:
                    blobs_a.update(self._data_blobs(ea))
                if eb is not None:
                    blobs_b.update(self._data_blobs(eb))
            changes.append(c)
            self.reporter.change(c)
        changes.sort(key=lambda c: c.path)
        return DiffResult(
            a=a,
            b=b,
            changes=tuple(changes),
            added=counts[ADDED],
            removed=counts[REMOVED],
            modified=counts[MODIFIED],
            metadata=counts[METADATA],
            size_added=size_added,
            size_removed=size_removed,
            data_added=self._raw_size(blobs_b - blobs_a),
            data_removed=self._raw_size(blobs_a - blobs_b),
            nodes_visited=hamt.visits,
        )

    def _data_blobs(self, e: Entry) -> Iterable[bytes]:
        if not e.is_file:
            return ()
        items = content_list(e, lambda bid: self.repo.read_blob(bid, T_META_BLOB))
        return (i for i in items if isinstance(i, bytes))

    def _raw_size(self, blobs: set[bytes]) -> int:
        if not blobs:
            return 0
        index = self.repo.index
        total = 0
        for bid in blobs:
            loc = index.lookup(bid)
            if loc is not None:
                total += loc.raw_length
        return total
