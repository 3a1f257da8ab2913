"""bk and repository locks, through the real ``bk`` executable: exit 11, unlock, --retry-lock.

Locks held "elsewhere" are taken in this process by a LockManager impersonating another
machine (host db1, pid 4242), so the pid check for same-machine locks does not apply.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from backupkit.repo.lock import LOCK_PREFIX, LockManager
from backupkit.repo.repository import Repository
from backupkit.store.local import LocalObjectStore
from tests.support.kit import INSECURE_TEST_KDF, bk_executable

PW = "lock-test-pw"


@pytest.fixture
def env(tmp_path):
    e = dict(os.environ)
    for k in list(e):
        if k.startswith("BK_"):
            del e[k]
    e.update(
        BK_PASSWORD=PW,
        BK_CACHE_DIR=str(tmp_path / "cache"),
        BK_REPOSITORY=str(tmp_path / "repo"),
    )
    return e


@pytest.fixture
def repo(tmp_path):
    r = Repository.init(LocalObjectStore(tmp_path / "repo", fsync=False), PW.encode(), kdf=INSECURE_TEST_KDF, cache_root=False)
    yield r
    r.close()


@pytest.fixture
def src(tmp_path):
    d = tmp_path / "src"
    d.mkdir()
    (d / "file").write_bytes(b"some content\n" * 100)
    return d


def bk(env, *args, timeout=60):
    return subprocess.run(
        [bk_executable(), *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def elsewhere(repo) -> LockManager:
    return LockManager(repo, refresh=0, recheck_delay=0, host="db1", pid=4242, node="db1-node")


def lock_files(repo) -> list[str]:
    return sorted(o.name for o in repo.store.list(LOCK_PREFIX))


def snapshot_count(repo) -> int:
    return len(list(repo.store.list("snapshots/")))


def test_backup_exits_11_naming_the_holder(env, repo, src):
    held = elsewhere(repo).acquire(True, "prune")
    before = lock_files(repo)
    r = bk(env, "backup", str(src))
    assert r.returncode == 11, r.stderr
    assert "locked exclusively by" in r.stderr and "@db1 (pid 4242, prune) since" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert snapshot_count(repo) == 0
    assert lock_files(repo) == before  # bk left nothing behind
    # Shared readers are refused too; listing snapshots takes no lock.
    assert bk(env, "ls", "latest").returncode == 11
    assert bk(env, "snapshots").returncode == 0
    held.release()
    r = bk(env, "backup", str(src))
    assert r.returncode == 0, r.stderr
    assert snapshot_count(repo) == 1
    assert lock_files(repo) == []


def test_key_add_needs_the_exclusive_lock(env, repo, tmp_path):
    held = elsewhere(repo).acquire(False, "backup")
    pwfile = tmp_path / "newpw"
    pwfile.write_text("other password\n")
    r = bk(env, "key", "add", "--new-password-file", str(pwfile))
    assert r.returncode == 11 and "(pid 4242, backup)" in r.stderr, r.stderr
    held.release()
    assert bk(env, "key", "add", "--new-password-file", str(pwfile)).returncode == 0


def test_unlock_removes_stale_locks_and_keeps_fresh_ones(env, repo, tmp_path):
    fresh = elsewhere(repo).acquire(False, "backup")
    stale = LockManager(repo, refresh=0, recheck_delay=0, host="db2", pid=7, node="db2-node").acquire(False, "restore")
    old = time.time() - 2 * 3600
    os.utime(tmp_path / "repo" / stale.name, (old, old))
    r = bk(env, "--json", "unlock")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [x["name"] for x in out["removed"]] == [stale.name]
    assert out["removed"][0]["host"] == "db2" and "not refreshed for 2h" in out["removed"][0]["reason"]
    assert lock_files(repo) == [fresh.name]
    r = bk(env, "unlock")
    assert r.returncode == 0 and "removed 0 stale locks" in r.stderr, r.stderr
    assert lock_files(repo) == [fresh.name]


def test_unlock_remove_all(env, repo):
    a = elsewhere(repo).acquire(True, "prune")
    assert len(lock_files(repo)) >= 1
    r = bk(env, "unlock", "--remove-all")
    assert r.returncode == 0, r.stderr
    assert lock_files(repo) == []
    with pytest.raises(Exception, match="removed"):
        a.check()


def test_retry_lock_waits_for_the_holder(env, repo, src):
    held = elsewhere(repo).acquire(True, "prune")
    proc = subprocess.Popen(
        [bk_executable(), "--retry-lock", "60s", "backup", str(src)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stderr.readline()  # bk says it is waiting, then we let go
        assert "(pid 4242, prune)" in first and "retrying in" in first, first
        assert snapshot_count(repo) == 0
    finally:
        held.release()
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 0, first + rest
    assert snapshot_count(repo) == 1
    assert lock_files(repo) == []


def test_retry_lock_gives_up(env, repo, src):
    elsewhere(repo).acquire(True, "prune")
    r = bk(env, "--retry-lock", "1s", "backup", str(src))
    assert r.returncode == 11
    assert "gave up after retrying for 1s" in r.stderr
    assert bk(env, "--retry-lock", "soon", "backup", str(src)).returncode == 2  # a bad command line


def test_lost_lock_backup_exits_11_without_a_snapshot(env, repo):
    """A backup whose lock is removed mid-run (unlock --remove-all) publishes nothing.

    It backs up stdin, so the test decides when it ends: after the lock is gone.
    """
    proc = subprocess.Popen(
        [bk_executable(), "backup", "-"],
        env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    proc.stdin.write(os.urandom(1 << 20))
    proc.stdin.flush()
    deadline = time.monotonic() + 30
    while not lock_files(repo) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lock_files(repo), "the backup never took its lock"
    assert bk(env, "unlock", "--remove-all").returncode == 0
    _, err = proc.communicate(os.urandom(1 << 20), timeout=60)
    assert proc.returncode == 11, err
    assert b"lost the repository lock" in err and b"removed" in err
    assert snapshot_count(repo) == 0


def test_backup_and_forget_prune_processes_contend(env, repo, src):
    """bk backup and bk forget --prune started together: they take turns; check stays clean."""
    assert bk(env, "backup", str(src)).returncode == 0
    for i in range(2):
        (src / f"new-{i}").write_bytes(os.urandom(200_000))
        procs = [
            subprocess.Popen(
                [bk_executable(), "--retry-lock", "60s", *args],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for args in (("backup", str(src)), ("forget", "--keep-last", "1", "--prune"))
        ]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err
        assert lock_files(repo) == []
    r = bk(env, "check")
    assert r.returncode == 0, r.stdout + r.stderr
