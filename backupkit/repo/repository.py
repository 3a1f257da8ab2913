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

The repository is the content layer and the only door to the store and the cache:
managers list, read, verify, write and delete through the methods below (grouped as
listing, sealed objects, index, deleting here; blobs and packs in ``blobs``), never through ``store`` or
``cache`` themselves. Adding, reading and verifying blobs and moving whole packs live in
``blobs`` (the ``BlobAccess`` mixin this class inherits), loading the index in
``indexload``, building and uploading packs in ``packwriter``, opening in ``opening``, the
names we write in ``names``.

Conditions a command should mention but that do not stop it (a cache that cannot be
written, names in the store that are not ours, unreadable snapshot objects skipped) are
collected once each in ``warnings``; the CLI prints them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from backupkit.chunker import DEFAULT_AVG, DEFAULT_MAX, DEFAULT_MIN
from backupkit import limits
from backupkit.crypto import T_CATALOG, T_CONFIG, T_INDEX, T_LOCK, T_SNAPSHOT, MasterKeys, Sealer
from backupkit.errors import BadArgument, IntegrityError, ObjectNotFound, RepositoryExists
from backupkit.repo.blobs import BlobAccess
from backupkit.repo.cache import Cache, default_cache_root
from backupkit.repo.config import RepoConfig
from backupkit.repo.index import Index, PackInfo
from backupkit.repo.index_codec import encode_index
from backupkit.repo.keys import KdfParams, make_key_file
from backupkit.repo.names import PACK_PREFIXES, id_of
from backupkit.repo.pack import PackEntry, decode_payload, encode_payload
from backupkit.repo.packwriter import PackWriter
from backupkit.limits import COMPRESSION_MAX
from backupkit.store.base import ObjectStore
from backupkit.tuning import DEFAULT_TUNING

MiB = 1024 * 1024

#: Which ``limits.PLAIN_MAX`` applies to a sealed object of each type, and the most
#: bytes a stored object of the type may have.
_KIND_OF_OBJECT = {T_CONFIG: "config", T_INDEX: "index", T_SNAPSHOT: "snapshot", T_CATALOG: "catalog", T_LOCK: "lock"}
_MAX_SIZE_OF_OBJECT = {
    T_CONFIG: limits.CONFIG_MAX,
    T_INDEX: limits.INDEX_MAX,
    T_SNAPSHOT: limits.SNAPSHOT_MAX,
    T_CATALOG: limits.CATALOG_MAX,
    T_LOCK: limits.LOCK_MAX,
}


def _lists_key_files(store: ObjectStore) -> bool:
    from backupkit.errors import StoreError

    try:
        return any(True for _ in store.list("keys/"))
    except ObjectNotFound:
        return False
    except StoreError as e:
        if e.retryable:
            raise
        return False  # e.g. a location that does not exist yet


@dataclass(frozen=True)
class StoredPack:
    """One pack as the store lists it."""

    name: str
    kind: str
    id: bytes
    size: int


