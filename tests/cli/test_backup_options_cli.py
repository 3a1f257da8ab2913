"""restic's backup options (issue 8.8) through the real ``bk``: --exclude-caches,
--exclude-larger-than, --files-from(-verbatim, -raw), --skip-if-unchanged,
--stdin-from-command, --compression per run, and sizes everywhere (units.parse_size)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.support.kit import cli_env, ok, run_bk, write_file

CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"



def listed(env: dict, root) -> set[str]:
    entries = json.loads(ok(run_bk("--json", "ls", "-R", "latest", root, env=env)).stdout)["entries"]
    return {os.path.relpath(e["path"], root) for e in entries if e["path"] != os.fspath(root)}


def n_snapshots(env: dict) -> int:
    return len(json.loads(ok(run_bk("--json", "snapshots", env=env)).stdout))


@pytest.fixture
def env(tmp_path):
    e = cli_env(tmp_path / "repo", tmp_path / "cache")
    ok(run_bk("init", env=e))
    return e


def test_exclude_caches_and_larger_than(tmp_path, env):
    src = tmp_path / "src"
    write_file(src / "cache/CACHEDIR.TAG", CACHEDIR_SIGNATURE + b"\n# made by a browser\n")
    write_file(src / "cache/blob", b"x")
    write_file(src / "fake/CACHEDIR.TAG", b"not the signature\n")
    write_file(src / "fake/blob", b"x")
    write_file(src / "big.bin", b"b" * 3000)
    write_file(src / "edge.bin", b"e" * 2048)
    write_file(src / "small", b"s")
    ok(run_bk("backup", "--exclude-caches", "--exclude-larger-than", "2K", src, env=env))
    assert listed(env, src) == {
        "cache", "cache/CACHEDIR.TAG", "fake", "fake/CACHEDIR.TAG", "fake/blob", "edge.bin", "small",
    }
    ok(run_bk("backup", "--exclude-larger-than", "0.5k", src, env=env))
    assert "edge.bin" not in listed(env, src) and "small" in listed(env, src)
    r = run_bk("backup", "--exclude-larger-than", "12 parsecs", src, env=env)
    assert r.returncode == 2 and "--exclude-larger-than" in r.stderr


def test_files_from_variants(tmp_path, env):
    src = tmp_path / "src"
    for rel in ("a.txt", "b.txt", "c.log", " spaced ", "star*", "raw\nline"):
        write_file(src / rel, b"x")
    lst = tmp_path / "list"
    lst.write_text(f"# comment\n\n  {src}/*.txt  \n{src}/nothing-*\n")
    r = ok(run_bk("backup", "--files-from", lst, env=env))
    assert "nothing-*" in r.stderr  # a pattern that matches nothing is named, then skipped
    assert listed(env, src) == {"a.txt", "b.txt"}

    verb = tmp_path / "verbatim"
    verb.write_bytes(f"{src}/ spaced \n\n{src}/star*\n".encode())
    ok(run_bk("backup", "--files-from-verbatim", verb, env=env))
    assert listed(env, src) == {" spaced ", "star*"}

    raw = tmp_path / "raw"
    raw.write_bytes(os.fsencode(src / "raw\nline") + b"\0" + os.fsencode(src / "c.log") + b"\0")
    ok(run_bk("backup", "--files-from-raw", raw, env=env))
    assert listed(env, src) == {"raw\nline", "c.log"}

    # - reads the list from stdin; combined with path arguments
    ok(run_bk("backup", "--files-from-raw", "-", src / "a.txt", env=env, input=os.fsencode(src / "b.txt") + b"\0"))
    assert listed(env, src) == {"a.txt", "b.txt"}

    raw.write_bytes(os.fsencode(src / "c.log"))  # no final NUL
    r = run_bk("backup", "--files-from-raw", raw, env=env)
    assert r.returncode == 2 and "NUL" in r.stderr
    r = run_bk("backup", "--files-from", tmp_path / "missing", env=env)
    assert r.returncode == 2 and "--files-from" in r.stderr


def test_skip_if_unchanged(env, tmp_path):
    # the source's directories above it are part of the snapshot: keep them quiet (/tmp is
    # busy on a shared machine) by working below /dev/shm when there is one
    base = Path(tempfile.mkdtemp(prefix="bk-skip-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else tmp_path))
    try:
        src = base / "src"
        write_file(src / "f", b"one")
        ok(run_bk("backup", "--skip-if-unchanged", src, env=env))  # no parent yet: saved
        assert n_snapshots(env) == 1
        r = ok(run_bk("--json", "backup", "--skip-if-unchanged", src, env=env))
        doc = json.loads(r.stdout)
        assert doc["skipped"] is True and doc["snapshot_id"] is None and n_snapshots(env) == 1
        r = ok(run_bk("backup", "--skip-if-unchanged", src, env=env))
        assert "no new snapshot" in r.stderr
        write_file(src / "f", b"two")
        ok(run_bk("backup", "--skip-if-unchanged", src, env=env))
        assert n_snapshots(env) == 2
        ok(run_bk("backup", src, env=env))  # without the flag: a snapshot every time
        assert n_snapshots(env) == 3
    finally:
        shutil.rmtree(base)


def test_ignore_inode_and_ctime(tmp_path, env):
    """A file copied over itself with its mtime (a new inode and ctime) is read again,
    unless both are ignored (restic's --ignore-inode --ignore-ctime)."""
    src = tmp_path / "src"
    f = src / "f.bin"
    write_file(f, os.urandom(50_000))
    ok(run_bk("backup", src, env=env))

    def recopy_and_back_up(*flags):
        shutil.copy2(f, src / "tmp")
        os.replace(src / "tmp", f)
        return json.loads(ok(run_bk("--json", "backup", *flags, src, env=env)).stdout)

    assert recopy_and_back_up()["files_read"] == 1
    assert recopy_and_back_up("--ignore-inode")["files_read"] == 1
    assert recopy_and_back_up("--ignore-inode", "--ignore-ctime")["files_read"] == 0


def test_stdin_from_command(tmp_path, env):
    r = ok(run_bk("--json", "backup", "--stdin-from-command", "--stdin-filename", "dump.sql", "--",
                  "sh", "-c", "echo 'CREATE TABLE t;'; echo 'INSERT 1;'", env=env))
    assert json.loads(r.stdout)["snapshot_id"]
    out = tmp_path / "out"
    ok(run_bk("restore", "latest", "--target", out, env=env))
    assert (out / "dump.sql").read_bytes() == b"CREATE TABLE t;\nINSERT 1;\n"

    ok(run_bk("backup", "--stdin", "--stdin-filename", "piped.txt", env=env, input=b"piped\n"))
    ok(run_bk("restore", "latest", "--target", tmp_path / "out2", env=env))
    assert (tmp_path / "out2" / "piped.txt").read_bytes() == b"piped\n"
    r = run_bk("backup", "--stdin", "/etc/hostname", env=env)
    assert r.returncode == 2 and "stdin" in r.stderr

    r = run_bk("backup", "--stdin-from-command", "--", "sh", "-c", "echo partial; exit 7", env=env)
    assert r.returncode == 1 and "exited with status 7" in r.stderr and "Traceback" not in r.stderr
    assert n_snapshots(env) == 2
    r = run_bk("backup", "--stdin-from-command", "--", "/nonexistent/dumper", env=env)
    assert r.returncode == 1 and "cannot run" in r.stderr
    assert n_snapshots(env) == 2
    r = run_bk("backup", "--stdin-from-command", env=env)
    assert r.returncode == 2 and "needs a command" in r.stderr
    assert n_snapshots(env) == 2


def test_compression_per_run(tmp_path, env):
    src = tmp_path / "src"
    write_file(src / "text", b"the same line again and again\n" * 40000)  # ~1.2 MB, compresses well
    off = json.loads(ok(run_bk("--json", "backup", "--compression", "off", src, env=env)).stdout)
    assert off["bytes_added"] > 1_100_000
    env2 = cli_env(tmp_path / "repo2", tmp_path / "cache2")
    ok(run_bk("init", "--compression", "0", env=env2))  # a repository that stores raw ...
    mx = json.loads(ok(run_bk("--json", "backup", "--compression", "max", src, env=env2)).stdout)
    assert mx["bytes_added"] < 100_000  # ... still compresses a run that asks for it
    auto = json.loads(ok(run_bk("--json", "backup", "--force", "--compression", "auto", src, env=env2)).stdout)
    assert auto["bytes_added"] < 10_000  # same chunks: nothing new, whatever the level
    out = tmp_path / "out"
    ok(run_bk("restore", "latest", "--target", out, env=env2))
    assert (out / os.fspath(src).lstrip("/") / "text").read_bytes() == (src / "text").read_bytes()
    for bad in ("30", "fast", "-1"):
        r = run_bk("backup", "--compression", bad, src, env=env)
        assert r.returncode == 2 and "--compression" in r.stderr, bad


def test_sizes_everywhere(tmp_path, env):
    src = tmp_path / "src"
    write_file(src / "f", os.urandom(5000))
    ok(run_bk("backup", src, env=env))
    ok(run_bk("check", "--read-data-subset", "50M", env=env))
    ok(run_bk("check", "--read-data-subset", "1.5GiB", env=env))
    ok(run_bk("prune", "--max-unused", "1.5M", "--dry-run", env=env))
    ok(run_bk("prune", "--max-unused", "2G", "--dry-run", env=env))
    for args in (("check", "--read-data-subset", "50Q"), ("prune", "--max-unused", "5X"), ("check", "--read-data-subset", "0")):
        r = run_bk(*args, env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, args
    env3 = cli_env(tmp_path / "repo3", tmp_path / "cache3")
    ok(run_bk("--json", "init", "--pack-size", "4MiB", env=env3))
    for bad in ("0", "-5", "12 apples", "100K"):
        r = run_bk("init", "--pack-size", bad, env=cli_env(tmp_path / f"r-{bad}", tmp_path / "c"))
        assert r.returncode == 2 and "--pack-size" in r.stderr, bad
        assert not (tmp_path / f"r-{bad}").exists()


def test_help_names_every_option(env):
    out = ok(run_bk("backup", "--help", env=env)).stdout.decode()
    for opt in (
        "--exclude-caches", "--exclude-larger-than", "--files-from", "--files-from-verbatim", "--files-from-raw",
        "--skip-if-unchanged", "--stdin-from-command", "--stdin", "--compression", "--ignore-inode", "--ignore-ctime",
    ):
        assert opt in out, opt
    out = ok(run_bk("restore", "--help", env=env)).stdout.decode()
    for opt in ("--include", "--exclude", "--iinclude", "--iexclude", "--include-file", "--iexclude-file"):
        assert opt in out, opt
    for cmd, opt in (("check", "SIZE"), ("init", "--pack-size")):
        assert opt in ok(run_bk(cmd, "--help", env=env)).stdout.decode()
