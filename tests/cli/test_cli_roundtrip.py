"""The round trip through the ``bk`` command in a subprocess.

Back up the every-kind tree, restore it to a directory and as ZIP (the default when
stdout is not a terminal), TAR and tar.zst, by ``--path``; back up again unchanged
(nothing read); stdin; ``--dry-run``; and a source with unreadable files, backed up by
a process that cannot read them (exit 3, snapshot saved, each error listed once).
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest
import zstandard

from tests.support.kit import (
    EveryKindTree,
    bk_executable,
    cli_env,
    diff_trees,
    hardlink_groups,
    make_every_kind_tree,
    ok,
    record_tree,
    run_bk,
    reachable_tmpdir,
    unprivileged_prefix,
    write_file,
)

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="round trips check owners and setuid bits: run as root")



def restored(target: Path, src: bytes) -> bytes:
    return os.path.join(os.fsencode(target), src.lstrip(b"/"))


def repo_listing(repo: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(repo):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.lstat(p)
            out[os.path.relpath(p, repo)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(tmp dir, every-kind tree, env, first backup's --json summary)."""
    base = tmp_path_factory.mktemp("cli")
    every = make_every_kind_tree(base / "data" / "src")
    env = cli_env(base / "repo", base / "cache")
    r = ok(run_bk("init", env=env))
    assert "created repository" in r.stderr
    r = ok(run_bk("--json", "backup", "--tag", "t1,t2", "--host", "cli-host", os.fsdecode(every.root), env=env))
    summary = json.loads(r.stdout.splitlines()[-1])
    return base, every, env, summary


