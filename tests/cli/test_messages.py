"""Messages and exit codes a new user meets first: no repository yet, usage errors,
counts in words ("1 snapshot")."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.support.kit import cli_env, run_bk, write_file


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"{r.args[1:]} exited {r.returncode}: {r.stderr}"
    assert "Traceback" not in r.stderr
    return r


def fresh_env(home) -> dict[str, str]:
    """A machine where bk never ran: no BK_* variables, an empty home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BK_", "XDG_"))}
    env["HOME"] = str(home)
    return env


def test_first_snapshots_on_a_fresh_machine_says_there_is_no_repository(tmp_path):
    r = run_bk("snapshots", env=fresh_env(tmp_path))
    assert r.returncode == 10, r.stderr
    assert "no password" not in r.stderr
    assert "no repository" in r.stderr and "bk init" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_a_named_missing_repository_says_how_to_make_it(tmp_path):
    env = fresh_env(tmp_path)
    r = run_bk("-r", tmp_path / "nothing", "snapshots", env=env)
    assert r.returncode == 10 and f"bk -r {tmp_path / 'nothing'} init" in r.stderr, r.stderr
    # with a password too: the same advice
    r = run_bk("-r", tmp_path / "nothing", "ls", "latest", env=env | {"BK_PASSWORD": "x"})
    assert r.returncode == 10 and "init" in r.stderr, r.stderr


def test_an_existing_repository_without_a_password_still_asks_for_one(tmp_path):
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    ok(run_bk("init", env=env))
    r = run_bk("snapshots", env={k: v for k, v in env.items() if k != "BK_PASSWORD"})
    assert r.returncode != 0 and "no password" in r.stderr, r.stderr


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    base = tmp_path_factory.mktemp("msg")
    write_file(base / "src" / "a.txt", b"alpha\n")
    env = cli_env(base / "repo", base / "cache")
    ok(run_bk("init", env=env))
    ok(run_bk("backup", base / "src", env=env))
    return base, env


@pytest.mark.parametrize(
    "args",
    [
        ["ls", "zz"],  # not a snapshot reference
        ["restore", "not-hex!", "--target", "/tmp/x"],
        ["diff", "latest", "q"],
        ["snapshots", "--no-such-option"],
        ["backup"],  # nothing to back up
        ["restore", "latest", "--target", "/tmp/x", "--format", "zip"],
        ["cat", "nonsense"],
        ["forget", "--keep-last", "1", "--max-unused", "lots", "--prune"],
        ["prune", "--max-unused", "lots"],
        ["check", "--read-data-subset", "9/2"],
        ["--retry-lock", "soon", "snapshots"],
        ["snapshots", "-o", "nonsense"],
    ],
)
def test_usage_errors_exit_2(small, args):
    _base, env = small
    r = run_bk(*args, env=env)
    assert r.returncode == 2, f"{args}: {r.returncode} {r.stderr}"
    assert "Traceback" not in r.stderr


def test_counts_in_words(small):
    _base, env = small
    assert "1 snapshot\n" in ok(run_bk("snapshots", env=env)).stderr
    r = ok(run_bk("check", env=env))
    assert "checked 1 snapshot," in r.stderr and "snapshots" not in r.stderr
    r = ok(run_bk("forget", "--keep-last", "1", "--dry-run", env=env))
    assert "would remove 0 snapshots" in r.stderr
    assert "keep 1 snapshot" in r.stdout.decode()
