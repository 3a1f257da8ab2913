"""``bk serve`` end to end: restic itself as a client, bk through ``--append-only``, every
verb an append-only server refuses, every bk command that would remove something, and the
request log.

Servers are real ``bk serve`` child processes on 127.0.0.1 (tests/conftest_backends.py);
clients are the real ``restic`` and ``bk`` executables.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import urllib3

from tests.support.kit import cli_env, diff_trees, record_tree, run_bk
from tests.conftest_backends import start_bk_serve

HEX = "ab" * 32


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert r.returncode == 0, f"{r.args[1:]} exited {r.returncode}: {r.stderr}"
    assert "Traceback" not in r.stderr
    return r


def make_tree(root: Path) -> Path:
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a.txt").write_text("hello from a\n" * 100)
    (root / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    (root / "sub" / "deeper" / "c.txt").write_text("c" * 5000)
    (root / "empty").write_bytes(b"")
    return root


# -- restic as the client -------------------------------------------------------------------


def test_restic_init_backup_check_restore(tmp_path, bk_server):
    restic = shutil.which("restic")
    if restic is None:
        pytest.skip("restic is not installed (scripts/setup.sh --test installs it): "
                    "bk serve's protocol is NOT proven against restic here")
    src = make_tree(tmp_path / "src")
    env = {**os.environ, "RESTIC_PASSWORD": "restic-pw", "RESTIC_CACHE_DIR": str(tmp_path / "rcache")}
    repo = "rest:" + bk_server.base("restic-repo")

    def restic_run(*args: str) -> subprocess.CompletedProcess:
        r = subprocess.run([restic, "-r", repo, *args], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, f"restic {' '.join(args)} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
        return r

    restic_run("init")
    restic_run("backup", str(src))
    restic_run("backup", str(src))  # the second one reads the index and finds nothing new
    out = restic_run("check", "--read-data").stdout
    assert "no errors were found" in out
    snaps = json.loads(restic_run("snapshots", "--json").stdout)
    assert len(snaps) == 2
    restic_run("restore", "latest", "--target", str(tmp_path / "out"))
    assert diff_trees(record_tree(src), record_tree(tmp_path / "out" / src.relative_to("/"))) == []
    # restic's own layout on disk: data sharded by the first two characters of the id.
    packs = list((bk_server.path / "restic-repo" / "data").glob("??/*"))
    assert packs and all(p.parent.name == p.name[:2] for p in packs)


# -- bk through an append-only server ---------------------------------------------------------


def _two_backups(src: Path, env: dict) -> Path:
    """``bk init``, then two backups of a tree made at ``src`` (one file changed between)."""
    make_tree(src)
    ok(run_bk("init", env=env))
    ok(run_bk("backup", src, env=env))
    (src / "a.txt").write_text("changed\n")
    ok(run_bk("backup", src, env=env))
    return src


def test_bk_through_append_only(tmp_path, start_bk_server):
    data = tmp_path / "data"
    append_only = start_bk_server(data, "--no-auth", "--append-only")
    env = dict(cli_env(append_only.url("laptop"), tmp_path / "cache"))
    src = _two_backups(tmp_path / "src", env)
    ok(run_bk("check", "--read-data", env=env))
    snaps = json.loads(ok(run_bk("--json", "snapshots", env=env)).stdout)
    assert len(snaps) == 2

    refused = run_bk("forget", "--keep-last", "1", env=env)
    assert refused.returncode == 1, refused.stderr
    assert "append-only server: deleting snapshots/" in refused.stderr
    assert "Traceback" not in refused.stderr
    refused = run_bk("forget", "--keep-last", "1", "--prune", env=env)
    assert refused.returncode == 1 and "append-only" in refused.stderr
    assert len(json.loads(ok(run_bk("--json", "snapshots", env=env)).stdout)) == 2
    ok(run_bk("check", env=env))

    # The same directory through a normal server (the administrator's credential).
    admin = start_bk_server(data, "--no-auth")
    admin_env = dict(env, BK_REPOSITORY=admin.url("laptop"))
    ok(run_bk("forget", "--keep-last", "1", "--prune", env=admin_env))
    assert len(json.loads(ok(run_bk("--json", "snapshots", env=admin_env)).stdout)) == 1
    ok(run_bk("check", "--read-data", env=admin_env))
    ok(run_bk("restore", "latest", "--target", tmp_path / "out", env=admin_env))
    assert diff_trees(record_tree(src), record_tree(tmp_path / "out" / src.relative_to("/"))) == []


def _request(base: str, method: str, path: str, body: bytes | None = None) -> int:
    r = urllib3.request(method, base.rstrip("/") + path, body=body, retries=False, timeout=10)
    return r.status


REFUSED = [
    ("DELETE", "/r/config"),
    ("DELETE", f"/r/data/{HEX}"),
    ("DELETE", f"/r/keys/{HEX}"),
    ("DELETE", f"/r/index/{HEX}"),
    ("DELETE", f"/r/snapshots/{HEX}"),
    ("DELETE", "/r/index/~catalog"),
    ("POST", "/r/config"),
    ("POST", f"/r/data/{HEX}"),
    ("POST", f"/r/keys/{HEX}"),
    ("POST", f"/r/index/{HEX}"),
    ("POST", f"/r/snapshots/{HEX}"),
]


@pytest.fixture(scope="module")
def append_only_repo(tmp_path_factory):
    """One append-only server for the module, with one object of every kind."""
    root = tmp_path_factory.mktemp("append-only")
    server = start_bk_serve(root / "data", "--no-auth", "--append-only", "--log", str(root / "access.log"))
    base = server.base()
    assert _request(base, "POST", "/r/?create=true") == 200
    for path in dict.fromkeys(["/r/config", *(p for m, p in REFUSED if m == "POST"), "/r/index/~catalog", f"/r/locks/{HEX}"]):
        assert _request(base, "POST", path, b"original") == 200, path
    yield server
    server.stop()


@pytest.mark.parametrize("method,path", REFUSED, ids=[f"{m} {p.split('/')[2]}" for m, p in REFUSED])
def test_append_only_refuses(append_only_repo, method, path):
    base = append_only_repo.base()
    assert _request(base, method, path, b"evil" if method == "POST" else None) == 403
    assert urllib3.request("GET", base.rstrip("/") + path, retries=False).data == b"original"


def test_append_only_allows_locks_catalog_and_new_objects(append_only_repo):
    base = append_only_repo.base()
    assert _request(base, "POST", f"/r/locks/{HEX}", b"refreshed") == 200
    assert _request(base, "DELETE", f"/r/locks/{HEX}") == 200
    assert _request(base, "GET", f"/r/locks/{HEX}") == 404
    assert _request(base, "POST", "/r/index/~catalog", b"rewritten") == 200
    assert _request(base, "POST", f"/r/data/{'cd' * 32}", b"new pack") == 200
    assert (append_only_repo.path / "r" / "data" / "cd" / ("cd" * 32)).read_bytes() == b"new pack"
    log = (append_only_repo.path.parent / "access.log").read_text()
    assert f'"DELETE /r/locks/{HEX} HTTP/1.1" 200' in log
    assert '"POST /r/?create=true HTTP/1.1" 200' in log


def test_serve_refuses_to_start_without_users(tmp_path):
    r = run_bk("serve", "--path", tmp_path / "data", "--listen", "127.0.0.1:0", env=cli_env(tmp_path, tmp_path))
    assert r.returncode == 1
    assert ".htpasswd" in r.stderr and "--no-auth" in r.stderr


# -- every bk command that removes something, through an append-only server ---------------

DESTRUCTIVE = [
    ("forget", ["forget", "{first}"]),
    ("forget --prune", ["forget", "--keep-last", "1", "--prune"]),
    ("prune", ["prune"]),
    ("tag --add", ["tag", "--add", "x", "{first}"]),
    ("rewrite --forget", ["rewrite", "--forget", "--exclude", "a.txt", "{first}"]),
    ("repair index", ["repair", "index"]),
    ("repair snapshots --forget", ["repair", "snapshots", "--forget"]),
    ("key remove", ["key", "remove", "{other_key}"]),
]


@pytest.fixture(scope="module")
def append_only_bk(tmp_path_factory):
    """A repository with two snapshots (and a second key), written through a normal
    server, then served append-only from the same directory."""
    root = tmp_path_factory.mktemp("ao-bk")
    admin = start_bk_serve(root / "data", "--no-auth")
    env = dict(cli_env(admin.url("laptop"), root / "cache"))
    _two_backups(root / "src", env)
    pw2 = root / "pw2"
    pw2.write_text("second password\n")
    ok(run_bk("key", "add", "--new-password-file", pw2, env=env))
    admin.stop()
    server = start_bk_serve(root / "data", "--no-auth", "--append-only")
    env = dict(env, BK_REPOSITORY=server.url("laptop"))
    yield server, env, root
    server.stop()


def _state(env) -> tuple[list[str], list[str]]:
    snaps = sorted(s["id"] for s in json.loads(ok(run_bk("--json", "snapshots", env=env)).stdout))
    keys = sorted(k["id"] for k in json.loads(ok(run_bk("--json", "key", "list", env=env)).stdout))
    return snaps, keys


@pytest.mark.parametrize("name,argv", DESTRUCTIVE, ids=[n for n, _ in DESTRUCTIVE])
def test_append_only_keeps_history_from_every_command(append_only_bk, name, argv):
    """Issue 12 (Done when): through --append-only, no bk command removes a snapshot, a key
    or a pack; each one that would fails with one line naming the append-only server, and
    the repository still checks clean. (Commands that first add something, tag and
    rewrite, may leave their new snapshot: adding is what append-only allows.)"""
    _server, env, _root = append_only_bk
    snaps, keys = _state(env)
    current = json.loads(ok(run_bk("--json", "key", "list", env=env)).stdout)
    fill = {"{first}": snaps[0], "{other_key}": next(k["id"] for k in current if not k.get("current"))}
    r = run_bk(*[fill.get(a, a) for a in argv], env=env)
    assert "Traceback" not in r.stderr
    after_snaps, after_keys = _state(env)
    assert set(snaps) <= set(after_snaps), f"{name} removed a snapshot through an append-only server"
    assert after_keys == keys
    if r.returncode == 0:
        # nothing to remove was found (repair with nothing damaged, prune with nothing unused)
        assert name in ("prune", "repair index", "repair snapshots --forget"), (name, r.stdout, r.stderr)
    else:
        assert r.returncode == 1, (name, r.returncode, r.stderr)
        assert "append-only" in r.stderr, r.stderr
    ok(run_bk("check", "--read-data", env=env))
