"""What bk prints: version, shell completion, tables when piped, names that are data (no
markup, no emoji codes, control characters escaped), --json errors and message streams."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from tests.support.kit import bk_executable, cli_env, ok, run_bk, write_file

#: A directory name that is rich markup, an emoji code and a very long path at once.
MARKUP = ":smile: [bold]x[/bold] [red]"
#: A file name that would retitle the terminal and ring its bell.
ESCAPE = "esc\x1b]0;pwned\x07name"



def test_version():
    from backupkit import __version__

    env = {k: v for k, v in os.environ.items() if not k.startswith("BK_")}
    for args in (["--version"], ["version"], ["snapshots", "--version"]):
        r = ok(run_bk(*args, env=env))
        assert r.stdout.decode().startswith(f"bk {__version__} ")
    doc = json.loads(ok(run_bk("version", "--json", env=env)).stdout)
    assert doc["message_type"] == "version" and doc["version"] == __version__


@pytest.mark.skipif(shutil.which("bash") is None, reason="bash is not installed")
def test_bash_completion_completes_commands_and_options(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("BK_")}
    env["PATH"] = os.path.dirname(bk_executable()) + os.pathsep + env.get("PATH", "")
    script = ok(run_bk("completion", "bash", env=env)).stdout.decode()
    (tmp_path / "bk.bash").write_text(script)

    def complete(words: str) -> list[str]:
        line = f'source {tmp_path / "bk.bash"}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}}-1)); _bk_completion bk; printf "%s\\n" "${{COMPREPLY[@]}}"'
        r = subprocess.run(["bash", "-c", line], env=env, capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout.split()

    assert "snapshots" in complete("bk snap")
    assert "--no-lock" in complete("bk --no")
    assert "--keep-last" in complete("bk forget --keep-l")
    for shell in ("zsh", "fish"):
        assert "_BK_COMPLETE" in ok(run_bk("completion", shell, env=env)).stdout.decode()
    r = run_bk("completion", "tcsh", env=env)
    assert r.returncode == 2


def test_help_and_completion_import_nothing_heavy():
    """``bk --help`` stays fast (< 0.3 s) by importing no engine, crypto or table code;
    checked by what is imported, not by timing."""
    code = (
        "import sys\n"
        "sys.argv = ['bk', *sys.argv[1:]]\n"
        "from backupkit_cli.entry import run\n"  # the console script's entry (keyahead first)
        "try:\n    run()\nexcept SystemExit:\n    pass\n"
        "heavy = ('cryptography', 'zstandard', 'msgpack', 'backupkit.repo', 'rich.table', 'rich.progress', 'boto3', 'botocore')\n"
        "sys.stderr.write(repr(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("BK_")}
    for args in (["--help"], ["snapshots", "--help"], ["completion", "bash"], ["--version"]):
        r = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60)
        assert r.stderr.endswith("[]"), (args, r.stderr)


@pytest.fixture(scope="module")
def named(tmp_path_factory):
    base = tmp_path_factory.mktemp("names")
    src = base / ("a-rather-long-directory-name-" * 4 + MARKUP)
    write_file(src / ESCAPE, b"x\n")
    write_file(src / "plain.txt", b"y\n")
    env = cli_env(base / "repo", base / "cache")
    env.pop("COLUMNS")  # what a pipe gets: no terminal width at all
    ok(run_bk("init", env=env))
    return base, src, env


def test_names_print_as_typed_and_escaped(named):
    base, src, env = named
    r = ok(run_bk("backup", src, "-v", env=env))
    assert f"{MARKUP}/esc\\x1b]0;pwned\\x07name" in r.stderr  # -v lines
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr and "😄" not in r.stderr
    out = ok(run_bk("ls", "latest", env=env)).stdout.decode()
    assert f"{MARKUP}/esc\\x1b]0;pwned\\x07name\n" in out and "\x1b" not in out
    out = ok(run_bk("ls", "-l", "latest", env=env)).stdout.decode()
    assert "\x1b" not in out and MARKUP in out
    # the snapshots table, piped: one line per snapshot, the whole path, nothing wrapped
    table = ok(run_bk("snapshots", env=env)).stdout.decode()
    rows = [ln for ln in table.splitlines() if str(src) in ln]
    assert len(rows) == 1 and len(rows[0]) > 80 and "😄" not in table
    # a message naming a path
    r = run_bk("ls", "latest", str(src / ESCAPE) + "-missing", env=env)
    assert r.returncode != 0 and "\\x1b]0;pwned\\x07name-missing" in r.stderr and "\x1b" not in r.stderr
    # the repository location in messages is data too
    r = run_bk("-r", base / MARKUP, "snapshots", env=env)
    assert r.returncode == 10 and MARKUP in r.stderr
    r = ok(run_bk("backup", src, "-v", env=env))  # again: the unchanged files' lines
    assert any(ln.startswith("unchanged ") and ln.endswith(f"{MARKUP}/esc\\x1b]0;pwned\\x07name") for ln in r.stderr.splitlines())
    assert "\x1b" not in r.stderr and "\x07" not in r.stderr and "😄" not in r.stderr


def test_diff_and_warnings_escape_names(named, tmp_path):
    base, src, env = named
    ok(run_bk("backup", src, env=env))
    (src / ESCAPE).write_bytes(b"changed\n")
    ok(run_bk("backup", src, env=env))
    snaps = json.loads(ok(run_bk("snapshots", "--json", env=env)).stdout)
    out = ok(run_bk("diff", snaps[-2]["id"], snaps[-1]["id"], env=env)).stdout.decode()
    assert "esc\\x1b]0;pwned\\x07name" in out and "\x1b" not in out


def test_sizes_are_iec(named):
    _base, _src, env = named
    r = ok(run_bk("backup", _src, env=env))
    assert "B total" in r.stderr
    assert not any(u in r.stderr for u in (" kB", " MB", " GB"))


def test_json_errors_are_json(named):
    _base, _src, env = named
    r = run_bk("ls", "zz", "--json", env=env)
    assert r.returncode == 2
    doc = json.loads(r.stderr)
    assert doc == {"message_type": "exit_error", "code": 2, "message": doc["message"]} and "zz" in doc["message"]
    r = run_bk("--json", "snapshots", "--no-such-option", env=env)
    assert r.returncode == 2 and json.loads(r.stderr)["code"] == 2
    r = run_bk("--json", "-r", _base / "nothing", "snapshots", env=env)
    assert r.returncode == 10 and json.loads(r.stderr)["message_type"] == "exit_error"
    assert r.stdout == b""


def test_backup_and_restore_stream_status_lines(tmp_path):
    src = tmp_path / "src"
    for i in range(4):
        write_file(src / f"f{i}", os.urandom(3_000_000))
    env = cli_env(tmp_path / "repo", tmp_path / "cache") | {"BK_PROGRESS_FPS": "60"}
    ok(run_bk("init", env=env))
    r = ok(run_bk("backup", src, "--json", env=env))
    lines = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert lines[-1]["message_type"] == "summary" and lines[-1]["snapshot_id"]
    assert lines[-1]["files_new"] == 4 and lines[-1]["total_bytes_processed"] == 12_000_000
    status = [d for d in lines[:-1] if d["message_type"] == "status"]
    assert status and len(status) == len(lines) - 1, "only status lines before the summary"
    assert all(0.0 <= d["percent_done"] <= 1.0 and d["total_bytes"] == 12_000_000 for d in status)
    assert [d["bytes_done"] for d in status] == sorted(d["bytes_done"] for d in status)
    r = ok(run_bk("restore", "latest", "--target", tmp_path / "out", "--json", env=env))
    lines = [json.loads(ln) for ln in r.stdout.splitlines()]
    assert lines[-1]["message_type"] == "summary" and lines[-1]["bytes_restored"] == 12_000_000
    assert all(d["message_type"] == "status" for d in lines[:-1])
    # a ZIP on stdout gets no status lines mixed in
    r = ok(run_bk("restore", "latest", "--json", env=env))
    assert r.stdout[:2] == b"PK"


def test_json_error_lines_for_unreadable_files():
    from tests.support.kit import reachable_tmpdir, unprivileged_prefix

    prefix, who = unprivileged_prefix()
    with reachable_tmpdir("bk-json-errors-") as base:  # reachable by nobody
        src = base / "src"
        write_file(src / "ok.txt", b"fine\n")
        write_file(src / "secret.txt", b"no\n", mode=0o000)
        env = cli_env(base / "repo", base / "cache")
        ok(run_bk("init", env=env))
        if who == "nobody":
            subprocess.run(["chown", "-R", "nobody:nogroup", str(base / "repo"), str(base / "cache")], check=True)
        r = run_bk("--json", "backup", src, env=env, prefix=prefix)
        assert r.returncode == 3, r.stderr
        errors = [json.loads(ln) for ln in r.stderr.splitlines()]
        assert [e["item"] for e in errors] == [str(src / "secret.txt")]
        assert errors[0]["message_type"] == "error" and errors[0]["during"] == "archival" and errors[0]["error"]["message"]


def test_key_list_json_times_are_iso_8601(named):
    from datetime import datetime

    _base, _src, env = named
    keys = json.loads(ok(run_bk("key", "list", "--json", env=env)).stdout)
    assert datetime.fromisoformat(keys[0]["created"]).tzinfo is not None


def test_json_warnings_and_errors_are_json_lines_in_every_command(tmp_path):
    """Under --json every line on stderr is a JSON object with message_type and message:
    warnings (here: a name in the store bk does not write) and errors (a damaged data
    pack) alike, whichever command prints them, restic's error shape included."""
    src = tmp_path / "src"
    write_file(src / "big.bin", os.urandom(300_000))
    write_file(src / "small.txt", b"small\n")
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    ok(run_bk("init", env=env))
    ok(run_bk("backup", src, env=env))
    (tmp_path / "repo" / "snapshots" / "README").write_text("not ours\n")
    for pack in (tmp_path / "repo" / "data").rglob("*"):
        if pack.is_file():
            data = bytearray(pack.read_bytes())
            data[len(data) // 2] ^= 0xFF
            pack.write_bytes(bytes(data))
    commands = {
        "backup": ["backup", src],
        "restore": ["restore", "latest", "--target", tmp_path / "out", "--no-cache"],
        "restore-archive": ["restore", "latest", "--format", "tar", "--no-cache"],
        "check": ["check", "--read-data"],
        "stats": ["stats"],
        "find": ["find", "*.txt"],
        "snapshots": ["snapshots"],
        "stats -v": ["-v", "stats"],  # and the request counts -v adds
    }
    for name, cmd in commands.items():
        r = run_bk("--json", *cmd, env=env)
        assert "Traceback" not in r.stderr, (name, r.stderr)
        lines = [json.loads(ln) for ln in r.stderr.splitlines() if ln.strip()]  # fails on a plain line
        assert all(isinstance(d["message"], str) and d["message_type"] in ("warning", "error", "exit_error", "store") for d in lines), (name, lines)
        warnings = [d for d in lines if d["message_type"] == "warning"]
        assert any("README" in d["message"] and d["error"]["message"] == d["message"] for d in warnings), (name, lines)
        if name.startswith("restore"):
            assert r.returncode == 1
            items = [d for d in lines if d["message_type"] == "error" and "item" in d]
            assert any(d["item"].endswith("big.bin") and d["during"] == "restore" for d in items), (name, lines)
        if name == "stats -v":
            assert lines[-1]["message_type"] == "store" and lines[-1]["requests"] > 0
        if name == "check":
            assert r.returncode == 1 and json.loads(r.stdout)["ok"] is False
