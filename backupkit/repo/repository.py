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
listing, sealed objects, index, blobs, packs, deleting), never through ``store`` or
``cache`` themselves. Loading the index lives in ``indexload``, building and uploading
packs in ``packwriter``, opening in ``opening``, the names we write in ``names``.

Conditions a command should mention but that do not stop it (a cache that cannot be
written, names in the store that are not ours, unreadable snapshot objects skipped) are
collected once each in ``warnings``; the CLI prints them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from backupkit.chunker import DEFAULT_AVG, DEFAULT_MAX, DEFAULT_MIN
from backupkit import limits
from backupkit.crypto import T_CATALOG, T_CONFIG, T_INDEX, T_LOCK, T_SNAPSHOT, MasterKeys, Sealer
from backupkit.errors import BadArgument, BlobNotFound, FormatError, IntegrityError, ObjectNotFound, RepositoryExists
from backupkit.repo.cache import Cache, default_cache_root
from backupkit.repo.config import RepoConfig
from backupkit.repo.index import BlobLocation, Index, PackInfo, encode_index
from backupkit.repo.keys import KdfParams, make_key_file
from backupkit.repo.names import PACK_PREFIXES, id_of
from backupkit.repo.pack import KIND_META, TYPE_OF_KIND, PackEntry, decode_payload, encode_payload, pack_name
from backupkit.repo.packwriter import PackWriter
from backupkit.limits import BLOB_MAX, COMPRESSION_MAX
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


