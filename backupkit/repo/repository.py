"""Repository: a store, the master keys, the config, the index and the pack writers.

Layout in the store (format v1)::

    config                  sealed T_CONFIG, id b"config"
    keys/<64 hex>           key files (JSON; see keys.py)
    data/<2 hex>/<64 hex>   data packs        meta/<2 hex>/<64 hex>  metadata packs
    index/<64 hex>          sealed T_INDEX objects
    snapshots/<64 hex>      sealed T_SNAPSHOT objects, id = HMAC(id_key, plaintext)
    catalog                 sealed T_CATALOG: every snapshot's summary in one object
    locks/<64 hex>          sealed T_LOCK objects

Write order: packs, then the index object that names them, then snapshot, then catalog.
Every sealed object's plaintext is a payload (flag byte + raw or zstd bytes).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import msgpack

from backupkit.chunker import DEFAULT_AVG, DEFAULT_MAX, DEFAULT_MIN
from backupkit.crypto import (
    T_CONFIG,
    T_DATA_BLOB,
    T_INDEX,
    T_META_BLOB,
    MasterKeys,
    Sealer,
)
from backupkit.errors import (
    BlobNotFound,
    FormatError,
    IntegrityError,
    ObjectNotFound,
    RepositoryExists,
    RepositoryNotFound,
    StoreError,
    StorePermissionError,
    WrongPassword,
)
from backupkit.repo.cache import Cache, OpenCache, default_cache_root
from backupkit.repo.index import Index, PackInfo, decode_index, encode_index
from backupkit.repo.keys import KdfParams, make_key_file, open_key_file
from backupkit.repo.pack import (
    KIND_DATA,
    KIND_META,
    KIND_OF_TYPE,
    PackBuilder,
    PackEntry,
    decode_payload,
    encode_payload,
    pack_name,
)
from backupkit.store.base import ObjectStore
from backupkit.tuning import DEFAULT_TUNING

MiB = 1024 * 1024
#: Write an index object after this many packs, so a long backup that dies keeps most work.
INDEX_EVERY_PACKS = 64


@dataclass(frozen=True)
class RepoConfig:
    """The sealed ``config`` object."""

    version: int
    repo_id: str
    chunker_min: int
    chunker_avg: int
    chunker_max: int
    pack_size: int
    compression_level: int
    created: float

    def encode(self) -> bytes:
        return msgpack.packb(self.__dict__)

    @classmethod
    def decode(cls, data: bytes) -> RepoConfig:
        try:
            d = msgpack.unpackb(data)
            cfg = cls(**d)
        except (ValueError, TypeError) as e:
            raise FormatError(f"config is malformed: {e}") from None
        if cfg.version != 1:
            raise FormatError(f"repository format version {cfg.version} is not supported")
        return cfg


def _hexname(prefix: str, obj_id: bytes) -> str:
    return f"{prefix}/{obj_id.hex()}"


class Repository:
    """An open repository. Thread-safe for concurrent add_blob / read_blob."""

    def __init__(
        self,
        store: ObjectStore,
        keys: MasterKeys,
        config: RepoConfig,
        key_id: str,
        cache_root: os.PathLike | None | bool = None,
        connections: int = 8,
    ) -> None:
        self.store = store
        self.sealer = Sealer(keys)
        self.keys = keys
        self.config = config
        self.key_id = key_id
        if cache_root is False:
            self.cache = Cache(None)
        else:
            root = default_cache_root() if cache_root in (None, True) else cache_root
            self.cache = Cache(Path(os.fspath(root)) / config.repo_id)  # type: ignore[arg-type]
        self.connections = max(1, connections)
        self._index: Index | None = None
        self._index_ids: set[bytes] = set()
        self._lock = threading.Lock()
        self._reserved: set[bytes] = set()
        self._unflushed: dict[bytes, tuple[int, bytes]] = {}  # meta blob id -> (type, sealed)
        self._builders = {KIND_DATA: PackBuilder(KIND_DATA), KIND_META: PackBuilder(KIND_META)}
        self._uploaded: list[tuple[PackInfo, list[PackEntry]]] = []
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: list[Future] = []
        self._slots = threading.BoundedSemaphore(self.connections + DEFAULT_TUNING.packs_in_flight_over_connections)
        self._error: BaseException | None = None
        #: Called before an index object is written (set by whoever holds the lock): a
        #: writer whose lock was taken over must not index packs a prune may have deleted.
        self.lock_check: Callable[[], None] | None = None
        self.stats = {"blobs_new": 0, "blobs_dup": 0, "bytes_raw_new": 0, "bytes_stored_new": 0, "packs": 0}

    # -- lifecycle -------------------------------------------------------------------------
    @classmethod
    def init(
        cls,
        store: ObjectStore,
        password: bytes,
        kdf: KdfParams | None = None,
        pack_size: int = 16 * MiB,
        compression_level: int = 3,
        chunker: tuple[int, int, int] = (DEFAULT_MIN, DEFAULT_AVG, DEFAULT_MAX),
        cache_root: os.PathLike | None | bool = None,
    ) -> Repository:
        """Create a new repository with random master keys and one key file."""
        if store.exists("config"):
            raise RepositoryExists(f"a repository already exists at {store.location}")
        keys = MasterKeys.generate()
        cfg = RepoConfig(1, os.urandom(32).hex(), *chunker, pack_size, compression_level, time.time())
        key_id = os.urandom(32).hex()
        store.put(f"keys/{key_id}", make_key_file(key_id, keys, password, kdf or KdfParams()))
        repo = cls(store, keys, cfg, key_id, cache_root)
        repo.put_object(T_CONFIG, "config", b"config", cfg.encode())
        return repo

    @classmethod
    def open(
        cls,
        store: ObjectStore,
        password: bytes,
        cache_root: os.PathLike | None | bool = None,
        connections: int = 8,
    ) -> Repository:
        """Open with a password; RepositoryNotFound, WrongPassword as appropriate.

        Costs one listing of ``keys/`` when the local cache holds this location's config
        and a key file that is still listed, else also a GET of the config and one per
        key file tried (see ``OpenCache``).
        """
        oc = OpenCache.for_location(store.location, cache_root)
        # Derive the key of a cached key file now, while the listing goes out (Argon2id
        # takes ~0.4 s and releases the GIL; an S3 client takes ~0.3 s to make).
        early = _EarlyKeys(oc, password)
        try:
            names = sorted(o.name for o in store.list("keys/"))
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
                raw_config = cls._get_config(store)
            try:
                plain = sealer.open(T_CONFIG, b"config", raw_config, "config")
            except IntegrityError:
                if not config_cached:
                    raise
                # not this repository's config (another one was made at this location)
                oc.clear()
                raw_config, config_cached, key_cached = cls._get_config(store), False, False
                plain = sealer.open(T_CONFIG, b"config", raw_config, "config")
            cfg = RepoConfig.decode(decode_payload(plain, "config"))
            if not config_cached:
                oc.put("config", raw_config)
            if not key_cached:
                oc.put(name, raw_key)
            return cls(store, keys, cfg, key_id, cache_root, connections)
        raise WrongPassword("wrong password or no key found")

    @staticmethod
    def _get_config(store: ObjectStore) -> bytes:
        try:
            return store.get("config")
        except ObjectNotFound:
            raise RepositoryNotFound(f"no repository at {store.location}") from None

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.cache.close()

    # -- sealed objects --------------------------------------------------------------------
    def seal_object(self, obj_type: int, obj_id: bytes, plaintext: bytes) -> bytes:
        return self.sealer.seal(obj_type, obj_id, encode_payload(plaintext, self.config.compression_level))

    def open_object(self, obj_type: int, obj_id: bytes, raw: bytes, what: str) -> bytes:
        return decode_payload(self.sealer.open(obj_type, obj_id, raw, what), what)

    def put_object(self, obj_type: int, name: str, obj_id: bytes, plaintext: bytes) -> None:
        self.store.put(name, self.seal_object(obj_type, obj_id, plaintext))

    def get_object(self, obj_type: int, name: str, obj_id: bytes) -> bytes:
        """Fetch, open and decode; a failed authentication is retried once (transient)."""
        try:
            return self.open_object(obj_type, obj_id, self.store.get(name), name)
        except IntegrityError:
            return self.open_object(obj_type, obj_id, self.store.get(name), name)

    # -- index -----------------------------------------------------------------------------
    @property
    def index(self) -> Index:
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._load_index()
        return self._index

    def index_names(self) -> list[str]:
        return [o.name for o in self.store.list("index/")]

    def _load_index(self) -> Index:
        names = self.index_names()
        idx = Index()
        objs = {}
        cached = self.cache.names("index")

        def fetch(name: str):
            obj_id = bytes.fromhex(name.split("/", 1)[1])
            raw = self.cache.get(name)
            if raw is not None:
                try:
                    return name, decode_index(self.open_object(T_INDEX, obj_id, raw, name), name)
                except (IntegrityError, FormatError):
                    self.cache.delete(name)
            raw = self.store.get(name)
            obj = decode_index(self.open_object(T_INDEX, obj_id, raw, name), name)
            self.cache.put(name, raw)
            return name, obj

        with ThreadPoolExecutor(max_workers=self.connections) as pool:
            for name, obj in pool.map(fetch, names):
                objs[name] = obj
        superseded = {s for o in objs.values() for s in o.supersedes}
        for name, obj in objs.items():
            obj_id = bytes.fromhex(name.split("/", 1)[1])
            if obj_id in superseded:
                continue
            self._index_ids.add(obj_id)
            for pack, entries in obj.packs:
                idx.add_pack(pack, entries)
        for stale in cached - set(names):
            self.cache.delete(stale)
        return idx

    def reload_index(self) -> Index:
        with self._lock:
            self._index = None
            self._index_ids = set()
        return self.index

    def write_index(self, packs: list[tuple[PackInfo, list[PackEntry]]], supersedes=()) -> str:
        """Write one index object naming ``packs``; returns its name."""
        if self.lock_check is not None:
            self.lock_check()
        obj_id = os.urandom(32)
        name = _hexname("index", obj_id)
        raw = self.seal_object(T_INDEX, obj_id, encode_index(packs, supersedes))
        self.store.put(name, raw)
        self.cache.put(name, raw)
        self._index_ids.add(obj_id)
        return name

    # -- blobs -----------------------------------------------------------------------------
    def has_blob(self, blob_id: bytes) -> bool:
        return blob_id in self.index or blob_id in self._reserved

    def add_blob(
        self, blob_type: int, data: bytes | memoryview, blob_id: bytes | None = None, level: int | None = None
    ) -> tuple[bytes, bool]:
        """Store a blob unless the repository has it. Returns (id, stored_now).

        ``level``: zstd level for this blob (0 = stored raw); None = the repository's."""
        if self._error is not None:
            raise self._error
        if blob_id is None:
            blob_id = self.sealer.blob_id(data)
        index = self.index
        with self._lock:
            if blob_id in index or blob_id in self._reserved:
                self.stats["blobs_dup"] += 1
                return blob_id, False
            self._reserved.add(blob_id)
        level = self.config.compression_level if level is None else level
        sealed = self.sealer.seal(blob_type, blob_id, encode_payload(data, level))
        kind = KIND_OF_TYPE[blob_type]
        full = None
        with self._lock:
            b = self._builders[kind]
            b.add(blob_type, blob_id, sealed, len(data))
            if kind == KIND_META:  # a trie update may read back a node not yet uploaded
                self._unflushed[blob_id] = (blob_type, sealed)
            self.stats["blobs_new"] += 1
            self.stats["bytes_raw_new"] += len(data)
            self.stats["bytes_stored_new"] += len(sealed)
            if b.size >= self.config.pack_size:
                full = b
                self._builders[kind] = PackBuilder(kind)
        if full is not None:
            self._submit(full)
        return blob_id, True

    def _submit(self, builder: PackBuilder) -> None:
        self._slots.acquire()  # backpressure: at most connections + a few packs in flight (Tuning)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.connections, thread_name_prefix="bk-upload")
        fut = self._pool.submit(self._upload, builder)
        with self._lock:
            self._inflight = [f for f in self._inflight if not f.done()]
            self._inflight.append(fut)

    def _upload(self, builder: PackBuilder) -> None:
        try:
            pack_id, data, entries = builder.finish(self.sealer)
            name = pack_name(builder.kind, pack_id)
            self.store.put(name, data)
            if builder.kind == KIND_META:
                self.cache.put(name, data)
            info = PackInfo(pack_id, builder.kind, len(data))
            write_now = None
            index = self.index
            with self._lock:
                index.add_pack(info, [(e.blob_id, e.offset, e.length, e.raw_length) for e in entries])
                for e in entries:
                    self._reserved.discard(e.blob_id)
                    self._unflushed.pop(e.blob_id, None)
                self._uploaded.append((info, entries))
                self.stats["packs"] += 1
                if len(self._uploaded) >= INDEX_EVERY_PACKS:
                    write_now, self._uploaded = self._uploaded, []
            if write_now:
                self.write_index(write_now)
        except BaseException as e:  # surfaced by the next add_blob or flush
            self._error = e
            raise
        finally:
            self._slots.release()

    def flush(self) -> None:
        """Upload partly filled packs, wait for every upload, then write the index."""
        with self._lock:
            pending = [b for b in self._builders.values() if len(b)]
            self._builders = {KIND_DATA: PackBuilder(KIND_DATA), KIND_META: PackBuilder(KIND_META)}
        for b in pending:
            self._submit(b)
        with self._lock:
            inflight = list(self._inflight)
            self._inflight = []
        for f in inflight:
            f.exception()
        if self._error is not None:
            raise self._error
        with self._lock:
            todo, self._uploaded = self._uploaded, []
        if todo:
            self.write_index(todo)

    def read_blob(self, blob_id: bytes, blob_type: int | None = None) -> bytes:
        """Return a blob's plaintext, verified against its id."""
        pending = self._unflushed.get(blob_id)
        if pending is not None:
            t, sealed = pending
            return decode_payload(self.sealer.open(t, blob_id, sealed), "blob")
        loc = self.index.lookup(blob_id)
        if loc is None:
            raise BlobNotFound(f"blob {blob_id.hex()} is not in the index")
        t = T_META_BLOB if loc.pack.kind == KIND_META else T_DATA_BLOB
        if blob_type is not None and blob_type != t:
            raise IntegrityError(f"blob {blob_id.hex()[:16]} has the wrong type")
        name = pack_name(loc.pack.kind, loc.pack.id)
        what = f"blob {blob_id.hex()[:16]} in pack {loc.pack.id.hex()[:16]}"
        for attempt in (0, 1):
            raw = self._read_range(name, loc, refresh=attempt == 1)
            try:
                return self.open_blob(blob_id, t, raw, what)
            except (IntegrityError, FormatError):
                if attempt == 1:
                    raise
        raise AssertionError("unreachable")

    def open_blob(self, blob_id: bytes, blob_type: int, sealed: bytes | memoryview, what: str) -> bytes:
        """Open one sealed blob read from its pack and verify it against its id."""
        data = decode_payload(self.sealer.open(blob_type, blob_id, sealed, what), what)
        if self.sealer.blob_id(data) != blob_id:
            raise IntegrityError(f"{what}: content does not match its id")
        return data

    def _read_range(self, name: str, loc, refresh: bool) -> bytes:
        if loc.pack.kind == KIND_META:
            if refresh:
                self.cache.delete(name)
            raw = self.cache.read_range(name, loc.offset, loc.length)
            if raw is None:
                data = self.store.get(name)
                self.cache.put(name, data)
                return data[loc.offset : loc.offset + loc.length]
            return raw
        return self.store.get_range(name, loc.offset, loc.length)

    # -- listing helpers -------------------------------------------------------------------
    def list_ids(self, prefix: str) -> Iterator[bytes]:
        for o in self.store.list(prefix + "/"):
            tail = o.name[len(prefix) + 1 :]
            try:
                yield bytes.fromhex(tail)
            except ValueError:
                continue


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
