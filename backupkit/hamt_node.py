"""The Merkle-HAMT's node format (``hamt.py`` holds the trie's operations).

A node is msgpack: a leaf ``[0, [[key, path, value], ...]]`` with rows sorted by (key,
path), or a branch ``[1, count, depth, ref_key, [[slot, child_id, child_count], ...]]``
with rows sorted by slot, routing on nibble ``depth`` of the key (16-way); ``ref_key`` is
the smallest key below it. Keys are ``KEY_LEN`` bytes; nibble d of key k is
``(k[d // 2] >> (4 if d even else 0)) & 15``.

A node read from a repository is untrusted: ``decode_node`` refuses one that is malformed
on its own (``check_node``) and ``check_child`` one that does not fit where its parent
lists it, so a damaged or hostile tree is a ``FormatError``, never a wrong answer or an
endless walk.
"""

from __future__ import annotations

import msgpack

from backupkit.errors import FormatError
from backupkit.limits import HAMT_DEPTH_MAX

try:
    from backupkit import _hamtleaf
except ImportError:  # pragma: no cover - the extension is built by pip install
    _hamtleaf = None

KEY_LEN = 16
LEAF = 0
BRANCH = 1

Entry = tuple[bytes, bytes, bytes]  # key, path, value
Change = tuple[bytes, bytes, bytes | None]  # key, path, value or None to delete


def nibble(key: bytes, d: int) -> int:
    b = key[d >> 1]
    return (b >> 4) if not d & 1 else (b & 15)


def check_node(n: object) -> None:
    """ValueError unless ``n`` is a well-formed node on its own: a leaf of [key (16
    bytes), path, value] rows strictly increasing by (key, path), or a branch whose depth
    is below HAMT_DEPTH_MAX, whose ref_key is 16 bytes and routes to its first slot, whose
    slots are strictly increasing in 0..15 with distinct 32-byte child ids and positive
    counts summing to its count."""
    if type(n) is not list or not n or n[0] not in (LEAF, BRANCH) or len(n) != (2 if n[0] == LEAF else 5):
        raise ValueError("not a node")
    if n[0] == LEAF:
        rows = n[1]
        if _hamtleaf is not None:
            _hamtleaf.check_leaf(rows)  # the loop below, in C, with its messages
            return
        if type(rows) is not list:
            raise ValueError("leaf rows are not a list")
        prev = None
        for row in rows:
            if type(row) is not list or len(row) != 3:
                raise ValueError("a leaf row is not [key, path, value]")
            k, p, v = row
            if type(k) is not bytes or len(k) != KEY_LEN or type(p) is not bytes or type(v) is not bytes:
                raise ValueError("a leaf row has a field of the wrong type")
            if prev is not None and (k, p) <= prev:
                raise ValueError("leaf rows are not strictly increasing")
            prev = (k, p)
        return
    _b, count, depth, ref, children = n
    if type(depth) is not int or not 0 <= depth < HAMT_DEPTH_MAX:
        raise ValueError(f"depth {depth!r} out of range")
    if type(ref) is not bytes or len(ref) != KEY_LEN:
        raise ValueError("ref_key is not a key")
    if type(count) is not int or type(children) is not list or not children:
        raise ValueError("a branch without children")
    last, total, ids = -1, 0, set()
    for row in children:
        if type(row) is not list or len(row) != 3:
            raise ValueError("a child row is not [slot, id, count]")
        s, cid, c = row
        if type(s) is not int or not last < s <= 15:
            raise ValueError("slots are not strictly increasing in 0..15")
        if type(cid) is not bytes or len(cid) != 32 or cid in ids:
            raise ValueError("a child id is invalid or repeated")
        if type(c) is not int or c <= 0:
            raise ValueError("a child count is not positive")
        last, total = s, total + c
        ids.add(cid)
    if total != count:
        raise ValueError(f"child counts sum to {total}, the branch says {count}")
    if nibble(ref, depth) != children[0][0]:
        raise ValueError("ref_key does not route to the first slot")


def check_child(parent: list, slot: int, count: int, n: list) -> None:
    """ValueError unless node ``n`` fits where branch ``parent`` lists it: deeper than
    the parent, every key under the parent's prefix and routed to ``slot``, and holding
    ``count`` entries."""
    if n[0] == LEAF:
        rows = n[1]
        check_leaf_fits(parent, slot, count, len(rows), (rows[0][0], rows[-1][0]) if rows else ())
        return
    depth, ref = parent[2], parent[3]
    if n[2] <= depth:
        raise ValueError(f"depth {n[2]} not below its parent's {depth}")
    if n[1] != count:
        raise ValueError(f"{n[1]} entries, its parent says {count}")
    k = n[3]  # check_node: its children share its first n[2] > depth nibbles
    if common_nibbles(k, ref) < depth or nibble(k, depth) != slot:
        raise ValueError("a key is not under its parent's prefix and slot")


def check_leaf_fits(parent: list, slot: int, count: int, rows: int, ends: tuple[bytes, ...]) -> None:
    """``check_child`` for a leaf of ``rows`` rows whose first and last keys are ``ends``
    (empty for an empty leaf)."""
    if rows != count:
        raise ValueError(f"{rows} entries, its parent says {count}")
    # The rows are sorted by key (check_node), and the keys with one prefix of depth + 1
    # nibbles form one run of that order: if the first and the last key are under the
    # parent's prefix and slot, so is every key between them. (Checking every key cost a
    # Python loop per entry on every visit, cached nodes included: ~5% of an unchanged
    # backup's time.)
    depth, ref = parent[2], parent[3]
    for k in ends:
        if common_nibbles(k, ref) < depth or nibble(k, depth) != slot:
            raise ValueError("a key is not under its parent's prefix and slot")


def common_nibbles_py(a: bytes, b: bytes) -> int:
    """How many leading nibbles two keys share (``common_nibbles``: this loop, or the
    same in C for bytes)."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return 2 * i + (0 if (a[i] ^ b[i]) >> 4 else 1)
    return 2 * n


common_nibbles = _hamtleaf.common_nibbles if _hamtleaf is not None else common_nibbles_py


def decode_node(node_id: bytes, raw: bytes) -> list:
    """The node stored as ``raw`` under ``node_id``, checked on its own (``check_node``)."""
    try:
        n = msgpack.unpackb(raw)
        check_node(n)
    except (ValueError, TypeError, IndexError, RecursionError) as e:
        raise FormatError(f"HAMT node {node_id.hex()[:16]} is malformed: {e}") from None
    return n


__all__ = [
    "BRANCH", "KEY_LEN", "LEAF", "Change", "Entry", "check_child", "check_leaf_fits", "check_node", "common_nibbles",
    "decode_node", "nibble",
]
