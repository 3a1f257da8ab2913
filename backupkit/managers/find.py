"""Find: which files of which snapshots match name patterns, or hold given blobs or packs.

Vocabulary:
    query       what a match needs: path patterns (restic's, ``backupkit.filters``) and an
                mtime window, or a set of blob ids (``--blob``; ``--pack`` turns into the
                blob ids the index puts in those packs; ``--tree`` is ``--blob`` for
                trie nodes; both go through ``reachable.find_affected``).
    directed    how anchored patterns are searched (``/etc/*.conf``): from the
                directory the pattern names, listing children by their key prefix, and
                never into a directory below which nothing can match; every other
                subtree of the trie is left unread.
    scan        how the rest is searched: every trie node, each distinct node once
                across all snapshots. A node's matches depend on the node alone (never
                on the snapshot), so they are remembered by node id and a subtree two
                snapshots share is read and matched once.

Results are grouped by snapshot, paths sorted. Only trie nodes (and, for ``--blob``,
content blobs) are read: data blobs never.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from backupkit.crypto import T_META_BLOB
from backupkit.entry import display_path
from backupkit.errors import BadArgument, FormatError, UsageError
from backupkit.objects.entry import Entry
from backupkit.filters import PatternList
from backupkit.snapshot import Snapshot
from backupkit.managers.reachable import find_affected
from backupkit.managers.base import SnapshotSelection, TrieReader, select_snapshots
from backupkit.tree import SnapshotTree

NAME, BLOB, TREE, PACK = "name", "blob", "tree", "pack"

_TIME_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def parse_find_time(text: str, option: str) -> int:
    """restic's ``--newest``/``--oldest`` forms in local time (``2026-01-02``,
    ``2026-01-02 15:04``, ``2026-01-02 15:04:05``) -> ns since the epoch."""
    for fmt in _TIME_FORMATS:
        try:
            return int(datetime.strptime(text.strip(), fmt).astimezone().timestamp() * 1_000_000_000)
        except ValueError:
            continue
    raise BadArgument(f"invalid {option} {text!r}: use YYYY-MM-DD, 'YYYY-MM-DD HH:MM' or 'YYYY-MM-DD HH:MM:SS'")


@dataclass(frozen=True)
class FindOptions(SnapshotSelection):
    patterns: tuple[str, ...]
    #: NAME (path patterns), or BLOB / TREE / PACK: the patterns are ids (or prefixes)
    kind: str = NAME
    ignore_case: bool = False
    #: mtime window in ns (restic: --oldest <= mtime <= --newest)
    oldest: int | None = None
    newest: int | None = None


@dataclass(frozen=True)
class FindMatch:
    path: bytes
    type: str
    size: int
    mode: int
    mtime_ns: int
    #: for id queries: the id found and where (content, content list, tree node)
    blob: str | None = None
    found_in: str | None = None
    pack: str | None = None

    def to_json(self) -> dict:
        d = {"path": display_path(self.path), "type": self.type, "size": self.size, "mode": self.mode, "mtime_ns": self.mtime_ns}
        if self.blob is not None:
            d.update(blob=self.blob, found_in=self.found_in, pack=self.pack)
        return d


@dataclass(frozen=True)
class SnapshotMatches:
    snapshot: Snapshot
    matches: tuple[FindMatch, ...]

    def to_json(self) -> dict:
        s = self.snapshot
        return {"snapshot": s.id, "short_id": s.short_id, "time": s.time.isoformat(), "host": s.host,
                "hits": len(self.matches), "matches": [m.to_json() for m in self.matches]}


@dataclass(frozen=True)
class FindResult:
    """What ``bk find`` matched, per snapshot, and what the search cost (``hits``: the
    matches in all snapshots)."""

    #: snapshots with at least one match
    snapshots: tuple[SnapshotMatches, ...]
    #: snapshots searched
    searched: int
    #: "directed" (patterns with a literal leading directory: only those subtrees are
    #: walked) or "scan" (every trie node, each distinct node once)
    strategy: str
    #: trie nodes read from the repository, and nodes walked (shared ones count again)
    nodes_loaded: int
    nodes_visited: int
    #: ids asked for (after prefixes were resolved), for id queries
    ids: tuple[str, ...] = ()

    @property
    def hits(self) -> int:
        return sum(len(s.matches) for s in self.snapshots)

    def to_json(self) -> dict:
        return {"snapshots": [s.to_json() for s in self.snapshots], "searched": self.searched, "hits": self.hits,
                "strategy": self.strategy, "nodes_loaded": self.nodes_loaded, "nodes_visited": self.nodes_visited,
                "ids": list(self.ids)}


class FindManager(TrieReader):
    node_cache = 1 << 18

    def run(self, opts: FindOptions) -> FindResult:
        if not opts.patterns:
            raise BadArgument("give at least one pattern (or id with --blob, --tree, --pack)")
        if opts.kind not in (NAME, BLOB, TREE, PACK):
            raise BadArgument(f"unknown find kind {opts.kind!r}")
        snaps = select_snapshots(self.repo, opts, self.every_snapshot())
        ids: tuple[str, ...] = ()
        if opts.kind == NAME:
            found, strategy = self._by_name(snaps, opts)
            loads, visits = self.hamt.loads, self.hamt.visits
        else:
            wanted = self._wanted_ids(opts)
            (found, loads), strategy, ids = self._by_blob(snaps, wanted), "scan", tuple(sorted(b.hex() for b in wanted))
            visits = loads
        out = tuple(SnapshotMatches(s, tuple(sorted(m, key=lambda x: (x.path, x.blob or "")))) for s, m in found if m)
        return FindResult(out, len(snaps), strategy, loads, visits, ids)

    # -- names -------------------------------------------------------------------------------
    def by_name(self, snaps: list[Snapshot], opts: FindOptions) -> list[tuple[Snapshot, list[FindMatch]]]:
        """(snapshot, matches) for name patterns in the given snapshots (``rewrite`` uses
        it to find what its excludes remove)."""
        return self._by_name(snaps, opts)[0]

    def _by_name(self, snaps: list[Snapshot], opts: FindOptions):
        pats = _Patterns(opts.patterns, opts.ignore_case)

        def keep(path: bytes, e: Entry) -> bool:
            mt = e.mtime or 0
            return (opts.oldest is None or mt >= opts.oldest) and (opts.newest is None or mt <= opts.newest)

        starts = pats.start_dirs()
        if starts is not None:
            return [(s, self._directed(s, starts, pats, keep)) for s in snaps], "directed"
        memo: dict[bytes, tuple[FindMatch, ...]] = {}

        def leaf(rows) -> list[FindMatch]:
            out = []
            for _k, p, v in rows:
                if pats.match(p):
                    e = Entry.decode(v, p)
                    if keep(p, e):
                        out.append(_match(p, e))
            return out

        return [(s, self._scan(s.root, memo, leaf)) for s in snaps], "scan"

    def _directed(self, snap, starts, pats: _Patterns, keep) -> list[FindMatch]:
        tree = SnapshotTree(self.repo, snap.root, self.hamt)
        out: list[FindMatch] = []
        for start in starts:
            top = tree.get(start)
            if top is None:
                continue
            stack = [(start, top)]
            while stack:
                p, e = stack.pop()
                m, below = pats.match_with_child(p)
                if m and keep(p, e):
                    out.append(_match(p, e))
                if e.is_dir and (m or below):  # below a match everything matches
                    stack.extend(tree.children(p))
        return out

    def _scan(self, root: bytes, memo: dict, leaf: Callable[[list], list], ctx: tuple | None = None) -> list[FindMatch]:
        """Matches in the subtree of ``root``; each distinct node matched once (memo).
        ``ctx``: (parent node, slot, count) where its parent lists it, checked
        (``Hamt.child``: a child is deeper than its parent, which bounds the recursion)."""
        got = memo.get(root)
        if got is not None:
            return list(got)
        n = self.hamt.node(root) if ctx is None else self.hamt.child(ctx[0], ctx[1], root, ctx[2])
        found: list[FindMatch] = []
        if n[0] == 0:
            found.extend(leaf(n[1]))
        else:
            for slot, cid, count in n[4]:
                found.extend(self._scan(cid, memo, leaf, (n, slot, count)))
        memo[root] = tuple(found)
        return found

    # -- ids -------------------------------------------------------------------------------------
    def _wanted_ids(self, opts: FindOptions) -> set[bytes]:
        wanted: set[bytes] = set()
        prefixes: list[str] = []
        for raw in opts.patterns:
            t = raw.strip().lower()
            if len(t) < 4 or len(t) > 64 or any(c not in "0123456789abcdef" for c in t):
                raise BadArgument(f"invalid id {raw!r}: give hex digits (at least 4)")
            if opts.kind != PACK and len(t) == 64:
                wanted.add(bytes.fromhex(t))
            else:
                prefixes.append(t)
        if opts.kind == PACK:
            packs = {p.id for p in self.repo.index.packs() if any(p.id.hex().startswith(x) for x in prefixes)}
            for x in prefixes:
                if not any(p.hex().startswith(x) for p in packs):
                    raise UsageError(f"no pack in the index matches {x!r}")
            wanted = {loc.blob_id for loc in self.repo.index.blobs() if loc.pack.id in packs}
        elif prefixes:
            for x in prefixes:
                hits = {loc.blob_id for loc in self.repo.index.blobs() if loc.blob_id.hex().startswith(x)}
                if not hits:
                    raise UsageError(f"no blob in the index matches {x!r} (give the full id of a missing blob)")
                wanted |= hits
        return wanted

    def _by_blob(self, snaps: list[Snapshot], wanted: set[bytes]):
        """Through ``reachable.find_affected`` (what check uses to name damage): each
        distinct node examined once. A node or content blob that cannot be read shows as
        a hit on an id that was not asked for: reported as ``unreadable``. Also: how
        many trie nodes and content blobs were read."""
        reads = [0]

        def read_meta(bid: bytes) -> bytes:
            reads[0] += 1
            return self.repo.read_blob(bid, T_META_BLOB)

        by_snap: dict[str, list[FindMatch]] = {s.id: [] for s in snaps}
        trees = {s.id: SnapshotTree(self.repo, s.root, self.hamt) for s in snaps}
        for a in find_affected(self.repo, snaps, wanted, read_meta):
            loc = self.repo.index.lookup(a.blob)
            pack = loc.pack.id.hex() if loc is not None else None
            if a.path is None:
                where = "tree node" if a.blob in wanted else "unreadable tree node"
                by_snap[a.snapshot].append(FindMatch(b"", "tree node", 0, 0, 0, a.blob.hex(), where, pack))
                continue
            try:
                e = trees[a.snapshot].get(a.path)
            except FormatError:
                e = None
            if e is None:
                by_snap[a.snapshot].append(FindMatch(a.path, "?", 0, 0, 0, a.blob.hex(), "unreadable entry", pack))
                continue
            if a.blob not in wanted:
                where = "unreadable content list"
            elif a.blob in (e.content_blobs or ()):
                where = "content list"
            else:
                where = "content"
            by_snap[a.snapshot].append(_match(a.path, e, a.blob.hex(), where, pack))
        return [(s, by_snap[s.id]) for s in snaps], reads[0]


class _Patterns:
    """restic find's patterns (``filters.PatternList``) over byte paths, and where a walk
    can start so as to see every match."""

    def __init__(self, patterns, ignore_case: bool) -> None:
        if any(not p for p in patterns):
            raise BadArgument("empty pattern")
        self.list = PatternList(patterns, ignore_case)
        self.ignore_case = ignore_case

    def match(self, path: bytes) -> bool:
        return self.list.matches(path.decode("utf-8", "surrogateescape"))

    def match_with_child(self, path: bytes) -> tuple[bool, bool]:
        return self.list.matches_with_child(path.decode("utf-8", "surrogateescape"))

    def start_dirs(self) -> list[bytes] | None:
        """The fewest directories (none below another) a walk can start from and still
        see every match, or None when a pattern can match anywhere (not anchored, or
        case-insensitive: trie keys hash the exact bytes)."""
        if self.ignore_case:
            return None
        dirs = []
        for p in self.list.patterns:
            if not p.anchored or p.negated:
                return None
            lit = []
            for part in p.parts:
                if part == "" or any(ch in part for ch in "*?[\\"):
                    break
                lit.append(part)
            dirs.append(("/" + "/".join(lit)).encode("utf-8", "surrogateescape"))
        out: list[bytes] = []
        for d in sorted(dirs):
            if not any(d == o or d.startswith(o.rstrip(b"/") + b"/") for o in out):
                out.append(d)
        return out


def _match(p: bytes, e: Entry, blob: str | None = None, where: str | None = None, pack: str | None = None) -> FindMatch:
    return FindMatch(p, e.type_name, e.size or 0, e.mode or 0, e.mtime or 0, blob, where, pack)


__all__ = ["FindManager", "FindOptions", "FindResult", "FindMatch", "SnapshotMatches", "parse_find_time", "NAME", "BLOB", "TREE", "PACK"]
