"""Reachability: every blob a set of snapshots references (HAMT nodes, content blobs,
data blobs), shared by prune (mark) and check (what is missing, and who is affected).

``find_affected`` goes the other way: from a set of bad blob ids to the snapshots and
paths that reference them, for messages that say what a damage costs.

Each distinct HAMT node is visited once across all snapshots, so marking N snapshots that
share most of their trees costs about the size of their union, not N times one tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from backupkit.crypto import T_META_BLOB
from backupkit.errors import FormatError
from backupkit.objects.content import decode_content_blob
from backupkit.objects.entry import Entry
from backupkit.hamt import Hamt
from backupkit.hamt_node import BRANCH
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot

try:
    from backupkit._parentmatch import entry_blobs as _entry_blobs
except ImportError:  # pragma: no cover - the extension is built by pip install
    _entry_blobs = None


@dataclass
class Reachable:
    """Blob ids in use, split by kind, and problems met on the way."""

    meta: set[bytes] = field(default_factory=set)
    data: set[bytes] = field(default_factory=set)
    #: (snapshot id, path or "", message) for nodes/blobs that could not be read
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    #: ids of the metadata blobs (tree nodes, content blobs) that could not be read
    unreadable: set[bytes] = field(default_factory=set)
    #: (tree node id, path, message) of entries that do not decode (``strict`` off)
    malformed: list[tuple[bytes, bytes, str]] = field(default_factory=list)

    @property
    def all(self) -> set[bytes]:
        return self.meta | self.data


def mark(
    repo: Repository,
    snapshots: Iterable[Snapshot],
    on_node: Callable[[], None] | None = None,
    strict: bool = True,
    read_meta: Callable[[bytes], bytes] | None = None,
) -> Reachable:
    """Collect every blob reachable from ``snapshots``.

    With ``strict`` an unreadable node or content blob, or an entry that does not decode,
    raises (prune must fail closed); otherwise it is recorded in ``problems`` and
    ``unreadable`` (an entry: in ``malformed``) and marking goes on.
    ``read_meta(blob_id) -> plaintext`` replaces ``repo.read_blob`` for metadata blobs
    (check reads through its own index, which tolerates damaged index objects).
    """
    if read_meta is None:
        read_meta = lambda bid: repo.read_blob(bid, T_META_BLOB)  # noqa: E731
    hamt: Hamt = Hamt(read_meta, lambda _data: b"", cache_size=256)
    out = Reachable()
    for snap in snapshots:
        for nid, n in hamt.visit(snap.root, out.meta):
            if n is None:
                continue
            if on_node is not None:
                on_node()
            if isinstance(n, Exception):
                if strict:
                    raise n
                out.unreadable.add(nid)
                out.problems.append((snap.id, "", f"tree node {nid.hex()[:16]}: {n}"))
                continue
            if n[0] == BRANCH:
                continue
            for _k, path, raw in n[1]:
                lists = _entry_blobs(raw) if _entry_blobs is not None else None
                if lists is not None:
                    # checked as Entry.from_wire checks it, in C; None: Python decides
                    mark_blobs(out, lists[0], lists[1], path, read_meta, strict, snap.id)
                    continue
                try:
                    e = Entry.decode(raw, path)
                except FormatError as err:
                    if strict:
                        raise
                    out.malformed.append((nid, path, str(err)))
                    continue
                mark_entry(out, e, path, read_meta, strict, snap.id)
    return out


def mark_entry(
    out: Reachable, e: Entry, path: bytes, read_meta: Callable[[bytes], bytes], strict: bool = True, snap_id: str = ""
) -> None:
    """Add the blobs of one entry to ``out``: its data blobs, and its content blobs with
    the data blobs they list (each content blob read once: ``out.meta`` remembers it).
    An unreadable content blob raises with ``strict``, else it is recorded."""
    mark_blobs(out, e.content, e.content_blobs, path, read_meta, strict, snap_id)


def mark_blobs(
    out: Reachable,
    content: Iterable | None,
    content_blobs: Iterable[bytes] | None,
    path: bytes,
    read_meta: Callable[[bytes], bytes],
    strict: bool = True,
    snap_id: str = "",
) -> None:
    """``mark_entry`` of an entry's two blob lists: ``content``, its content list (the
    data blob ids in it are marked), and ``content_blobs``, the blobs that hold a long
    content list (each read once)."""
    for item in content or ():
        if isinstance(item, bytes):
            out.data.add(item)
    for cb in content_blobs or ():
        if cb in out.meta:
            continue
        out.meta.add(cb)
        try:
            items = decode_content_blob(cb, read_meta(cb))
        except Exception as err:  # noqa: BLE001
            if strict:
                raise
            out.unreadable.add(cb)
            out.problems.append((snap_id, path.decode("utf-8", "backslashreplace"), f"content blob {cb.hex()[:16]}: {err}"))
            continue
        out.data.update(i for i in items if isinstance(i, bytes))


@dataclass(frozen=True)
class Affected:
    """One path of one snapshot that references a bad blob.

    ``path`` is None when a tree node itself is bad: the paths below it are unknown.
    """

    snapshot: str
    path: bytes | None
    blob: bytes


def find_affected(
    repo: Repository,
    snapshots: Iterable[Snapshot],
    bad: set[bytes],
    read_meta: Callable[[bytes], bytes] | None = None,
) -> list[Affected]:
    """Every (snapshot, path) whose entry references a blob in ``bad``.

    A file is affected when a data blob or a content blob of it is bad (or a content
    blob cannot be read); a tree node that is bad or unreadable affects its snapshot
    with an unknown path. Each distinct node is examined once: its findings are
    memoized by id, so shared subtrees cost nothing more per snapshot. Meant for the
    rare case where something is wrong; it reads every tree node.
    """
    if read_meta is None:
        read_meta = lambda bid: repo.read_blob(bid, T_META_BLOB)  # noqa: E731
    hamt = Hamt(read_meta, lambda _data: b"", cache_size=0)
    memo: dict[bytes, tuple[tuple[bytes | None, bytes], ...]] = {}
    cb_memo: dict[bytes, frozenset[bytes] | None] = {}

    def bad_items(cb: bytes) -> frozenset[bytes] | None:
        """Bad data blobs listed in content blob ``cb``; None if ``cb`` is unreadable."""
        if cb not in cb_memo:
            try:
                items = decode_content_blob(cb, read_meta(cb))
                cb_memo[cb] = frozenset(i for i in items if isinstance(i, bytes) and i in bad)
            except Exception:  # noqa: BLE001 - an unreadable content blob is a hit
                cb_memo[cb] = None
        return cb_memo[cb]

    def visit(nid: bytes, ctx: tuple | None = None) -> tuple[tuple[bytes | None, bytes], ...]:
        # recursion is bounded: a child must be deeper than its parent (< 32 levels)
        hit = memo.get(nid)
        if hit is not None:
            return hit
        found: list[tuple[bytes | None, bytes]] = []
        n = None
        if nid in bad:
            found.append((None, nid))
        else:
            try:
                n = hamt.at(nid, ctx)
            except Exception:  # noqa: BLE001 - an unreadable node is a hit
                found.append((None, nid))
        if n is not None and n[0] == 1:
            for s, cid, c in n[4]:
                found.extend(visit(cid, (n, s, c)))
        elif n is not None:
            for _k, path, raw in n[1]:
                try:
                    e = Entry.decode(raw, path)
                except Exception:  # noqa: BLE001
                    found.append((path, nid))
                    continue
                for item in e.content or ():
                    if isinstance(item, bytes) and item in bad:
                        found.append((path, item))
                for cb in e.content_blobs or ():
                    items = None if cb in bad else bad_items(cb)
                    if items is None:
                        found.append((path, cb))
                    else:
                        found.extend((path, i) for i in sorted(items))
        result = tuple(found)
        memo[nid] = result
        return result

    out: list[Affected] = []
    for snap in snapshots:
        for path, blob in visit(snap.root):
            out.append(Affected(snap.id, path, blob))
    return out
