"""bk tag at the manager level: new objects first, original kept, filters, bad input."""

from __future__ import annotations

import pytest

from backupkit.errors import BadArgument, SnapshotNotFound
from backupkit.managers.tag import TagManager, TagOptions
from backupkit.snapshot import list_snapshots, load_snapshot
from tests.managers.lifecycle_util import backup, day, init_repo, local_store, open_repo, write_files


@pytest.fixture
def repo3(tmp_path):
    src = tmp_path / "src"
    write_files(src, {"a.txt": b"a", "d/b.txt": b"b"})
    repo = init_repo(local_store(tmp_path / "repo"))
    snaps = [backup(repo, src, day(0), tags=("x",)), backup(repo, src, day(1), host="h2"), backup(repo, src, day(2), tags=("x", "y"))]
    yield repo, snaps
    repo.close()


def test_add_remove_set_make_new_objects_and_keep_original(repo3):
    repo, (s0, s1, s2) = repo3
    res = TagManager(repo).run(TagOptions(refs=(s0.id[:8],), add=("new,more",)))
    (c,) = res.changed
    assert c.old.id == s0.id and c.new.id != s0.id
    assert c.new.tags == ("x", "new", "more") and c.new.meta["original"] == s0.id
    ids = {s.id for s in list_snapshots(repo)}
    assert s0.id not in ids and c.new.id in ids
    with pytest.raises(SnapshotNotFound):
        load_snapshot(repo, s0.id)
    # a second change keeps the first original; the rest of the document is untouched
    res2 = TagManager(repo).run(TagOptions(refs=(c.new.id,), remove=("x",)))
    n2 = res2.changed[0].new
    assert n2.tags == ("new", "more") and n2.meta["original"] == s0.id
    assert (n2.root, n2.time_ns, n2.paths, n2.summary) == (s0.root, s0.time_ns, s0.paths, s0.summary)
    # fresh open: the catalog agrees with the objects
    again = open_repo(repo.store)
    assert {s.id for s in list_snapshots(again, repair_catalog=False)} == {s1.id, s2.id, n2.id}


def test_filters_select_and_unchanged_are_left_alone(repo3):
    repo, (s0, s1, s2) = repo3
    res = TagManager(repo).run(TagOptions(tags=("x",), add=("y",)))
    assert [c.old.id for c in res.changed] == [s0.id] and [s.id for s in res.unchanged] == [s2.id]
    res = TagManager(repo).run(TagOptions(hosts=("h2",), set=("only",)))
    assert [c.old.id for c in res.changed] == [s1.id] and res.changed[0].new.tags == ("only",)
    res = TagManager(repo).run(TagOptions(refs=("latest",), set=()))
    assert res.changed[0].new.tags == ()
    assert sorted(s.tags for s in list_snapshots(repo)) == [(), ("only",), ("x", "y")]


def test_bad_input(repo3):
    repo, (s0, _s1, _s2) = repo3
    with pytest.raises(BadArgument):
        TagManager(repo).run(TagOptions(refs=(s0.id,)))
    with pytest.raises(BadArgument):
        TagManager(repo).run(TagOptions(refs=(s0.id,), set=("a",), add=("b",)))
    with pytest.raises(SnapshotNotFound):
        TagManager(repo).run(TagOptions(refs=("deadbeef",), add=("b",)))
    assert len(list_snapshots(repo)) == 3


def test_lock_lost_before_publishing_changes_nothing(repo3):
    repo, (s0, _s1, _s2) = repo3
    from backupkit.errors import LockError

    def lost():
        raise LockError("lock lost")

    before = {s.id for s in list_snapshots(repo)}
    with pytest.raises(LockError):
        TagManager(repo, lock_check=lost).run(TagOptions(refs=(s0.id,), add=("z",)))
    assert {s.id for s in list_snapshots(repo)} == before


def test_an_id_names_its_snapshot_whatever_the_filters_latest_honours_them(repo3):
    repo, (s0, s1, s2) = repo3
    res = TagManager(repo).run(TagOptions(refs=(s0.id[:8],), hosts=("h2",), add=("q",)))
    assert [c.old.id for c in res.changed] == [s0.id]
    res = TagManager(repo).run(TagOptions(refs=("latest",), hosts=("h2",), add=("q",)))
    assert [c.old.id for c in res.changed] == [s1.id]
