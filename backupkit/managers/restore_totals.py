"""The totals a restore's progress shows: regular files and their bytes.

Restoring a whole snapshot without --include/--exclude, the snapshot's summary has them
(written by backup). Otherwise a thread counts them by walking the selected folder while
the restore runs: it shares the restore's tree-node cache, so the nodes it reads are the
ones the restore reads next, and the restore does not wait for it (only at its end, for what is left to count). A second name of a
hardlinked file adds no bytes (restore links it). Damage is not reported here (the
restore reports it); an entry that cannot be read is simply not counted.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from backupkit.filters import select_entries
from backupkit.snapshot import Snapshot
from backupkit.tree import SnapshotTree


def summary_totals(snap: Snapshot) -> tuple[int, int] | None:
    """(files, bytes) from the snapshot's summary, if it has them."""
    s = snap.summary or {}
    try:
        files = int(s["files_new"]) + int(s["files_changed"]) + int(s["files_unchanged"])
        size = int(s["bytes_total"])
    except (KeyError, TypeError, ValueError):
        return None
    return files, size


def count_totals(tree: SnapshotTree, base: bytes, select: Callable | None, stop: threading.Event | None = None) -> tuple[int, int] | None:
    """(files, bytes) below ``base`` that ``select`` keeps; None if stopped first."""
    walk = tree.walk(base, on_error=lambda *_a: None)
    entries = select_entries(walk, select) if select is not None else walk
    files = size = 0
    seen: set[tuple[int, int]] = set()
    for _p, e in entries:
        if stop is not None and stop.is_set():
            return None
        if not e.is_file:
            continue
        files += 1
        key = e.hardlink_key
        if key is not None:
            if key in seen:
                continue
            seen.add(key)
        size += e.size or 0
    return files, size


class Totals:
    """Tells ``reporter.start`` the totals, from the summary or counted on a thread
    (stopped if the restore fails first)."""

    def __init__(self, tree: SnapshotTree, snap: Snapshot, base: bytes, select: Callable | None, reporter) -> None:
        self._tree = tree
        self._base = base
        self._select = select
        self._reporter = reporter
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._known = summary_totals(snap) if base == b"/" and select is None else None

    def __enter__(self) -> Totals:
        if self._known is not None:
            self._reporter.start(*self._known)
        else:
            self._thread = threading.Thread(target=self._count, name="bk-restore-totals", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type, *exc) -> None:
        # a restore that ended well waits for the count (its nodes were just read, so
        # it is quick): the last progress line has its totals; one that failed does not
        if exc_type is not None:
            self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _count(self) -> None:
        try:
            totals = count_totals(self._tree, self._base, self._select, self._stop)
        except Exception:  # noqa: BLE001 - no totals; the restore reports the damage
            return
        if totals is not None:
            self._reporter.start(*totals)


__all__ = ["Totals", "count_totals", "summary_totals"]
