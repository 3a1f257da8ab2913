"""Choosing a snapshot and a part of it, as restic users write it.

``latest`` honours ``--host``, ``--tag`` and ``--path`` on ls, restore and diff;
``REF:PATH`` names a folder inside a snapshot; ``ls`` is recursive unless ``--max-depth``.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.support.kit import cli_env, ok, run_bk, write_file



@pytest.fixture(scope="module")
def two_hosts(tmp_path_factory):
    """Snapshot of s1 from host h1 (older), then of s2 from host h2 tagged t (newer)."""
    base = tmp_path_factory.mktemp("select")
    s1, s2 = base / "s1", base / "s2"
    write_file(s1 / "d" / "deep" / "f.txt", b"one\n")
    write_file(s1 / "top.txt", b"top\n")
    write_file(s2 / "g.txt", b"two\n")
    env = cli_env(base / "repo", base / "cache")
    ok(run_bk("init", env=env))
    ok(run_bk("backup", s1, "--host", "h1", env=env))
    ok(run_bk("backup", s2, "--host", "h2", "--tag", "t", env=env))
    snaps = json.loads(ok(run_bk("snapshots", "--json", env=env)).stdout)
    return base, s1, s2, env, {s["host"]: s["id"] for s in snaps}


def ls(env, *args) -> list[str]:
    return ok(run_bk("ls", *args, env=env)).stdout.decode().splitlines()


def test_ls_is_recursive_by_default(two_hosts):
    _base, s1, _s2, env, _ids = two_hosts
    assert f"{s1}/d/deep/f.txt" in ls(env, "latest", "--host", "h1")
    assert ls(env, "latest", "--host", "h1") == ls(env, "latest", "--host", "h1", "-R")  # still accepted
    assert ls(env, "latest", "--host", "h1", "--recursive", str(s1)) == ls(env, "latest", "--host", "h1", str(s1))


def test_ls_max_depth(two_hosts):
    _base, s1, _s2, env, _ids = two_hosts
    assert ls(env, "latest", "--host", "h1", str(s1), "--max-depth", "1") == [str(s1), f"{s1}/d", f"{s1}/top.txt"]
    assert ls(env, "latest", "--host", "h1", str(s1), "--max-depth", "0") == [str(s1)]
    two = ls(env, "latest", "--host", "h1", str(s1), "-d", "2")
    assert f"{s1}/d/deep" in two and f"{s1}/d/deep/f.txt" not in two
    r = run_bk("ls", "latest", "--max-depth", "-1", env=env)
    assert r.returncode == 2


def test_ls_ref_colon_path(two_hosts):
    _base, s1, _s2, env, ids = two_hosts
    assert ls(env, f"{ids['h1'][:8]}:{s1}/d") == [f"{s1}/d", f"{s1}/d/deep", f"{s1}/d/deep/f.txt"]
    assert ls(env, f"latest:{s1}/d", "--host", "h1", "-d", "1") == [f"{s1}/d", f"{s1}/d/deep"]
    r = run_bk("ls", f"latest:{s1}", str(s1), env=env)
    assert r.returncode == 2


def test_latest_honours_host_tag_and_path(two_hosts):
    _base, s1, s2, env, _ids = two_hosts
    assert f"{s2}/g.txt" in ls(env, "latest")  # the newest of all
    assert f"{s1}/top.txt" in ls(env, "latest", "--host", "h1")
    assert f"{s1}/top.txt" in ls(env, "latest", "--path", str(s1))
    assert f"{s2}/g.txt" in ls(env, "latest", "--tag", "t")
    r = run_bk("ls", "latest", "--host", "nobody", env=env)
    assert r.returncode == 1 and "no snapshot" in r.stderr
    doc = json.loads(ok(run_bk("diff", "latest", "latest", "--host", "h1", "--json", env=env)).stdout)
    assert doc is not None
    r = run_bk("diff", "latest:/x", "latest", env=env)
    assert r.returncode == 2


def test_restore_latest_with_path_filter_and_subfolder(two_hosts, tmp_path):
    _base, s1, s2, env, ids = two_hosts
    # the issue: latest --path FILE used to pick the newest snapshot of any path, then fail
    ok(run_bk("restore", "latest", "--path", str(s1), "--target", tmp_path / "a", env=env))
    assert (tmp_path / "a" / str(s1).lstrip("/") / "top.txt").read_bytes() == b"top\n"
    assert not (tmp_path / "a" / str(s2).lstrip("/")).exists()
    # restic's form for a folder inside the snapshot
    # restic's form for a folder inside the snapshot: its contents go straight into the target
    ok(run_bk("restore", f"latest:{s1}/d", "--host", "h1", "--target", tmp_path / "b", env=env))
    assert (tmp_path / "b" / "deep" / "f.txt").read_bytes() == b"one\n"
    assert sorted(os.listdir(tmp_path / "b")) == ["deep"]
    # a path no snapshot includes: the message shows the REF:PATH form
    r = run_bk("restore", "latest", "--path", f"{s1}/d", "--target", tmp_path / "c", env=env)
    assert r.returncode == 1 and f"latest:{s1}/d" in r.stderr, r.stderr
    assert not (tmp_path / "c").exists()


def test_restore_id_with_path_keeps_the_old_meaning(two_hosts, tmp_path):
    _base, s1, _s2, env, ids = two_hosts
    ok(run_bk("restore", ids["h1"][:8], "--path", f"{s1}/d", "--target", tmp_path / "old", env=env))
    assert (tmp_path / "old" / str(s1).lstrip("/") / "d" / "deep" / "f.txt").exists()
    assert not (tmp_path / "old" / str(s1).lstrip("/") / "top.txt").exists()
    r = run_bk("restore", f"{ids['h1'][:8]}:{s1}", "--path", f"{s1}/d", "--target", tmp_path / "x", env=env)
    assert r.returncode == 2


def test_ls_sort_and_reverse_as_restic(tmp_path):
    """restic's ls --sort name|size|time|extension and --reverse (ties by path)."""
    src = tmp_path / "s"
    for name, size, mtime in (("b.txt", 30, 300), ("a.log", 10, 200), ("c.bin", 20, 100)):
        write_file(src / name, b"x" * size)
        os.utime(src / name, ns=(mtime * 10**9, mtime * 10**9))
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    ok(run_bk("init", env=env))
    ok(run_bk("backup", src, env=env))

    def names(*args) -> list[str]:
        return [p.rsplit("/", 1)[1] for p in ls(env, "latest", str(src), "-d", "1", *args) if p != str(src)]

    assert names() == ["a.log", "b.txt", "c.bin"]
    assert names("--sort", "size") == ["a.log", "c.bin", "b.txt"]
    assert names("-s", "time") == ["c.bin", "a.log", "b.txt"]
    assert names("--sort", "extension") == ["c.bin", "a.log", "b.txt"]
    assert names("--reverse") == ["c.bin", "b.txt", "a.log"]
    assert names("--sort", "size", "--reverse") == ["b.txt", "c.bin", "a.log"]
    doc = json.loads(ok(run_bk("ls", "latest", str(src), "-d", "1", "--sort", "size", "--json", env=env)).stdout)
    assert [e["path"].rsplit("/", 1)[1] for e in doc["entries"]][-1] == "b.txt"
    r = run_bk("ls", "latest", "--sort", "colour", env=env)
    assert r.returncode == 2 and "cannot sort by" in r.stderr