def test_backup_json_and_snapshots_json(world):
    _base, every, env, summary = world
    assert summary["snapshot_id"] and summary["errors"] == [] and summary["files_read"] >= len(every.regular)
    # --path relative to the working directory matches the recorded absolute path
    snaps = json.loads(ok(run_bk("--json", "snapshots", "--host", "cli-host", "--path", "src", env=env, cwd=every.root + b"/..")).stdout)
    assert [s["id"] for s in snaps] == [summary["snapshot_id"]]
    assert snaps[0]["tags"] == ["t1", "t2"] and snaps[0]["paths"] == [os.fsdecode(every.root)]
    ref = f"snapshot/{summary['snapshot_id']}"
    listing = json.loads(ok(run_bk("--json", "ls", "-R", ref, os.fsdecode(every.root), env=env)).stdout)
    types = {e["path"]: e["type"] for e in listing["entries"]}
    assert types[os.fsdecode(every.path(every.fifo))] == "fifo"
    assert types[os.fsdecode(every.path(every.socket))] == "socket"
    assert types[os.fsdecode(every.path(b"\xff\xfe")).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")] == "file"


def test_restore_to_directory(world):
    base, every, env, _summary = world
    out = base / "restore-dir"
    ok(run_bk("restore", "latest", "--target", out, "--verify", env=env))
    got = record_tree(restored(out, every.root))
    assert diff_trees(record_tree(every.root), got) == []
    assert hardlink_groups(got) == {frozenset(every.hardlinks)}
    assert os.lstat(restored(out, every.path(every.sparse))).st_blocks * 512 <= 256 * 1024


def _want(every: EveryKindTree) -> dict[bytes, tuple[str, bytes | None]]:
    prefix = every.root.lstrip(b"/")
    out = {}
    for rel, r in record_tree(every.root).items():
        name = prefix if rel == b"." else prefix + b"/" + rel
        if r.type == "f":
            with open(every.path(rel) if rel != b"." else every.root, "rb") as f:
                out[name] = ("f", f.read())
        else:
            out[name] = (r.type, r.link)
    return out


def test_restore_default_stream_is_zip(world):
    _base, every, env, _summary = world
    r = ok(run_bk("restore", "latest", env=env))  # stdout is a pipe: a ZIP stream
    prefix = every.root.lstrip(b"/")
    with zipfile.ZipFile(io.BytesIO(r.stdout)) as zf:
        got = {}
        for zi in zf.infolist():
            raw = zi.filename.encode("utf-8" if zi.flag_bits & 0x800 else "cp437").rstrip(b"/")
            mode = zi.external_attr >> 16
            got[raw] = (mode, None if zi.is_dir() else zf.read(zi))
    for name, (t, body) in _want(every).items():
        if t in ("p",):
            assert name not in got
            continue
        mode, zbody = got[name]
        if t == "f":
            assert stat.S_ISREG(mode) and zbody == body, name
        elif t == "l":
            assert stat.S_ISLNK(mode) and zbody == body, name
        else:
            assert stat.S_ISDIR(mode), name


@pytest.mark.parametrize("fmt", ["tar", "tar.zst"])
def test_restore_tar_stream(world, fmt):
    _base, every, env, _summary = world
    data = ok(run_bk("restore", "latest", "--format", fmt, env=env)).stdout
    if fmt == "tar.zst":
        data = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    got = {}
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:", encoding="utf-8", errors="surrogateescape") as tf:
        for ti in tf:
            got[os.fsencode(ti.name)] = (ti, tf.extractfile(ti).read() if ti.isreg() else None)
    prefix = every.root.lstrip(b"/")
    links = [prefix + b"/" + p for p in every.hardlinks]
    disk = record_tree(every.root)
    for name, (t, body) in _want(every).items():
        ti, tbody = got[name]
        rel = b"." if name == prefix else name[len(prefix) + 1 :]
        if t != "l":
            assert ti.mode == disk[rel].mode, name
        if name in links and not ti.isreg():
            assert ti.type == tarfile.LNKTYPE and os.fsencode(ti.linkname) in links, name
        elif t == "f":
            assert ti.isreg() and tbody == body, name
        elif t == "l":
            assert ti.issym() and os.fsencode(ti.linkname) == body, name
        elif t == "p":
            assert ti.isfifo(), name
        else:
            assert ti.isdir(), name
    assert sum(got[n][0].isreg() for n in links) == 1


def test_restore_path_subtree_and_file(world):
    base, every, env, _summary = world
    out = base / "restore-path"
    sub = every.path(b"dir")
    # restic's SNAPSHOT:PATH: the folder's contents straight into the target
    ok(run_bk("restore", b"latest:" + sub, "--target", out, env=env))
    assert diff_trees(record_tree(sub), record_tree(os.fsencode(out))) == []
    out = base / "restore-file"
    one = every.path(every.big)
    ok(run_bk("restore", b"latest:" + one, "--target", out, env=env))
    assert os.listdir(os.fsencode(out)) == [every.big]
    with open(one, "rb") as a, open(os.path.join(os.fsencode(out), every.big), "rb") as b:
        assert a.read() == b.read()


def test_second_backup_reads_nothing(world):
    _base, every, env, summary = world
    r = ok(run_bk("--json", "backup", "--tag", "t1,t2", "--host", "cli-host", os.fsdecode(every.root), env=env))
    second = json.loads(r.stdout.splitlines()[-1])
    assert second["parent"] == summary["snapshot_id"]
    assert second["files_read"] == 0 and second["bytes_read"] == 0 and second["files_new"] == 0
    assert second["files_changed"] == 0 and second["errors"] == []


def test_stdin_backup_and_restore(tmp_path):
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    ok(run_bk("init", env=env))
    payload = b"CREATE TABLE t (x int);\n" * 1000
    r = ok(run_bk("--json", "backup", "-", "--stdin-filename", "db.sql", env=env, input=payload))
    assert json.loads(r.stdout.splitlines()[-1])["bytes_read"] == len(payload)
    snaps = json.loads(ok(run_bk("--json", "snapshots", env=env)).stdout)
    assert snaps[0]["source"]["type"] == "stdin" and snaps[0]["paths"] == ["/db.sql"]
    ok(run_bk("restore", "latest", "--target", tmp_path / "out", env=env))
    assert (tmp_path / "out" / "db.sql").read_bytes() == payload
    ok(run_bk("restore", "latest", "--path", "/db.sql", "--target", tmp_path / "out2", env=env))  # a filter: the snapshot of /db.sql
    assert (tmp_path / "out2" / "db.sql").read_bytes() == payload


def test_dry_run_writes_nothing(tmp_path):
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    ok(run_bk("init", env=env))
    write_file(tmp_path / "src" / "f", os.urandom(100_000))
    before = repo_listing(tmp_path / "repo")
    r = ok(run_bk("--json", "backup", "--dry-run", tmp_path / "src", env=env))
    doc = json.loads(r.stdout.splitlines()[-1])
    assert doc["dry_run"] is True and doc["snapshot_id"] is None and doc["files_new"] == 1
    assert repo_listing(tmp_path / "repo") == before


def test_excludes_through_the_cli(tmp_path):
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    ok(run_bk("init", env=env))
    src = tmp_path / "src"
    for rel in ("a.log", "b.TMP", "sub/.nobackup", "sub/x", "keep", "skip/me"):
        write_file(src / rel, b"x")
    (tmp_path / "ex").write_text("skip/\n")
    ok(run_bk(
        "backup", src, "--exclude", "*.log", "--iexclude", "*.tmp", "--exclude-file", tmp_path / "ex",
        "--exclude-if-present", ".nobackup", "--one-file-system", env=env,
    ))
    entries = json.loads(ok(run_bk("--json", "ls", "-R", "latest", src, env=env)).stdout)["entries"]
    assert sorted(os.path.relpath(e["path"], src) for e in entries) == [".", "keep", "sub", "sub/.nobackup"]


# -- unreadable files -----------------------------------------------------------------------

def test_unreadable_files_exit_3_and_snapshot_saved():
    prefix, who = unprivileged_prefix()
    with reachable_tmpdir("bk-unreadable-") as base:  # reachable by nobody
        src = base / "src"
        readable = {"a.txt": b"readable a\n", "sub/b.txt": b"readable b\n", "sub/deeper/c.bin": os.urandom(70_000)}
        for rel, data in readable.items():
            write_file(src / rel, data)
        write_file(src / "secret.txt", b"nobody may read this\n", mode=0)
        write_file(src / "locked" / "hidden.txt", b"inside a locked dir\n")
        (src / "locked").chmod(0)
        env = cli_env(base / "repo", base / "cache")
        ok(run_bk("init", env=env))
        if who == "nobody":
            for d in (base / "repo", base / "cache"):
                subprocess.run(["chown", "-R", "nobody:nogroup", str(d)], check=True)
        r = run_bk("--json", "backup", src, env=env, prefix=prefix)
        assert "Traceback" not in r.stderr
        assert r.returncode == 3, f"as {who}: exit {r.returncode}, stderr: {r.stderr}"
        doc = json.loads(r.stdout.splitlines()[-1])
        assert doc["snapshot_id"], "the snapshot is saved"
        errs = sorted(e["path"] for e in doc["errors"])
        assert errs == sorted([str(src / "locked"), str(src / "secret.txt")]), doc["errors"]
        assert r.stderr.count(str(src / "secret.txt")) == 1, r.stderr
        # every readable file is in the snapshot, and restores byte for byte
        out = base / "out"
        ok(run_bk("restore", "latest", "--target", out, env=env))
        for rel, data in readable.items():
            assert (out / str(src).lstrip("/") / rel).read_bytes() == data
        entries = json.loads(ok(run_bk("--json", "ls", "-R", "latest", src, env=env)).stdout)["entries"]
        names = {os.path.relpath(e["path"], src) for e in entries}
        assert names == {".", "a.txt", "sub", "sub/b.txt", "sub/deeper", "sub/deeper/c.bin", "locked"}
