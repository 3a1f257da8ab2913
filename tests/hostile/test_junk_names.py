"""Issue 10.3: names that are not ours in the store are ignored with a warning."""

from __future__ import annotations

import os

import pytest

from tests.support.kit import cli_env, run_bk, write_file
from tests.hostile.run import problem, run_limited


@pytest.fixture(scope="module")
def junk(tmp_path_factory):
    base = tmp_path_factory.mktemp("junk")
    write_file(base / "src" / "a.txt", b"alpha\n")
    env = cli_env(base / "repo", base / "cache")
    assert run_bk("init", env=env).returncode == 0
    assert run_bk("backup", base / "src", env=env).returncode == 0
    for name in ("index/zz", "index/" + "ab" * 31, "snapshots/x", "snapshots/abcd", "locks/notes.txt"):
        (base / "repo" / name).write_bytes(os.urandom(100))
    (base / "repo" / "snapshots" / ("ef" * 32)).write_bytes(os.urandom(200))  # ours, unreadable
    return base, env


@pytest.mark.parametrize("command", [["snapshots"], ["ls", "latest"], ["check"], ["prune", "--dry-run"], ["diff", "latest", "latest"]])
def test_junk_names_are_ignored_with_a_warning(junk, command):
    base, env = junk
    r = run_limited(*command, env=env)
    assert problem(r) is None, r.stderr
    if command[0] in ("snapshots", "ls", "diff"):
        assert r.returncode == 0, r.stderr
        assert "warning: ignoring 'snapshots/x' in the store: not a name bk writes" in r.stderr
    if command[0] in ("ls", "check"):
        assert "warning: ignoring 'index/zz' in the store: not a name bk writes" in r.stderr


def test_an_unreadable_snapshot_does_not_hide_the_others(junk):
    base, env = junk
    r = run_limited("snapshots", env=env)
    assert r.returncode == 0 and b"src" in r.stdout
    assert [ln for ln in r.stderr.splitlines() if ln.startswith("warning: ") and f"snapshots/{'ef' * 32}" in ln and "left out" in ln]
