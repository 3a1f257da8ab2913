"""A repository bk may not write to: ``--no-lock`` reads it, and the lock error says so.

The repository is mounted read-only (``mount --bind -o ro``: ``chmod`` does not stop
root); the tests say why they skip where mounting is not allowed.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.support.kit import backed_up_repo, cli_env, ok, run_bk, write_file



@pytest.fixture(scope="module")
def ro(tmp_path_factory):
    """(env for the read-only repository, command prefix, source dir, repo listing)."""
    base = tmp_path_factory.mktemp("ro")
    src, env = backed_up_repo(base)
    write_file(src / "c.txt", b"gamma\n")
    ok(run_bk("backup", src, env=env))
    (base / "repo" / "catalog").unlink()  # stale: snapshots would rebuild and rewrite it
    before = sorted(str(p.relative_to(base / "repo")) for p in (base / "repo").rglob("*"))
    mnt = base / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "--bind", "-o", "ro", str(base / "repo"), str(mnt)], capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"a read-only bind mount needs root with CAP_SYS_ADMIN: {r.stderr.strip()}")
    try:
        yield cli_env(mnt, base / "cache2"), [], src, before, base
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
        after = sorted(str(p.relative_to(base / "repo")) for p in (base / "repo").rglob("*"))
        assert after == before


def test_the_store_really_refuses_writes(ro):
    env, prefix, *_ = ro
    r = subprocess.run([*prefix, "touch", os.path.join(env["BK_REPOSITORY"], "locks", "x")], capture_output=True)
    assert r.returncode != 0


@pytest.mark.parametrize("cmd", [["ls", "latest"], ["check"], ["diff", "latest", "latest"], ["restore", "latest", "--target", "{tmp}"]])
def test_read_commands_name_no_lock_when_the_lock_write_is_refused(ro, cmd, tmp_path):
    env, prefix, *_ = ro
    r = run_bk(*[c.replace("{tmp}", str(tmp_path / "t")) for c in cmd], env=env, prefix=prefix)
    assert r.returncode == 11, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--no-lock" in lines[0] and "lock" in lines[0], r.stderr
    assert "Read-only" in lines[0] or "ermission" in lines[0]


def test_ls_restore_diff_check_with_no_lock(ro, tmp_path):
    env, prefix, src, *_ = ro
    names = [e["path"] for e in json.loads(ok(run_bk("--no-lock", "ls", "latest", "--json", "-R", env=env, prefix=prefix)).stdout)["entries"]]
    assert any(n.endswith("/c.txt") for n in names)
    target = tmp_path / "t"
    ok(run_bk("restore", "latest", "--target", target, "--no-lock", env=env, prefix=prefix))
    assert (target / str(src).lstrip("/") / "sub" / "b.txt").read_bytes() == b"beta\n"
    snaps = json.loads(ok(run_bk("snapshots", "--json", "--no-lock", env=env, prefix=prefix)).stdout)
    r = ok(run_bk("diff", snaps[0]["id"], snaps[1]["id"], "--no-lock", env=env, prefix=prefix))
    assert b"c.txt" in r.stdout
    r = ok(run_bk("check", "--no-lock", env=env, prefix=prefix))
    assert "no errors" in r.stderr
    ok(run_bk("check", "--read-data", "--no-lock", env=env, prefix=prefix))
    ok(run_bk("cat", "snapshot", "latest", "--no-lock", env=env, prefix=prefix))


def test_snapshots_with_a_stale_catalog_does_not_need_to_write_it(ro):
    env, prefix, *_ = ro
    # with or without --no-lock (snapshots takes no lock): the listing is the truth
    for extra in ([], ["--no-lock"]):
        snaps = json.loads(ok(run_bk("snapshots", "--json", *extra, env=env, prefix=prefix)).stdout)
        assert len(snaps) == 2


def test_no_lock_is_refused_by_commands_that_write(ro, tmp_path):
    env, prefix, src, *_ = ro
    writable = cli_env(tmp_path / "repo", tmp_path / "cache")
    ok(run_bk("init", env=writable))
    (tmp_path / "newpw").write_text("another password\n")
    for cmd in (["backup", src], ["forget", "--keep-last", "1"], ["prune"], ["key", "add", "--new-password-file", tmp_path / "newpw"]):
        r = run_bk(*cmd, "--no-lock", env=writable)
        assert r.returncode == 2 and "--no-lock" in r.stderr, (cmd, r.stderr)
    assert not list((tmp_path / "repo").glob("snapshots/*"))


def test_backup_dry_run_writes_nothing_not_even_a_lock(ro):
    env, prefix, src, *_ = ro
    write_file(src / "new.txt", b"new\n")
    r = ok(run_bk("backup", "--dry-run", src, env=env, prefix=prefix))
    assert "nothing was written" in r.stderr


FIND_STATS_DUMP = (["find", "*.txt"], ["stats"], ["stats", "--mode", "raw-data"], ["dump", "latest", "{src}/a.txt"])


def test_find_stats_dump_with_no_lock_on_the_read_only_repository(ro):
    env, prefix, src, *_ = ro
    for cmd in FIND_STATS_DUMP:
        r = ok(run_bk(*[c.replace("{src}", str(src)) for c in cmd], "--no-lock", env=env, prefix=prefix))
        assert r.stdout, cmd
    # the fixture's teardown checks that the repository is as it was


def test_find_stats_dump_with_no_lock_leave_a_stale_catalog_alone(ro, tmp_path):
    """As snapshots and ls: a command under --no-lock writes nothing, not even the catalog
    it found stale (the writable copy shows what a read-only store would only refuse)."""
    import shutil

    _env, _prefix, src, _before, base = ro
    copy = tmp_path / "repo"
    shutil.copytree(base / "repo", copy)
    env = cli_env(copy, tmp_path / "cache")
    assert not (copy / "catalog").exists()
    for cmd in FIND_STATS_DUMP:
        ok(run_bk(*[c.replace("{src}", str(src)) for c in cmd], "--no-lock", env=env))
        assert not (copy / "catalog").exists(), cmd
    ok(run_bk("find", "*.txt", env=env))  # with a lock, the catalog is repaired
    assert (copy / "catalog").exists()
