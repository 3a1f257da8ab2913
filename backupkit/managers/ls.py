"""Ls: the entries of one directory (or a subtree) of a snapshot."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from backupkit.entry import display_path
from backupkit.errors import BadArgument
from backupkit.managers.json_fields import JsonFields
from backupkit.objects.entry import Entry
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot
from backupkit.tree import SnapshotTree, normalize


@dataclass(frozen=True)
class LsEntry(JsonFields):
    path: str
    type: str
    mode: int
    uid: int
    gid: int
    user: str
    group: str
    size: int
    mtime_ns: int
    link_target: str | None


#: restic's ``ls --sort`` keys (``time``: the mtime; bk keeps no atime, and ctime only to
#: tell changes apart)
SORT_KEYS = ("name", "size", "time", "extension")


def check_sort(by: str) -> str:
    if by not in SORT_KEYS:
        raise BadArgument(f"cannot sort by {by!r}: give one of {', '.join(SORT_KEYS)}")
    return by


def sorted_entries(entries: Iterable[LsEntry], by: str, reverse: bool = False) -> list[LsEntry]:
    """``entries`` in restic's ``ls --sort`` order (``--reverse``: backwards); ties by path.
    Holds the whole listing, so only for when a sort is asked for."""
    keys = {
        "name": lambda e: e.path,
        "size": lambda e: (e.size, e.path),
        "time": lambda e: (e.mtime_ns, e.path),
        "extension": lambda e: (posixpath.splitext(e.path)[1], e.path),
    }
    return sorted(entries, key=keys[check_sort(by)], reverse=reverse)


def _ls_entry(path: bytes, e: Entry) -> LsEntry:
    return LsEntry(
        path=display_path(path),
        type=e.type_name,
        mode=e.mode or 0,
        uid=e.uid or 0,
        gid=e.gid or 0,
        user=e.user or "",
        group=e.group or "",
        size=e.size or 0,
        mtime_ns=e.mtime or 0,
        link_target=display_path(e.target) if e.target is not None else None,
    )


class LsManager:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def ls(self, snap: Snapshot, path: str = "/", recursive: bool = False, max_depth: int | None = None) -> Iterator[LsEntry]:
        """The entry at ``path`` and what is below it, depth first, parents before children.

        ``max_depth``: how many levels below ``path`` (0: the entry alone, 1: its
        children); None: all of them. Without ``max_depth``, ``recursive=False`` means 1.
        Directories deeper than the limit are not read at all.
        """
        tree = SnapshotTree(self.repo, snap.root)
        base = normalize(path)
        if max_depth is None and not recursive:
            max_depth = 1
        for p, e in tree.walk(base, max_depth=max_depth):
            yield _ls_entry(p, e)
