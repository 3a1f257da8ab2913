"""Restore on a damaged repository never hides a loss (issue 9.1, 9.10).

Each test damages one object, restores, and checks the contract: every intact file is
restored byte-identical, every file that is not restored is named (itself, or a
directory above it whose contents could not be read), nothing is left half-written
under a real name, and the result counts the problems.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from backupkit.entry import display_path, parent_of
from backupkit.errors import RestoreError
from backupkit.managers.restore import RestoreManager, RestoreOptions
from backupkit.repo.pack import pack_name
from backupkit.tree import SnapshotTree, make_hamt
from tests.managers.lifecycle_util import (
    backup, forged_snapshot, init_repo, local_store, open_repo, random_bytes, wire_dir_and_file, write_files,
)


def _flip_blob(store, repo, blob_id: bytes, at: float = 0.5) -> None:
    loc = repo.index.lookup(blob_id)
    path = os.path.join(store.root, pack_name(loc.pack.kind, loc.pack.id))
    off = loc.offset + int(loc.length * at)
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x55]))


def _source_files(src: Path) -> dict[bytes, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(os.fsencode(src)):
        for f in files:
            p = os.path.join(dirpath, f)
            with open(p, "rb") as fh:
                out[p] = fh.read()
    return out


def _check_contract(res, src: Path, out: Path) -> tuple[int, int]:
    """Every source file is restored identical or named; returns (restored, named)."""
    named = {p for p, _m in res.errors}
    unreadable = [u.rstrip("/") + "/" for u in res.unreadable]
    restored = lost = 0
    for path, data in _source_files(src).items():
        there = os.path.join(os.fsencode(out), path.lstrip(b"/"))
        if os.path.lexists(there):
            with open(there, "rb") as f:
                assert f.read() == data, f"{path!r} restored with other content"
            restored += 1
        else:
            d = display_path(path)
            assert d in named or any(d.startswith(u) for u in unreadable), f"{path!r} is missing and not named"
            lost += 1
    leftovers = [n for _d, _s, files in os.walk(out) for n in files if n.startswith(".bk-restore-")]
    assert leftovers == []
    assert res.incomplete and res.problems == len(res.errors) + len(res.verify_failures) > 0
    return restored, lost


def test_a_damaged_tree_node_loses_only_what_it_holds_and_names_it(tmp_path):
    src = tmp_path / "src"
    write_files(src, {f"d{d:02d}/f{f}": b"%d/%d " % (d, f) * 50 for d in range(40) for f in range(10)})
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    snap = backup(repo, src)
    hamt = make_hamt(repo)
    base = os.fsencode(src)
    leaves = []
    for nid in hamt.walk_nodes(snap.root):
        n = hamt.node(nid)
        # a leaf of files only: one holding src's own listing would lose everything
        if n[0] == 0 and all(p.startswith(base + b"/") and parent_of(p) != base for _k, p, _v in n[1]):
            leaves.append((nid, {parent_of(p) for _k, p, _v in n[1]}))
    assert len(leaves) > 4, "the tree must have several leaves for the test to mean anything"
    nid, parents = leaves[len(leaves) // 2]
    _flip_blob(store, repo, nid)

    out = tmp_path / "out"
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(path=str(src), target=str(out), connections=2, keep_path=True))
    restored, lost = _check_contract(res, src, out)
    named = {os.fsencode(u) for u in res.unreadable}
    # every directory whose listing sat in the damaged leaf is named, itself or (when the
    # leaf also held its own entry in its parent's listing) through an ancestor
    for d in parents:
        assert any(d == u or d.startswith(u.rstrip(b"/") + b"/") for u in named), (d, named)
    assert lost > 0 and restored >= 400 - 10 * len(res.unreadable)


def test_a_damaged_content_list_blob_fails_that_file_only(tmp_path):
    src = tmp_path / "src"
    files = {f"small{i:02d}": random_bytes(3000, i) for i in range(20)}
    files["big.bin"] = random_bytes(3 * 2**20, 99)  # > 64 chunks: a content blob
    write_files(src, files)
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    snap = backup(repo, src)
    e = SnapshotTree(repo, snap.root).require(os.fsencode(src / "big.bin"))
    assert e.content_blobs
    _flip_blob(store, repo, e.content_blobs[0])

    out = tmp_path / "out"
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(out), connections=2))
    restored, lost = _check_contract(res, src, out)
    assert (restored, lost) == (20, 1)
    assert [p for p, _m in res.errors] == [str(src / "big.bin")]


def test_a_damaged_data_blob_leaves_no_half_written_file(tmp_path):
    src = tmp_path / "src"
    write_files(src, {"a.bin": random_bytes(600_000, 1), "b.bin": random_bytes(600_000, 2), "c.txt": b"c"})
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    snap = backup(repo, src)
    e = SnapshotTree(repo, snap.root).require(os.fsencode(src / "a.bin"))
    assert len(e.content) > 3
    _flip_blob(store, repo, e.content[2])

    out = tmp_path / "out"
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(out), connections=2))
    assert _check_contract(res, src, out) == (2, 1)
    assert [p for p, _m in res.errors] == [str(src / "a.bin")]


def test_a_malformed_entry_is_named_and_skipped(tmp_path):
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    d, f = wire_dir_and_file(repo)
    entries = {
        b"/": d, b"/a": d, b"/a/f": f, b"/bad": {**d, "m": "rwx"}, b"/bad/x": f,
        b"/odd": {**f, "c": ["not a blob id"]}, b"/z": f,
    }
    snap = forged_snapshot(repo, entries)
    out = tmp_path / "out"
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(out), connections=2))
    assert (out / "a/f").read_bytes() == b"intact\n" and (out / "z").read_bytes() == b"intact\n"
    assert not (out / "bad").exists() and not (out / "odd").exists()
    named = dict(res.errors)
    assert [p for p, _m in res.errors if p == "/bad"] == ["/bad", "/bad"] and set(named) == {"/bad", "/odd"}
    assert res.unreadable == ("/bad",)  # the subtree below it: lost, and named
    assert any("malformed file entry" in m and "'m'" in m for p, m in res.errors if p == "/bad")
    assert "malformed file entry" in named["/odd"] and "'c'" in named["/odd"]
    assert res.incomplete and res.files == 2


def test_a_truncated_pack_still_restores_the_blobs_before_the_cut(tmp_path):
    """A joined range read past the end of a truncated pack falls back to reading each
    blob alone (9.10), so only the file whose blob was cut is lost."""
    src = tmp_path / "src"
    write_files(src, {f"f{i}": random_bytes(5000, i) for i in range(8)})
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    snap = backup(repo, src)
    tree = SnapshotTree(repo, snap.root)
    locs = {i: repo.index.lookup(tree.require(os.fsencode(src / f"f{i}")).content[0]) for i in range(8)}
    assert len({loc.pack.id for loc in locs.values()}) == 1
    last = max(locs, key=lambda i: locs[i].offset)
    loc = locs[last]
    os.truncate(os.path.join(store.root, pack_name(loc.pack.kind, loc.pack.id)), loc.offset + loc.length // 2)

    out = tmp_path / "out"
    res = RestoreManager(open_repo(store)).restore(snap, RestoreOptions(target=str(out), connections=2))
    assert _check_contract(res, src, out) == (7, 1)
    assert [p for p, _m in res.errors] == [str(src / f"f{last}")]


@pytest.fixture
def small_disk(tmp_path):
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for the disk-full test: {r.stderr.decode().strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_stops_the_restore_with_one_message(tmp_path, small_disk):
    src = tmp_path / "src"
    write_files(src, {f"f{i:02d}": random_bytes(40_000, i) for i in range(30)})
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    snap = backup(repo, src)

    class Errors:
        def __init__(self):
            self.got = []

        def start(self, files, size): ...
        def file_skipped(self, path, size): ...
        def deleted(self, path): ...
        def file_done(self, path, size): ...
        def bytes_done(self, n): ...

        def error(self, path, message):
            self.got.append((path, message))

    rep = Errors()
    with pytest.raises(RestoreError, match="No space left on device.*restore stopped"):
        RestoreManager(open_repo(store), rep).restore(snap, RestoreOptions(target=str(small_disk / "out"), connections=2))
    assert rep.got == []
    leftovers = [n for _d, _s, files in os.walk(small_disk) for n in files if n.startswith(".bk-restore-")]
    assert leftovers == []


def test_bk_restore_ends_an_incomplete_restore_with_one_line_and_exit_1(tmp_path):
    from tests.managers.lifecycle_util import PASSWORD
    from tests.support.kit import cli_env, run_bk

    src = tmp_path / "src"
    write_files(src, {"a.bin": random_bytes(600_000, 1), "c.txt": b"c"})
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    snap = backup(repo, src)
    e = SnapshotTree(repo, snap.root).require(os.fsencode(src / "a.bin"))
    _flip_blob(store, repo, e.content[1])
    env = cli_env(tmp_path / "repo", tmp_path / "cache", PASSWORD.decode())
    r = run_bk("restore", "latest", "--target", tmp_path / "out", env=env)
    assert r.returncode == 1, r.stderr
    assert "restore incomplete: 1 problem\n" in r.stderr and "Traceback" not in r.stderr
    assert (tmp_path / "out" / str(src).lstrip("/") / "c.txt").read_bytes() == b"c"
    assert not (tmp_path / "out" / str(src).lstrip("/") / "a.bin").exists()
