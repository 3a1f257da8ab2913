"""Merkle-HAMT: a persistent, canonical hash-array-mapped trie of key -> (path, value).

Vocabulary:
    key     16 bytes; for snapshots ``H(parent dir)[:8] | H(path)[:8]`` (keyed hashes), so
            the entries of one directory share an 8-byte prefix and sit together.
    value   opaque bytes (a msgpack-encoded file entry); the trie never looks inside.
    nibble  4 bits of a key; nibble d of key k is (k[d // 2] >> (4 if d even else 0)) & 15.
    node    a leaf ``[0, [[key, path, value], ...]]`` sorted by (key, path), or a branch
            ``[1, count, depth, ref_key, [[slot, child_id, child_count], ...]]`` sorted by
            slot, that routes on nibble ``depth`` of the key (16-way). ``ref_key`` is the
            smallest key below it: every key below shares its first ``depth`` nibbles.
    id      whatever ``save(node_bytes)`` returns; nodes are stored as metadata blobs,
            so the id is the keyed MAC of the node's bytes.

Canonical form: a set of entries is stored as a leaf exactly when it holds <= LEAF_MAX
entries (or all keys are equal); otherwise as a branch at the first nibble where its keys
differ (path compression: no single-child branches, so a large directory, whose keys
share 8 bytes, costs no chain of nodes), listing its non-empty slots. The shape
therefore depends only on the set of entries, never on the order of updates, and equal
subtrees in two snapshots have equal ids. Diff skips equal ids, so it costs O(changes x
depth); an update rewrites only the nodes on the paths to changed keys.

The node format, its routing helpers and the checks a loaded node must pass are in
``hamt_node.py``. This module is pure: it knows nothing of stores, crypto or files
(dulwich style).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby

import msgpack

from backupkit.errors import FormatError
from backupkit.hamt_node import (
    BRANCH, KEY_LEN, LEAF, Change, Entry, check_child, check_leaf_fits, common_nibbles, decode_node, nibble,
)

try:
    from backupkit import _hamtleaf
except ImportError:  # pragma: no cover - the extension is built by pip install
    _hamtleaf = None

#: Entries a leaf may hold. 256 keeps a typical directory in one leaf: with 64, a directory
#: of 100 files split 16 ways into leaves of ~6 entries, so reading a tree cost ~8x more
#: node reads (each a blob to locate, decrypt and verify) than entries justified.
LEAF_MAX = 256
#: branch routes a Hamt keeps for ``prefix_leaves`` (a route holds its decoded branch and
#: a slot map: ~2 KiB; a trie of 10M entries has ~10k branches)
ROUTES_MAX = 4096


#: what a plaintext node costs in the cache besides its bytes (the bytes object's header,
#: the id and the ordered dict's slot)
_PLAIN_OVERHEAD = 200


def sorted_unique(changes: list[Change]) -> list[Change]:
    """``changes`` sorted by (key, path), in place, the last of equal (key, path) kept."""
    changes.sort(key=_key_path)
    dup = False
    for i in range(1, len(changes)):
        a, b = changes[i - 1], changes[i]
        if a[0] == b[0] and a[1] == b[1]:
            dup = True
            break
    if not dup:
        return changes
    out: list[Change] = []
    for c in changes:
        if out and out[-1][0] == c[0] and out[-1][1] == c[1]:
            out[-1] = c
        else:
            out.append(c)
    return out


def _key_path(c: Change) -> tuple[bytes, bytes]:
    return c[0], c[1]


class Hamt:
    """Operations over tries stored through ``load(id) -> bytes`` / ``save(bytes) -> id``."""

    def __init__(
        self, load: Callable[[bytes], bytes], save: Callable[[bytes], bytes], cache_size: int = 4096, plain_cache_bytes: int = 0
    ):
        """``cache_size``: decoded nodes kept, counted in leaf entries and branch slots
        (a node weighs 1 + its rows), so memory stays bounded whatever the leaf sizes.
        ``plain_cache_bytes``: behind it, the plaintext of nodes already loaded and
        checked, up to that many bytes (about half the memory of the same nodes decoded;
        a hit costs one msgpack decode instead of a blob read: locate, decrypt,
        decompress, verify and check)."""
        self._load = load
        self._save = save
        self._cache: OrderedDict[bytes, list] = OrderedDict()
        self._cache_size = cache_size
        self._cache_weight = 0
        #: id -> (plaintext, its leaf_info when C reads it as a leaf, else None)
        self._plain: OrderedDict[bytes, tuple[bytes, tuple | None]] = OrderedDict()
        self._plain_size = plain_cache_bytes
        self._plain_weight = 0
        self._lock = threading.Lock()
        #: nodes fetched through ``load`` (cache misses) and nodes visited in total.
        self.loads = 0
        self.visits = 0
        #: branch node id -> its route (``_route``): the branches ``prefix_leaves`` has
        #: gone through, at most ROUTES_MAX, kept decoded with their checked edges
        self._routes: dict[bytes, list] = {}

    @property
    def keeps_plain(self) -> bool:
        """Whether loaded nodes' plaintext is kept (``plain_cache_bytes`` > 0): only then
        is a leaf read as plaintext (``child_plain``) not loaded again on every visit."""
        return self._plain_size > 0

    # -- node I/O --------------------------------------------------------------------------
    def node(self, node_id: bytes) -> list:
        """The decoded node (cached)."""
        return self._fetch(node_id, False)  # type: ignore[return-value]

    def _fetch(self, node_id: bytes, plain: bool) -> list | tuple[bytes, tuple]:
        """The decoded node (cached), or with ``plain`` for a leaf the C reader accepts
        (``_hamtleaf.leaf_info``) and that is not decoded in the cache: (its plaintext,
        its leaf_info), neither decoded nor cached decoded."""
        with self._lock:
            self.visits += 1
            n = self._cache.get(node_id)
            if n is not None:
                self._cache.move_to_end(node_id)
                return n
            got = self._plain.get(node_id)
            if got is not None:
                self._plain.move_to_end(node_id)
        if got is not None:
            if plain and got[1] is not None:
                return got
            # checked when it was loaded; these very bytes have not left this process
            n = msgpack.unpackb(got[0])
            with self._lock:
                self._remember(node_id, n)
            return n
        raw = self._load(node_id)
        info = _hamtleaf.leaf_info(raw) if plain else None
        n = decode_node(node_id, raw) if info is None else None
        with self._lock:
            self.loads += 1
            if n is not None:
                self._remember(node_id, n)
            self._remember_plain(node_id, raw, info)
        return n if n is not None else (raw, info)

    def child(self, parent: list, slot: int, child_id: bytes, count: int) -> list:
        """The node ``child_id`` listed in branch ``parent`` at ``slot`` with ``count``
        entries, checked against its parent (``check_child``)."""
        return self._child(parent, slot, child_id, count, False)  # type: ignore[return-value]

    def child_plain(self, parent: list, slot: int, child_id: bytes, count: int) -> list | bytes:
        """``child``, except that a leaf the C reader accepts (``_hamtleaf.leaf_info``)
        and that is not decoded in the cache comes back as its plaintext (bytes), checked
        against its parent the same way: ``_hamtleaf.leaf_children_into`` reads it
        without making its rows into Python objects, and it is not decoded or cached
        decoded (a walk that lists every directory of a large tree visits its leaves
        several times each, far apart)."""
        return self._child(parent, slot, child_id, count, _hamtleaf is not None)

    def _child(self, parent: list, slot: int, child_id: bytes, count: int, plain: bool) -> list | bytes:
        n = self._fetch(child_id, plain)
        try:
            if type(n) is tuple:
                raw, info = n
                check_leaf_fits(parent, slot, count, info[0], info[1:] if info[0] else ())
                return raw
            check_child(parent, slot, count, n)
        except ValueError as e:
            raise FormatError(f"HAMT node {child_id.hex()[:16]} does not fit its parent: {e}") from None
        return n

    @staticmethod
    def _weight(n: list) -> int:
        return 1 + len(n[1] if n[0] == LEAF else n[4])

    def _remember(self, node_id: bytes, n: list) -> None:
        if self._cache_size <= 0 or node_id in self._cache:
            return
        self._cache[node_id] = n
        self._cache_weight += self._weight(n)
        while self._cache_weight > self._cache_size and len(self._cache) > 1:
            self._cache_weight -= self._weight(self._cache.popitem(last=False)[1])

    def _remember_plain(self, node_id: bytes, raw: bytes, info: tuple | None = None) -> None:
        if self._plain_size <= 0 or node_id in self._plain:
            return
        self._plain[node_id] = (raw, info)
        self._plain_weight += _PLAIN_OVERHEAD + len(raw)
        while self._plain_weight > self._plain_size and self._plain:
            self._plain_weight -= _PLAIN_OVERHEAD + len(self._plain.popitem(last=False)[1][0])

    def _put(self, n: list) -> bytes:
        node_id = self._save(msgpack.packb(n))
        with self._lock:
            self._remember(node_id, n)
        return node_id

    def _save_leaf(self, entries: list[Entry]) -> tuple[bytes, int]:
        return self._put([LEAF, [list(e) for e in entries]]), len(entries)

    # -- reading ---------------------------------------------------------------------------
    def empty(self) -> bytes:
        """Id of the empty trie."""
        return self._save_leaf([])[0]

    def _child_row(self, n: list, slot: int) -> list | None:
        for row in n[4]:
            if row[0] == slot:
                return row
        return None

    def get(self, root: bytes, key: bytes, path: bytes) -> bytes | None:
        """The value stored for (key, path), or None."""
        n = self.node(root)
        while n[0] == BRANCH:
            row = self._child_row(n, nibble(key, n[2]))
            if row is None:
                return None
            n = self.child(n, *row)
        for k, p, v in n[1]:
            if k == key and p == path:
                return v
        return None

    def items(self, root: bytes) -> Iterator[Entry]:
        """Every entry, in (key, path) order."""
        return self.items_of(self.node(root))

    def count(self, root: bytes) -> int:
        n = self.node(root)
        return len(n[1]) if n[0] == LEAF else n[1]

    def scan_prefix(self, root: bytes, prefix: bytes) -> Iterator[Entry]:
        """Entries whose key starts with ``prefix``, in key order; touches only their nodes."""
        for rows in self.prefix_leaves(root, prefix):
            for k, p, v in rows:
                if k.startswith(prefix):
                    yield k, p, v

    def prefix_leaves(self, root: bytes, prefix: bytes, plain: bool = False) -> Iterator[list[Entry] | bytes]:
        """The rows of each leaf that may hold keys starting with ``prefix``, in key
        order (each leaf's rows as stored: the caller picks the keys with the prefix).
        ``plain`` (with the C reader built): a leaf may come as its plaintext instead
        (bytes, see ``child_plain``), and the branches are followed by their routes
        (``_routed_leaves``)."""
        if plain and _hamtleaf is not None:
            return self._routed_leaves(root, prefix)
        return self._prefix_leaves(root, prefix, plain)

    def _routed_leaves(self, root: bytes, prefix: bytes) -> Iterator[list[Entry] | bytes]:
        """``prefix_leaves(plain=True)`` through the routes of the branches already gone
        through: an unchanged backup asks for every directory's children (15.6k
        descents of 3-4 nodes for `/usr`), and a branch's edge to a branch is fetched
        and checked (``check_child``) once, then followed as a list lookup. Leaves are
        fetched and checked on every visit, as ``_prefix_leaves`` does."""
        want = 2 * len(prefix)
        route = self._routes.get(root)
        if route is None:
            n = self.node(root)
            if n[0] != BRANCH:
                yield n[1]
                return
            route = self._route(root, n)
        while True:
            depth, ref, slots, n = route
            if common_nibbles(ref, prefix) < min(depth, want):
                return
            if depth >= want:
                yield from self.leaves_of(n, True)
                return
            slot = nibble(prefix, depth)
            edge = slots.get(slot)
            if edge is None:
                return
            nxt = edge[2]
            if nxt is None:  # a leaf, or a branch not gone through yet
                c = self._child(n, slot, edge[0], edge[1], True)
                if type(c) is bytes:
                    yield c
                    return
                if c[0] != BRANCH:
                    yield c[1]
                    return
                nxt = self._route(edge[0], c)
                edge[2] = nxt if len(self._routes) < ROUTES_MAX else None
            route = nxt

    def _route(self, node_id: bytes, n: list) -> list:
        """A branch's route: [depth, ref key, {slot: [child id, count, the child's route
        once that edge was checked and leads to a branch]}, the decoded node]; kept
        while fewer than ROUTES_MAX are."""
        route = self._routes.get(node_id)
        if route is None:
            route = [n[2], n[3], {row[0]: [row[1], row[2], None] for row in n[4]}, n]
            if len(self._routes) < ROUTES_MAX:
                self._routes[node_id] = route
        return route

    def _prefix_leaves(self, root: bytes, prefix: bytes, plain: bool) -> Iterator[list[Entry] | bytes]:
        child = self.child_plain if plain else self.child
        want = 2 * len(prefix)
        n = self.node(root)
        while n[0] == BRANCH:
            depth, ref = n[2], n[3]
            if common_nibbles(ref, prefix) < min(depth, want):
                return
            if depth >= want:
                yield from self.leaves_of(n, plain)
                return
            row = self._child_row(n, nibble(prefix, depth))
            if row is None:
                return
            n = child(n, *row)
            if type(n) is bytes:
                yield n
                return
        yield n[1]

    def items_of(self, n: list) -> Iterator[Entry]:
        """Every entry below node ``n``, in (key, path) order."""
        for rows in self.leaves_of(n):
            for k, p, v in rows:
                yield k, p, v

    def leaves_of(self, n: list, plain: bool = False) -> Iterator[list[Entry] | bytes]:
        """The rows of every leaf below node ``n``, in key order (no recursion: a stack
        of nodes, and of (parent, slot, child id, count) still to load). ``plain``: as
        for ``prefix_leaves``."""
        child = self.child_plain if plain else self.child
        stack: list = [n]
        while stack:
            x = stack.pop()
            if type(x) is tuple:
                x = child(*x)
                if type(x) is bytes:
                    yield x
                    continue
            if x[0] == LEAF:
                yield x[1]
            else:
                stack.extend((x, s, cid, cnt) for s, cid, cnt in reversed(x[4]))

    # -- writing ---------------------------------------------------------------------------
    def build(self, entries: Iterable[Entry]) -> bytes:
        """A new trie holding ``entries`` (any order; later duplicates win)."""
        merged = {(k, p): v for k, p, v in entries}
        rows = sorted((k, p, v) for (k, p), v in merged.items())
        return self._build(rows)[0]

    def _build(self, rows: list[Entry]) -> tuple[bytes, int]:
        """Canonical subtree for sorted rows (path-compressed: branch at first difference)."""
        if len(rows) <= LEAF_MAX:
            return self._save_leaf(rows)
        depth = common_nibbles(rows[0][0], rows[-1][0])
        if depth >= 2 * KEY_LEN:
            return self._save_leaf(rows)
        children = []
        for slot, group in groupby(rows, key=lambda r: nibble(r[0], depth)):
            cid, cnt = self._build(list(group))
            children.append([slot, cid, cnt])
        return self._put([BRANCH, len(rows), depth, rows[0][0], children]), len(rows)

    def update(self, root: bytes, changes: Iterable[Change]) -> bytes:
        """Apply changes (value None deletes) and return the new root id.

        Only nodes on the paths to changed keys are rewritten; the rest is shared.
        """
        rows = sorted_unique(list(changes))
        if not rows:
            return root
        return self._update(root, rows)[0]

    def update_by_slot(self, root: bytes, slot_changes: Callable[[int], list[Change]], count: int) -> bytes:
        """``update`` for ``count`` changes held apart by the first nibble of their key:
        ``slot_changes(s)`` gives those of slot ``s`` (any order, later duplicates win),
        asked for once per slot in slot order, so that a large update holds one sixteenth
        of its changes at a time. The result is the root ``update`` gives for the same
        changes (the trie is canonical); shapes where slots cannot be taken one at a time
        (a small trie, a root routing on a later nibble) take all the changes at once."""
        if count == 0:
            return root
        n = self.node(root)
        branch0 = n[0] == BRANCH and n[2] == 0
        # a leaf root ends as a branch at nibble 0 for sure only when the changes outnumber
        # what its entries and deletions can take back
        leaf_grows = n[0] == LEAF and count > 4 * LEAF_MAX
        if not (branch0 or leaf_grows):
            return self.update(root, [c for s in range(16) for c in slot_changes(s)])
        if branch0:
            slots = {s: (cid, cnt) for s, cid, cnt in n[4]}
            for s in range(16):
                rows = sorted_unique(slot_changes(s))
                if rows:
                    self._update_slot(n, slots, s, rows)
            return self._finish_branch(slots, 0)[0]
        # the leaf's entries and the changes, merged slot by slot: what ``_build`` does
        # with all of them when they span two or more slots (a branch at nibble 0)
        children = []
        first_key = None
        total = 0
        for s in range(16):
            current = [e for e in n[1] if nibble(e[0], 0) == s]
            rows = sorted_unique(slot_changes(s))
            if rows or current:
                rows = self._merge(current, rows) if current else [r for r in rows if r[2] is not None]
            if not rows:
                continue
            if first_key is None:
                first_key = rows[0][0]
            cid, cnt = self._build(rows)
            children.append([s, cid, cnt])
            total += cnt
        if len(children) == 1:
            return children[0][1]
        if total <= LEAF_MAX:  # (cannot happen given ``leaf_grows``; canonical all the same)
            return self._save_leaf([e for _s, cid, _c in children for e in self.items(cid)])[0]
        return self._put([BRANCH, total, 0, first_key, children])

    def _merge(self, current: Iterable[Entry], changes: list[Change]) -> list[Entry]:
        cur = {(k, p): v for k, p, v in current}
        for k, p, v in changes:
            if v is None:
                cur.pop((k, p), None)
            else:
                cur[(k, p)] = v
        return sorted((k, p, v) for (k, p), v in cur.items())

    def _update(self, node_id: bytes, changes: list[Change], ctx: tuple | None = None) -> tuple[bytes, int]:
        """``ctx``: (parent node, slot, count) where the node is listed, to check it."""
        n = self.at(node_id, ctx)
        if n[0] == LEAF:
            return self._build(self._merge(n[1], changes))
        depth, ref = n[2], n[3]
        # A new key that leaves this branch's shared prefix makes a new branch point
        # above it: rebuild this subtree (rare: a new directory in a compressed run).
        if any(v is not None and common_nibbles(k, ref) < depth for k, _p, v in changes):
            return self._build(self._merge(self.items_of(n), changes))
        changes = [c for c in changes if common_nibbles(c[0], ref) >= depth]
        if not changes:
            return node_id, n[1]
        slots = {s: (cid, cnt) for s, cid, cnt in n[4]}
        for slot, group in groupby(changes, key=lambda c: nibble(c[0], depth)):
            self._update_slot(n, slots, slot, list(group))
        return self._finish_branch(slots, depth)

    def _update_slot(self, n: list, slots: dict[int, tuple[bytes, int]], slot: int, changes: list[Change]) -> None:
        """Apply the sorted ``changes`` routed to ``slot`` of branch ``n``: update the
        child there, or build one from the additions; ``slots`` (slot -> (child id,
        count)) is updated in place, an emptied slot dropped."""
        old = slots.get(slot)
        if old is None:
            adds = [c for c in changes if c[2] is not None]
            if not adds:
                return
            new = self._build(adds)
        else:
            new = self._update(old[0], changes, (n, slot, old[1]))
        if new[1] == 0:
            slots.pop(slot, None)
        else:
            slots[slot] = new

    def _finish_branch(self, slots: dict[int, tuple[bytes, int]], depth: int) -> tuple[bytes, int]:
        """The canonical node for a branch's updated ``slots`` (slot -> (child id, count)):
        a leaf when few entries remain, the only child when one slot remains, else a
        branch at ``depth``."""
        total = sum(cnt for _cid, cnt in slots.values())
        if total <= LEAF_MAX:
            rows = [e for s in sorted(slots) for e in self.items(slots[s][0])]
            return self._save_leaf(rows)
        if len(slots) == 1:
            (only,) = slots.values()
            return only
        children = [[s, slots[s][0], slots[s][1]] for s in sorted(slots)]
        first = self.node(children[0][1])
        new_ref = first[3] if first[0] == BRANCH else first[1][0][0]
        return self._put([BRANCH, total, depth, new_ref, children]), total

    # -- comparing -------------------------------------------------------------------------
    def diff(self, a: bytes, b: bytes) -> Iterator[tuple[bytes, bytes, bytes | None, bytes | None]]:
        """Yield (key, path, value in a, value in b) for every entry that differs, in
        (key, path) order. Subtrees with equal ids are skipped without being read.

        No recursion: a stack of pairs still to compare, each side a node id with where
        it is listed (parent, slot, count; None for a root), or None when absent.
        """
        stack: list = [((a, None), (b, None))]
        while stack:
            x, y = stack.pop()
            if x is not None and y is not None and x[0] == y[0]:
                continue
            na = self.at(*x) if x is not None else None
            nb = self.at(*y) if y is not None else None
            if na is None or nb is None:
                if na is not None:
                    for k, p, v in self.items_of(na):
                        yield k, p, v, None
                if nb is not None:
                    for k, p, v in self.items_of(nb):
                        yield k, p, None, v
                continue
            if na[0] == BRANCH and nb[0] == BRANCH and na[2] == nb[2] and common_nibbles(na[3], nb[3]) >= na[2]:
                ca = {s: (cid, (na, s, c)) for s, cid, c in na[4]}
                cb = {s: (cid, (nb, s, c)) for s, cid, c in nb[4]}
                stack.extend((ca.get(s), cb.get(s)) for s in sorted(ca.keys() | cb.keys(), reverse=True))
                continue
            ea = {(k, p): v for k, p, v in self.items_of(na)}
            eb = {(k, p): v for k, p, v in self.items_of(nb)}
            for kp in sorted(ea.keys() | eb.keys()):
                va, vb = ea.get(kp), eb.get(kp)
                if va != vb:
                    yield kp[0], kp[1], va, vb

    def at(self, node_id: bytes, ctx: tuple | None) -> list:
        """The node ``node_id``; ``ctx``: None for a root, else (parent node, slot, count)
        where its parent lists it, and the node is checked against it (``child``)."""
        return self.node(node_id) if ctx is None else self.child(ctx[0], ctx[1], node_id, ctx[2])

    def visit(self, root: bytes, seen: set[bytes]) -> Iterator[tuple[bytes, list | Exception | None]]:
        """Walk the nodes below ``root`` depth first, without recursion, for readers that
        go on past damage: yields ``(id, node)`` for each node not in ``seen`` (then added
        to it), ``(id, error)`` for one that cannot be read or does not fit its parent (its
        subtree is not walked), and ``(id, None)`` for a node already in ``seen`` (a tree
        never lists one node twice; across trees, shared nodes are normal). Each child is
        checked against its parent, so a hostile chain ends within the key's depth."""
        stack: list[tuple[bytes, tuple | None]] = [(root, None)]
        while stack:
            nid, ctx = stack.pop()
            if nid in seen:
                yield nid, None
                continue
            seen.add(nid)
            try:
                n = self.at(nid, ctx)
            except Exception as e:  # noqa: BLE001 - handed to the caller, which decides
                yield nid, e
                continue
            yield nid, n
            if n[0] == BRANCH:
                stack.extend((cid, (n, s, c)) for s, cid, c in n[4])

    def walk_nodes(self, root: bytes) -> Iterator[bytes]:
        """Every node id reachable from root (each once per call); raises on damage."""
        for nid, n in self.visit(root, set()):
            if n is not None:
                yield nid
            if isinstance(n, Exception):
                raise n
