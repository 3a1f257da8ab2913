"""bk rewrite at the manager level: what goes, what stays shared, --forget, --dry-run."""

from __future__ import annotations

import pytest

from backupkit.entry import Keyer
from backupkit.errors import BadArgument, UsageError
from backupkit.managers.rewrite import RewriteManager, RewriteOptions
from backupkit.snapshot import list_snapshots
from backupkit.tree import SnapshotTree, make_hamt
from tests.managers.lifecycle_util import backup, day, init_repo, listing, local_store, restored, write_files


@pytest.fixture
def repo(tmp_path):
    src = tmp_path / "src"
    files = {"keep.txt": b"k", "app.log": b"l" * 100, "cache/a": b"a" * 50, "cache/b": b"b", "sub/x.LOG": b"X"}
    files.update({f"many/f{i:03d}": b"%d" % i for i in range(600)})
    write_files(src, files)
    r = init_repo(local_store(tmp_path / "repo"))
    s1 = backup(r, src, day(0), tags=("t",))
    s2 = backup(r, src, day(1))
    yield r, src, (s1, s2), files
    r.close()


def paths_of(r, snap) -> set[bytes]:
    return {p for p, _e in SnapshotTree(r, snap.root).all_entries()}


def test_rewrite_adds_tagged_snapshots_and_shares_untouched_subtrees(repo, tmp_path):
    r, src, (s1, s2), files = repo
    before = r.stats["blobs_new"]
    res = RewriteManager(r).run(RewriteOptions(excludes=("*.log", f"{src}/cache"), iexcludes=(), refs=(s1.id,)))
    (c,) = res.changed
    assert [m.path for m in c.removed] == [str(src / n).encode() for n in ("app.log", "cache", "cache/a", "cache/b")]
    assert c.removed_bytes == 151
    new = c.new
    assert new.tags == ("t", "rewrite") and new.meta["original"] == s1.id and new.time_ns == s1.time_ns
    assert {s.id for s in list_snapshots(r)} == {s1.id, s2.id, new.id}
    old_paths, new_paths = paths_of(r, s1), paths_of(r, new)
    assert old_paths - new_paths == {m.path for m in c.removed}
    # canonical: the same trie as one built from the remaining entries
    hamt, keyer = make_hamt(r), Keyer(r.sealer.keyed_hash)
    remaining = [(k, p, v) for k, p, v in hamt.items(s1.root) if p in new_paths]
    assert hamt.build(remaining) == new.root
    shared = set(hamt.walk_nodes(s1.root)) & set(hamt.walk_nodes(new.root))
    assert shared  # the large directory's nodes are reused
    assert r.stats["blobs_new"] - before <= 8  # a few nodes on the changed paths, nothing else
    got = restored(r, new, src, tmp_path / "out")
    assert got == {k: v for k, v in files.items() if not (k.endswith(".log") or k.startswith("cache/"))}


def test_iexclude_forget_and_unchanged(repo):
    r, src, (s1, s2), _files = repo
    res = RewriteManager(r).run(RewriteOptions(iexcludes=("*.log",), forget=True))
    assert len(res.changed) == 2 and not res.unchanged
    ids = {s.id for s in list_snapshots(r)}
    assert ids == {c.new.id for c in res.changed}
    assert all("rewrite" not in c.new.tags for c in res.changed)
    assert all(len(c.removed) == 2 for c in res.changed)
    again = RewriteManager(r).run(RewriteOptions(iexcludes=("*.log",)))
    assert not again.changed and len(again.unchanged) == 2


def test_dry_run_writes_nothing(repo):
    r, src, (s1, _s2), _files = repo
    r.flush()
    before = listing(r.store)
    res = RewriteManager(r).run(RewriteOptions(excludes=("keep.txt",), dry_run=True, hosts=("h1",), tags=("t",)))
    (c,) = res.changed
    assert c.new is None and [m.path for m in c.removed] == [str(src / "keep.txt").encode()]
    assert listing(r.store) == before


def test_bad_input(repo):
    r, _src, _snaps, _files = repo
    with pytest.raises(BadArgument):
        RewriteManager(r).run(RewriteOptions())
    with pytest.raises(BadArgument):
        RewriteManager(r).run(RewriteOptions(excludes=("[",)))
    with pytest.raises(UsageError):
        RewriteManager(r).run(RewriteOptions(excludes=("/",)))


def test_new_host_and_time_relabel_without_touching_the_tree(repo):
    """restic's rewrite --new-host / --new-time: the document changes, the tree is the
    original's; a snapshot already so labelled is left alone; with excludes both apply."""
    from datetime import datetime, timezone

    r, _src, (s1, s2), _files = repo
    when = datetime(2020, 5, 17, 12, 0, tzinfo=timezone.utc)
    res = RewriteManager(r).run(RewriteOptions(refs=(s1.id,), new_host="renamed", new_time=when))
    (c,) = res.changed
    assert c.removed == () and c.new.root == s1.root and c.new.host == "renamed"
    assert c.new.time == when and "rewrite" in c.new.tags and c.new.meta["original"] == s1.id
    again = RewriteManager(r).run(RewriteOptions(refs=(c.new.id,), new_host="renamed"))
    assert again.changed == () and [s.id for s in again.unchanged] == [c.new.id]
    both = RewriteManager(r).run(RewriteOptions(refs=(s2.id,), excludes=("*.log",), new_host="h3", forget=True))
    (c2,) = both.changed
    assert c2.new.host == "h3" and c2.new.root != s2.root and {m.path.rsplit(b"/", 1)[1] for m in c2.removed} == {b"app.log"}
    assert s2.id not in {s.id for s in list_snapshots(r)}
    with pytest.raises(BadArgument, match="nothing to rewrite"):
        RewriteManager(r).run(RewriteOptions(refs=(s1.id,)))