@dataclass(frozen=True)
class StoredPack:
    """One pack as the store lists it."""

    name: str
    kind: str
    id: bytes
    size: int


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
        #: the password that opened the repository (check opens every key file with it)
        self.password: bytes | None = None
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
        keys = MasterKeys.generate()
        if chunker_key is not None:
            keys = MasterKeys(keys.enc_key, keys.id_key, chunker_key)
        cfg = RepoConfig(1, os.urandom(32).hex(), *chunker, pack_size, compression_level, time.time())
        key_id = os.urandom(32).hex()
        store.put(f"keys/{key_id}", make_key_file(key_id, keys, password, kdf or KdfParams()))
        repo = cls(store, keys, cfg, key_id, cache_root)
        repo.password = password
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
        with self._lock:
            self._index = None
            self._index_ids = set()
        return self.index

    def write_index(self, packs: list[tuple[PackInfo, list[PackEntry]]], supersedes: Iterable[bytes] = ()) -> str:
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

    # -- blobs -----------------------------------------------------------------------------
    def has_blob(self, blob_id: bytes) -> bool:
        return blob_id in self.index or blob_id in self._reserved

    def has_blobs(self, blob_ids: list[bytes]) -> bool:
        """Whether the repository has every one of ``blob_ids`` (one index lookup)."""
        return all(b in self._reserved for b in self.index.missing(blob_ids))

    def add_blob(
        self, blob_type: int, data: bytes | memoryview, blob_id: bytes | None = None, level: int | None = None
    ) -> tuple[bytes, bool]:
        """Store a blob unless the repository has it. Returns (id, stored_now).

        ``level``: zstd level for this blob (0 = stored raw); None = the repository's."""
        self._writer.raise_error()
        if blob_id is None:
            blob_id = self.sealer.blob_id(data)
        index = self.index
        with self._lock:
            if (blob_id in index and blob_id not in self.damaged) or blob_id in self._reserved:
                self.stats["blobs_dup"] += 1
                return blob_id, False
            self._reserved.add(blob_id)
        level = self.config.compression_level if level is None else level
        sealed = self.sealer.seal(blob_type, blob_id, encode_payload(data, level))
        with self._lock:
            if blob_type == TYPE_OF_KIND[KIND_META]:  # a trie update may read back a node not yet uploaded
                self._unflushed[blob_id] = (blob_type, sealed)
            self.stats["blobs_new"] += 1
            self.stats["bytes_raw_new"] += len(data)
            self.stats["bytes_stored_new"] += len(sealed)
        self._writer.add(blob_type, blob_id, sealed, len(data))
        return blob_id, True

    def _pack_uploaded(self, info: PackInfo, entries: list[PackEntry]) -> None:
        """add_blob's packs: index them in memory, and in the store at each checkpoint."""
        index = self.index
        write_now = None
        with self._lock:
            index.add_pack(info, [(e.blob_id, e.offset, e.length, e.raw_length) for e in entries])
            healed = [e for e in entries if e.blob_id in self.damaged]
            if healed:  # the fresh copy replaces the damaged one
                index.relocate(info, [(e.blob_id, e.offset, e.length, e.raw_length) for e in healed])
                self.damaged.difference_update(e.blob_id for e in healed)
            for e in entries:
                self._reserved.discard(e.blob_id)
                self._unflushed.pop(e.blob_id, None)
            self._uploaded.append((info, entries))
            self._uploaded_blobs += len(entries)
            self.stats["packs"] += 1
            self.stats["pack_bytes"] += info.size
            # checkpoint: a crash or a kill -9 loses at most this many packs, or this long
            # of uploads, from the index (the packs stay, unreferenced, for prune)
            if (
                len(self._uploaded) >= self.tuning.index_checkpoint_packs
                or self._uploaded_blobs >= self.tuning.index_checkpoint_blobs
                or time.monotonic() - self._last_index >= self.tuning.index_checkpoint_seconds
            ):
                write_now, self._uploaded = self._uploaded, []
                self._uploaded_blobs = 0
        if write_now:
            self.write_index(write_now)

    def flush(self) -> None:
        """Upload partly filled packs, wait for every upload, then write the index."""
        self._writer.flush()
        self._index_uploaded()

    def flush_complete(self) -> None:
        """After an interrupt: drop the packs still being filled, wait for the uploads
        under way, and write the index of every pack uploaded and not yet indexed.

        Nothing new is uploaded, so this returns as soon as the uploads in flight end;
        a failed upload is left out (its error stays for the next ``flush``)."""
        dropped = self._writer.drop_partial()
        with self._lock:
            for blob_id in dropped:
                self._reserved.discard(blob_id)
                self._unflushed.pop(blob_id, None)
        self._index_uploaded()

    def _index_uploaded(self) -> None:
        """Write the index of the packs uploaded since the last index object (no upload
        is in flight); they stay listed until it is written, so that an interrupt while
        it is written leaves them to ``flush_complete``."""
        with self._lock:
            todo = list(self._uploaded)
        if todo:
            self.write_index(todo)
            with self._lock:
                del self._uploaded[: len(todo)]
                self._uploaded_blobs = sum(len(entries) for _info, entries in self._uploaded)

    def read_blob(self, blob_id: bytes, blob_type: int | None = None) -> bytes:
        """Return a blob's plaintext, verified against its id."""
        pending = self._unflushed.get(blob_id)
        if pending is not None:
            t, sealed = pending
            return decode_payload(self.sealer.open(t, blob_id, sealed), "blob")  # written by us
        loc = self.index.lookup(blob_id)
        if loc is None:
            hint = f" ({len(self.index_failures)} index object(s) cannot be read: run bk repair index)" if self.index_failures else ""
            raise BlobNotFound(f"blob {blob_id.hex()} is not in the index{hint}")
        try:
            return self.read_blob_at(loc, blob_type)
        except (IntegrityError, FormatError, ObjectNotFound):
            with self._lock:
                self.damaged.add(blob_id)  # a backup writes it again rather than reuse it
            raise

    def mark_missing_packs(self) -> int:
        """Treat the blobs of indexed packs the store no longer lists (or lists at another
        size) as damaged, so ``add_blob`` writes them again; returns how many packs.
        One listing of the packs (backup calls it: a backup must never reference a blob
        whose pack is gone)."""
        listed = self.list_packs()
        index = self.index
        gone = {p.id for p in index.packs() if listed.get(pack_name(p.kind, p.id)) != p.size}
        if gone:
            lost = [loc.blob_id for loc in index.blobs() if loc.pack.id in gone]
            with self._lock:
                self.damaged.update(lost)
        return len(gone)

    def read_blob_at(
        self, loc: BlobLocation, blob_type: int | None = None, on_retry_ok: Callable[[str], None] | None = None
    ) -> bytes:
        """Read and verify the blob at ``loc`` (from any index, e.g. check's own).

        Metadata packs are read through the cache (whole packs are cached: a trie walk
        reads many small nodes of few packs); a blob that fails verification is read once
        more straight from the store, and ``on_retry_ok(pack name)`` hears when that
        second read was good (transient damage, not damage in the store).
        """
        t = TYPE_OF_KIND[loc.pack.kind]
        if blob_type is not None and blob_type != t:
            raise IntegrityError(f"blob {loc.blob_id.hex()[:16]} is indexed in a {loc.pack.kind} pack")
        name = pack_name(loc.pack.kind, loc.pack.id)
        what = f"blob {loc.blob_id.hex()[:16]} in pack {loc.pack.id.hex()[:16]}"
        try:
            return self.verify_blob(loc.blob_id, t, self._read_range(name, loc), what, loc.raw_length)
        except (IntegrityError, FormatError):
            self.cache.delete(name)
        plain = self.verify_blob(loc.blob_id, t, self.store.get_range(name, loc.offset, loc.length), what, loc.raw_length)
        if on_retry_ok is not None:
            on_retry_ok(name)
        return plain

    def verify_blob(
        self, blob_id: bytes, blob_type: int, sealed: bytes | memoryview, what: str, raw_length: int | None = None
    ) -> bytes:
        """Open one sealed blob, decode it and re-hash it against its id (and, given
        ``raw_length``, check its size); the one blob verification. Returns the plaintext.
        The payload decompresses to at most ``raw_length`` bytes (the index's word), else
        BLOB_MAX (issue 10.4: a zstd bomb is refused, not allocated)."""
        limit = BLOB_MAX if raw_length is None else min(raw_length, BLOB_MAX)
        data = decode_payload(self.sealer.open(blob_type, blob_id, sealed, what), what, limit)
        if raw_length is not None and len(data) != raw_length:
            raise IntegrityError(f"{what}: {len(data)} bytes, the index says {raw_length}")
        if self.sealer.blob_id(data) != blob_id:
            raise IntegrityError(f"{what}: content does not match its id")
        return data

    open_blob = verify_blob  # the name before the content layer (kept for code written against it)

    def _read_range(self, name: str, loc: BlobLocation) -> bytes:
        if loc.pack.kind == KIND_META:
            raw = self.cache.read_range(name, loc.offset, loc.length)
            if raw is None:
                data = self.store.get(name, max_size=limits.PACK_MAX)
                if len(data) == loc.pack.size:
                    self.cache.put(name, data)
                return data[loc.offset : loc.offset + loc.length]
            return raw
        return self.store.get_range(name, loc.offset, loc.length)

    # -- packs -----------------------------------------------------------------------------
    def pack_writer(self) -> PackWriter:
        """A new PackWriter (prune's repack); its packs are indexed by the caller."""
        return PackWriter(self)

    def store_pack(self, info: PackInfo, data) -> None:
        """Upload a finished pack (metadata packs are cached whole as well)."""
        name = pack_name(info.kind, info.id)
        self.store.put(name, data)
        if info.kind == KIND_META:
            self.cache.put(name, data)

    def read_pack(self, pack: PackInfo, refresh: bool = False) -> bytes:
        """A whole pack: metadata packs from the cache when it holds a copy of the
        indexed size (and cached after a download); ``refresh`` reads the store."""
        name = pack_name(pack.kind, pack.id)
        if pack.kind == KIND_META and not refresh:
            cached = self.cache.get(name)
            if cached is not None and len(cached) == pack.size:
                return cached
        data = self.store.get(name, max_size=limits.PACK_MAX)
        if pack.kind == KIND_META and len(data) == pack.size:
            self.cache.put(name, data)
        return data

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
