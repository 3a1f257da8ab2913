"""The parent snapshot as the backup walk sees it (``backup_walk.py``).

A ``ParentView`` fetches the parent's entries one directory at a time by key prefix
(``SnapshotTree.raw_children_by_name``) and hands them out encoded: the walk unpacks one
to its wire map (``wire``) when it reaches the path, compares the path's lstat with the
map (``unchanged``; ``file_unchanged`` for a regular file, the common case) and decodes
it to an ``Entry`` only when the path changed. It also says which paths a deletion drops and whether a file's content
list can be reused (every blob still in the index and not known to be damaged).

A parent whose tree cannot be read (a lost or damaged node, a malformed entry) raises
``_ParentUnreadable``: the run (``backup.py``) then starts again without a parent.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from operator import itemgetter

import msgpack
from msgpack import unpackb

from backupkit.crypto import T_META_BLOB
from backupkit.entry import display_path
from backupkit.errors import BlobNotFound, FormatError, IntegrityError
from backupkit.objects.content import content_list
from backupkit.objects.entry import WIRE_KEY, Entry, group_name, user_name
from backupkit.repo.repository import Repository
from backupkit.tree import SnapshotTree

try:
    from backupkit._parentmatch import Matcher as _Matcher
except ImportError:  # pragma: no cover - the extension is built by pip install
    _Matcher = None

_WIRE_KEYS = frozenset(WIRE_KEY.values())
#: what reading the parent's tree can raise when it is damaged
_TREE_ERRORS = (BlobNotFound, IntegrityError, FormatError)


class _ParentUnreadable(Exception):
    """The parent snapshot's tree cannot be read (a lost or damaged node): the backup
    starts again without a parent. Private control flow between the walk and the run
    (``backup.py``): it never reaches a user, so it is not in ``errors.py``."""


def unreadable(detail: object) -> _ParentUnreadable:
    return _ParentUnreadable(f"the parent snapshot's tree cannot be read: {detail}")


def unchanged(m: dict, st: os.stat_result, t: str | None) -> bool:
    """Whether the parent's wire map ``m`` holds exactly the entry ``st`` gives (the
    xattrs and a symlink's target are kept when type, inode, mtime and ctime match:
    see ``BackupWalk._meta_entry``). No ``Entry`` is built: this is all an unchanged
    path costs besides its lstat. A map with a key the format does not know never
    matches (it is then decoded, and refused)."""
    uid = st.st_uid
    gid = st.st_gid
    return (
        m.get("mt") == st.st_mtime_ns
        and m.get("ct") == st.st_ctime_ns
        and m.get("i") == st.st_ino
        and m.get("t") == t
        and m.get("s") == (st.st_size if t == "f" else None)
        and m.get("m") == (st.st_mode & 0o7777)
        and m.get("u") == uid
        and m.get("g") == gid
        and m.get("dv") == st.st_dev
        and m.get("n") == st.st_nlink
        and m.get("rd") == (st.st_rdev if t == "c" or t == "b" else None)
        and m.get("un") == user_name(uid)
        and m.get("gn") == group_name(gid)
        and m.keys() <= _WIRE_KEYS
    )


def wire(path: bytes, raw: bytes) -> dict:
    """The parent's wire map of ``path`` from its encoded entry (not yet validated: see
    ``decode``); a parent whose entry is not a msgpack map is unreadable."""
    try:
        m = unpackb(raw, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as e:
        raise unreadable(f"{display_path(path)}: {e}") from None
    if type(m) is not dict:
        raise unreadable(f"{display_path(path)}: malformed file entry: not a map")
    return m


#: the wire fields an unchanged file's map holds (the content's aside), and the same
#: taken from an lstat by ``file_unchanged``
_FILE_FIELDS = itemgetter("mt", "ct", "i", "s", "m", "dv", "n", "t")
_OWNER_FIELDS = itemgetter("u", "g", "un", "gn")
_owners: dict[tuple[int, int], tuple[int, int, str, str]] = {}


def inline_content(m: dict) -> list | None:
    """The parent's content list of a file when the file can reuse it as it is: inline
    (``c``), not behind a content-blob indirection (``cb``); else None."""
    c = m.get("c")
    return c if type(c) is list and "cb" not in m else None


def file_unchanged(m: dict, st: os.stat_result) -> bool:
    """``unchanged(m, st, "f")`` for a regular file's ``st``, in fewer steps: two tuples
    compared in C instead of a lookup per field (an unchanged backup makes one call per
    file). Whatever this does not settle is left to ``unchanged``, so both agree."""
    try:
        same = (
            _FILE_FIELDS(m) == (st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_size, st.st_mode & 0o7777, st.st_dev, st.st_nlink, "f")
            and _OWNER_FIELDS(m) == _owner(st.st_uid, st.st_gid)
            and "rd" not in m
            and m.keys() <= _WIRE_KEYS
        )
    except KeyError:
        same = False
    return same or unchanged(m, st, "f")


def content_matcher():
    """A callable ``(raw, st)`` -> the parent's content list when ``raw`` (the parent's
    encoded entry of a regular file) matches ``st`` as ``file_unchanged`` and
    ``inline_content`` would say, without unpacking it (C, ``_parentmatch.c``), or None
    when that is not settled so: then ``wire``, ``inline_content`` and ``file_unchanged``
    decide. None where the C extension is missing."""
    return _Matcher(_owner) if _Matcher is not None else None


def _owner(uid: int, gid: int) -> tuple[int, int, str, str]:
    o = _owners.get((uid, gid))
    if o is None:
        if len(_owners) > 4096:
            _owners.clear()
        o = _owners[(uid, gid)] = (uid, gid, user_name(uid), group_name(gid))
    return o


def decode(path: bytes, m: dict | None) -> Entry | None:
    """The parent's entry from its wire map, validated."""
    if m is None:
        return None
    try:
        return Entry.from_wire(m, path)
    except FormatError as e:
        raise unreadable(e) from None


