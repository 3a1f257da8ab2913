"""Blobs and packs: the content path of ``Repository`` (a mixin it inherits).

Writing: ``add_blob`` deduplicates against the index and the blobs reserved by uploads in
flight, seals the blob and hands it to the repository's ``PackWriter``; each uploaded pack
is indexed in memory at once and in the store at every checkpoint (``Tuning``), and
``flush`` / ``flush_complete`` write the rest. Metadata blobs stay readable from memory
until their pack is uploaded (a trie update may read back a node it just wrote).

Reading: ``read_blob`` / ``read_blob_at`` read through the cache (whole metadata packs are
cached) and verify with ``verify_blob``, the one blob verification; a blob that fails is
remembered in ``damaged`` so that a backup writes it again. ``read_pack`` and
``store_pack`` move whole packs (prune's repack, check, repair).

The state used here (``_lock``, ``_reserved``, ``_unflushed``, ``_uploaded``, ``damaged``,
``stats``, the writer and the index) is created by ``Repository.__init__``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from backupkit import limits
from backupkit.crypto import Sealer
from backupkit.errors import BlobNotFound, FormatError, IntegrityError, ObjectNotFound
from backupkit.repo.cache import Cache
from backupkit.repo.config import RepoConfig
from backupkit.repo.index import BlobLocation, Index, PackInfo
from backupkit.repo.pack import KIND_META, TYPE_OF_KIND, PackEntry, blob_ids, decode_payload, pack_name, seal_payloads
from backupkit.repo.packverify import SpanItem, open_blobs, verify_blob
from backupkit.repo.packwriter import PackWriter
from backupkit.store.base import ObjectSource, ObjectStore

if TYPE_CHECKING:
    from backupkit.tuning import Tuning


class BlobAccess:
    """Add, read and verify blobs; read and store whole packs (see the module docstring)."""

    store: ObjectStore
    cache: Cache
    sealer: Sealer
    config: RepoConfig
    tuning: Tuning
    stats: dict[str, int]
    damaged: set[bytes]
    index_failures: dict[str, str]
    _lock: threading.Lock
    _reserved: set[bytes]
    _unflushed: dict[bytes, tuple[int, bytes]]
    _uploaded: list[tuple[PackInfo, list[PackEntry]]]
    _uploaded_blobs: int
    _writer: PackWriter
    _last_index: float

    #: Repository's (``index`` is loaded on first use)
    index: Index
    write_index: Callable[..., str]
    list_packs: Callable[[], dict[str, int]]

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
        sealed = seal_payloads(self.sealer, blob_type, [(blob_id, data)], level)[0]
        with self._lock:
            if blob_type == TYPE_OF_KIND[KIND_META]:  # a trie update may read back a node not yet uploaded
                self._unflushed[blob_id] = (blob_type, sealed)
            self.stats["blobs_new"] += 1
            self.stats["bytes_raw_new"] += len(data)
            self.stats["bytes_stored_new"] += len(sealed)
        self._writer.add(blob_type, blob_id, sealed, len(data))
        return blob_id, True

    def add_blobs(self, blob_type: int, datas: list[bytes], level: int | None = None) -> list[bytes]:
        """``add_blob`` of each of ``datas`` (one type): their ids, in order.

        For many small blobs (a batch of tiny files): one index lookup, one pass under
        the lock and one GIL-free call each to hash and to seal them all (``pack.blob_ids``,
        ``pack.seal_payloads``), and the sealed blobs go to the pack writer together (one
        spool write), instead of that per blob. A blob equal to an earlier one of the batch
        is stored once, as with one ``add_blob`` after the other."""
        self._writer.raise_error()
        ids = blob_ids(self.sealer, datas)
        new = self._reserve(ids)
        if new:
            level = self.config.compression_level if level is None else level
            sealed = seal_payloads(self.sealer, blob_type, [(ids[i], datas[i]) for i in new], level)
            self._queue(blob_type, [(ids[i], env, len(datas[i])) for i, env in zip(new, sealed)])
        return ids

    def add_sealed(self, blob_type: int, blobs: list[tuple[bytes, bytes, int]]) -> None:
        """Store blobs sealed elsewhere (a sealing process of the backup, with these keys):
        (id, sealed blob, plaintext length) each; those the repository has, or that an
        earlier one of ``blobs`` is, are dropped, as ``add_blobs`` would not seal them."""
        self._writer.raise_error()
        new = self._reserve([b for b, _s, _n in blobs])
        if new:
            self._queue(blob_type, [blobs[i] for i in new])

    def _reserve(self, ids: list[bytes]) -> list[int]:
        """The positions in ``ids`` of the blobs to store: not in the index (or known
        damaged), not being stored already, the first of equal ones; reserved for the
        caller (one index lookup and one pass under the lock)."""
        new: list[int] = []
        index = self.index  # loaded (under the lock) before this takes it
        with self._lock:
            absent = set(index.missing(ids))
            damaged, reserved = self.damaged, self._reserved
            for i, b in enumerate(ids):
                if (b not in absent and b not in damaged) or b in reserved:
                    continue
                reserved.add(b)
                new.append(i)
            self.stats["blobs_dup"] += len(ids) - len(new)
        return new

    def _queue(self, blob_type: int, sealed: list[tuple[bytes, bytes, int]]) -> None:
        """Hand sealed blobs (id, sealed, plaintext length), reserved by ``_reserve``, to
        the pack writer."""
        with self._lock:
            if blob_type == TYPE_OF_KIND[KIND_META]:
                for b, s, _n in sealed:
                    self._unflushed[b] = (blob_type, s)
            self.stats["blobs_new"] += len(sealed)
            self.stats["bytes_raw_new"] += sum(n for _b, _s, n in sealed)
            self.stats["bytes_stored_new"] += sum(len(s) for _b, s, _n in sealed)
        self._writer.add_many(blob_type, sealed)

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
        self,
        blob_id: bytes,
        blob_type: int,
        sealed: bytes | memoryview,
        what: str,
        raw_length: int | None = None,
        view: bool = False,
    ) -> bytes | memoryview:
        """``packverify.verify_blob`` with this repository's keys: the one blob verification."""
        return verify_blob(self.sealer, blob_id, blob_type, sealed, what, raw_length, view)

    open_blob = verify_blob  # the name before the content layer (kept for code written against it)

    def open_blobs(self, blob_type: int, data: bytes | memoryview, items: list[SpanItem]) -> list:
        """``packverify.open_blobs`` with this repository's keys: the plaintext of each
        blob of one span read from a pack, or the error ``verify_blob`` gives it."""
        return open_blobs(self.sealer, blob_type, data, items)

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

    def store_pack(self, info: PackInfo, pack: ObjectSource) -> None:
        """Upload a finished pack from its spool (metadata packs are cached whole as well)."""
        name = pack_name(info.kind, info.id)
        self.store.put_source(name, pack)
        if info.kind == KIND_META:
            self.cache.put_source(name, pack)

    @property
    def free_requests(self) -> bool:
        """True where a request costs nothing beyond its bytes (a local directory): a
        reader may split a range into several requests freely."""
        return self.store.request_bytes == 0

    @property
    def streams_ranges(self) -> bool:
        """True where ``read_raw_ranges`` reads a span's ranges with one request, each
        handed over as it arrives (``ObjectStore.streams_ranges``)."""
        return self.store.streams_ranges

    @property
    def join_gap(self) -> int:
        """Unwanted bytes worth reading between two wanted ranges of one pack to save a
        request: a quarter of the store's ``request_bytes``, at least 4 KiB."""
        return max(4096, self.store.request_bytes // 4)

    def read_pack_range(self, pack: PackInfo, offset: int, length: int, refresh: bool = False) -> bytes:
        """``length`` stored bytes of a pack from ``offset``: a metadata pack's from the
        cache when it holds them (unless ``refresh``), else from the store."""
        name = pack_name(pack.kind, pack.id)
        if pack.kind == KIND_META and not refresh:
            cached = self.cache.read_range(name, offset, length)
            if cached is not None:
                return cached
        return self.store.get_range(name, offset, length)

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
