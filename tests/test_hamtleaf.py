"""backupkit._hamtleaf: a leaf's row check and a directory's children in C, held to the
Python loops they replace (check_node's leaf branch, raw_children_by_name's comprehension)."""

from __future__ import annotations

import random

import pytest

from backupkit import hamt_node
from backupkit.hamt_node import LEAF, check_node

_hamtleaf = pytest.importorskip("backupkit._hamtleaf")


def python_check(monkeypatch, n) -> str | None:
    monkeypatch.setattr(hamt_node, "_hamtleaf", None)
    try:
        check_node(n)
    except ValueError as e:
        return str(e)
    finally:
        monkeypatch.setattr(hamt_node, "_hamtleaf", _hamtleaf)
    return None


def c_check(n) -> str | None:
    try:
        check_node(n)
    except ValueError as e:
        return str(e)
    return None


def leaf_rows(rnd: random.Random, n: int) -> list:
    rows = {(rnd.randbytes(16) if rnd.random() < 0.7 else b"\x01" * 16, b"/d/" + rnd.randbytes(rnd.randrange(0, 6))) for _ in range(n)}
    return [[k, p, rnd.randbytes(rnd.randrange(0, 20))] for k, p in sorted(rows)]


class Sub(bytes):
    pass


def mutations(rnd: random.Random, rows: list) -> list:
    out = []
    for _ in range(300):
        r = [list(x) for x in rows]
        i = rnd.randrange(len(r))
        how = rnd.randrange(12)
        if how == 0:
            r[i] = tuple(r[i])
        elif how == 1:
            r[i] = r[i][:2]
        elif how == 2:
            r[i] = r[i] + [b""]
        elif how == 3:
            r[i][0] = r[i][0][:15]
        elif how == 4:
            r[i][rnd.randrange(3)] = "text"
        elif how == 5:
            r[i][rnd.randrange(3)] = Sub(r[i][0])
        elif how == 6 and i:
            r[i - 1], r[i] = r[i], r[i - 1]
        elif how == 7 and i:
            r[i] = list(r[i - 1])
        elif how == 8 and i:
            r[i][0] = r[i - 1][0]  # same key: the path decides the order
        elif how == 9:
            r[i][1] = b""
        elif how == 10:
            r[i] = None
        else:
            r.insert(i, list(r[i]))
        out.append(r)
    return out


def test_check_leaf_refuses_what_python_refuses_with_its_message(monkeypatch):
    rnd = random.Random(11)
    refused = 0
    for size in (0, 1, 2, 5, 40, 256):
        rows = leaf_rows(rnd, size)
        assert c_check([LEAF, rows]) is None and python_check(monkeypatch, [LEAF, rows]) is None
        for bad in mutations(rnd, rows) if rows else []:
            want = python_check(monkeypatch, [LEAF, bad])
            assert c_check([LEAF, bad]) == want
            refused += want is not None
    assert refused > 500
    for odd in ((), "rows", {1: 2}, None):
        assert c_check([LEAF, odd]) == python_check(monkeypatch, [LEAF, odd]) == "leaf rows are not a list"


def python_children(rows: list, prefix: bytes, pre: bytes, dirpath: bytes) -> dict:
    n = len(pre)
    return {p[n:]: v for k, p, v in rows if k.startswith(prefix) and p.startswith(pre) and b"/" not in p[n:] and p != dirpath}


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_children_into_is_the_comprehension(seed):
    rnd = random.Random(seed)
    prefixes = [rnd.randbytes(8) for _ in range(4)] + [b"\x00" * 8, b"\xff" * 8]
    dirs = [b"/", b"/a", b"/a/b", b"/ab"]
    rows = set()
    for _ in range(400):
        pfx = rnd.choice(prefixes)
        d = rnd.choice(dirs)
        name = rnd.choice([b"x", b"y", b"a", b"b", b"sub/deep", b"", rnd.randbytes(3).replace(b"/", b"_")])
        path = d if rnd.random() < 0.05 else (d.rstrip(b"/") + b"/" + name)
        rows.add((pfx + rnd.randbytes(8) if rnd.random() < 0.9 else pfx + b"\x00" * 8, path))
    leaf = [[k, p, rnd.randbytes(4)] for k, p in sorted(rows)]
    _hamtleaf.check_leaf(leaf)
    for pfx in prefixes + [prefixes[0][:3], b"", rnd.randbytes(8), prefixes[1] + b"\x00" * 9]:
        for d in dirs:
            pre = d if d == b"/" else d + b"/"
            got = {b"keep": b"me"}
            _hamtleaf.children_into(got, leaf, pfx, pre, d)
            want = {b"keep": b"me"} | python_children(leaf, pfx, pre, d)
            assert got == want and list(got) == list(want)


def test_a_directory_over_several_leaves_reads_as_in_python(monkeypatch):
    """Through SnapshotTree: a directory of 1,000 children (several leaves) and its
    neighbours list the same children with the C loop and without it."""
    from backupkit import tree as tree_mod
    from backupkit.tree import SnapshotTree, make_hamt
    from tests.support.kit import make_test_repo

    repo = make_test_repo()
    hamt = make_hamt(repo)
    t0 = SnapshotTree(repo, hamt.empty(), hamt)
    keyer = t0.keyer
    paths = [b"/big"] + [b"/big/f%04d" % i for i in range(1000)] + [b"/small", b"/small/x", b"/small/y/z", b"/small/y"]
    root = hamt.build([(keyer.key(p), p, b"v" + p) for p in paths])
    t = SnapshotTree(repo, root, hamt)
    with_c = {d: t.raw_children_by_name(d) for d in (b"/", b"/big", b"/small", b"/small/y", b"/none")}
    monkeypatch.setattr(tree_mod, "_hamtleaf", None)
    without = {d: t.raw_children_by_name(d) for d in with_c}
    assert with_c == without
    assert len(with_c[b"/big"]) == 1000 and set(with_c[b"/small"]) == {b"x", b"y"}
