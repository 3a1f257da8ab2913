"""Merkle-HAMT: canonical shape, sharing, diff cost, prefix scans."""

import hashlib
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from backupkit.hamt import LEAF_MAX, Hamt


def make_hamt():
    nodes: dict[bytes, bytes] = {}

    def save(b: bytes) -> bytes:
        nid = hashlib.sha256(b).digest()
        nodes[nid] = b
        return nid

    return Hamt(nodes.__getitem__, save, cache_size=0), nodes


def key(path: bytes, dir_: bytes = b"d") -> bytes:
    return hashlib.sha256(dir_).digest()[:8] + hashlib.sha256(path).digest()[:8]


def entries(n, seed=0, dirs=20):
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        d = b"dir%d" % rnd.randrange(dirs)
        p = d + b"/f%d" % i
        out.append((key(p, d), p, b"v%d" % rnd.randrange(1000)))
    return out


def test_update_equals_build_from_scratch():
    h, _ = make_hamt()
    es = entries(3000)
    root = h.build(es[:2000])
    changes = [(k, p, v) for k, p, v in es[2000:]] + [(k, p, None) for k, p, v in es[:500]]
    r1 = h.update(root, changes)
    r2 = h.build(es[500:])
    assert r1 == r2
    assert sorted(h.items(r1)) == sorted(es[500:])


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 400), st.booleans()), max_size=300), st.integers(0, 1000))
def test_canonical_under_any_update_order(ops, seed):
    h, _ = make_hamt()
    state: dict[bytes, bytes] = {}
    root = h.empty()
    rnd = random.Random(seed)
    for i, (n, delete) in enumerate(ops):
        p = b"d%d/f%d" % (n % 7, n)
        k = key(p, b"d%d" % (n % 7))
        if delete:
            state.pop(p, None)
            root = h.update(root, [(k, p, None)])
        else:
            state[p] = b"x%d" % rnd.randrange(3)
            root = h.update(root, [(k, p, state[p])])
    expect = h.build([(key(p, p.split(b"/")[0]), p, v) for p, v in state.items()])
    assert root == expect
    assert h.count(root) == len(state)


def test_delete_everything_collapses_to_empty():
    h, _ = make_hamt()
    es = entries(1000)
    root = h.build(es)
    assert h.update(root, [(k, p, None) for k, p, _ in es]) == h.empty()


def test_get_and_scan_prefix():
    h, _ = make_hamt()
    es = entries(50000, dirs=100)
    root = h.build(es)
    for k, p, v in es[:100]:
        assert h.get(root, k, p) == v
    assert h.get(root, key(b"nope"), b"nope") is None
    d = b"dir7"
    want = sorted((k, p, v) for k, p, v in es if p.startswith(d + b"/"))
    total = sum(1 for _ in h.walk_nodes(root))
    h.visits = 0
    got = list(h.scan_prefix(root, hashlib.sha256(d).digest()[:8]))
    assert got == want
    # only the path to the directory's leaves is touched, not the whole trie
    assert total > 100 and h.visits < 25, (total, h.visits)


def test_diff_cost_follows_the_change():
    h, _ = make_hamt()
    es = entries(20000, dirs=500)
    a = h.build(es)
    changed = [(k, p, b"changed") for k, p, _ in es[:10]]
    b = h.update(a, changed)
    h.visits = 0
    d = list(h.diff(a, b))
    assert sorted(x[1] for x in d) == sorted(p for _, p, _ in changed)
    assert all(va != vb for _, _, va, vb in d)
    # each change costs at most depth x 2 node visits (both tries) plus its leaf
    assert h.visits <= 10 * 2 * 4, h.visits
    assert len(list(h.diff(a, a))) == 0


def test_unchanged_subtrees_are_shared():
    h, nodes = make_hamt()
    es = entries(20000, dirs=500)
    a = h.build(es)
    before = len(nodes)
    h.update(a, [(es[0][0], es[0][1], b"new")])
    assert len(nodes) - before <= 4  # one node per level on the path


def _by_slot(changes):
    groups = [[] for _ in range(16)]
    for c in changes:
        groups[c[0][0] >> 4].append(c)
    asked = []

    def slot(s):
        asked.append(s)
        return list(groups[s])

    return slot, asked


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 3), st.integers(0, 2000), st.integers(0, 3000), st.integers(0, 10**6))
def test_update_by_slot_gives_the_root_update_gives(base_kind, n_base, n_changes, seed):
    """Whatever the root's shape (empty, one leaf, a branch at nibble 0, a branch further
    down) and the changes (adds, overwrites, deletes, duplicates), taking the changes one
    first-nibble slot at a time gives the same canonical root as all at once."""
    h, _ = make_hamt()
    rnd = random.Random(seed)
    es = entries(n_base + n_changes, seed, dirs=1 if base_kind == 3 else 20)
    base = {0: [], 1: es[: min(n_base, LEAF_MAX)], 2: es[:n_base], 3: es[:n_base]}[base_kind]
    root = h.build(base)
    changes = []
    for k, p, _v in base:
        r = rnd.random()
        if r < 0.1:
            changes.append((k, p, None))
        elif r < 0.2:
            changes.append((k, p, b"new"))
    changes += es[n_base:]
    rnd.shuffle(changes)
    if changes:
        changes.append(changes[rnd.randrange(len(changes))][:2] + (b"dup",))  # a later duplicate wins
    slot, asked = _by_slot(changes)
    got = h.update_by_slot(root, slot, len(changes))
    assert got == h.update(root, list(changes))
    assert len(asked) == len(set(asked))  # each slot asked for once


def test_plaintext_cache_serves_nodes_already_read_within_its_budget():
    h, nodes = make_hamt()
    es = entries(3000)
    root = h.build(es)
    loads: list[bytes] = []

    def load(nid: bytes) -> bytes:
        loads.append(nid)
        return nodes[nid]

    size = sum(len(b) for b in nodes.values())
    # no decoded cache, a plaintext cache that holds the whole trie: each node is read once
    r = Hamt(load, lambda b: b"", cache_size=0, plain_cache_bytes=size + 200 * len(nodes))
    assert sorted(r.items(root)) == sorted(es)
    first = len(loads)
    assert sorted(r.items(root)) == sorted(es)
    assert len(loads) == first == r.loads
    assert {r.get(root, k, p) for k, p, _v in es[:50]} == {v for _k, _p, v in es[:50]}
    assert len(loads) == first
    # a budget of a quarter of the trie keeps at most that: reading it again loads nodes
    small = Hamt(load, lambda b: b"", cache_size=0, plain_cache_bytes=size // 4)
    loads.clear()
    list(small.items(root))
    list(small.items(root))
    assert len(loads) > first
    assert small._plain_weight <= size // 4
