"""Global options anywhere on the command line, as restic, borg and kopia take them.

Every global option is tried after the command through the real ``bk``; the rewriting
itself (``backupkit_cli.argv``) is pinned on the real app for the tricky cases: values
that look like options, ``--``, and commands' own options with clashing names.
"""

from __future__ import annotations

import json

import pytest

from tests.support.kit import backed_up_repo, ok, run_bk, write_file



@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    base = tmp_path_factory.mktemp("globals")
    src, env = backed_up_repo(base)
    return base, src, env


def test_json_after_the_command(repo):
    _base, _src, env = repo
    assert len(json.loads(ok(run_bk("snapshots", "--json", env=env)).stdout)) == 1
    doc = json.loads(ok(run_bk("ls", "latest", "-R", "--json", env=env)).stdout)
    assert any(e["path"].endswith("/a.txt") for e in doc["entries"])
    keys = json.loads(ok(run_bk("key", "list", "--json", env=env)).stdout)
    assert len(keys) == 1


def test_quiet_and_verbose_after_the_command(repo):
    base, src, env = repo
    r = ok(run_bk("check", "-q", env=env))
    assert "no errors" not in r.stderr  # -q: the success line is not printed
    write_file(src / "c.txt", b"gamma\n")
    r = ok(run_bk("backup", src, "-v", env=env))
    assert "c.txt" in r.stderr and "store:" in r.stderr  # -v lists files and the request summary
    r = ok(run_bk("backup", src, "-vv", env=env))  # a bundle of counted flags
    assert "store:" in r.stderr
    # -v lists the unchanged files too (the walk reports them in batches)
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("unchanged")]
    assert any(ln.endswith("c.txt") for ln in lines), r.stderr


def test_repo_and_password_options_after_the_command(repo, tmp_path):
    base, _src, env = repo
    other = {k: v for k, v in env.items() if k not in ("BK_REPOSITORY", "BK_PASSWORD")}
    pwfile = tmp_path / "pw"
    pwfile.write_text(env["BK_PASSWORD"] + "\n")
    r = ok(run_bk("snapshots", "-r", base / "repo", "-p", pwfile, "--json", env=other))
    assert len(json.loads(r.stdout)) >= 1
    r = ok(run_bk("snapshots", f"--repo={base / 'repo'}", f"--password-file={pwfile}", env=other))
    assert "snapshot" in r.stderr
    r = ok(run_bk("snapshots", f"-r{base / 'repo'}", "--password-command", f"cat {pwfile}", "-q", env=other))
    assert r.stderr == ""
    # the last of two values wins, as when both are before the command
    r = run_bk("-r", base / "repo", "snapshots", "-r", tmp_path / "nothing-here", env=other | {"BK_PASSWORD": "x"})
    assert r.returncode == 10, r.stderr


def test_store_options_after_the_command(repo, tmp_path):
    _base, _src, env = repo
    ok(run_bk("snapshots", "--no-cache", "--connections", "3", "--retry-lock", "1s", env=env))
    ok(run_bk("snapshots", "--cache-dir", tmp_path / "cache2", env=env))
    assert (tmp_path / "cache2").exists()
    r = run_bk("snapshots", "-o", "s3.retries=3", env=env)  # reaches the store option check
    assert r.returncode == 2 and "s3" in r.stderr
    r = run_bk("snapshots", "--retry-lock", "soon", env=env)
    assert r.returncode == 2 and "duration" in r.stderr


def test_values_that_look_like_options_stay_values(repo, tmp_path):
    base, src, env = repo
    # --exclude's value is "-v": nothing is hoisted, the file named -v is excluded
    write_file(src / "-v", b"dash\n")
    ok(run_bk("backup", "--exclude", "-v", src, "--json", env=env))
    names = [e["path"] for e in json.loads(ok(run_bk("ls", "latest", "-R", "--json", env=env)).stdout)["entries"]]
    assert not any(n.endswith("/-v") for n in names) and any(n.endswith("/a.txt") for n in names)
    # after --, "-q" is a path to back up, not the global option
    ok(run_bk("backup", "--json", "--", "-v", env=env, cwd=src))
    names = [e["path"] for e in json.loads(ok(run_bk("ls", "latest", "-R", "--json", env=env)).stdout)["entries"]]
    assert any(n.endswith("/-v") for n in names)


def test_command_options_named_like_nothing_global_still_work(repo):
    _base, _src, env = repo
    # ls -l is ls's own; -lq is split: -l to ls, -q global
    r = ok(run_bk("ls", "latest", "-lqR", env=env))
    assert b"/src/" in r.stdout and b"-rw-" in r.stdout and r.stderr == ""
    r = run_bk("snapshots", "--no-such-option", env=env)
    assert r.returncode == 2 and "No such option" in r.stderr


# -- the rewriting on the real app: clashes and edge cases -----------------------------------

def _hoist(*args: str) -> list[str]:
    import typer

    from backupkit_cli.argv import hoist_global_options
    from backupkit_cli.main import app

    return hoist_global_options(typer.main.get_command(app), list(args))


