"""Opening a repository: find a key file the password opens, then read the config.

Costs one listing of ``keys/`` when the local cache holds this location's config and a
key file that is still listed, else also a GET of the config and one per key file tried
(see ``OpenCache``). ``keys/`` is listed before anything is derived, and only listed key
files are derived, one at a time (two concurrent Argon2id derivations deadlock in the
installed OpenSSL: issue 8.1; ``kdfahead`` holds a process-wide lock around each). A key file
that does not parse, is out of bounds or is not named like one is skipped
(``Repository.open_warnings`` says why, ``-v`` prints it) and the next is tried; if none
opens, WrongPassword, or FormatError ("damaged key file ...") when every one was damaged.
When a key file opens but the store's config is missing or does not authenticate (and
no cached copy stands in), ConfigDamaged names ``bk repair config``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from backupkit import limits
from backupkit.crypto import T_CONFIG, MasterKeys, Sealer
from backupkit.errors import (
    ConfigDamaged,
    FormatError,
    IntegrityError,
    ObjectNotFound,
    ObjectTooLarge,
    RepositoryNotFound,
    StoreError,
    StorePermissionError,
    WrongPassword,
)
from backupkit.repo.cache import OpenCache
from backupkit.repo.config import RepoConfig
from backupkit.limits import KEY_FILE_MAX
from backupkit.repo.keys import open_key_file
from backupkit.repo.names import id_of
from backupkit.repo.pack import decode_payload
from backupkit.store.base import ObjectStore

if TYPE_CHECKING:
    from backupkit.repo.repository import Repository


@dataclass
class UnlockedKey:
    """A key file the password opened, before the config is read (``unlock_key``)."""

    keys: MasterKeys
    key_id: str
    raw_key: bytes
    key_cached: bool  # its bytes came from the open cache
    open_cache: OpenCache
    skipped: list[str]  # why other key files were skipped (Repository.open_warnings)


def unlock_key(store: ObjectStore, password: bytes, cache_root: os.PathLike | None | bool) -> UnlockedKey:
    """Find a key file the password opens (cached ones first); RepositoryNotFound,
    WrongPassword, or FormatError ("damaged key file ...") when every one was damaged.
    Reads no config: ``bk repair config`` starts here."""
    oc = OpenCache.for_location(store.location, cache_root)
    # List first: a cached key file that is no longer listed (a changed password, a new
    # repository at this location) is never derived (issue 8.1).
    try:
        listed = sorted(o.name for o in store.list("keys/"))
    except StoreError as e:
        if e.retryable or isinstance(e, StorePermissionError):
            raise
        if not store.exists("config"):  # e.g. a directory or bucket that does not exist
            raise RepositoryNotFound(f"no repository at {store.location}") from None
        raise
    skipped: list[str] = []
    names = []
    for name in listed:
        if id_of("keys", name) is None:
            skipped.append(f"ignored {name}: not a key file name")
        else:
            names.append(name)
    if not names:
        if not store.exists("config"):
            raise RepositoryNotFound(f"no repository at {store.location}")
        raise RepositoryNotFound(f"no key files in the repository at {store.location}")
    oc.keep_keys(names)
    wrong = 0
    for name in sorted(names, key=lambda n: not oc.has(n)):  # cached key files first
        key_id = name.split("/", 1)[1]
        keys, raw_key, key_cached, outcome = None, oc.get(name), False, None
        if raw_key is not None:
            try:
                keys, key_cached = open_key_file(key_id, raw_key, password), True
            except (WrongPassword, FormatError) as e:
                outcome = e  # a wrong password, or a damaged cache file: ask the store
        if keys is None:
            cached_raw = raw_key
            try:
                raw_key = store.get(name, max_size=KEY_FILE_MAX)
                if outcome is not None and raw_key == cached_raw:
                    raise outcome  # the same bytes: deriving again would say the same
                keys = open_key_file(key_id, raw_key, password)
            except WrongPassword:
                wrong += 1
                continue
            except FormatError as e:  # ObjectTooLarge too
                skipped.append(str(e) if "damaged key file" in str(e) else f"damaged key file {key_id}: {e}")
                continue
            except ObjectNotFound:
                continue  # removed since the listing
        return UnlockedKey(keys, key_id, raw_key, key_cached, oc, skipped)
    if wrong or not skipped:
        more = f" ({len(skipped)} damaged key file{'s' if len(skipped) != 1 else ''} skipped)" if skipped else ""
        raise WrongPassword(f"wrong password or no key found{more}")
    more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
    raise FormatError(f"{skipped[0]}{more}")


def open_config(sealer: Sealer, raw: bytes) -> RepoConfig:
    """The config in the sealed bytes ``raw``; IntegrityError if they do not authenticate
    with these keys, FormatError if they do not decode."""
    plain = sealer.open(T_CONFIG, b"config", raw, "config")
    return RepoConfig.decode(decode_payload(plain, "config", limits.plain_max("config", len(raw))))


def open_repository(
    cls: type[Repository],
    store: ObjectStore,
    password: bytes,
    cache_root: os.PathLike | None | bool,
    connections: int,
) -> Repository:
    """Open with a password; RepositoryNotFound, WrongPassword as appropriate, and
    ConfigDamaged (naming ``bk repair config``) when a key file opens but the store's
    config is missing, too large or does not authenticate."""
    u = unlock_key(store, password, cache_root)
    oc, sealer = u.open_cache, Sealer(u.keys)
    raw_config = oc.get("config")
    config_cached = raw_config is not None
    cfg = None
    if raw_config is not None:
        try:
            cfg = open_config(sealer, raw_config)
        except IntegrityError:
            # not this repository's config (another one was made at this location)
            oc.clear()
            raw_config, config_cached, u.key_cached = None, False, False
    if cfg is None:
        raw_config = _get_config(store)
        try:
            cfg = open_config(sealer, raw_config)
        except IntegrityError as e:
            raise ConfigDamaged(f"{e}; run bk repair config") from None
    if not config_cached:
        oc.put("config", raw_config)
    if not u.key_cached:
        oc.put(f"keys/{u.key_id}", u.raw_key)
    repo = cls(store, u.keys, cfg, u.key_id, cache_root, connections)
    repo.password, repo.key_raw = password, u.raw_key
    repo.open_warnings = tuple(u.skipped)
    return repo


def _get_config(store: ObjectStore) -> bytes:
    """The store's sealed config; ConfigDamaged when it is gone (a key file opened) or
    larger than a config can be."""
    try:
        return store.get("config", max_size=limits.CONFIG_MAX)
    except ObjectNotFound:
        raise ConfigDamaged("config: missing (the key files are there); run bk repair config") from None
    except ObjectTooLarge as e:
        raise ConfigDamaged(f"{e}; run bk repair config") from None
