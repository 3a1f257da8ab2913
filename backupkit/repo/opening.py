"""Opening a repository: find a key file the password opens, then read the config.

Costs one listing of ``keys/`` when the local cache holds this location's config and a
key file that is still listed, else also a GET of the config and one per key file tried
(see ``OpenCache``). The key of a cached key file is derived on a thread while the
listing goes out (Argon2id takes ~0.4 s and releases the GIL).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

from backupkit.crypto import T_CONFIG, MasterKeys, Sealer
from backupkit.errors import (
    FormatError,
    IntegrityError,
    ObjectNotFound,
    RepositoryNotFound,
    StoreError,
    StorePermissionError,
    WrongPassword,
)
from backupkit.repo.cache import OpenCache
from backupkit.repo.config import RepoConfig
from backupkit.repo.keys import open_key_file
from backupkit.repo.names import id_of
from backupkit.repo.pack import decode_payload
from backupkit.store.base import ObjectStore

if TYPE_CHECKING:
    from backupkit.repo.repository import Repository


def open_repository(
    cls: type[Repository],
    store: ObjectStore,
    password: bytes,
    cache_root: os.PathLike | None | bool,
    connections: int,
) -> Repository:
    """Open with a password; RepositoryNotFound, WrongPassword as appropriate."""
    oc = OpenCache.for_location(store.location, cache_root)
    early = _EarlyKeys(oc, password)
    try:
        names = sorted(o.name for o in store.list("keys/") if id_of("keys", o.name) is not None)
    except StoreError as e:
        if e.retryable or isinstance(e, StorePermissionError):
            raise
        if not store.exists("config"):  # e.g. a directory or bucket that does not exist
            raise RepositoryNotFound(f"no repository at {store.location}") from None
        raise
    if not names:
        if not store.exists("config"):
            raise RepositoryNotFound(f"no repository at {store.location}")
        raise RepositoryNotFound(f"no key files in the repository at {store.location}")
    oc.keep_keys(names)
    raw_config = oc.get("config")
    config_cached = raw_config is not None
    for name in sorted(names, key=lambda n: not oc.has(n)):  # cached key files first
        key_id = name.split("/", 1)[1]
        raw_key = oc.get(name)
        key_cached = raw_key is not None
        keys = early.get(name, raw_key) if raw_key is not None else None
        if raw_key is not None and keys is None:
            key_cached = False  # a wrong password, or a damaged cache file: ask the store
        if keys is None:
            try:
                raw_key = store.get(name)
                keys = open_key_file(key_id, raw_key, password)
            except (WrongPassword, FormatError, ObjectNotFound):
                continue
        sealer = Sealer(keys)
        if raw_config is None:
            raw_config = _get_config(store)
        try:
            plain = sealer.open(T_CONFIG, b"config", raw_config, "config")
        except IntegrityError:
            if not config_cached:
                raise
            # not this repository's config (another one was made at this location)
            oc.clear()
            raw_config, config_cached, key_cached = _get_config(store), False, False
            plain = sealer.open(T_CONFIG, b"config", raw_config, "config")
        cfg = RepoConfig.decode(decode_payload(plain, "config"))
        if not config_cached:
            oc.put("config", raw_config)
        if not key_cached:
            oc.put(name, raw_key)
        repo = cls(store, keys, cfg, key_id, cache_root, connections)
        repo.password = password
        return repo
    raise WrongPassword("wrong password or no key found")


def _get_config(store: ObjectStore) -> bytes:
    try:
        return store.get("config")
    except ObjectNotFound:
        raise RepositoryNotFound(f"no repository at {store.location}") from None


class _EarlyKeys:
    """Opens the cached key files of a location on a thread, started at construction."""

    def __init__(self, oc: OpenCache, password: bytes) -> None:
        self._password = password
        self._files = oc.cached_keys()
        self._done: dict[str, MasterKeys | None] = {}
        self._thread: threading.Thread | None = None
        if self._files:
            self._thread = threading.Thread(target=self._run, daemon=True, name="bk-kdf")
            self._thread.start()

    def _open(self, name: str, raw: bytes) -> MasterKeys | None:
        try:
            return open_key_file(name.split("/", 1)[1], raw, self._password)
        except (WrongPassword, FormatError):
            return None

    def _run(self) -> None:
        for name, raw in self._files.items():
            self._done[name] = self._open(name, raw)

    def get(self, name: str, raw: bytes) -> MasterKeys | None:
        """The keys in key file ``name`` with content ``raw``; None if the password does
        not open it."""
        if self._thread is not None:
            self._thread.join()
        if name in self._done and self._files.get(name) == raw:
            return self._done[name]
        return self._open(name, raw)
