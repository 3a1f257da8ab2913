"""Opening a repository: what it costs, and the cached config and key files it may use."""

from __future__ import annotations

import shutil

import pytest

from backupkit.errors import RepositoryNotFound, WrongPassword
from backupkit.repo.keymanager import KeyManager
from backupkit.repo.repository import Repository
from backupkit.store.local import LocalObjectStore
from tests.support.kit import INSECURE_TEST_KDF, PASSWORD, make_test_repo

REQUESTS = ("GET", "GET_RANGE", "PUT", "LIST", "HEAD", "DELETE")


def requests(store) -> dict[str, int]:
    return {k: v for k, v in store.stats().items() if k in REQUESTS and v}


def fresh(tmp_path, name="repo"):
    return LocalObjectStore(tmp_path / name, fsync=False)


@pytest.fixture
def made(tmp_path):
    make_test_repo(fresh(tmp_path), cache=tmp_path / "cache")
    return tmp_path


def test_second_open_is_one_listing(made):
    first = fresh(made)
    repo = Repository.open(first, PASSWORD, cache_root=made / "cache")
    assert requests(first) == {"LIST": 1, "GET": 2}  # keys/, then config and the key file
    again = fresh(made)
    assert Repository.open(again, PASSWORD, cache_root=made / "cache").config == repo.config
    assert requests(again) == {"LIST": 1}
    nocache = fresh(made)
    Repository.open(nocache, PASSWORD, cache_root=False)
    assert requests(nocache) == {"LIST": 1, "GET": 2}


def test_wrong_password_with_a_cached_key_asks_the_store_and_fails(made):
    Repository.open(fresh(made), PASSWORD, cache_root=made / "cache")
    with pytest.raises(WrongPassword):
        Repository.open(fresh(made), b"not it", cache_root=made / "cache")


def test_changed_password_is_not_opened_from_the_cache(made):
    repo = Repository.open(fresh(made), PASSWORD, cache_root=made / "cache")
    KeyManager(repo).passwd(b"new password", INSECURE_TEST_KDF)
    with pytest.raises(WrongPassword):
        Repository.open(fresh(made), PASSWORD, cache_root=made / "cache")
    assert Repository.open(fresh(made), b"new password", cache_root=made / "cache").keys == repo.keys
    assert [p.name for p in (made / "cache" / "locations").glob("*/keys/*")] == [KeyManager(repo)._ids()[0]]


def test_damaged_cache_files_are_replaced(made):
    Repository.open(fresh(made), PASSWORD, cache_root=made / "cache")
    loc = next((made / "cache" / "locations").iterdir())
    for f in [loc / "config", *(loc / "keys").iterdir()]:
        data = bytearray(f.read_bytes())
        data[len(data) // 2] ^= 1
        f.write_bytes(bytes(data))
    Repository.open(fresh(made), PASSWORD, cache_root=made / "cache")
    again = fresh(made)
    Repository.open(again, PASSWORD, cache_root=made / "cache")
    assert requests(again) == {"LIST": 1}  # repaired by the open before


def test_a_new_repository_at_the_same_location(made):
    old = Repository.open(fresh(made), PASSWORD, cache_root=made / "cache")
    shutil.rmtree(made / "repo")
    new = make_test_repo(fresh(made), password=b"other", cache=made / "cache")
    got = Repository.open(fresh(made), b"other", cache_root=made / "cache")
    assert got.config == new.config != old.config
    with pytest.raises(WrongPassword):
        Repository.open(fresh(made), PASSWORD, cache_root=made / "cache")


def test_missing_repository(tmp_path):
    with pytest.raises(RepositoryNotFound):
        Repository.open(fresh(tmp_path, "nothing"), PASSWORD, cache_root=tmp_path / "cache")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RepositoryNotFound):
        Repository.open(fresh(tmp_path, "empty"), PASSWORD, cache_root=tmp_path / "cache")
