"""bk diff / forget / prune / check through the real executable: exit codes, --json,
and forget --keep-last 2 --prune end to end on a local repository."""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from tests.support.kit import bk_executable


def bk(env, *args, timeout=120):
    return subprocess.run([bk_executable(), *args], env=env, capture_output=True, text=True, timeout=timeout)


def ok(env, *args) -> subprocess.CompletedProcess:
    r = bk(env, *args)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@pytest.fixture
def env(tmp_path):
    e = {k: v for k, v in os.environ.items() if not k.startswith("BK_")}
    e.update(
        BK_PASSWORD="cli-pw",
        BK_CACHE_DIR=str(tmp_path / "cache"),
        BK_REPOSITORY=str(tmp_path / "repo"),
    )
    return e


@pytest.fixture
def four(env, tmp_path):
    """Four dated snapshots (made in-process to keep the suite fast; the commands under
    test run as subprocesses); each day's 400 kB file replaces the previous day's."""
    from backupkit.managers.backup import BackupManager, BackupOptions
    from tests.support.kit import INSECURE_TEST_KDF
    from backupkit.repo.repository import Repository
    from backupkit.store.local import LocalObjectStore

    src = tmp_path / "src"
    src.mkdir()
    repo = Repository.init(LocalObjectStore(tmp_path / "repo", fsync=False), b"cli-pw", kdf=INSECURE_TEST_KDF, cache_root=False)
    trees, ids = [], []
    for i in range(4):
        for old in src.glob("day*"):
            old.unlink()
        (src / f"day{i}").write_bytes(os.urandom(400_000))
        (src / "same.txt").write_text("unchanged")
        when = datetime(2026, 3, i + 1, 8, tzinfo=timezone.utc)
        ids.append(BackupManager(repo).run(BackupOptions(paths=(str(src),), time=when, host="h")).snapshot.id)
        trees.append(files(src))
    repo.close()
    return src, ids, trees


def test_forget_keep_last_2_prune_then_check_and_restore(env, tmp_path, four):
    src, ids, trees = four
    repo = tmp_path / "repo"
    before = du(repo)

    r = ok(env, "forget", "--keep-last", "2", "--prune", "--max-unused", "0%")
    assert "last snapshot" in r.stdout and ids[0][:8] in r.stdout

    assert du(repo) < before - 2 * 400_000
    assert [s["id"] for s in json.loads(ok(env, "--json", "snapshots").stdout)] == ids[2:]
    ok(env, "check", "--read-data")
    for sid, tree in zip(ids[2:], trees[2:]):
        target = tmp_path / f"restore-{sid[:8]}"
        ok(env, "restore", sid, "--target", str(target))
        assert files(target / src.relative_to("/")) == tree
    r = ok(env, "--json", "prune", "--dry-run")
    assert json.loads(r.stdout)["plan"]["nothing_to_do"] is True


def test_json_outputs(env, four):
    _src, ids, _trees = four
    d = json.loads(ok(env, "--json", "diff", ids[0], ids[1]).stdout)
    assert d["summary"]["added"] == 1 and d["summary"]["removed"] == 1
    assert {c["kind"] for c in d["changes"]} == {"added", "removed", "metadata"}

    f = json.loads(ok(env, "--json", "forget", "--keep-daily", "10", "--keep-last", "1", "--dry-run").stdout)
    (g,) = f["groups"]
    assert [k["reasons"] for k in g["keep"]][0] == ["last snapshot", "daily snapshot"]
    assert f["removed"] == [] and f["dry_run"] is True

    fp = json.loads(ok(env, "--json", "forget", "--keep-last", "1", "--prune", "--dry-run").stdout)
    assert len(fp["removed"]) == 3 and fp["prune"]["dry_run"] is True and "stats" in fp["prune"]["plan"]

    p = json.loads(ok(env, "--json", "prune", "--dry-run").stdout)
    assert p["dry_run"] and p["plan"]["stats"]["snapshots"] == 4 and p["plan"]["max_repack_size"] is None
    fp = json.loads(ok(env, "--json", "forget", "--keep-last", "1", "--prune", "--dry-run", "--max-unused", "0%",
                       "--max-repack-size", "1K", "--repack-small", "--repack-cacheable-only").stdout)
    assert fp["prune"]["plan"]["max_repack_size"] == 1024 and fp["prune"]["plan"]["repack"] == []
    assert fp["prune"]["plan"]["repack_small"] is True and fp["prune"]["plan"]["repack_cacheable_only"] is True
    bad = bk(env, "prune", "--max-repack-size", "lots")
    assert bad.returncode == 2 and "--max-repack-size" in bad.stderr, bad.stderr

    c = json.loads(ok(env, "--json", "check").stdout)
    assert c["ok"] is True and c["snapshots"] == 4 and c["findings"] == []


def test_damage_check_exits_1_and_prune_refuses(env, tmp_path, four):
    src, ids, _trees = four
    repo = tmp_path / "repo"
    # the newest data pack holds the last backup's new file, day3
    newest = max((p for p in (repo / "data").rglob("*") if p.is_file()), key=lambda p: p.stat().st_mtime)
    newest.unlink()

    r = bk(env, "--json", "check")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["ok"] is False
    damaged = {s for f in out["findings"] if f["severity"] == "error" for s in f["snapshots"]}
    assert damaged == {ids[3]}
    (f,) = [f for f in out["findings"] if f["severity"] == "error"]
    assert f["kind"] == "pack_missing" and f["paths"] == [{"snapshot": ids[3], "path": str(src / "day3")}]

    before = sorted(p.name for p in repo.rglob("*") if p.is_file() and "locks" not in p.parts)
    r = bk(env, "prune")
    assert r.returncode == 1
    assert "refusing to prune" in r.stderr and ids[3][:8] in r.stderr
    assert sorted(p.name for p in repo.rglob("*") if p.is_file() and "locks" not in p.parts) == before

    r = bk(env, "check")
    assert r.returncode == 1 and "error" in r.stderr


def test_forget_refusals_and_explicit_ids(env, four):
    _src, ids, _trees = four
    r = bk(env, "forget")
    assert r.returncode == 2 and "keep" in r.stderr  # a bad command line
    r = bk(env, "forget", "--keep-tag", "nope")
    assert r.returncode == 1 and "refusing" in r.stderr
    r = ok(env, "forget", ids[1][:8])
    assert json.loads(ok(env, "--json", "snapshots").stdout)[1]["id"] == ids[2]
    r = bk(env, "check", "--read-data-subset", "5/3")
    assert r.returncode == 2 and "read-data-subset" in r.stderr


def test_diff_text_output(env, four):
    src, ids, _trees = four
    r = ok(env, "diff", ids[0], ids[1])
    assert f"+    {src}/day1" in r.stdout and f"-    {src}/day0" in r.stdout
    assert "1 added, 1 removed, 0 modified" in r.stderr
