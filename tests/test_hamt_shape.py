"""Issue 10.5: every HAMT node is validated on read, iteration does not recurse, and
check reports a malformed trie as damage."""

from __future__ import annotations

import hashlib
import json
import os

import msgpack
import pytest

from backupkit.errors import FormatError
from backupkit.hamt import LEAF_MAX, Hamt
from backupkit.hamt_node import nibble
from tests.support.kit import cli_env, run_bk, write_file


class Nodes:
    """A dict-backed node store: ids are SHA-256 of the bytes."""

    def __init__(self) -> None:
        self.blobs: dict[bytes, bytes] = {}

    def save(self, data: bytes) -> bytes:
        nid = hashlib.sha256(data).digest()
        self.blobs[nid] = data
        return nid

    def load(self, nid: bytes) -> bytes:
        return self.blobs[nid]

    def put(self, node: list) -> bytes:
        return self.save(msgpack.packb(node))

    def hamt(self) -> Hamt:
        return Hamt(self.load, self.save, cache_size=0)


def key(i: int, first_nibble: int | None = None) -> bytes:
    k = bytearray(hashlib.sha256(str(i).encode()).digest()[:16])
    if first_nibble is not None:
        k[0] = (first_nibble << 4) | (k[0] & 15)
    return bytes(k)


def leaf_rows(keys: list[bytes]) -> list:
    return sorted([k, b"/p%d" % i, b"v"] for i, k in enumerate(keys))


@pytest.fixture
def nodes():
    return Nodes()


def valid_branch(nodes: Nodes) -> tuple[bytes, list]:
    """A branch at depth 0 with two leaf children (slots 1 and 2)."""
    a = leaf_rows([key(i, 1) for i in range(3)])
    b = leaf_rows([key(i + 10, 2) for i in range(2)])
    ca, cb = nodes.put([0, a]), nodes.put([0, b])
    node = [1, 5, 0, a[0][0], [[1, ca, 3], [2, cb, 2]]]
    return nodes.put(node), node


def test_a_valid_hand_made_branch_reads(nodes):
    root, _ = valid_branch(nodes)
    assert len(list(nodes.hamt().items(root))) == 5


def mutate(nodes: Nodes, how: str) -> bytes:
    root, node = valid_branch(nodes)
    (s1, c1, n1), (s2, c2, n2) = node[4]
    b = lambda children, count=node[1], depth=0, ref=node[3]: nodes.put([1, count, depth, ref, children])  # noqa: E731
    if how == "repeated child":
        return b([[1, c1, 3], [2, c1, 3]], count=6)
    if how == "slots not increasing":
        return b([[2, c2, 2], [1, c1, 3]])
    if how == "slot out of range":
        return b([[1, c1, 3], [16, c2, 2]])
    if how == "count mismatch":
        return b(node[4], count=99)
    if how == "child count lies":
        return b([[1, c1, 4], [2, c2, 2]], count=6)
    if how == "depth too large":
        return b(node[4], depth=32)
    if how == "negative depth":
        return b(node[4], depth=-1)
    if how == "child under the wrong slot":
        return b([[1, c2, 2], [2, c1, 3]])
    if how == "child not deeper":
        inner = nodes.put([1, 5, 0, node[3], node[4]])
        return b([[1, inner, 5]], count=5)
    if how == "ref not a key":
        return b(node[4], ref=b"short")
    if how == "no children":
        return b([], count=0)
    if how == "unsorted leaf":
        rows = leaf_rows([key(i) for i in range(3)])
        return nodes.put([0, rows[::-1]])
    if how == "duplicate leaf row":
        rows = leaf_rows([key(1)])
        return nodes.put([0, rows + rows])
    if how == "leaf key of the wrong length":
        return nodes.put([0, [[b"k", b"/p", b"v"]]])
    if how == "leaf value an int":
        return nodes.put([0, [[key(1), b"/p", 5]]])
    if how == "not a list":
        return nodes.save(msgpack.packb({"a": 1}))
    if how == "deep msgpack":
        return nodes.save(b"\x91" * 100_000 + b"\x00")
    raise AssertionError(how)


SHAPES = [
    "repeated child", "slots not increasing", "slot out of range", "count mismatch", "child count lies",
    "depth too large", "negative depth", "child under the wrong slot", "child not deeper", "ref not a key",
    "no children", "unsorted leaf", "duplicate leaf row", "leaf key of the wrong length", "leaf value an int",
    "not a list", "deep msgpack",
]


@pytest.mark.parametrize("how", SHAPES)
def test_a_malformed_node_is_a_format_error(nodes, how):
    root = mutate(nodes, how)
    h = nodes.hamt()
    with pytest.raises(FormatError, match="HAMT node"):
        list(h.items(root))
    with pytest.raises(FormatError):
        list(h.walk_nodes(root))
    good = h.build([(key(i), b"/x", b"v") for i in range(3)])
    with pytest.raises(FormatError):
        list(h.diff(good, root))


def test_a_repeated_child_cannot_expand(nodes):
    """The reported bomb: each level lists one child 16 times (16^L entries)."""
    rows = leaf_rows([key(1, 0)])
    child = nodes.put([0, rows])
    for depth in range(8, -1, -1):
        child = nodes.put([1, 16 ** (9 - depth), depth, rows[0][0], [[s, child, 16 ** (8 - depth)] for s in range(16)]])
    with pytest.raises(FormatError):
        sum(1 for _ in nodes.hamt().items(child))


