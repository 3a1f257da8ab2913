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

This module is pure: it knows nothing of stores, crypto or files (dulwich style).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from itertools import groupby

import msgpack

from backupkit.errors import FormatError

#: Entries a leaf may hold. 256 keeps a typical directory in one leaf: with 64, a directory
#: of 100 files split 16 ways into leaves of ~6 entries, so reading a tree cost ~8x more
#: node reads (each a blob to locate, decrypt and verify) than entries justified.
LEAF_MAX = 256
KEY_LEN = 16
_LEAF = 0
_BRANCH = 1

Entry = tuple[bytes, bytes, bytes]  # key, path, value
Change = tuple[bytes, bytes, bytes | None]  # key, path, value or None to delete


def nibble(key: bytes, d: int) -> int:
    b = key[d >> 1]
    return (b >> 4) if not d & 1 else (b & 15)


def common_nibbles(a: bytes, b: bytes) -> int:
    """How many leading nibbles two keys share."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return 2 * i + (0 if (a[i] ^ b[i]) >> 4 else 1)
    return 2 * n


class Hamt:
    """Operations over tries stored through ``load(id) -> bytes`` / ``save(bytes) -> id``."""

    def __init__(self, load: Callable[[bytes], bytes], save: Callable[[bytes], bytes], cache_size: int = 4096):
        """``cache_size``: decoded nodes kept, counted in leaf entries and branch slots
        (a node weighs 1 + its rows), so memory stays bounded whatever the leaf sizes."""
        self._load = load
        self._save = save
        self._cache: OrderedDict[bytes, list] = OrderedDict()
        self._cache_size = cache_size
        self._cache_weight = 0
        self._lock = threading.Lock()
        #: nodes fetched through ``load`` (cache misses) and nodes visited in total.
        self.loads = 0
        self.visits = 0

    # -- node I/O --------------------------------------------------------------------------
    def node(self, node_id: bytes) -> list:
        """The decoded node (cached)."""
        with self._lock:
            self.visits += 1
            n = self._cache.get(node_id)
            if n is not None:
                self._cache.move_to_end(node_id)
                return n
        raw = self._load(node_id)
        try:
            n = msgpack.unpackb(raw)
            if not isinstance(n, list) or n[0] not in (_LEAF, _BRANCH) or len(n) != (2 if n[0] == _LEAF else 5):
                raise ValueError("not a node")
        except (ValueError, TypeError, IndexError) as e:
            raise FormatError(f"HAMT node {node_id.hex()[:16]} is malformed: {e}") from None
        with self._lock:
            self.loads += 1
            self._remember(node_id, n)
        return n

    @staticmethod
    def _weight(n: list) -> int:
        return 1 + len(n[1] if n[0] == _LEAF else n[4])

    def _remember(self, node_id: bytes, n: list) -> None:
        if self._cache_size <= 0 or node_id in self._cache:
            return
        self._cache[node_id] = n
        self._cache_weight += self._weight(n)
        while self._cache_weight > self._cache_size and len(self._cache) > 1:
            self._cache_weight -= self._weight(self._cache.popitem(last=False)[1])

    def _put(self, n: list) -> bytes:
        node_id = self._save(msgpack.packb(n))
        with self._lock:
            self._remember(node_id, n)
        return node_id

    def _save_leaf(self, entries: list[Entry]) -> tuple[bytes, int]:
        return self._put([_LEAF, [list(e) for e in entries]]), len(entries)

    # -- reading ---------------------------------------------------------------------------
    def empty(self) -> bytes:
        """Id of the empty trie."""
        return self._save_leaf([])[0]

    def _child(self, n: list, slot: int) -> bytes | None:
        for s, cid, _cnt in n[4]:
            if s == slot:
                return cid
        return None

    def get(self, root: bytes, key: bytes, path: bytes) -> bytes | None:
        """The value stored for (key, path), or None."""
        n = self.node(root)
        while n[0] == _BRANCH:
            cid = self._child(n, nibble(key, n[2]))
            if cid is None:
                return None
            n = self.node(cid)
        for k, p, v in n[1]:
            if k == key and p == path:
                return v
        return None

    def items(self, root: bytes) -> Iterator[Entry]:
        """Every entry, in (key, path) order."""
        n = self.node(root)
        if n[0] == _LEAF:
            for k, p, v in n[1]:
                yield k, p, v
        else:
            for _s, cid, _c in n[4]:
                yield from self.items(cid)

    def count(self, root: bytes) -> int:
        n = self.node(root)
        return len(n[1]) if n[0] == _LEAF else n[1]

    def scan_prefix(self, root: bytes, prefix: bytes) -> Iterator[Entry]:
        """Entries whose key starts with ``prefix``, in key order; touches only their nodes."""
        want = 2 * len(prefix)
        n = self.node(root)
        while n[0] == _BRANCH:
            depth, ref = n[2], n[3]
            if common_nibbles(ref, prefix) < min(depth, want):
                return
            if depth >= want:
                yield from self.items_of(n)
                return
            cid = self._child(n, nibble(prefix, depth))
            if cid is None:
                return
            n = self.node(cid)
        for k, p, v in n[1]:
            if k.startswith(prefix):
                yield k, p, v

    def items_of(self, n: list) -> Iterator[Entry]:
        if n[0] == _LEAF:
            for k, p, v in n[1]:
                yield k, p, v
        else:
            for _s, cid, _c in n[4]:
                yield from self.items(cid)

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
        return self._put([_BRANCH, len(rows), depth, rows[0][0], children]), len(rows)

    def update(self, root: bytes, changes: Iterable[Change]) -> bytes:
        """Apply changes (value None deletes) and return the new root id.

        Only nodes on the paths to changed keys are rewritten; the rest is shared.
        """
        merged = {(k, p): v for k, p, v in changes}
        if not merged:
            return root
        rows = sorted(((k, p, v) for (k, p), v in merged.items()), key=lambda r: (r[0], r[1]))
        return self._update(root, rows)[0]

    def _merge(self, current: Iterable[Entry], changes: list[Change]) -> list[Entry]:
        cur = {(k, p): v for k, p, v in current}
        for k, p, v in changes:
            if v is None:
                cur.pop((k, p), None)
            else:
                cur[(k, p)] = v
        return sorted((k, p, v) for (k, p), v in cur.items())

    def _update(self, node_id: bytes, changes: list[Change]) -> tuple[bytes, int]:
        n = self.node(node_id)
        if n[0] == _LEAF:
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
            group = list(group)
            old = slots.get(slot)
            if old is None:
                adds = [(k, p, v) for k, p, v in group if v is not None]
                if not adds:
                    continue
                new = self._build(adds)
            else:
                new = self._update(old[0], group)
            if new[1] == 0:
                slots.pop(slot, None)
            else:
                slots[slot] = new
        total = sum(cnt for _cid, cnt in slots.values())
        if total <= LEAF_MAX:
            rows = [e for s in sorted(slots) for e in self.items(slots[s][0])]
            return self._save_leaf(rows)
        if len(slots) == 1:
            (only,) = slots.values()
            return only
        children = [[s, slots[s][0], slots[s][1]] for s in sorted(slots)]
        first = self.node(children[0][1])
        new_ref = first[3] if first[0] == _BRANCH else first[1][0][0]
        return self._put([_BRANCH, total, depth, new_ref, children]), total

    # -- comparing -------------------------------------------------------------------------
    def diff(self, a: bytes, b: bytes) -> Iterator[tuple[bytes, bytes, bytes | None, bytes | None]]:
        """Yield (key, path, value in a, value in b) for every entry that differs.

        Subtrees with equal ids are skipped without being read.
        """
        if a == b:
            return
        na, nb = self.node(a), self.node(b)
        if na[0] == _BRANCH and nb[0] == _BRANCH and na[2] == nb[2] and common_nibbles(na[3], nb[3]) >= na[2]:
            ca = {s: cid for s, cid, _c in na[4]}
            cb = {s: cid for s, cid, _c in nb[4]}
            for s in sorted(ca.keys() | cb.keys()):
                x, y = ca.get(s), cb.get(s)
                if x is None:
                    for k, p, v in self.items(y):  # type: ignore[arg-type]
                        yield k, p, None, v
                elif y is None:
                    for k, p, v in self.items(x):
                        yield k, p, v, None
                else:
                    yield from self.diff(x, y)
            return
        ea = {(k, p): v for k, p, v in self.items_of(na)}
        eb = {(k, p): v for k, p, v in self.items_of(nb)}
        for kp in sorted(ea.keys() | eb.keys()):
            va, vb = ea.get(kp), eb.get(kp)
            if va != vb:
                yield kp[0], kp[1], va, vb

    def walk_nodes(self, root: bytes) -> Iterator[bytes]:
        """Every node id reachable from root (each once per call)."""
        seen: set[bytes] = set()
        stack = [root]
        while stack:
            nid = stack.pop()
            if nid in seen:
                continue
            seen.add(nid)
            yield nid
            n = self.node(nid)
            if n[0] == _BRANCH:
                stack.extend(cid for _s, cid, _c in n[4])
