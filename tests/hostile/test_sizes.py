"""Issues 10.2 and 10.4: oversized objects are refused before they are read, zstd bombs
before they are inflated, and no exception type escapes the CLI as a traceback."""

from __future__ import annotations

import json
import os

import pytest
import zstandard

from backupkit import limits
from backupkit.crypto import T_DATA_BLOB
from backupkit.errors import FormatError, ObjectTooLarge
from backupkit.repo.pack import decode_payload
from backupkit.repo.repository import Repository
from backupkit.store.local import LocalObjectStore
from tests.support.kit import PASSWORD, cli_env, run_bk, write_file
from tests.hostile import forge
from tests.hostile.run import problem, run_limited


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """A repository with one snapshot of two files (kept pristine; tests copy it)."""
    base = tmp_path_factory.mktemp("sizes")
    write_file(base / "src" / "a.txt", b"alpha\n")
    write_file(base / "src" / "b.bin", os.urandom(200_000))
    env = cli_env(base / "repo", base / "cache")
    assert run_bk("init", env=env).returncode == 0
    assert run_bk("backup", base / "src", env=env).returncode == 0
    return base


@pytest.fixture
def repo(base, tmp_path):
    import shutil

    shutil.copytree(base / "repo", tmp_path / "repo")
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    r = Repository.open(LocalObjectStore(tmp_path / "repo", fsync=False), PASSWORD, cache_root=False)
    return tmp_path, r, env


def sparse(path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def test_decode_payload_refuses_frames_declaring_more_than_the_limit():
    with pytest.raises(ObjectTooLarge, match="declares 4294967296 bytes"):
        decode_payload(forge.bomb(), "x", 1 << 20)
    with pytest.raises(FormatError):
        decode_payload(forge.bomb(declare=False), "x", 1 << 20)
    with pytest.raises(ObjectTooLarge):
        decode_payload(b"\x00" + bytes(100), "x", 99)
    data = os.urandom(1000) * 3
    assert decode_payload(forge.zstd_payload(data), "x", len(data)) == data
    nosize = zstandard.ZstdCompressor().compressobj()
    assert decode_payload(b"\x01" + nosize.compress(data) + nosize.flush(), "x", len(data)) == data


def test_plain_max_is_bounded_by_ratio_and_kind():
    assert limits.plain_max("lock", 10) == limits.PLAIN_MAX["lock"]
    assert limits.plain_max("index", 1000) == limits.PLAIN_FLOOR
    assert limits.plain_max("index", 131_000) == 131_000 * limits.PLAIN_RATIO_MAX
    assert limits.plain_max("index", 1 << 40) == limits.PLAIN_MAX["index"]


def test_a_2_gib_config_is_refused_unread(repo):
    tmp, _r, env = repo
    sparse(tmp / "repo" / "config", 2 << 30)
    r = run_limited("snapshots", env=env)
    assert problem(r) is None and r.returncode == 1, r.stderr
    assert "config" in r.stderr


@pytest.mark.parametrize("command", [["snapshots"], ["ls", "latest"], ["check"]])
def test_a_4_gib_lock_is_an_unreadable_lock(repo, command):
    tmp, _r, env = repo
    sparse(tmp / "repo" / "locks" / ("ab" * 32), 4 << 30)
    r = run_limited(*command, env=env)
    assert problem(r) is None, r.stderr


def test_a_huge_key_file_is_skipped(repo):
    tmp, _r, env = repo
    sparse(tmp / "repo" / "keys" / ("00" * 32), 1 << 30)
    r = run_limited("-v", "--no-cache", "snapshots", env=env)
    assert r.returncode == 0 and "damaged key file" in r.stderr, r.stderr


@pytest.mark.parametrize("declare", [True, False])
@pytest.mark.parametrize("where", ["lock", "index", "catalog", "snapshot"])
def test_a_zstd_bomb_sealed_with_the_keys(repo, where, declare):
    tmp, r, env = repo
    payload = forge.bomb(declare=declare)
    if where == "lock":
        forge.put_lock(r, payload)
    elif where == "index":
        forge.put_index(r, None, payload=payload)
    elif where == "catalog":
        forge.put_catalog(r, payload)
    else:
        forge.put_snapshot_plain(r, b"whatever", payload=payload)
    for command in (["snapshots"], ["ls", "latest"], ["check"]):
        out = run_limited(*command, env=env)
        assert problem(out) is None, (command, out.stderr)
    if where == "catalog":  # derived data: rebuilt from the snapshot objects
        assert run_limited("ls", "latest", env=env).returncode == 0
    if where == "lock":  # an unreadable lock blocks (it may be exclusive) until unlocked
        assert run_limited("ls", "latest", env=env).returncode == 11
    check = run_limited("check", env=env)
    if where in ("index", "snapshot"):
        assert check.returncode == 1 and "error" in check.stderr


def test_a_zstd_bomb_as_a_data_blob_is_damage_not_an_allocation(repo):
    tmp, r, env = repo
    snaps = json.loads(run_bk("--json", "snapshots", env=env).stdout)
    bid = os.urandom(32)
    forge.put_pack(r, forge.KIND_DATA, [(T_DATA_BLOB, bid, forge.bomb(), 100)])
    root = forge.tree_with(r, {b"/src": forge.dir_entry(), b"/src/bomb": forge.file_entry([bid], 100)})
    forge.put_snapshot(r, root, time=snaps[0]["summary"].get("x", 0) or 2**62)
    restore = run_limited("restore", "latest", "--target", tmp / "out", env=env)
    assert problem(restore) is None and restore.returncode != 0
    check = run_limited("check", "--read-data", env=env)
    assert problem(check) is None and check.returncode == 1


def test_a_panic_from_a_library_is_one_line(monkeypatch, capsys):
    """PanicException (pyo3) derives from BaseException: the boundary catches it too."""
    from backupkit_cli import main

    class PanicException(BaseException):
        pass

    def panicking(*a, **k):
        raise PanicException("capacity overflow")

    monkeypatch.setattr(main, "app", panicking)
    monkeypatch.delenv("BK_DEBUG", raising=False)
    with pytest.raises(SystemExit) as ex:
        main.run()
    assert ex.value.code == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error: PanicException: capacity overflow" in err