class Repository(BlobAccess):
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
        #: the password that opened the repository (check opens every key file with it)
        self.password: bytes | None = None
        #: the bytes of the key file that opened it (check does not derive from the same
        #: bytes and password again: the result is known)
        self.key_raw: bytes | None = None
        #: Why key files were skipped while opening (damaged, not a key file name), for -v.
        self.open_warnings: tuple[str, ...] = ()
        self._warnings: dict[str, None] = {}
        self._notes_lock = threading.Lock()  # warnings and foreign (self._lock is held while loading the index)
        #: store names under our prefixes that are not ours -> why they were ignored
        self.foreign: dict[str, str] = {}
        if cache_root is False:
            self.cache = Cache(None, self.warn)
        else:
            root = default_cache_root() if cache_root in (None, True) else cache_root
            self.cache = Cache(Path(os.fspath(root)) / config.repo_id, self.warn)  # type: ignore[arg-type]
        self.connections = max(1, connections)
        self._index: Index | None = None
        self._index_ids: set[bytes] = set()
        #: index objects the last load could not read: name -> reason (the others are
        #: used; ``bk repair index`` rebuilds what they held from the packs)
        self.index_failures: dict[str, str] = {}
        #: blobs known to be damaged where the index places them (a failed read in this
        #: run, or the blobs of a pack the store lost): ``add_blob`` writes them again
        #: instead of deduplicating, and the new copy takes over the in-memory index
        self.damaged: set[bytes] = set()
        self._lock = threading.Lock()
        self._reserved: set[bytes] = set()
        self._unflushed: dict[bytes, tuple[int, bytes]] = {}  # meta blob id -> (type, sealed)
        self._writer = PackWriter(self, on_uploaded=self._pack_uploaded)
        self._uploaded: list[tuple[PackInfo, list[PackEntry]]] = []
        self._uploaded_blobs = 0  # blobs in ``_uploaded`` (held in memory until indexed)
        self._lock_hook: Callable[[], None] | None = None
        #: index checkpoints (``Tuning.index_checkpoint_packs`` / ``_seconds``)
        self.tuning = DEFAULT_TUNING
        self._last_index = time.monotonic()
        #: ``packs`` uploaded by add_blob and their ``pack_bytes``; ``packs_indexed`` (and
        #: their bytes and blobs): packs an index object written by this repository names
        #: (what a crash or an interrupt keeps)
        self.stats = {
            "blobs_new": 0, "blobs_dup": 0, "bytes_raw_new": 0, "bytes_stored_new": 0,
            "packs": 0, "pack_bytes": 0, "packs_indexed": 0, "pack_bytes_indexed": 0, "blobs_indexed": 0,
        }

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
        chunker_key: bytes | None = None,
    ) -> Repository:
        """Create a new repository with random master keys and one key file.

        ``chunker_key`` (with ``chunker``): another repository's, so both cut files at
        the same places (``init --copy-chunker-params``; ``copy`` then moves blobs as
        they are instead of re-chunking files).

        BadArgument (before anything is written) for a compression level outside
        0..COMPRESSION_MAX or a pack size outside 1 byte..PACK_SIZE_MAX (the CLI asks
        for at least PACK_SIZE_MIN; tests use smaller packs).
        """
        if type(compression_level) is not int or not 0 <= compression_level <= COMPRESSION_MAX:
            raise BadArgument(f"compression level {compression_level}: use 0 (off) to {COMPRESSION_MAX}")
        if type(pack_size) is not int or not 0 < pack_size <= limits.PACK_SIZE_MAX:
            raise BadArgument(f"pack size {pack_size}: at most {limits.PACK_SIZE_MAX} bytes")
        if store.exists("config"):
            raise RepositoryExists(f"a repository already exists at {store.location}")
        if _lists_key_files(store):
            raise RepositoryExists(
                f"a repository whose config is gone is at {store.location} (it has key files): run bk repair config"
            )
        keys = MasterKeys.generate()
        if chunker_key is not None:
            keys = MasterKeys(keys.enc_key, keys.id_key, chunker_key)
        cfg = RepoConfig(1, os.urandom(32).hex(), *chunker, pack_size, compression_level, time.time())
        key_id = os.urandom(32).hex()
        key_raw = make_key_file(key_id, keys, password, kdf or KdfParams())
        store.put(f"keys/{key_id}", key_raw)
        repo = cls(store, keys, cfg, key_id, cache_root)
        repo.password, repo.key_raw = password, key_raw
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
        """Open with a password; RepositoryNotFound, WrongPassword as appropriate (see
        ``opening``)."""
        from backupkit.repo.opening import open_repository

        return open_repository(cls, store, password, cache_root, connections)

    def close(self) -> None:
        self._writer.close()
        self.cache.close()

    # -- warnings and the lock -------------------------------------------------------------
    def warn(self, message: str) -> None:
        """Record a condition worth one line at the end of the command (each once)."""
        with self._notes_lock:
            self._warnings.setdefault(message, None)

    @property
    def warnings(self) -> list[str]:
        """Every recorded warning, in the order first met."""
        with self._notes_lock:
            return list(self._warnings)

    def install_lock_check(self, check: Callable[[], None] | None) -> None:
        """Set what ``check_lock`` calls (the CLI's ``locked_repo`` installs its lock's
        ``check``, which raises LockLost once the lock is gone)."""
        self._lock_hook = check

    def check_lock(self) -> None:
        """Raise if the lock this process holds was lost; a no-op without a lock.
        Every writer calls it right before publishing (an index object, a snapshot)
        or deleting anything."""
        if self._lock_hook is not None:
            self._lock_hook()

    # -- listing ---------------------------------------------------------------------------
    def list_names(self, prefix: str) -> list[str]:
        """Our object names under ``prefix`` (``index``, ``snapshots``, ``keys``, ``locks``,
        ``data``, ``meta``); names that are not ours are recorded in ``foreign`` (with a
        warning) and left out."""
        out = []
        for o in self.store.list(prefix + "/"):
            if id_of(prefix, o.name) is not None:
                out.append(o.name)
            else:
                self._foreign(o.name)
        return out

    def _foreign(self, name: str) -> None:
        with self._notes_lock:
            if name in self.foreign:
                return
            self.foreign[name] = "not a name bk writes"
        self.warn(f"ignoring {name!r} in the store: not a name bk writes (bk check lists every such name)")

    def list_ids(self, prefix: str) -> Iterator[bytes]:
        """The ids of our objects under ``prefix`` (see ``list_names``)."""
        for name in self.list_names(prefix):
            yield bytes.fromhex(name.rsplit("/", 1)[1])

    def index_names(self) -> list[str]:
        return self.list_names("index")

    def iter_packs(self) -> Iterator[StoredPack]:
        """Every pack the store lists (data, then metadata), with its size."""
        for kind in PACK_PREFIXES:
            for o in self.store.list(kind + "/"):
                pack_id = id_of(kind, o.name)
                if pack_id is None:
                    self._foreign(o.name)
                    continue
                yield StoredPack(o.name, kind, pack_id, o.size)

    def list_packs(self) -> dict[str, int]:
        """Every pack the store lists: name -> size."""
        return {p.name: p.size for p in self.iter_packs()}

    def exists(self, name: str) -> bool:
        return self.store.exists(name)

    def read_raw(self, name: str, max_size: int | None = None) -> bytes:
        """An object's stored bytes, straight from the store (key files; check); more
        than ``max_size`` bytes is ObjectTooLarge, refused before reading."""
        return self.store.get(name, max_size=max_size)

    def read_raw_range(self, name: str, offset: int, length: int) -> bytes:
        """``length`` stored bytes of an object from ``offset``, straight from the store
        (``repair index`` reads the headers at the end of packs)."""
        return self.store.get_range(name, offset, length)

    def read_raw_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """The stored bytes of each (offset, length) of ``ranges`` in turn, straight from
        the store, one held at a time (``check --read-data`` reads a pack so on a local
        store: ``ObjectStore.get_ranges``)."""
        return self.store.get_ranges(name, ranges)

    # -- sealed objects --------------------------------------------------------------------
    def seal_object(self, obj_type: int, obj_id: bytes, plaintext: bytes) -> bytes:
        return self.sealer.seal(obj_type, obj_id, encode_payload(plaintext, self.config.compression_level))

    def open_object(self, obj_type: int, obj_id: bytes, raw: bytes, what: str) -> bytes:
        """Open and decode a sealed object, its plaintext bounded by ``limits.plain_max``."""
        limit = limits.plain_max(_KIND_OF_OBJECT[obj_type], len(raw))
        return decode_payload(self.sealer.open(obj_type, obj_id, raw, what), what, limit)

    def put_object(self, obj_type: int, name: str, obj_id: bytes, plaintext: bytes) -> None:
        self.store.put(name, self.seal_object(obj_type, obj_id, plaintext))

    def get_object(self, obj_type: int, name: str, obj_id: bytes) -> bytes:
        """Fetch, open and decode; a failed authentication is retried once (transient)."""
        return self.get_object_raw(obj_type, name, obj_id)[0]

    def get_object_raw(self, obj_type: int, name: str, obj_id: bytes) -> tuple[bytes, bytes]:
        """(plaintext, stored bytes) of a sealed object, from the store; a failed
        authentication is retried once (transient). At most the kind's maximum size is
        read (ObjectTooLarge otherwise)."""
        max_size = _MAX_SIZE_OF_OBJECT[obj_type]
        raw = self.store.get(name, max_size=max_size)
        try:
            return self.open_object(obj_type, obj_id, raw, name), raw
        except IntegrityError:
            raw = self.store.get(name, max_size=max_size)
            return self.open_object(obj_type, obj_id, raw, name), raw

    # -- index -----------------------------------------------------------------------------
    @property
    def index(self) -> Index:
        if self._index is None:
            with self._lock:
                if self._index is None:
                    self._index = self._load_index()
        return self._index

    def _load_index(self) -> Index:
        from backupkit.repo.indexload import load_index

        # tolerant: a damaged index object never blocks what other objects index (prune
        # refuses to run while ``index_failures`` is not empty)
        loaded = load_index(self, tolerant=True)
        self.index_failures = dict(loaded.failures)
        for name, why in sorted(loaded.failures.items()):
            what = why if name in why else f"{name}: {why}"
            self.warn(f"{what}; its packs are left out until bk repair index")
        self._index_ids.update(bytes.fromhex(n.split("/", 1)[1]) for n in loaded.merged)
        return loaded.index

    def reload_index(self) -> Index:
        self.drop_index()
        return self.index

    def drop_index(self) -> None:
        """Let the loaded index go; the next use of ``index`` loads it again (prune, after
        replacing it, does not pay for a load no one may ask for)."""
        with self._lock:
            self._index = None
            self._index_ids = set()

    def write_index(
        self,
        packs: Sequence[tuple[PackInfo, Sequence[PackEntry] | Sequence[tuple[bytes, int, int, int]]]],
        supersedes: Iterable[bytes] = (),
    ) -> str:
        """Write one index object naming ``packs``; returns its name. Checks the lock
        first: a writer whose lock was taken over must not index packs a prune may have
        deleted."""
        self.check_lock()
        obj_id = os.urandom(32)
        name = _hexname("index", obj_id)
        raw = self.seal_object(T_INDEX, obj_id, encode_index(packs, supersedes))
        self.store.put(name, raw)
        self.cache.put(name, raw)
        with self._lock:
            self._index_ids.add(obj_id)
            self._last_index = time.monotonic()
            self.stats["packs_indexed"] += len(packs)
            self.stats["pack_bytes_indexed"] += sum(info.size for info, _ in packs)
            self.stats["blobs_indexed"] += sum(len(entries) for _, entries in packs)
        return name

    # -- deleting --------------------------------------------------------------------------
    def delete_objects(self, names: Iterable[str], on_deleted: Callable[[str], None] | None = None) -> int:
        """Delete objects and their cached copies, in parallel; one already gone is fine.
        Returns how many were deleted; ``on_deleted(name)`` hears of each."""
        names = list(names)

        def one(name: str) -> int:
            try:
                self.store.delete(name)
            except ObjectNotFound:
                return 0
            finally:
                self.cache.delete(name)
            if on_deleted is not None:
                on_deleted(name)
            return 1

        if not names:
            return 0
        with ThreadPoolExecutor(max_workers=self.connections) as pool:
            return sum(pool.map(one, names))

    def remove_abandoned(self, older_than: float) -> int:
        """Remove the store's partial writes older than ``older_than`` seconds (killed
        writers' temporary files); only under the exclusive lock."""
        return self.store.remove_abandoned(older_than)

    def forget_cached(self, prefix: str, keep: Iterable[str]) -> None:
        """Drop cached copies under ``prefix`` whose names are not in ``keep``."""
        for stale in self.cache.names(prefix) - set(keep):
            self.cache.delete(stale)


def _hexname(prefix: str, obj_id: bytes) -> str:
    return f"{prefix}/{obj_id.hex()}"
