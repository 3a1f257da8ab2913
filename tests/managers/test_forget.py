"""bk forget: policy and explicit refs on a real repository; forget + prune end to end."""

from __future__ import annotations

import pytest

from backupkit.errors import UsageError
from backupkit.managers.check import CheckManager, CheckOptions
from backupkit.managers.forget import ForgetManager, ForgetOptions
from backupkit.managers.prune import MaxUnused, PruneManager
from backupkit.catalog import read_catalog
from backupkit.policy import KeepPolicy, parse_duration
from backupkit.snapshot import list_snapshots
from tests.managers.lifecycle_util import (
    backup,
    day,
    init_repo,
    listing,
    local_store,
    open_repo,
    random_bytes,
    restored,
    tree_bytes,
    write_files,
)


@pytest.fixture
def five_days(tmp_path):
    """Five daily snapshots of one tree, each day's file replacing the previous one;
    snapshot 2 (day 1) is tagged ``important``; one more snapshot from host h2."""
    src = tmp_path / "src"
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    snaps, trees = [], {}
    for i in range(5):
        for old in src.glob("day*.bin") if src.exists() else ():
            old.unlink()
        write_files(src, {f"day{i}.bin": random_bytes(150_000, i), "fixed.txt": b"always"})
        s = backup(repo, src, day(i), tags=("important",) if i == 1 else ())
        snaps.append(s)
        trees[s.id] = tree_bytes(src)
    other = backup(repo, src, day(2), host="h2")
    return store, repo, src, snaps, other, trees


def test_keep_last_removes_the_rest_per_group_and_updates_the_catalog(five_days):
    store, repo, _src, snaps, other, _ = five_days
    res = ForgetManager(repo).run(ForgetOptions(policy=KeepPolicy(last=2)))

    assert {s.id for s in res.removed} == {s.id for s in snaps[:3]}
    groups = {g.key.host: g for g in res.groups}
    assert [k.snapshot.id for k in groups["h1"].kept] == [snaps[4].id, snaps[3].id]
    assert all(k.reasons == ("last snapshot",) for k in groups["h1"].kept)
    assert [k.snapshot.id for k in groups["h2"].kept] == [other.id] and groups["h2"].removed == ()
    left = {snaps[3].id, snaps[4].id, other.id}
    assert {s.id for s in list_snapshots(open_repo(store))} == left
    assert set(read_catalog(open_repo(store))) == left


def test_dry_run_changes_nothing(five_days):
    store, repo, *_ = five_days
    before = listing(store)
    res = ForgetManager(repo).run(ForgetOptions(policy=KeepPolicy(last=1), dry_run=True))
    assert len(res.removed) == 4 and res.dry_run
    assert listing(store) == before


def test_reasons_tags_and_within(five_days):
    _store, repo, _src, snaps, _other, _ = five_days
    policy = KeepPolicy(last=1, tags=(("important",),), within=parse_duration("2d"))
    res = ForgetManager(repo).run(ForgetOptions(policy=policy, hosts=("h1",), dry_run=True))
    (g,) = res.groups
    reasons = {k.snapshot.id: k.reasons for k in g.kept}
    assert reasons[snaps[4].id] == ("within 2d", "last snapshot")
    assert reasons[snaps[3].id] == ("within 2d",)
    assert reasons[snaps[1].id] == ("has tags [important]",)
    assert {s.id for s in g.removed} == {snaps[0].id, snaps[2].id}


def test_group_by_nothing_puts_every_snapshot_in_one_group(five_days):
    _store, repo, _src, snaps, other, _ = five_days
    res = ForgetManager(repo).run(ForgetOptions(policy=KeepPolicy(last=1), group_by=frozenset(), dry_run=True))
    (g,) = res.groups
    assert [k.snapshot.id for k in g.kept] == [snaps[4].id]
    assert len(g.removed) == 5 and other in g.removed


def test_refuses_without_policy_or_refs(five_days):
    _store, repo, *_ = five_days
    with pytest.raises(UsageError):
        ForgetManager(repo).run(ForgetOptions())


def test_refuses_a_policy_that_keeps_nothing_of_a_group(five_days):
    store, repo, *_ = five_days
    before = listing(store)
    with pytest.raises(UsageError, match="refusing"):
        ForgetManager(repo).run(ForgetOptions(policy=KeepPolicy(tags=(("no-such-tag",),))))
    assert listing(store) == before