def test_a_5000_deep_chain_is_a_format_error_not_a_recursion_error(nodes):
    rows = leaf_rows([key(1, 0)])
    nid = nodes.put([0, rows])
    k = rows[0][0]
    for _ in range(5000):
        nid = nodes.put([1, 1, 0, k, [[nibble(k, 0), nid, 1]]])
    h = nodes.hamt()
    for op in (lambda: list(h.items(nid)), lambda: list(h.walk_nodes(nid)), lambda: list(h.diff(nid, h.empty()))):
        with pytest.raises(FormatError):
            op()


def test_iteration_of_a_big_valid_trie_does_not_recurse(nodes):
    h = nodes.hamt()
    entries = [(os.urandom(16), b"/f%d" % i, b"v") for i in range(LEAF_MAX * 40)]
    root = h.build(entries)
    assert sorted((k, p) for k, p, _v in h.items(root)) == sorted((k, p) for k, p, _v in entries)
    changed = h.update(root, [(entries[5][0], entries[5][1], b"w"), (entries[9][0], entries[9][1], None)])
    got = list(h.diff(root, changed))
    assert sorted((k, p, a, b) for k, p, a, b in got) == sorted(
        [(entries[5][0], entries[5][1], b"v", b"w"), (entries[9][0], entries[9][1], b"v", None)]
    )
    assert [g[:2] for g in got] == sorted(g[:2] for g in got)  # key order


def test_check_reports_a_repeated_child_as_damage(tmp_path):
    """check said "no errors" for the 16^L bomb; ls and restore ended in MemoryError."""
    from backupkit.crypto import T_META_BLOB
    from backupkit.repo.repository import Repository
    from backupkit.store.local import LocalObjectStore
    from tests.support.kit import PASSWORD
    from tests.hostile import forge
    from tests.hostile.run import problem, run_limited

    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    write_file(tmp_path / "src" / "a", b"a")
    assert run_bk("init", env=env).returncode == 0
    repo = Repository.open(LocalObjectStore(tmp_path / "repo", fsync=False), PASSWORD, cache_root=False)
    entry_leaf = forge.leaf(repo, {b"/": forge.dir_entry()})
    (child,) = forge.put_meta_blobs(repo, [msgpack.packb(entry_leaf)])
    k = entry_leaf[1][0][0]
    plains = []
    for depth in range(7, -1, -1):
        node = [1, 16 ** (8 - depth), depth, k, [[s, child, 16 ** (7 - depth)] for s in range(16)]]
        plains.append(msgpack.packb(node))
        child = repo.sealer.blob_id(plains[-1])
    forge.put_pack(repo, forge.KIND_META, [(T_META_BLOB, repo.sealer.blob_id(p), forge.raw_payload(p), len(p)) for p in plains])
    forge.put_snapshot(repo, child)
    check = run_limited("check", env=env)
    assert problem(check) is None and check.returncode == 1, check.stderr
    for command in (["ls", "latest"], ["restore", "latest", "--target", tmp_path / "out"]):
        r = run_limited(*command, env=env)
        assert problem(r) is None and r.returncode == 1, (command, r.stderr)
    assert json.loads(run_bk("--json", "snapshots", env=env).stdout)


def test_check_child_of_a_leaf_agrees_with_checking_every_key():
    """check_child looks at a sorted leaf's first and last keys only; that must decide
    exactly as checking every key under the parent's prefix and slot would."""
    import random

    from backupkit.hamt_node import BRANCH as _BRANCH, KEY_LEN, LEAF as _LEAF, check_child, check_node, common_nibbles

    rnd = random.Random(13)
    for _ in range(3000):
        depth = rnd.randrange(0, 6)
        ref = rnd.randbytes(KEY_LEN)
        slot = nibble(ref, depth) if rnd.random() < 0.5 else rnd.randrange(16)
        parent = [_BRANCH, 1, depth, ref, [[nibble(ref, depth), b"\x01" * 32, 1]]]
        keys = []
        for _k in range(rnd.randrange(1, 6)):
            # mostly keys under the prefix and slot, sometimes one nibble off anywhere
            k = bytearray(ref)
            half = depth // 2
            if depth % 2:
                k[half] = (k[half] & 0xF0) | slot
            else:
                k[half] = (slot << 4) | (k[half] & 0x0F)
            k[half + 1 :] = rnd.randbytes(KEY_LEN - half - 1)
            if rnd.random() < 0.15:
                i = rnd.randrange(KEY_LEN)
                k[i] = rnd.randrange(256)
            keys.append(bytes(k))
        rows = sorted([k, b"/p%d" % i, b"v"] for i, k in enumerate(keys))
        leaf = [_LEAF, rows]
        check_node(leaf)
        every = all(common_nibbles(k, ref) >= depth and nibble(k, depth) == slot for k, _p, _v in rows)
        try:
            check_child(parent, slot, len(rows), leaf)
            ok = True
        except ValueError:
            ok = False
        assert ok == every, (depth, ref.hex(), slot, [r[0].hex() for r in rows])
