"""``bk list TYPE``: the ids restic's ``list`` prints, one per line, checked against what
the store holds (files under the repository directory) and what the index names."""

from __future__ import annotations

import json

import pytest

from backupkit.repo.lock import LockManager
from backupkit.repo.repository import Repository
from backupkit.store.local import LocalObjectStore
from tests.support.kit import cli_env, ok, run_bk, write_file


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    base = tmp_path_factory.mktemp("list")
    src = base / "src"
    for i in range(5):
        write_file(src / f"d{i}" / "f.bin", bytes([i]) * (50_000 + i))
    env = cli_env(base / "repo", base / "cache")
    ok(run_bk("init", env=env))
    ok(run_bk("backup", src, env=env))
    write_file(src / "new.txt", b"new\n")
    ok(run_bk("backup", src, env=env))
    return base / "repo", env


def listed(env, kind) -> list[str]:
    return ok(run_bk("list", kind, env=env)).stdout.decode().splitlines()


def names(repo, prefix) -> list[str]:
    return sorted(p.name for p in (repo / prefix).rglob("*") if p.is_file())


@pytest.mark.parametrize("kind", ["snapshots", "index", "keys"])
def test_flat_objects_are_the_stores(world, kind):
    repo, env = world
    got = listed(env, kind)
    assert sorted(got) == names(repo, kind) and got


def test_packs_are_every_data_and_metadata_pack(world):
    repo, env = world
    got = listed(env, "packs")
    assert sorted(got) == sorted(names(repo, "data") + names(repo, "meta"))
    assert len(names(repo, "data")) >= 1 and len(names(repo, "meta")) >= 1


def test_blobs_are_the_indexs_with_their_kind(world):
    repo, env = world
    lines = listed(env, "blobs")
    kinds = {line.split(" ")[0] for line in lines}
    assert kinds == {"data", "meta"}
    ids = [line.split(" ")[1] for line in lines]
    assert len(ids) == len(set(ids)) and all(len(i) == 64 for i in ids)
    as_json = json.loads(ok(run_bk("list", "blobs", "--json", env=env)).stdout)
    assert [f"{b['type']} {b['id']}" for b in as_json] == lines
    # every data blob is found by find --blob (so these are the ids the repository uses)
    some = next(i for line, i in zip(lines, ids) if line.startswith("data"))
    assert json.loads(ok(run_bk("find", "--blob", some, "--json", env=env)).stdout)["hits"] >= 1


def test_locks_are_listed_without_taking_one(world):
    repo, env = world
    r = Repository.open(LocalObjectStore(repo), env["BK_PASSWORD"].encode(), cache_root=False)
    try:
        held = LockManager(r, refresh=0, recheck_delay=0, host="db1", pid=4242, node="db1-node").acquire(False, "restore")
        try:
            assert listed(env, "locks") == names(repo, "locks") and len(names(repo, "locks")) == 1
        finally:
            held.release()
    finally:
        r.close()
    assert listed(env, "locks") == []


def test_an_unknown_type_is_a_usage_error(world):
    _repo, env = world
    r = run_bk("list", "trees", env=env)
    assert r.returncode == 2 and "give one of snapshots" in r.stderr, r.stderr


def test_cat_tree_lists_a_directory_with_its_files_content(world):
    """restic's `cat tree SNAP[:PATH]`: the entries of one directory, a file's content as
    the data blob ids in order (catting them gives the file back)."""
    repo, env = world
    src = repo.parent / "src"
    top = json.loads(ok(run_bk("cat", "tree", f"latest:{src}", env=env)).stdout)["nodes"]
    assert [(n["name"], n["type"]) for n in top] == [*((f"d{i}", "dir") for i in range(5)), ("new.txt", "file")]
    (f,) = json.loads(ok(run_bk("cat", "tree", f"latest:{src}/d2", env=env)).stdout)["nodes"]
    assert (f["name"], f["size"]) == ("f.bin", 50_002) and f["content"]
    data = b"".join(ok(run_bk("cat", "blob", bid, env=env)).stdout for bid in f["content"])
    assert data == bytes([2]) * 50_002
    root = json.loads(ok(run_bk("cat", "tree", "latest", env=env)).stdout)["nodes"]
    assert [n["name"] for n in root] == [src.parts[1]]
    r = run_bk("cat", "tree", f"latest:{src}/new.txt", env=env)
    assert r.returncode == 2 and "not a directory" in r.stderr, r.stderr
    r = run_bk("cat", "tree", f"latest:{src}/nothing", env=env)
    assert r.returncode == 1 and "is not in the snapshot" in r.stderr, r.stderr


def test_cat_masterkey_is_refused_with_the_reason(world):
    _repo, env = world
    r = run_bk("cat", "masterkey", env=env)
    assert r.returncode == 2 and "never written unwrapped" in r.stderr and "key file" in r.stderr, r.stderr


def test_cat_pack_and_lock_as_restic(world):
    """restic's `cat pack ID` (the stored bytes) and `cat lock ID` (who holds it)."""
    repo, env = world
    pid = listed(env, "packs")[0]
    (stored,) = [*(repo / "data").rglob(pid), *(repo / "meta").rglob(pid)]
    assert ok(run_bk("cat", "pack", pid, env=env)).stdout == stored.read_bytes()
    r = run_bk("cat", "pack", "ab" * 32, env=env)
    assert r.returncode != 0 and "no pack" in r.stderr
    store_repo = Repository.open(LocalObjectStore(repo), env["BK_PASSWORD"].encode(), cache_root=False)
    try:
        held = LockManager(store_repo, refresh=0, recheck_delay=0, host="db1", pid=4242, node="db1-node").acquire(False, "restore")
        try:
            (lid,) = listed(env, "locks")
            doc = json.loads(ok(run_bk("cat", "lock", lid, env=env)).stdout)
            assert doc["host"] == "db1" and doc["operation"] == "restore" and doc["exclusive"] is False
            assert doc["holder"].endswith("(pid 4242, restore)")
        finally:
            held.release()
    finally:
        store_repo.close()
    r = run_bk("cat", "lock", lid, env=env)
    assert r.returncode != 0 and "Traceback" not in r.stderr


def test_key_add_and_passwd_take_restics_host_and_user(world, tmp_path):
    """`key add --host H --user U` (and `key passwd`): the new key is listed as U@H."""
    _repo, env = world
    pw = tmp_path / "new-password"
    pw.write_text("another password\n")
    added = json.loads(ok(run_bk("key", "add", "--new-password-file", pw, "--host", "laptop", "--user", "ann", "--json", env=env)).stdout)["id"]
    keys = {k["id"]: k for k in json.loads(ok(run_bk("key", "list", "--json", env=env)).stdout)}
    assert (keys[added]["host"], keys[added]["user"]) == ("laptop", "ann")
    others = [k for i, k in keys.items() if i != added]
    assert all(k["host"] != "laptop" for k in others)  # the default: this machine's names
    ok(run_bk("key", "remove", added[:10], env=env))