class ParentView:
    """The parent snapshot's entries (``tree``; None: the run has no parent) and the
    index checks that decide whether a file's content list is reused."""

    def __init__(self, tree: SnapshotTree | None, repo: Repository, dry: bool) -> None:
        self.tree = tree
        self._repo = repo
        #: a dry run writes no blobs: every content list counts as reusable
        self._dry = dry

    def children(self, dirpath: bytes) -> dict[bytes, dict]:
        """name -> the parent's wire map of each child of ``dirpath``."""
        pre = dirpath if dirpath == b"/" else dirpath + b"/"
        return {name: wire(pre + name, raw) for name, raw in self.raw_children(dirpath).items()}

    def raw_children(self, dirpath: bytes) -> dict[bytes, bytes]:
        """name -> the parent's encoded entry of each child of ``dirpath`` (``wire``
        decodes one): the walk decodes an entry only when it looks at it."""
        if self.tree is None:
            return {}
        try:
            return self.tree.raw_children_by_name(dirpath)
        except _TREE_ERRORS as e:
            raise unreadable(e) from None

    def wire_map(self, path: bytes) -> dict | None:
        """The parent's wire map of ``path`` (None: it had none)."""
        try:
            e = self.tree.get(path) if self.tree is not None else None
        except _TREE_ERRORS as err:
            raise unreadable(err) from None
        return e.to_wire() if e is not None else None

    def entry(self, path: bytes) -> Entry | None:
        """The parent's entry of ``path``, validated (None: it had none)."""
        return decode(path, self.wire_map(path))

    def dropped(self, path: bytes, old: dict) -> Iterator[bytes]:
        """The paths that leave the snapshot with ``path`` (``old``: the parent's wire
        map of it): ``path``, and for a directory everything the parent had below it."""
        if self.tree is None:
            return
        if old.get("t") != "d":
            yield path
            return
        try:
            for p, _e in self.tree.walk(path):
                yield p
        except _TREE_ERRORS as e:
            raise unreadable(e) from None

    def items_indexed(self, items: object) -> bool:
        """Whether an inline content list (a wire value) is well formed and every blob
        of it is in the index and not known to be damaged."""
        return self.all_items_indexed([items])

    def all_items_indexed(self, lists: list) -> bool:
        """``items_indexed`` of every one of ``lists`` at once (one index lookup for all
        their blobs): True only when each holds."""
        ids: list[bytes] = []
        add = ids.append
        for items in lists:
            if type(items) is not list:
                return False
            for i in items:
                if type(i) is bytes:
                    add(i)
                elif type(i) is not int or i < 0:
                    return False
        if self._dry:
            return True
        damaged = self._repo.damaged
        return self._repo.has_blobs(ids) and not (damaged and damaged.intersection(ids))

    def content_indexed(self, old: Entry) -> bool:
        """Whether every blob of the parent's entry is in the index and not known to be
        damaged, so the entry may be reused; else the file is read again (self-healing:
        a backup never references a blob the index does not hold)."""
        if self._dry:
            return True
        repo = self._repo
        has = repo.has_blob
        damaged = repo.damaged
        if old.content_blobs:
            for cb in old.content_blobs:
                if not has(cb) or cb in damaged:
                    return False
            try:
                items = content_list(old, lambda bid: repo.read_blob(bid, T_META_BLOB))
            except Exception:  # noqa: BLE001 - an unreadable content blob: read the file again
                return False
        else:
            items = old.content or ()
        return all(has(i) and i not in damaged for i in items if isinstance(i, bytes))


__all__ = ["ParentView", "content_matcher", "decode", "file_unchanged", "unchanged", "unreadable", "wire"]
