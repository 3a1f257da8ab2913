"""SIGINT, SIGTERM and SIGHUP through the real ``bk`` in a subprocess, on real files.

An interrupted backup indexes every pack it completed (so the next backup uploads little
again and prune finds nothing to free), says so in one line, releases its lock and exits
128 + the signal (130, 143, 129). Every other command unwinds the same way.

The source is 24 files of 2 MiB of random data in a repository of 1 MiB packs: the test
waits until several packs are in ``data/`` and then sends the signal, so the backup is
interrupted half way whatever the machine's speed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backupkit.repo.repository import MiB
from tests.support.kit import bk_executable, cli_env, make_test_repo, run_bk

FILES = 24
FILE_SIZE = 2 * 1024 * 1024
TOTAL = FILES * FILE_SIZE
#: packs in data/ before the signal is sent (of ~35 a whole backup writes)
PACKS_BEFORE_SIGNAL = 6


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("signals") / "src"
    d.mkdir()
    for i in range(FILES):
        (d / f"f{i:02d}").write_bytes(os.urandom(FILE_SIZE))
    return d


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    e = cli_env(tmp_path / "repo", tmp_path / "cache")
    # 1 MiB packs (below what `bk init` allows) so a signal comes with many packs done
    make_test_repo(tmp_path / "repo", pack_size=MiB).close()
    return e


def repo_dir(env) -> Path:
    return Path(env["BK_REPOSITORY"])


def packs(env, kind: str = "data") -> list[Path]:
    return sorted((repo_dir(env) / kind).glob("*/*"))


def locks(env) -> list[str]:
    return sorted(p.name for p in (repo_dir(env) / "locks").iterdir())


def start(env, *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [bk_executable(), *args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )


def wait_for(cond, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            pytest.fail(f"bk ended (exit {proc.returncode}) before {what}: {proc.stderr.read().decode()}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def interrupt_backup(env, source: Path, sig: int, *extra: str) -> tuple[int, str, str]:
    """Start a backup of ``source``, send ``sig`` once several packs are uploaded;
    (exit code, stdout, stderr)."""
    p = start(env, *extra, "backup", str(source))
    wait_for(lambda: len(packs(env)) >= PACKS_BEFORE_SIGNAL, p, f"{PACKS_BEFORE_SIGNAL} packs were uploaded")
    p.send_signal(sig)
    out, err = p.communicate(timeout=60)
    return p.returncode, out.decode(), err.decode()


def backup_json(env, source: Path) -> dict:
    r = run_bk("--json", "backup", str(source), env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.decode().splitlines()[-1])


def prune_plan(env) -> dict:
    r = run_bk("--json", "prune", "--dry-run", env=env)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)["plan"]["stats"]


def test_sigint_keeps_the_uploaded_packs_for_the_next_backup(env, source):
    code, out, err = interrupt_backup(env, source, signal.SIGINT)
    assert code == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted by SIGINT: "), err
    assert "saved; the next backup will reuse them" in lines[0]
    assert locks(env) == []
    assert not list(repo_dir(env).glob("snapshots/*"))  # no snapshot, only packs
    uploaded = packs(env)
    assert len(uploaded) >= PACKS_BEFORE_SIGNAL and list((repo_dir(env) / "index").iterdir())
    saved = sum(p.stat().st_size for p in uploaded)

    # The next backup reuses every pack: what it adds and what was saved make the data
    # once (not under 10% of it again), and prune finds nothing to free.
    res = backup_json(env, source)
    assert res["bytes_read"] == TOTAL
    assert saved + res["data_added"] <= TOTAL * 1.10, (saved, res["data_added"])
    assert res["data_added"] <= TOTAL - saved * 0.9
    stats = prune_plan(env)
    assert stats["packs_unindexed"] == 0  # every uploaded pack was indexed
    assert stats["bytes_freed"] == 0 and stats["packs_delete"] == 0
    assert stats["bytes_unused"] < 4096  # at most a metadata blob of the interrupted run


def test_sigterm_json_line_and_the_lock_is_gone(env, source):
    code, out, err = interrupt_backup(env, source, signal.SIGTERM, "--json")
    assert code == 143, err
    msgs = [json.loads(line) for line in err.splitlines() if line.strip()]
    assert len(msgs) == 1, err
    m = msgs[0]
    assert m["message_type"] == "exit_error" and m["code"] == 143 and m["signal"] == "SIGTERM"
    # every pack in the store is indexed and counted as saved
    assert m["packs_saved"] == len(packs(env)) + len(packs(env, "meta")) >= PACKS_BEFORE_SIGNAL
    assert m["bytes_saved"] == sum(p.stat().st_size for p in packs(env) + packs(env, "meta"))
    assert "saved; the next backup will reuse them" in m["message"]
    assert all(json.loads(line)["message_type"] != "summary" for line in out.splitlines() if line.strip())
    # the lock is gone: unlock has nothing to remove, and an exclusive lock is taken at once
    assert locks(env) == []
    r = run_bk("--json", "unlock", env=env)
    assert r.returncode == 0 and json.loads(r.stdout)["removed"] == [], r.stderr
    r = run_bk("forget", "--keep-last", "1", env=env)
    assert r.returncode == 0, r.stderr


def test_sighup_exits_129(env, source):
    code, _out, err = interrupt_backup(env, source, signal.SIGHUP)
    assert code == 129, err
    assert err.startswith("interrupted by SIGHUP: ")
    assert locks(env) == []


def test_restore_check_prune_interrupted_release_their_locks(env, tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    for i in range(8):
        (small / f"f{i}").write_bytes(os.urandom(1024 * 1024))
    # enough for check --read-data to still run when the signal comes (its key check
    # no longer derives the key that opened the repository, so it has little else to do)
    (small / "big").write_bytes(os.urandom(48 * 1024 * 1024))
    r = run_bk("backup", str(small), env=env)
    assert r.returncode == 0, r.stderr

    # restore as a TAR stream into a pipe nobody reads: it blocks holding its lock
    p = start(env, "restore", "latest", "--format", "tar")
    wait_for(lambda: bool(locks(env)), p, "restore took its lock")
    time.sleep(0.3)  # the pipe fills, restore blocks writing
    p.send_signal(signal.SIGTERM)
    p.stdout.close()  # the pipe is not read again (as when the reader was killed)
    p.wait(timeout=60)
    err = p.stderr.read().decode()
    assert p.returncode == 143, err
    assert "interrupted by SIGTERM" in err
    assert locks(env) == []

    # check --read-data and prune: sent as soon as the lock exists (tried again in the
    # rare case the command ended first)
    for args in (("check", "--read-data"), ("prune", "--dry-run")):
        for _attempt in range(10):
            p = start(env, *args)
            wait_for(lambda: bool(locks(env)) or p.poll() is not None, p, f"{args[0]} took its lock")
            p.send_signal(signal.SIGTERM)
            _out, err_b = p.communicate(timeout=60)
            if p.returncode != 0:
                break
        assert p.returncode == 143, (args, err_b.decode())
        assert err_b.decode().strip().splitlines()[-1] == "interrupted by SIGTERM"
        assert locks(env) == [], args
    r = run_bk("check", env=env)
    assert r.returncode == 0, r.stderr


_UNWIND = """
import os, signal, sys, time
from backupkit.errors import Interrupted
from backupkit_cli import signals

signals.install()
with_deferred = sys.argv[1] == "deferred"
try:
    if with_deferred:
        with signals.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)
            print("deferred section finished", flush=True)
    else:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    print("not interrupted", flush=True)
except Interrupted as e:
    print(f"unwinding after {e.signum}", flush=True)
    os.kill(os.getpid(), signal.SIGINT)  # the second signal, while unwinding
    time.sleep(5)
    print("still unwinding", flush=True)
"""


@pytest.mark.parametrize("mode", ["plain", "deferred"])
def test_a_second_signal_while_unwinding_exits_at_once(mode):
    r = subprocess.run([sys.executable, "-c", _UNWIND, mode], capture_output=True, text=True, timeout=30)
    assert r.returncode == 130, (r.stdout, r.stderr)
    expected = ["unwinding after 15"] if mode == "plain" else ["deferred section finished", "unwinding after 15"]
    # a deferred signal waits for the section's end; the second one ends the process
    # in its sleep ("still unwinding" never comes)
    assert r.stdout.splitlines() == expected
    assert "SIGINT again: stopping at once" in r.stderr
