"""Issue 10.1: planted key files are bounded, skipped and reported, never fatal."""

from __future__ import annotations

import base64
import json
import os

import msgpack
import pytest

from backupkit import limits
from backupkit.errors import FormatError, WrongPassword
from backupkit.repo.keys import KdfParams, open_key_file
from backupkit.repo.config import RepoConfig
from backupkit.repo.repository import Repository
from backupkit.store.local import LocalObjectStore
from tests.support.kit import PASSWORD, cli_env, make_test_repo, run_bk

PLANTED = "keys/" + "00" * 32  # sorts before any real key file


def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def key_doc(**kdf) -> dict:
    k = {"name": "argon2id", "salt": b64(os.urandom(16)), "iterations": 1, "memory_kib": 64, "lanes": 1}
    k.update(kdf)
    return {"version": 1, "kdf": k, "data": b64(os.urandom(60)), "meta": b64(b"")}


HOSTILE = {
    "iterations 2^32-1": json.dumps(key_doc(iterations=2**32 - 1)).encode(),
    "memory 4 GiB": json.dumps(key_doc(memory_kib=4 * 1024 * 1024)).encode(),
    "lanes 0": json.dumps(key_doc(lanes=0)).encode(),
    "lanes -1": json.dumps(key_doc(lanes=-1)).encode(),
    "work t x m": json.dumps(key_doc(iterations=16, memory_kib=256 * 1024, lanes=4)).encode(),
    "iterations a string": json.dumps(key_doc(iterations="3")).encode(),
    "iterations a float": json.dumps(key_doc(iterations=3.5)).encode(),
    "short data": json.dumps({**key_doc(), "data": b64(b"x")}).encode(),
    "huge salt": json.dumps(key_doc(salt=b64(os.urandom(10_000)))).encode(),
    "salt not base64": json.dumps(key_doc(salt="!!")).encode(),
    "not json": b"\xff\x00 not json",
    "a json list": b"[1, 2, 3]",
    "kdf a string": json.dumps({**key_doc(), "kdf": "argon2id"}).encode(),
    "deep nesting": b"[" * 100_000 + b"]" * 100_000,
    "too big": b" " * (limits.KEY_FILE_MAX + 1),
    "empty": b"",
}


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_hostile_key_file_is_damaged_not_a_wrong_password(raw):
    with pytest.raises(FormatError, match="damaged key file"):
        open_key_file("00" * 32, raw, b"pw")


@pytest.fixture
def repo_dir(tmp_path):
    make_test_repo(tmp_path / "repo").close()
    return tmp_path / "repo"


@pytest.mark.parametrize("raw", HOSTILE.values(), ids=HOSTILE.keys())
def test_a_planted_key_file_is_skipped_and_recorded(repo_dir, tmp_path, raw):
    store = LocalObjectStore(repo_dir, fsync=False)
    store.put(PLANTED, raw)
    repo = Repository.open(store, PASSWORD, cache_root=tmp_path / "cache")
    assert len(repo.open_warnings) == 1 and "damaged key file " + PLANTED[5:] in repo.open_warnings[0]
    # a cached open tries the cached key file first and never reads the planted one
    assert Repository.open(store, PASSWORD, cache_root=tmp_path / "cache").open_warnings == ()


def test_only_damaged_key_files_say_so(repo_dir, tmp_path):
    store = LocalObjectStore(repo_dir, fsync=False)
    for o in list(store.list("keys/")):
        store.delete(o.name)
    store.put(PLANTED, HOSTILE["lanes 0"])
    with pytest.raises(FormatError, match=f"damaged key file {PLANTED[5:]}"):
        Repository.open(store, PASSWORD, cache_root=False)


def test_a_wrong_password_stays_a_wrong_password_next_to_damaged_files(repo_dir):
    store = LocalObjectStore(repo_dir, fsync=False)
    store.put(PLANTED, HOSTILE["not json"])
    store.put("keys/not-a-key-id", b"{}")
    with pytest.raises(WrongPassword, match="2 damaged key files skipped"):
        Repository.open(store, b"wrong", cache_root=False)


def test_the_kdf_parameters_bk_writes_are_within_the_bounds():
    from backupkit.repo.keys import check_kdf_params
    from tests.support.kit import INSECURE_TEST_KDF

    check_kdf_params(KdfParams())
    check_kdf_params(INSECURE_TEST_KDF)


def test_cli_reports_skipped_key_files_with_v(repo_dir, tmp_path):
    LocalObjectStore(repo_dir, fsync=False).put(PLANTED, HOSTILE["iterations 2^32-1"])
    env = cli_env(repo_dir, tmp_path / "cache")
    quiet = run_bk("snapshots", env=env, timeout=60)
    assert quiet.returncode == 0 and "damaged" not in quiet.stderr
    loud = run_bk("-v", "--no-cache", "snapshots", env=env, timeout=60)
    assert loud.returncode == 0, loud.stderr
    assert f"warning: damaged key file {PLANTED[5:]}: Argon2id iterations" in loud.stderr


def test_cli_only_a_damaged_key_file(repo_dir, tmp_path):
    store = LocalObjectStore(repo_dir, fsync=False)
    for o in list(store.list("keys/")):
        store.delete(o.name)
    store.put(PLANTED, HOSTILE["short data"])
    r = run_bk("snapshots", env=cli_env(repo_dir, tmp_path / "cache"), timeout=60)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "damaged key file" in r.stderr


def config_bytes(**over) -> bytes:
    d = dict(version=1, repo_id="ab" * 32, chunker_min=1, chunker_avg=2, chunker_max=3, pack_size=4,
             compression_level=3, created=1.0)
    d.update(over)
    return msgpack.packb(d)


@pytest.mark.parametrize(
    "over",
    [
        {"repo_id": "../../../tmp/escape"},
        {"repo_id": 5},
        {"version": "1"},
        {"pack_size": "big"},
        {"chunker_max": 2**40},
        {"chunker_min": 0},
        {"created": "yesterday"},
    ],
)
def test_a_malformed_config_is_a_format_error(over):
    RepoConfig.decode(config_bytes())
    with pytest.raises(FormatError):
        RepoConfig.decode(config_bytes(**over))
