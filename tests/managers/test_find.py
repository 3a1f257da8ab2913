"""bk find at the manager level: restic's pattern rules, time windows, ids, and that
shared subtrees are read once and anchored patterns read only their directories."""

from __future__ import annotations

import os
from datetime import datetime

import pytest

from backupkit.errors import BadArgument, SnapshotNotFound, UsageError
from backupkit.managers.find import BLOB, PACK, TREE, FindManager, FindOptions, parse_find_time
from backupkit.tree import SnapshotTree, make_hamt
from tests.managers.lifecycle_util import backup, day, init_repo, local_store, open_repo, random_bytes, write_files


@pytest.fixture
def repo(tmp_path):
    src = tmp_path / "src"
    write_files(src, {
        "etc/a.conf": b"a", "etc/ssh/x.conf": b"x", "etc/ssh/keys": b"k",
        "foo/F.CONF": b"F", "foo/bar/baz": b"z", "big.bin": random_bytes(600_000, 1),
    })
    for i in range(300):  # a directory large enough for a trie of several nodes
        write_files(src, {f"many/f{i:03d}.txt": b"%d" % i})
    os.utime(src / "etc/a.conf", (0, datetime(2020, 5, 1, 12).timestamp()))
    r = init_repo(local_store(tmp_path / "repo"))
    s1 = backup(r, src, day(0))
    (src / "new.conf").write_bytes(b"n")
    s2 = backup(r, src, day(1), tags=("t",))
    r.close()
    yield open_repo(local_store(tmp_path / "repo")), src, (s1, s2)


def rel(src, res) -> dict[str, list[str]]:
    base = str(src)
    return {g.snapshot.id: [m.path.decode()[len(base):] for m in g.matches] for g in res.snapshots}


def test_name_patterns_follow_restic(repo):
    r, src, (s1, s2) = repo
    res = FindManager(r).run(FindOptions(("*.conf",)))
    assert res.strategy == "scan"
    assert rel(src, res) == {s1.id: ["/etc/a.conf", "/etc/ssh/x.conf"], s2.id: ["/etc/a.conf", "/etc/ssh/x.conf", "/new.conf"]}
    res = FindManager(r).run(FindOptions(("*.conf",), ignore_case=True, refs=(s1.id[:6],)))
    assert rel(src, res) == {s1.id: ["/etc/a.conf", "/etc/ssh/x.conf", "/foo/F.CONF"]}
    # a pattern that matches a directory matches what is below it
    res = FindManager(r).run(FindOptions(("foo",), refs=(s1.id,)))
    assert rel(src, res)[s1.id] == ["/foo", "/foo/F.CONF", "/foo/bar", "/foo/bar/baz"]
    res = FindManager(r).run(FindOptions(("ssh/*", "bar/baz"), tags=("t",)))
    assert rel(src, res) == {s2.id: ["/etc/ssh/keys", "/etc/ssh/x.conf", "/foo/bar/baz"]}


def test_anchored_patterns_read_only_their_directories(repo):
    r, src, (s1, _s2) = repo
    scan = FindManager(r)
    full = scan.run(FindOptions(("*ssh*",), refs=(s1.id,)))
    directed = FindManager(open_repo(r.store))
    res = directed.run(FindOptions((f"{src}/etc/ssh",), refs=(s1.id,)))
    assert res.strategy == "directed"
    assert rel(src, res)[s1.id] == ["/etc/ssh", "/etc/ssh/keys", "/etc/ssh/x.conf"] == rel(src, full)[s1.id]
    assert res.nodes_loaded < full.nodes_loaded
    res = FindManager(r).run(FindOptions((f"{src}/*.conf", f"{src}/many/f00?.txt"), refs=(s1.id,)))
    assert rel(src, res)[s1.id] == [f"/many/f00{i}.txt" for i in range(10)]


def test_each_distinct_node_is_read_once_across_snapshots(repo):
    r, src, (s1, s2) = repo
    hamt = make_hamt(r)
    distinct = set(hamt.walk_nodes(s1.root)) | set(hamt.walk_nodes(s2.root))
    res = FindManager(r).run(FindOptions(("*.txt",)))
    assert res.hits == 600
    assert res.nodes_loaded == len(distinct)
    # visits: each distinct node once (the second snapshot reuses its shared subtrees)
    assert res.nodes_visited == len(distinct)


def test_time_window(repo):
    r, src, (s1, _s2) = repo
    t = parse_find_time("2021-01-01", "--newest")
    res = FindManager(r).run(FindOptions(("*.conf",), newest=t, refs=(s1.id,)))
    assert rel(src, res)[s1.id] == ["/etc/a.conf"]
    res = FindManager(r).run(FindOptions(("*.conf",), oldest=t, refs=(s1.id,)))
    assert rel(src, res)[s1.id] == ["/etc/ssh/x.conf"]
    with pytest.raises(BadArgument):
        parse_find_time("yesterday", "--newest")


def test_blob_pack_and_tree_ids(repo):
    r, src, (s1, s2) = repo
    tree = SnapshotTree(r, s1.root)
    big = tree.require(str(src / "big.bin").encode())
    bid = tree.content(big)[1]
    res = FindManager(r).run(FindOptions((bid.hex(),), kind=BLOB))
    assert rel(src, res) == {s1.id: ["/big.bin"], s2.id: ["/big.bin"]}
    m = res.snapshots[0].matches[0]
    pack = r.index.lookup(bid).pack.id.hex()
    assert (m.blob, m.found_in, m.pack) == (bid.hex(), "content", pack)
    res = FindManager(r).run(FindOptions((bid.hex()[:10],), kind=BLOB, refs=(s2.id,)))
    assert rel(src, res) == {s2.id: ["/big.bin"]}
    res = FindManager(r).run(FindOptions((pack[:12],), kind=PACK, refs=(s1.id,)))
    assert "/big.bin" in rel(src, res)[s1.id]
    res = FindManager(r).run(FindOptions((s1.root.hex(),), kind=TREE))
    assert [g.snapshot.id for g in res.snapshots] == [s1.id] and res.snapshots[0].matches[0].found_in == "tree node"


def test_bad_input(repo):
    r, _src, _ = repo
    for opts, err in [
        (FindOptions(("[",)), BadArgument),
        (FindOptions(()), BadArgument),
        (FindOptions(("zz",), kind=BLOB), BadArgument),
        (FindOptions(("ffffffff",), kind=BLOB), UsageError),
        (FindOptions(("ffffffff",), kind=PACK), UsageError),
        (FindOptions(("*",), refs=("abcdef12",)), SnapshotNotFound),
    ]:
        with pytest.raises(err):
            FindManager(r).run(opts)
