"""S3 faults end to end: ``bk`` in a subprocess through the fault proxy (moto behind it).

* 5% of all requests fail (500, 503 SlowDown, resets before and after the server saw
  the request, bodies cut short), plus one planned fault on each critical write and
  read: init, backup, restore and ``check --read-data`` still succeed and the restored
  bytes are the source's. The store statistics in the ``--json`` documents show the
  retries that made it work.
* Every request fails: ``bk backup`` exits 1 quickly (with ``-o s3.retries=2``), says
  why in one line without a traceback, and the store, listed directly (no proxy), holds
  exactly what it held before.
* Only pack uploads fail (the lock and everything else work): the backup fails the same
  way, publishes no index and no snapshot, and releases its lock.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.support.kit import cli_env, ok, run_bk, store_listing
from tests.conftest_s3 import FAULT_KINDS

MiB = 1024 * 1024
#: Test-sized retries for the failing runs (the defaults, 10 attempts with botocore's
#: exponential backoff, take about a minute per request that never succeeds).
FAST_FAIL = ("-o", "s3.retries=2", "-o", "s3.backoff=0.01")



def proxy_env(proxy, prefix: str, cache: Path) -> dict[str, str]:
    up = proxy.upstream
    env = cli_env(f"s3:{proxy.endpoint}/{up.bucket}/{prefix}", cache)
    for var in list(env):
        if var.startswith("AWS_"):
            del env[var]
    env.update(
        AWS_ACCESS_KEY_ID=up.access_key,
        AWS_SECRET_ACCESS_KEY=up.secret_key,
        AWS_CONFIG_FILE=os.devnull,
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",
    )
    return env


def make_source(root: Path) -> dict[str, bytes]:
    rng = random.Random(11)
    content = {
        "a.bin": rng.randbytes(1536 * 1024),
        "sub/b.bin": rng.randbytes(1024 * 1024 + 5),
        "sub/deeper/c.txt": b"text\n" * 2000,
        "d.bin": rng.randbytes(700_000),
        "empty": b"",
    }
    for rel, data in content.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return content


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(r: subprocess.CompletedProcess) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


def test_five_percent_faults_backup_restore_check(s3_fault_proxy, moto_s3, tmp_path):
    proxy = s3_fault_proxy
    prefix = "faults-" + uuid.uuid4().hex[:10]
    env = proxy_env(proxy, prefix, tmp_path / "cache")
    src = tmp_path / "src"
    want = make_source(src)

    proxy.configure(rate=0.05, kinds=FAULT_KINDS, seed=2024)
    # One planned fault on each write and read that matters, on top of the random ones.
    proxy.fail_next("503", method="PUT", path_contains="/config")
    proxy.fail_next("reset_after", method="PUT", path_contains="/data/")  # answer lost, object stored
    proxy.fail_next("500", method="PUT", path_contains="/index/")
    proxy.fail_next("reset_after", method="PUT", path_contains="/snapshots/")
    proxy.fail_next("reset_after", method="PUT", path_contains="/locks/")  # a lost conditional create
    proxy.fail_next("truncate", method="GET", path_contains="/data/")  # a pack download cut short

    ok(run_bk("--json", "init", "--pack-size", "4", env=env))
    backup = json.loads(ok(run_bk("--json", "backup", src, env=env, timeout=240)).stdout.splitlines()[-1])
    assert backup["errors"] == [] and backup["files_new"] == len(want)
    (src / "sub" / "b.bin").write_bytes(want["sub/b.bin"][::-1])
    want["sub/b.bin"] = want["sub/b.bin"][::-1]
    second = json.loads(ok(run_bk("--json", "backup", src, env=env, timeout=240)).stdout.splitlines()[-1])
    assert second["parent"] == backup["snapshot_id"] and second["files_changed"] == 1

    out = tmp_path / "out"
    restore = json.loads(ok(run_bk("--json", "restore", "latest", "--target", out, "--verify", env=env, timeout=240)).stdout.splitlines()[-1])
    assert restore["verify_failures"] == [] and restore["errors"] == []
    assert tree_bytes(out / str(src).lstrip("/")) == want

    checks = []
    for extra in ((), ("--read-data",)):
        doc = json.loads(ok(run_bk("--json", "check", *extra, env=env, timeout=240)).stdout)
        assert doc["ok"] is True and doc["errors"] == 0, doc["findings"]
        assert not [f for f in doc["findings"] if f["severity"] != "info"], doc["findings"]
        checks.append(doc)
    assert checks[1]["packs_read"] == checks[1]["packs"] >= 3  # 1 MiB packs: several

    faults = sum(proxy.faults.values())
    assert faults >= 7 and proxy.requests >= 100, (proxy.faults, proxy.requests)
    assert not proxy._planned, proxy._planned  # every planned fault was hit
    docs = (backup, second, restore, *checks)
    retries = sum(d["store"]["retries"] for d in docs)
    assert retries >= 1, [d["store"] for d in docs]

    # Seen directly, without the proxy: one snapshot, no lock left behind.
    direct = moto_s3.store(prefix)
    names = store_listing(direct)
    assert sum(1 for n in names if n.startswith("snapshots/")) == 2
    assert not any(o.name.startswith("locks/") for o in direct.list("locks/"))
    print(f"\n{proxy.requests} requests, faults {dict(proxy.faults)}, retries reported {retries}")


def test_every_request_failing_exits_in_one_line_and_publishes_nothing(s3_fault_proxy, moto_s3, tmp_path):
    proxy = s3_fault_proxy
    prefix = "allfail-" + uuid.uuid4().hex[:10]
    env = proxy_env(proxy, prefix, tmp_path / "cache")
    src = tmp_path / "src"
    make_source(src)
    ok(run_bk("init", "--pack-size", "4", env=env))
    ok(run_bk("backup", src, env=env))
    direct = moto_s3.store(prefix)
    before = store_listing(direct)
    (src / "new.bin").write_bytes(os.urandom(300_000))

    proxy.configure(rate=1.0, kinds=FAULT_KINDS, seed=1)
    seen = proxy.requests
    started = time.monotonic()
    r = run_bk(*FAST_FAIL, "backup", src, env=env, timeout=120)
    elapsed = time.monotonic() - started
    assert r.returncode == 1, (r.returncode, r.stderr)
    line = one_error_line(r)
    assert "unavailable" in line or "connection failed" in line, line
    assert proxy.requests - seen >= 2  # it did try (and retry), then gave up
    assert elapsed < 30, elapsed
    # With -v the one error line is followed by what it cost; retries of calls that
    # failed in the end count too (3 attempts: 3 requests, 2 of them retries).
    proxy.configure(rate=1.0, kinds=("500", "503", "reset"), seed=2)
    r = run_bk("-v", "-o", "s3.retries=3", "-o", "s3.backoff=0.01", "snapshots", env=env, timeout=60)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(lines) == 2 and lines[0].startswith("error: listing keys/ in "), r.stderr
    assert lines[1] == "store: 3 requests (LIST 3), 0 B up, 0 B down, 2 retries", lines[1]
    proxy.reset()
    assert store_listing(direct) == before
    assert list(direct.list("locks/")) == []


def test_pack_uploads_failing_publish_no_index_and_no_snapshot(s3_fault_proxy, moto_s3, tmp_path):
    proxy = s3_fault_proxy
    prefix = "packfail-" + uuid.uuid4().hex[:10]
    env = proxy_env(proxy, prefix, tmp_path / "cache")
    src = tmp_path / "src"
    make_source(src)
    ok(run_bk("init", "--pack-size", "4", env=env))
    direct = moto_s3.store(prefix)
    before = store_listing(direct)

    proxy.fail_next("500", count=10**6, method="PUT", path_contains="/data/")
    started = time.monotonic()
    r = run_bk(*FAST_FAIL, "backup", src, env=env, timeout=120)
    assert r.returncode == 1, (r.returncode, r.stderr)
    line = one_error_line(r)
    assert "data/" in line and "unavailable" in line, line
    assert time.monotonic() - started < 30
    assert proxy.faults["500"] >= 2
    proxy.reset()
    after = store_listing(direct)
    assert not any(n.startswith(("index/", "snapshots/", "data/")) for n in after), sorted(after)
    assert {n: s for n, s in after.items() if not n.startswith("meta/")} == before
    assert list(direct.list("locks/")) == []  # the lock was released
    # ... and the repository is still good for the next run.
    r = ok(run_bk("--json", "backup", src, env=env))
    assert json.loads(r.stdout.splitlines()[-1])["snapshot_id"]
    assert ok(run_bk("--json", "check", "--read-data", env=env)).returncode == 0


def test_exclusive_commands_probe_and_fall_back_on_a_store_ignoring_if_none_match(s3_fault_proxy, tmp_path):
    """The CLI probes conditional writes before an exclusive lock: on a store that drops
    If-None-Match the lock goes without the sentinel (one PUT fewer)."""
    proxy = s3_fault_proxy
    env = proxy_env(proxy, "probe-" + uuid.uuid4().hex[:10], tmp_path / "cache")
    ok(run_bk("init", env=env))
    honest = json.loads(ok(run_bk("--json", "forget", "--keep-last", "1", env=env)).stdout)["store"]
    proxy.strip_if_none_match = True
    lying = json.loads(ok(run_bk("--json", "forget", "--keep-last", "1", env=env)).stdout)["store"]
    # probe: 2 conditional writes + 1 delete; then the lock object (+ the sentinel)
    assert (honest["PUT"], honest["DELETE"]) == (4, 3), honest
    assert (lying["PUT"], lying["DELETE"]) == (3, 2), lying
