"""``bk snapshots`` as restic users write it: ``--compact``, ``--latest N`` (the newest N
of each host and set of paths) and ``--group-by`` (host, paths, tags; restic's JSON shape)."""

from __future__ import annotations

import json

import pytest

from tests.support.kit import cli_env, ok, run_bk, write_file


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    """s1 from h1 three times (tags a, b, none), s2 from h2 once (tag a)."""
    base = tmp_path_factory.mktemp("snapshots")
    s1, s2 = base / "s1", base / "s2"
    write_file(s1 / "f.txt", b"one\n")
    write_file(s2 / "g.txt", b"two\n")
    env = cli_env(base / "repo", base / "cache")
    ok(run_bk("init", env=env))
    for args in ((s1, "--host", "h1", "--tag", "a"), (s1, "--host", "h1", "--tag", "b"), (s1, "--host", "h1"),
                 (s2, "--host", "h2", "--tag", "a")):
        ok(run_bk("backup", *args, env=env))
    snaps = json.loads(ok(run_bk("snapshots", "--json", env=env)).stdout)
    return env, [s["id"] for s in snaps]  # oldest first


def ids(env, *args) -> list[str]:
    return [s["id"] for s in json.loads(ok(run_bk("snapshots", "--json", *args, env=env)).stdout)]


def test_latest_keeps_the_newest_of_each_host_and_paths(three):
    env, all_ids = three
    assert ids(env, "--latest", "1") == [all_ids[2], all_ids[3]]
    assert ids(env, "--latest", "2") == all_ids[1:]
    assert ids(env, "--latest", "9") == all_ids
    # after the filters, as restic: the newest tagged a of h1 is the first snapshot
    assert ids(env, "--latest", "1", "--tag", "a") == [all_ids[0], all_ids[3]]


def test_group_by_lists_each_group_with_its_key(three):
    env, all_ids = three
    out = json.loads(ok(run_bk("snapshots", "--json", "--group-by", "host", env=env)).stdout)
    assert [(g["group_key"], [s["id"] for s in g["snapshots"]]) for g in out] == [
        ({"host": "h1"}, all_ids[:3]), ({"host": "h2"}, all_ids[3:])]
    out = json.loads(ok(run_bk("snapshots", "--json", "-g", "tags", env=env)).stdout)
    assert [(g["group_key"], len(g["snapshots"])) for g in out] == [
        ({"tags": []}, 1), ({"tags": ["a"]}, 2), ({"tags": ["b"]}, 1)]
    text = ok(run_bk("snapshots", "-g", "host,paths", env=env)).stdout.decode()
    assert text.count("snapshots for (host h1, paths [") == 1 and "snapshots for (host h2" in text
    assert text.index("host h1") < text.index(all_ids[0][:8]) < text.index("host h2") < text.index(all_ids[3][:8])


def test_compact_leaves_out_paths_and_size(three):
    env, all_ids = three
    out = ok(run_bk("snapshots", "--compact", env=env)).stdout.decode()
    head = out.splitlines()[0].split()
    assert head == ["ID", "Time", "Host", "Tags"]
    assert all(i[:8] in out for i in all_ids) and "s1" not in out
    assert "Paths" in ok(run_bk("snapshots", env=env)).stdout.decode()


@pytest.mark.parametrize("args", [("--group-by", "bogus"), ("--latest", "0")])
def test_bad_values_are_usage_errors(three, args):
    env, _ = three
    r = run_bk("snapshots", *args, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