def test_explicit_refs_are_removed_even_if_nothing_is_kept(five_days):
    _store, repo, _src, snaps, other, _ = five_days
    res = ForgetManager(repo).run(ForgetOptions(refs=(snaps[0].id[:8], other.id)))
    assert {s.id for s in res.removed} == {snaps[0].id, other.id}
    assert len(list_snapshots(repo)) == 4


def test_explicit_refs_with_a_policy_let_the_policy_choose_among_them(five_days):
    _store, repo, _src, snaps, _other, _ = five_days
    res = ForgetManager(repo).run(ForgetOptions(policy=KeepPolicy(last=1), refs=tuple(s.id for s in snaps[:3]), dry_run=True))
    (g,) = res.groups
    assert [k.snapshot.id for k in g.kept] == [snaps[2].id]
    assert {s.id for s in res.removed} == {snaps[0].id, snaps[1].id}


def test_lock_check_runs_before_anything_is_removed(five_days):
    store, repo, *_ = five_days
    before = listing(store)

    def lost():
        raise RuntimeError("lock lost")

    with pytest.raises(RuntimeError):
        repo.install_lock_check(lost)
        ForgetManager(repo).run(ForgetOptions(policy=KeepPolicy(last=1)))
    assert listing(store) == before


def test_forget_keep_last_2_then_prune_shrinks_and_keeps_restorable(five_days, tmp_path):
    store, repo, src, snaps, other, trees = five_days
    ForgetManager(repo).run(ForgetOptions(policy=KeepPolicy(last=2), hosts=("h1",)))
    ForgetManager(repo).run(ForgetOptions(refs=(other.id,)))
    before = sum(listing(store).values())
    PruneManager(repo).run(MaxUnused(percent=0))
    after = sum(listing(store).values())
    # three 150 kB files are gone
    assert after < before - 3 * 150_000
    fresh = open_repo(store)
    assert CheckManager(fresh).run(CheckOptions(read_data=True)).ok
    for s in snaps[3:]:
        assert restored(fresh, s, src, tmp_path / f"r-{s.short_id}") == trees[s.id]


@pytest.fixture
def tagged(tmp_path):
    """Four snapshots of one host and path: untagged, tagged ``a``, tagged ``a`` and
    ``b``, tagged ``b``."""
    src = tmp_path / "src"
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    write_files(src, {"f.txt": b"x"})
    snaps = [backup(repo, src, day(i), tags=tags) for i, tags in enumerate([(), ("a",), ("a", "b"), ("b",)])]
    return store, repo, src, snaps


@pytest.mark.parametrize(
    "tags, expect",
    [
        (("",), [0]),  # restic: '' selects the untagged snapshots
        ((" a",), [1, 2]),  # whitespace around a tag is stripped
        (("a, b",), [2]),
        (("a", "b"), [1, 2, 3]),
        (("", "b"), [0, 2, 3]),
    ],
)
def test_every_command_selects_the_same_snapshots_for_a_tag_filter(tagged, tags, expect):
    """Issue 7: ``snapshots``, ``forget --keep-*`` and ``forget ID`` (and every command
    resolving ``latest``) select through one filter, with restic's semantics."""
    from backupkit.snapshot import filter_snapshots, find_snapshot

    store, repo, src, snaps = tagged
    want = {snaps[i].id for i in expect}
    # bk snapshots --tag ...
    assert {s.id for s in filter_snapshots(list_snapshots(repo), tags=tags)} == want
    # bk forget --tag ... --keep-last unlimited (the groups hold exactly the selected ones)
    groups = ForgetManager(repo).plan(ForgetOptions(policy=KeepPolicy(last=-1), tags=tags, group_by=frozenset()))
    assert {k.snapshot.id for g in groups for k in g.kept} | {s.id for g in groups for s in g.removed} == want
    # bk forget --tag ... latest: the newest selected one, as bk restore/ls/diff latest;
    # an id names its snapshot whatever the filters say (restic), in forget as elsewhere
    newest = snaps[max(expect)].id
    assert find_snapshot(repo, "latest", tags=tags).id == newest
    latest = ForgetOptions(refs=("latest",), tags=tags, dry_run=True)
    assert [r.id for r in ForgetManager(repo).run(latest).removed] == [newest]
    for s in snaps:
        by_id = ForgetOptions(refs=(s.id[:8],), tags=tags, dry_run=True)
        assert [r.id for r in ForgetManager(repo).run(by_id).removed] == [s.id]
        assert find_snapshot(repo, s.id[:8], tags=tags).id == s.id
    # a path filter with a trailing slash means the same path everywhere
    assert {s.id for s in filter_snapshots(list_snapshots(repo), tags=tags, paths=[str(src) + "/"])} == want