def test_hoist_rules():
    assert _hoist("snapshots", "--json") == ["--json", "snapshots"]
    assert _hoist("-q", "ls", "latest", "-r", "R", "/x") == ["-q", "-r", "R", "ls", "latest", "/x"]
    assert _hoist("backup", "--tag", "--json", "D") == ["backup", "--tag", "--json", "D"]
    assert _hoist("backup", "D", "--", "--json") == ["backup", "D", "--", "--json"]
    assert _hoist("ls", "latest", "-lv") == ["-v", "ls", "latest", "-l"]
    assert _hoist("snapshots", "-rREPO") == ["-rREPO", "snapshots"]
    assert _hoist("snapshots", "-qr", "REPO") == ["-q", "-r", "REPO", "snapshots"]
    assert _hoist("key", "list", "--json") == ["--json", "key", "list"]
    assert _hoist("nosuch", "--json") == ["nosuch", "--json"]
    assert _hoist("--repo", "snapshots", "ls", "--json") == ["--repo", "snapshots", "--json", "ls"]


def test_no_command_option_shadows_a_global_one_by_accident():
    """A command may declare an option with a global option's name only on purpose: the
    command's own then wins after the command. Today none does; this lists the names so
    that a new clash is a decision, not a surprise."""
    import typer

    from backupkit_cli.argv import _Specs

    root = typer.main.get_command(app_())
    globals_ = set(_Specs(root.params).values)
    clashes = []
    stack = [("", root)]
    while stack:
        prefix, grp = stack.pop()
        for name, cmd in grp.commands.items():
            if hasattr(cmd, "commands"):
                stack.append((f"{prefix}{name} ", cmd))
            clashes += [f"{prefix}{name} {o}" for o in set(_Specs(cmd.params).values) & globals_]
    assert clashes == []


def app_():
    from backupkit_cli.main import app

    return app


def test_repository_file_names_the_repository(repo, tmp_path):
    """restic's --repository-file / RESTIC_REPOSITORY_FILE: the location read from a file;
    together with -r it is an error (exit 2), a flag beats the environment."""
    _base, _src, env = repo
    where = env["BK_REPOSITORY"]
    loc = tmp_path / "repo-location"
    loc.write_text(where + "\n")
    no_env = {k: v for k, v in env.items() if k != "BK_REPOSITORY"}
    ids = json.loads(ok(run_bk("snapshots", "--json", env=env)).stdout)
    assert json.loads(ok(run_bk("snapshots", "--json", "--repository-file", loc, env=no_env)).stdout) == ids
    assert json.loads(ok(run_bk("snapshots", "--json", env={**no_env, "BK_REPOSITORY_FILE": str(loc)})).stdout) == ids
    wrong = tmp_path / "elsewhere"
    wrong.write_text(str(tmp_path / "no-repo-here"))
    # the flag beats the environment's location
    assert ok(run_bk("snapshots", "--repository-file", loc, env={**env, "BK_REPOSITORY_FILE": str(wrong)}))
    both = run_bk("snapshots", "-r", where, "--repository-file", loc, env=no_env)
    assert both.returncode == 2 and "name the repository twice" in both.stderr
    for bad, says in ((tmp_path / "missing", "cannot read the repository file"), (tmp_path / "empty", "is empty")):
        if "empty" in str(bad):
            bad.write_text("\n")
        r = run_bk("snapshots", "--repository-file", bad, env=no_env)
        assert r.returncode == 2 and says in r.stderr, r.stderr


def test_from_repo_is_not_named_twice_by_a_repository_file():
    """copy/init --from-repo: the source's State must not keep the target's file."""
    from backupkit_cli.commands.fromrepo import source_state
    from backupkit_cli.context import State

    st = source_state(State(repository_file="/nonexistent/location-file"), "/src/repo", None, None)
    assert st.repo_url() == "/src/repo"


def test_limit_upload_and_download_hold_a_backup_and_a_restore(tmp_path):
    """restic's --limit-upload / --limit-download (KiB/s): 3 MiB at 1 MiB/s take at least
    two seconds each way (the bucket lets one second's worth through at once)."""
    import os
    import time

    from tests.support.kit import cli_env

    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    ok(run_bk("init", env=env))
    src = tmp_path / "src"
    write_file(src / "random.bin", os.urandom(3 << 20))
    t = time.monotonic()
    ok(run_bk("--limit-upload", "1024", "backup", src, env=env))
    assert time.monotonic() - t >= 1.8
    t = time.monotonic()
    ok(run_bk("restore", "latest", "--target", tmp_path / "out", "--limit-download", "1024", env=env))
    assert time.monotonic() - t >= 1.8
    assert (tmp_path / "out" / str(src).lstrip("/") / "random.bin").read_bytes() == (src / "random.bin").read_bytes()
    r = run_bk("--limit-upload", "0", "snapshots", env=env)
    assert r.returncode == 2, r.stderr
