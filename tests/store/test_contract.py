"""The one ObjectStore contract suite, run over every backend."""

from __future__ import annotations

import pytest

from backupkit.store.local import LocalObjectStore
from backupkit.store.memory import MemoryObjectStore
from tests.support.faulty import FaultyStore
from tests.support.store_contract import StoreContract


class TestMemoryStore(StoreContract):
    @pytest.fixture
    def store(self):
        return MemoryObjectStore()


class TestLocalStore(StoreContract):
    @pytest.fixture
    def store(self, tmp_path):
        (tmp_path / "repo").mkdir()
        return LocalObjectStore(tmp_path / "repo")


class TestS3Store(StoreContract):
    """Against a real S3 server: SeaweedFS (``weed mini``), see tests/conftest_s3.py."""

    @pytest.fixture
    def store(self, s3_store):
        return s3_store


class TestFaultyStoreWithoutFaults(StoreContract):
    """The wrapper itself keeps the contract when no fault is configured."""

    @pytest.fixture
    def store(self):
        return FaultyStore(MemoryObjectStore())
