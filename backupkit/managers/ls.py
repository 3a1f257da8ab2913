"""Ls: the entries of one directory (or a subtree) of a snapshot."""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from backupkit.entry import display_path
from backupkit.errors import BadArgument
from backupkit.crypto import T_META_BLOB
from backupkit.managers.json_fields import JsonFields, json_fields
from backupkit.objects.content import content_list
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


@dataclass(frozen=True)
class TreeNode(LsEntry):
    """One entry of a directory as ``bk cat tree`` shows it: ``ls``'s fields, its name
    (restic's tree node has one) and ``content``, the data blob ids in order (a hole as
    ``{"hole": n}`` in JSON)."""

    content: tuple = ()

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    def to_json(self) -> dict:
        content = [c.hex() if isinstance(c, bytes) else {"hole": c} for c in self.content]
        return {"name": self.name, **json_fields(self, content=content)}


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

    def tree(self, snap: Snapshot, path: str = "/") -> list[TreeNode]:
        """The entries of directory ``path`` (restic's ``cat tree SNAP:PATH``), names
        sorted, each file with its whole content list (long lists read from their content
        blobs). PathNotFound if the snapshot has no ``path``, BadArgument if it is not a
        directory."""
        tree = SnapshotTree(self.repo, snap.root)
        base = normalize(path)
        top = tree.require(base)
        if not top.is_dir:
            raise BadArgument(f"{display_path(base)} is a {top.type_name}, not a directory")
        out = []
        for p, e in tree.walk(base, top=top, max_depth=1):
            if p == base:
                continue
            content = tuple(content_list(e, self._read_meta)) if e.is_file else ()
            out.append(TreeNode(**_ls_entry(p, e).__dict__, content=content))
        return out

    def _read_meta(self, bid: bytes) -> bytes:
        return self.repo.read_blob(bid, T_META_BLOB)
