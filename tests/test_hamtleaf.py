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
    neighbours list the same children from decoded leaves (the trie that wrote them
    keeps them decoded), from the leaves' plaintext read in C (a fresh trie without a
    decoded cache, as the backup's parent view reads them: loaded, then from its
    plaintext cache) and in Python."""
    from backupkit import tree as tree_mod
    from backupkit.tree import SnapshotTree, make_hamt
    from tests.support.kit import make_test_repo

    repo = make_test_repo()
    hamt = make_hamt(repo)
    t0 = SnapshotTree(repo, hamt.empty(), hamt)
    keyer = t0.keyer
    paths = [b"/big"] + [b"/big/f%04d" % i for i in range(1000)] + [b"/small", b"/small/x", b"/small/y/z", b"/small/y"]
    root = hamt.build([(keyer.key(p), p, b"v" + p) for p in paths])
    dirs = (b"/", b"/big", b"/small", b"/small/y", b"/none")
    t = SnapshotTree(repo, root, hamt)
    with_c = {d: t.raw_children_by_name(d) for d in dirs}
    fresh = make_hamt(repo, cache_size=0, plain_cache_bytes=1 << 20)
    tp = SnapshotTree(repo, root, fresh)
    for _ in range(2):  # loaded, then from the plaintext cache
        assert {d: tp.raw_children_by_name(d) for d in dirs} == with_c
    assert sum(1 for _raw, info in fresh._plain.values() if info is not None) >= 4  # leaves read as plaintext
    assert fresh.loads == len(fresh._plain)  # the second round loaded nothing
    monkeypatch.setattr(tree_mod, "_hamtleaf", None)
    without = {d: t.raw_children_by_name(d) for d in dirs}
    assert with_c == without
    assert len(with_c[b"/big"]) == 1000 and set(with_c[b"/small"]) == {b"x", b"y"}


def test_common_nibbles_is_the_python_loop():
    rnd = random.Random(3)
    base = rnd.randbytes(16)
    for _ in range(3000):
        a = base[: rnd.randrange(17)] + rnd.randbytes(rnd.randrange(3))
        b = bytearray(base[: rnd.randrange(17)])
        if b and rnd.random() < 0.5:
            b[rnd.randrange(len(b))] ^= rnd.choice([1, 0x10, 0xFF])
        assert hamt_node.common_nibbles(a, bytes(b)) == hamt_node.common_nibbles_py(a, bytes(b))
    with pytest.raises(TypeError):
        hamt_node.common_nibbles("ab", b"ab")


def test_leaf_info_accepts_only_what_decode_node_accepts_as_that_leaf():
    import msgpack

    from backupkit.errors import FormatError
    from backupkit.hamt_node import decode_node

    rnd = random.Random(9)
    accepted = refused = 0
    for size in (0, 1, 3, 60, 256):
        rows = leaf_rows(rnd, size)
        raw = msgpack.packb([LEAF, rows])
        info = _hamtleaf.leaf_info(raw)
        assert info == ((len(rows), rows[0][0], rows[-1][0]) if rows else (0, None, None))
        # other encodings of the same leaf that msgpack reads alike: C declines some
        # (then Python decides), and what it accepts is that leaf
        wide = b"\xdd" + (2).to_bytes(4, "big") + b"\xcd\x00\x00" + msgpack.packb(rows)
        assert decode_node(b"x" * 32, wide) == [LEAF, rows]
        assert _hamtleaf.leaf_info(wide) in (None, info)
        texts = [msgpack.packb([LEAF, [[k, p.decode("latin-1"), v] for k, p, v in rows]])] if rows else []
        for bad in [msgpack.packb([LEAF, rows, 1]), raw + b"\x00", raw[:-1], msgpack.packb([1, rows]),
                    msgpack.packb([False, rows]), *texts]:
            assert _hamtleaf.leaf_info(bad) is None
        # random byte damage: whatever C accepts, decode_node accepts with those ends
        for _ in range(400 if rows else 0):
            b = bytearray(raw)
            for _j in range(rnd.randrange(1, 4)):
                b[rnd.randrange(len(b))] = rnd.randrange(256)
            got = _hamtleaf.leaf_info(bytes(b))
            if got is None:
                refused += 1
                continue
            accepted += 1
            try:
                n = decode_node(b"x" * 32, bytes(b))
            except FormatError as e:
                pytest.fail(f"C accepted a leaf Python refuses: {e}")
            assert n[0] == LEAF and got == (len(n[1]), n[1][0][0], n[1][-1][0])
    assert refused > 200 and accepted > 50  # the damage hit both kinds of byte


@pytest.mark.parametrize("seed", [1, 2])
def test_leaf_children_into_reads_the_plaintext_as_children_into_the_rows(seed):
    import msgpack

    rnd = random.Random(seed)
    pfx = rnd.randbytes(8)
    rows = sorted({(pfx + rnd.randbytes(8) if rnd.random() < 0.6 else rnd.randbytes(16), rnd.choice([b"/d/", b"/d/s/", b"/e/"]) + rnd.randbytes(2).replace(b"/", b"-")) for _ in range(200)})
    leaf = [[k, p, rnd.randbytes(5)] for k, p in rows]
    raw = msgpack.packb([LEAF, leaf])
    for prefix in (pfx, pfx[:2], b"", rnd.randbytes(8), pfx + b"\x00" * 9):
        for d in (b"/d", b"/d/s", b"/e", b"/"):
            pre = d if d == b"/" else d + b"/"
            a, b = {}, {}
            _hamtleaf.leaf_children_into(a, raw, prefix, pre, d)
            _hamtleaf.children_into(b, leaf, prefix, pre, d)
            assert a == b and list(a) == list(b)
    with pytest.raises(ValueError):
        _hamtleaf.leaf_children_into({}, raw[:3], pfx, b"/d/", b"/d")


def _node_store(seed: int):
    """(a dict of nodes by id, ``save``: a Hamt's save storing there under random ids)."""
    rnd = random.Random(seed)
    store: dict[bytes, bytes] = {}

    def save(data: bytes) -> bytes:
        nid = rnd.randbytes(32)
        store[nid] = data
        return nid

    return store, save


def test_a_leaf_read_as_plaintext_is_checked_against_its_parent():
    """A branch whose child count or slot lies about a leaf: the plaintext path refuses
    it as the decoded one does, whether the leaf comes from the store or the cache."""
    import msgpack

    from backupkit.errors import FormatError
    from backupkit.hamt import Hamt

    store, save = _node_store(4)
    h = Hamt(store.__getitem__, save, cache_size=0, plain_cache_bytes=1 << 20)
    key = bytes([0x12]) + b"\x00" * 15
    leaf = save(msgpack.packb([LEAF, [[key, b"/a", b"v"]]]))
    for slot, count, ok in ((1, 1, True), (1, 2, False), (3, 1, False)):
        ref = bytes([(slot << 4) | 2]) + b"\x00" * 15
        branch = [1, count, 0, ref, [[slot, leaf, count]]]
        for _ in range(2):  # loaded, then from the plaintext cache
            if ok:
                assert h.child_plain(branch, slot, leaf, count) == store[leaf]
            else:
                with pytest.raises(FormatError, match="does not fit its parent"):
                    h.child_plain(branch, slot, leaf, count)
    assert h.loads == 1


def test_routed_descents_read_the_same_leaves_and_still_check_edges(monkeypatch):
    """``prefix_leaves(plain=True)`` follows the routes of branches it went through: a
    trie of several branch levels lists every directory's children as the unrouted
    descent does, the first time and again through the routes (and with the routes
    capped); a branch whose child does not fit it is refused through the routed descent
    on every visit."""
    import msgpack

    from backupkit import hamt as hamt_mod
    from backupkit.errors import FormatError
    from backupkit.hamt import Hamt
    from backupkit.tree import SnapshotTree, make_hamt
    from tests.support.kit import make_test_repo

    repo = make_test_repo()
    hamt = make_hamt(repo)
    keyer = SnapshotTree(repo, hamt.empty(), hamt).keyer
    dirs = [b"/"] + [b"/d%03d" % i for i in range(300)]
    paths = dirs[1:] + [d + b"/f%02d" % j for d in dirs[1:] for j in range(40)]
    root = hamt.build([(keyer.key(p), p, b"v" + p) for p in paths])
    assert hamt.node(root)[0] == hamt_mod.BRANCH and any(
        hamt.node(row[1])[0] == hamt_mod.BRANCH for row in hamt.node(root)[4])  # more than one branch level

    def unrouted(h: Hamt, d: bytes) -> list:
        return list(h._prefix_leaves(root, keyer.dir_prefix(d), True))

    for cap in (hamt_mod.ROUTES_MAX, 2):
        monkeypatch.setattr(hamt_mod, "ROUTES_MAX", cap)
        fresh = make_hamt(repo, 1 << 13, 1 << 22)
        t = SnapshotTree(repo, root, fresh)
        for _ in range(2):
            for d in dirs:
                assert list(fresh.prefix_leaves(root, keyer.dir_prefix(d), plain=True)) == unrouted(fresh, d)
                assert len(t.raw_children_by_name(d)) == (300 if d == b"/" else 40)
        assert 1 <= len(fresh._routes) <= cap

    store, save = _node_store(5)
    key = bytes([0x12]) + b"\x00" * 15
    leaf = save(msgpack.packb([LEAF, [[key, b"/a", b"v"]]]))
    inner = save(msgpack.packb([hamt_mod.BRANCH, 1, 1, key, [[2, leaf, 1]]]))
    top = save(msgpack.packb([hamt_mod.BRANCH, 5, 0, key, [[1, inner, 5]]]))  # inner holds 1, not 5
    h = Hamt(store.__getitem__, save, cache_size=1 << 10, plain_cache_bytes=1 << 20)
    for _ in range(2):
        with pytest.raises(FormatError, match="does not fit its parent"):
            list(h.prefix_leaves(top, key[:8], plain=True))


def test_raw_children_in_c_lists_what_the_python_comprehension_lists(monkeypatch):
    """``SnapshotTree.raw_children`` (the restore's, ls's and find's walk) reads each leaf's
    rows with ``children_into`` into a list: every child in trie order, duplicates kept,
    as the Python comprehension does, for a directory over several leaves, the root, a
    file and a path that is not there."""
    from backupkit import tree as tree_mod
    from backupkit.tree import SnapshotTree, make_hamt
    from tests.support.kit import make_test_repo

    repo = make_test_repo()
    hamt = make_hamt(repo)
    keyer = SnapshotTree(repo, hamt.empty(), hamt).keyer
    paths = ([b"/big"] + [b"/big/f%04d" % i for i in range(700)] + [b"/big/sub", b"/big/sub/deep", b"/big/", b"/x",
             b"/x/y", b"/x/y/z", b"/\xff\xfe", b"/\xff\xfe/n"])
    rows = [(keyer.key(p), p, b"v" + p) for p in paths]
    rows.append((keyer.key(b"/x/y")[:15] + b"\x00", b"/x/y", b"dup"))  # the same path under another key
    root = hamt.build(rows)
    t = SnapshotTree(repo, root, hamt)
    dirs = (b"/", b"/big", b"/big/sub", b"/x", b"/x/y", b"/\xff\xfe", b"/none", b"/big/f0001")
    with_c = {d: t.raw_children(d) for d in dirs}
    monkeypatch.setattr(tree_mod, "_hamtleaf", None)
    assert {d: t.raw_children(d) for d in dirs} == with_c
    assert len(with_c[b"/big"]) == 702 and with_c[b"/big/f0001"] == [] and with_c[b"/none"] == []
    assert [p for p, _v in with_c[b"/"]].count(b"/x") == 1
    assert sorted(v for p, v in with_c[b"/x"] if p == b"/x/y") == [b"dup", b"v/x/y"]  # both kept, as in Python
    monkeypatch.undo()
    # a walk's own trie (no Hamt given) keeps plaintext: leaves read as plaintext in C,
    # the same lists, and a second pass loads nothing
    walk = SnapshotTree(repo, root)
    assert walk.hamt.keeps_plain and not hamt.keeps_plain
    for _ in range(2):
        assert {d: walk.raw_children(d) for d in dirs} == with_c
    loads = walk.hamt.loads
    assert {d: walk.raw_children(d) for d in dirs} == with_c and walk.hamt.loads == loads
    assert any(info is not None for _raw, info in walk.hamt._plain.values())


def _decode_both(monkeypatch, raw: bytes):
    """(Entry.decode with the C reader, without it): each an Entry or the error's text."""
    from backupkit.errors import FormatError
    from backupkit.objects import entry as entry_mod

    def one():
        try:
            return entry_mod.Entry.decode(raw, b"/p")
        except FormatError as e:
            return f"FormatError: {e}"

    with_c = one()
    monkeypatch.setattr(entry_mod, "_entry_fields", None)
    without = one()
    monkeypatch.undo()
    return with_c, without


def test_entries_read_in_c_are_the_entries_python_reads(monkeypatch):
    """``_hamtleaf.entry_fields``: every valid entry (random fields of every type, ints
    at their bounds) reads as in Python, and every malformed one (random byte changes,
    and the cases named below) still fails with Python's words: C accepts nothing
    Python refuses and gives what Python gives."""
    import msgpack

    from backupkit.objects.entry import Entry

    rnd = random.Random(8)
    U64, I64 = 1 << 64, 1 << 63
    entries = []
    for i in range(600):
        t = rnd.choice("fdlpscb")
        e = Entry(type=t, mode=rnd.choice([0, 0o644, 0o7777]), uid=rnd.choice([0, 1000, (1 << 32) - 1]),
                  gid=rnd.randrange(1 << 32), user=rnd.choice(["", "root", "héllo", "日本"]), group=rnd.choice(["", "g"]),
                  size=rnd.choice([0, 1, I64 - 1]) if t == "f" else None, mtime=rnd.choice([-I64, -1, 0, I64 - 1]),
                  ctime=rnd.randrange(-I64, I64), inode=rnd.choice([0, U64 - 1]), device=rnd.randrange(U64), nlink=rnd.randrange(3),
                  rdev=rnd.randrange(U64) if t in "cb" else rnd.choice([None, 5]), target=rnd.randbytes(rnd.randrange(40)) if t == "l" else None,
                  xattrs=((b"user.a", b"1"),) if i % 17 == 0 else None,
                  content=tuple(rnd.choice([rnd.randbytes(32), rnd.randrange(I64)]) for _ in range(rnd.randrange(4))) if t == "f" and i % 3 else None,
                  content_blobs=tuple(rnd.randbytes(32) for _ in range(2)) if t == "f" and i % 3 == 0 and i % 2 else None)
        entries.append(e)
        raw = e.encode()
        with_c, without = _decode_both(monkeypatch, raw)
        assert with_c == without == e, (raw, with_c, without)
    def wire(**m):
        return msgpack.packb(m)
    base = {"t": "f", "s": 1, "m": 0o644}
    odd = [
        wire(**base) + b"\x00",  # trailing byte
        msgpack.packb([1, 2]), msgpack.packb({}), msgpack.packb({b"t": "f", "s": 1}),  # not a map, no t, a bin key
        wire(**base, zz=1), wire(t="q"), wire(t="ff"), wire(t="f"), wire(t="l"), wire(t="c"), wire(t="b", rd=-1),
        wire(**dict(base, m=0o10000)), wire(**dict(base, m=-1)), wire(**dict(base, s=I64)), wire(**dict(base, u=1 << 32)),
        wire(**dict(base, mt=True)), wire(**dict(base, mt=None)), wire(**dict(base, mt=1.5)), wire(**dict(base, i=-1)),
        wire(**dict(base, un=b"bytes")), wire(**dict(base, l="str")), wire(t="l", l=b""),
        wire(**dict(base, c=[b"x" * 31])), wire(**dict(base, c=[-1])), wire(**dict(base, c=[I64])), wire(**dict(base, c=[True])),
        wire(**dict(base, c=["s"])), wire(**dict(base, c=b"x")), wire(**dict(base, cb=[1])), wire(**dict(base, c=[], cb=[])),
        wire(**dict(base, x={b"k": b"v"})), wire(**dict(base, x={"k": b"v"})), wire(**dict(base, x=[])),
        b"\x83\xa1t\xa1f\xa1s\x01\xa1s\x02",  # "s" twice: Python keeps the last
        b"\x83\xa1t\xa1f\xa1s\xc0\xa1s\x02",  # the first "s" invalid, the last valid
        b"\x82\xa1t\xa1f\xa1s",  # cut short
        b"\x83\xa1t\xa1f\xa1s\x01\xa2un\xa3\xed\xa0\x80",  # a surrogate in a str
        b"\x83\xa1t\xa1f\xa1s\x01\xa2un\xa2\xc3\x28",  # invalid UTF-8
        b"\xdf\xff\xff\xff\xff\xa1t\xa1f",  # a map count that lies
        b"\x81\xa1t\xa1\x00",  # "t" is NUL
        b"\x82\xa1t\xa1f\xa1s\xcf" + (1 << 63).to_bytes(8, "big"),  # s = 2^63 as uint64
        b"\x82\xa1t\xa1f\xa1s\xd3" + (5).to_bytes(8, "big"),  # s = 5 as int64
    ]
    for raw in odd:
        with_c, without = _decode_both(monkeypatch, raw)
        assert with_c == without, (raw, with_c, without)
    for e in entries[:200]:  # random damage
        raw = bytearray(e.encode())
        for _ in range(3):
            j = rnd.randrange(len(raw))
            raw[j] = rnd.randrange(256) if rnd.random() < 0.8 else raw[j] ^ 1
            with_c, without = _decode_both(monkeypatch, bytes(raw))
            assert with_c == without, (bytes(raw), with_c, without)
