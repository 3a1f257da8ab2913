"""bk tag / find / stats / dump / rewrite through the real executable: main options,
--json, bad input and exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import tarfile
import zipfile
from datetime import datetime, timezone

import pytest

from tests.support.kit import bk_executable


def bk(env, *args, timeout=120, text=True):
    return subprocess.run([bk_executable(), *args], env=env, capture_output=True, text=text, timeout=timeout)


def ok(env, *args, text=True) -> subprocess.CompletedProcess:
    r = bk(env, *args, text=text)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


@pytest.fixture
def two(tmp_path):
    """Two snapshots of a small tree (made in-process; the commands run as subprocesses)."""
    from backupkit.managers.backup import BackupManager, BackupOptions
    from backupkit.repo.repository import Repository
    from backupkit.store.local import LocalObjectStore
    from tests.support.kit import INSECURE_TEST_KDF

    src = tmp_path / "src"
    (src / "etc/ssh").mkdir(parents=True)
    (src / "etc/a.conf").write_text("a\n")
    (src / "etc/ssh/x.conf").write_text("x\n")
    (src / "data.bin").write_bytes(os.urandom(300_000))
    repo = Repository.init(LocalObjectStore(tmp_path / "repo", fsync=False), b"cli-pw", kdf=INSECURE_TEST_KDF, cache_root=False)
    ids = []
    for i in range(2):
        (src / f"day{i}.conf").write_text(str(i))
        when = datetime(2026, 3, i + 1, 8, tzinfo=timezone.utc)
        ids.append(BackupManager(repo).run(BackupOptions(paths=(str(src),), time=when, host=f"h{i}")).snapshot.id)
    repo.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("BK_")}
    env.update(BK_PASSWORD="cli-pw", BK_CACHE_DIR=str(tmp_path / "cache"), BK_REPOSITORY=str(tmp_path / "repo"))
    return env, src, ids


def snapshots(env) -> list[dict]:
    return json.loads(ok(env, "--json", "snapshots").stdout)


def test_tag(two):
    env, _src, ids = two
    r = ok(env, "tag", "--add", "keep,prod", ids[0][:8])
    assert "modified 1 snapshot" in r.stderr + r.stdout
    d = json.loads(ok(env, "--json", "tag", "--host", "h0", "--remove", "prod").stdout)
    (c,) = d["changed"]
    assert c["tags"] == ["keep"] and c["original"] == ids[0]
    d = json.loads(ok(env, "--json", "tag", "--set", "x", "--set", "y", "latest").stdout)
    assert d["changed"][0]["old_snapshot_id"] == ids[1]
    assert sorted(tuple(s["tags"]) for s in snapshots(env)) == [("keep",), ("x", "y")]
    assert len(json.loads(ok(env, "--json", "snapshots", "--tag", "keep").stdout)) == 1
    ok(env, "check")
    # bad input: nothing asked (2), --set with --add (2), unknown snapshot (1)
    assert bk(env, "tag", "latest").returncode == 2
    assert bk(env, "tag", "--set", "a", "--add", "b", "latest").returncode == 2
    r = bk(env, "tag", "--add", "a", "deadbeef")
    assert r.returncode == 1 and "deadbeef" in r.stderr and "Traceback" not in r.stderr
    assert "--remove" in ok(env, "tag", "--help").stdout


def test_find(two):
    env, src, ids = two
    r = ok(env, "find", "*.conf")
    assert f"{src}/etc/ssh/x.conf" in r.stdout and r.stdout.count("day0.conf") == 2
    d = json.loads(ok(env, "--json", "find", "-i", "DAY1.CONF").stdout)
    assert [g["snapshot"] for g in d["snapshots"]] == [ids[1]] and d["hits"] == 1
    d = json.loads(ok(env, "--json", "find", f"{src}/etc", "--host", "h0").stdout)
    assert d["strategy"] == "directed" and d["searched"] == 1
    assert [m["path"] for m in d["snapshots"][0]["matches"]] == [f"{src}/etc", f"{src}/etc/a.conf", f"{src}/etc/ssh", f"{src}/etc/ssh/x.conf"]
    d = json.loads(ok(env, "--json", "find", "-s", ids[0][:8], "--newest", "2000-01-01", "*").stdout)
    assert d["hits"] == 0
    assert "--blob" in ok(env, "find", "--help").stdout
    # bad pattern, bad time, conflicting kinds: 2; unknown snapshot, unknown blob prefix: 1
    assert bk(env, "find", "[").returncode == 2
    assert bk(env, "find", "--newest", "soon", "*").returncode == 2
    assert bk(env, "find", "--blob", "--pack", "abcd").returncode == 2
    assert bk(env, "find").returncode == 2
    assert bk(env, "find", "-s", "deadbeef", "*").returncode == 1
    r = bk(env, "find", "--blob", "ffffffff")
    assert r.returncode == 1 and "ffffffff" in r.stderr


def test_stats(two):
    env, _src, ids = two
    r = ok(env, "stats")
    assert "restore-size" in r.stdout and "Repository:" in r.stdout
    d = json.loads(ok(env, "--json", "stats", ids[0][:8]).stdout)
    assert d["snapshots"] == [ids[0]] and d["files"] == 4 and d["total_size"] == 300_000 + 2 + 2 + 1
    d = json.loads(ok(env, "--json", "stats", "--mode", "raw-data", "--host", "h1").stdout)
    assert d["snapshots"] == [ids[1]] and d["blobs"] > 0 and d["dedup_ratio"] >= 1
    assert d["repository"]["snapshots_per_host"] == {"h0": 1, "h1": 1}
    assert d["repository"]["unused_bytes"] is None and "\n  unused " not in r.stdout
    d = json.loads(ok(env, "--json", "stats", "--unused").stdout)
    assert d["repository"]["unused_bytes"] >= 0 and "\n  unused " in ok(env, "stats", "--unused").stdout
    d = json.loads(ok(env, "--json", "stats", "--mode", "files-by-contents").stdout)
    assert d["files"] == 5
    d = json.loads(ok(env, "--json", "stats", "--mode", "blobs-per-file", ids[0][:8]).stdout)
    assert d["total_file_count"] == 4 and d["total_size"] == 300_000 + 2 + 2 + 1 and d["total_blob_count"] >= 4
    out = ok(env, "stats", "--mode", "blobs-per-file").stdout
    assert "Stats in blobs-per-file mode:" in out and "Total Blob Count:" in out
    assert "--mode" in ok(env, "stats", "--help").stdout
    assert bk(env, "stats", "--mode", "nonsense").returncode == 2
    assert bk(env, "stats", "deadbeef").returncode == 1


def test_dump(two, tmp_path):
    env, src, ids = two
    r = ok(env, "dump", "latest", str(src / "data.bin"), text=False)
    assert r.stdout == (src / "data.bin").read_bytes()
    r = ok(env, "dump", ids[0][:8], str(src / "etc"), text=False)
    with tarfile.open(fileobj=io.BytesIO(r.stdout)) as t:
        assert t.extractfile(f"{str(src).lstrip('/')}/etc/ssh/x.conf").read() == b"x\n"
    target = tmp_path / "out.zip"
    d = json.loads(ok(env, "--json", "dump", "--archive", "zip", "--target", str(target), "latest", str(src)).stdout)
    assert d["kind"] == "zip" and d["snapshot"] == ids[1]
    with zipfile.ZipFile(target) as z:
        assert z.read(f"{str(src).lstrip('/')}/day1.conf") == b"1"
    assert "--archive" in ok(env, "dump", "--help").stdout
    r = bk(env, "dump", "latest", str(src / "nope"))
    assert r.returncode == 1 and "not in the snapshot" in r.stderr
    assert bk(env, "dump", "--archive", "rar", "latest", str(src)).returncode == 2
    assert bk(env, "--json", "dump", "latest", str(src / "data.bin")).returncode == 2
    assert bk(env, "dump", "deadbeef", "/x").returncode == 1


def test_rewrite(two, tmp_path):
    env, src, ids = two
    r = ok(env, "rewrite", "--dry-run", "--exclude", "*.conf", ids[0][:8])
    assert f"{src}/etc/a.conf" in r.stdout and "would rewrite 1" in r.stderr + r.stdout
    assert [s["id"] for s in snapshots(env)] == ids
    pf = tmp_path / "patterns"
    pf.write_text("# secrets\n\n*.conf\n")
    d = json.loads(ok(env, "--json", "rewrite", "--exclude-file", str(pf), "--host", "h1").stdout)
    (c,) = d["changed"]
    assert c["old_snapshot_id"] == ids[1] and c["removed_entries"] == 4
    snaps = snapshots(env)
    assert len(snaps) == 3 and {s["id"]: s["tags"] for s in snaps}[c["new_snapshot_id"]] == ["rewrite"]
    assert json.loads(ok(env, "--json", "find", "-s", c["new_snapshot_id"], "*.conf").stdout)["hits"] == 0
    d = json.loads(ok(env, "--json", "rewrite", "--forget", "--iexclude", "DATA.BIN").stdout)
    assert len(d["changed"]) == 3 and d["forget"] is True
    assert len(snapshots(env)) == 3
    ok(env, "prune", "--max-unused", "0%")
    ok(env, "check", "--read-data")
    assert "--exclude-file" in ok(env, "rewrite", "--help").stdout
    assert bk(env, "rewrite", "latest").returncode == 2
    assert bk(env, "rewrite", "--exclude", "[x", "latest").returncode == 2
    assert bk(env, "rewrite", "--exclude-file", str(tmp_path / "missing"), "latest").returncode == 2
    # restic's --new-host / --new-time: a relabelled copy, the tree untouched
    before = {s["id"]: s for s in snapshots(env)}
    d = json.loads(ok(env, "--json", "rewrite", "--new-host", "moved", "--new-time", "2021-02-03T04:05:06+00:00", "latest").stdout)
    (c,) = d["changed"]
    new = {s["id"]: s for s in snapshots(env)}[c["new_snapshot_id"]]
    old = before[c["old_snapshot_id"]]
    assert new["host"] == "moved" and new["time"].startswith("2021-02-03T04:05:06") and new["root"] == old["root"]
    assert bk(env, "rewrite", "--new-time", "yesterday-ish", "latest").returncode == 2
    assert bk(env, "rewrite", "--exclude", "*.conf", "deadbeef").returncode == 1


def restored_files(env, snap, src, target) -> dict[str, bytes]:
    ok(env, "restore", snap, "--target", str(target))
    base = target / src.relative_to("/")
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def test_copy_local_to_local(two, tmp_path):
    env, src, ids = two
    pwf = tmp_path / "source-pw"
    pwf.write_text("cli-pw\n")
    tgt_env = dict(env, BK_REPOSITORY=str(tmp_path / "target"), BK_PASSWORD="other-pw")
    ok(tgt_env, "init", "--copy-chunker-params", "--from-repo", str(tmp_path / "repo"), "--from-password-file", str(pwf))
    d = json.loads(ok(tgt_env, "--json", "copy", "--from-repo", str(tmp_path / "repo"), "--from-password-file", str(pwf), "--host", "h0").stdout)
    assert d["same_chunker"] is True and [c["source"] for c in d["copied"]] == [ids[0]]
    r = ok(tgt_env, "copy", "--from-repo", str(tmp_path / "repo"), "--from-password-command", "echo cli-pw")
    assert "copied 1 snapshot(s), 1 already in the target" in r.stderr + r.stdout
    d = json.loads(ok(tgt_env, "--json", "copy", "--from-repo", str(tmp_path / "repo"), "--from-password-file", str(pwf)).stdout)
    assert d["copied"] == [] and d["blobs_added"] == 0 and len(d["skipped"]) == 2
    tsnaps = json.loads(ok(tgt_env, "--json", "snapshots").stdout)
    assert sorted(s["meta"]["original"] for s in tsnaps) == sorted(ids)
    new = {s["meta"]["original"]: s["id"] for s in tsnaps}
    assert restored_files(tgt_env, new[ids[1]], src, tmp_path / "t") == restored_files(env, ids[1], src, tmp_path / "s")
    ok(tgt_env, "check", "--read-data")
    # a target with its own chunker: files are re-chunked; without a from-password the
    # target's password is tried (the wrong one here: exit 12)
    other = dict(env, BK_REPOSITORY=str(tmp_path / "other"))
    ok(other, "init")
    d = json.loads(ok(other, "--json", "copy", "--from-repo", str(tmp_path / "repo"), ids[1][:8]).stdout)
    assert d["same_chunker"] is False and len(d["copied"]) == 1
    assert bk(tgt_env, "copy", "--from-repo", str(tmp_path / "repo")).returncode == 12
    assert bk(tgt_env, "copy").returncode == 2
    assert bk(tgt_env, "copy", "--from-repo", str(tmp_path / "nothing"), "--from-password-file", str(pwf)).returncode == 10
    assert bk(tgt_env, "copy", "--from-repo", str(tmp_path / "repo"), "--from-password-file", str(pwf), "deadbeef").returncode == 1
    assert "--from-repo" in ok(env, "copy", "--help").stdout and "--copy-chunker-params" in ok(env, "init", "--help").stdout


def test_copy_local_to_s3_and_back(two, tmp_path, s3_server):
    from tests.cli.test_s3_cli import s3_env

    env, src, ids = two
    s3 = dict(s3_env(s3_server, f"copy-{os.getpid()}-{tmp_path.name}", tmp_path / "s3cache"), BK_PASSWORD="cli-pw")
    ok(s3, "init", "--copy-chunker-params", "--from-repo", str(tmp_path / "repo"))
    d = json.loads(ok(s3, "--json", "copy", "--from-repo", str(tmp_path / "repo")).stdout)
    assert len(d["copied"]) == 2 and d["same_chunker"]
    assert json.loads(ok(s3, "--json", "copy", "--from-repo", str(tmp_path / "repo")).stdout)["blobs_added"] == 0
    back = dict(env, BK_REPOSITORY=str(tmp_path / "back"))
    ok(back, "init")
    s3_url = s3["BK_REPOSITORY"]
    back.update({k: v for k, v in s3.items() if k.startswith("AWS_")})
    d = json.loads(ok(back, "--json", "copy", "--from-repo", s3_url).stdout)
    assert len(d["copied"]) == 2 and not d["same_chunker"]
    snap = {s["meta"]["original"]: s["id"] for s in json.loads(ok(back, "--json", "snapshots").stdout)}[ids[0]]
    assert restored_files(back, snap, src, tmp_path / "b") == restored_files(env, ids[0], src, tmp_path / "o")
