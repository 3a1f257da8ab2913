"""PackWriter: collect sealed blobs into packs and upload each pack as it fills.

The one place packs are built and uploaded: backup's ``Repository.add_blob`` and
prune's repack both write through it. A writer keeps one open pack per kind (data,
meta); a pack that reaches the repository's pack size is uploaded on a thread pool with
at most ``connections + Tuning.packs_in_flight_over_connections`` packs in flight (``add`` blocks beyond that), metadata packs
are also kept in the cache (``Repository.cache_pack``), and ``on_uploaded`` hears of each
pack once it is stored. An upload error is raised by the next ``add`` or ``flush``.

A pack's blobs are spooled to a temporary file as they are added (packspool.py), so the
open packs and the packs in flight cost page cache, not process memory; the store streams
each from its spool (``ObjectStore.put_source``).

The writer does not write index objects: its caller names the packs it was given (a
pack no index names is garbage the next prune removes).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

from backupkit.repo.index import PackInfo
from backupkit.repo.pack import KIND_DATA, KIND_META, KIND_OF_TYPE, PackEntry, pack_name
from backupkit.repo.packspool import PackBuilder
from backupkit.tuning import DEFAULT_TUNING

if TYPE_CHECKING:
    from backupkit.repo.repository import Repository

UploadedPack = tuple[PackInfo, list[PackEntry]]


class PackWriter:
    """Builds and uploads packs for one repository. Thread-safe."""

    def __init__(
        self,
        repo: Repository,
        on_uploaded: Callable[[PackInfo, list[PackEntry]], None] | None = None,
        connections: int | None = None,
    ) -> None:
        self.repo = repo
        self.on_uploaded = on_uploaded
        self.connections = max(1, connections or repo.connections)
        self._lock = threading.Lock()
        self._spool_dir = repo.store.spool_dir
        self._builders = self._new_builders()
        self._slots = threading.BoundedSemaphore(self.connections + DEFAULT_TUNING.packs_in_flight_over_connections)
        self._pool: ThreadPoolExecutor | None = None
        self._inflight: list[Future] = []
        self._uploaded: list[UploadedPack] = []
        self._error: BaseException | None = None

    def _new_builders(self) -> dict[str, PackBuilder]:
        return {kind: PackBuilder(kind, self._spool_dir) for kind in (KIND_DATA, KIND_META)}

    def raise_error(self) -> None:
        """Raise the error of a failed upload, if any."""
        if self._error is not None:
            raise self._error

    def add(self, blob_type: int, blob_id: bytes, sealed: bytes | memoryview, raw_length: int) -> None:
        """Add one sealed blob; uploads the pack of its kind when it is full."""
        self.raise_error()
        kind = KIND_OF_TYPE[blob_type]
        full = None
        with self._lock:
            b = self._builders[kind]
            b.add(blob_type, blob_id, sealed, raw_length)
            if b.size >= self.repo.config.pack_size:
                full = b
                self._builders[kind] = PackBuilder(kind, self._spool_dir)
        if full is not None:
            self._submit(full)

    def add_many(self, blob_type: int, blobs: list[tuple[bytes, bytes, int]]) -> None:
        """``add`` each (blob id, sealed, raw length) in order, one spool write per pack
        they go to; a pack is full exactly where one ``add`` after the other would find it."""
        self.raise_error()
        kind = KIND_OF_TYPE[blob_type]
        pack_size = self.repo.config.pack_size
        full = []
        try:
            with self._lock:
                b = self._builders[kind]
                start, size = 0, b.size
                for i, (_bid, sealed, _raw) in enumerate(blobs):
                    size += len(sealed)
                    if size >= pack_size:
                        b.add_many(blob_type, blobs[start : i + 1])
                        full.append(b)
                        b = self._builders[kind] = PackBuilder(kind, self._spool_dir)
                        start, size = i + 1, 0
                if start < len(blobs):
                    b.add_many(blob_type, blobs[start:])
        finally:  # a full pack is whole even when a later spool write failed: store it
            for f in full:
                self._submit(f)

    def flush(self) -> list[UploadedPack]:
        """Upload the partly filled packs and wait for every upload (raises the first
        upload error). Returns the packs uploaded since the last flush, unless an
        ``on_uploaded`` callback was given (it has them all)."""
        with self._lock:
            pending = [b for b in self._builders.values() if len(b)]
            self._builders = self._new_builders()
        for b in pending:
            self._submit(b)
        with self._lock:
            inflight, self._inflight = self._inflight, []
        for f in inflight:
            f.exception()
        self.raise_error()
        with self._lock:
            done, self._uploaded = self._uploaded, []
        return done

    def drop_partial(self) -> list[bytes]:
        """Stop without uploading more (an interrupt): drop the partly filled packs and
        wait for the uploads in flight. Returns the ids of the blobs dropped."""
        with self._lock:
            dropped = [blob[1] for b in self._builders.values() for blob in b.blobs]
            for b in self._builders.values():
                b.discard()
            self._builders = self._new_builders()
            inflight, self._inflight = self._inflight, []
        for f in inflight:
            f.exception()
        return dropped

    def abandon(self) -> list[UploadedPack]:
        """Stop without uploading more (``drop_partial``) and return the packs already
        uploaded and not yet taken by ``flush``: a caller that gives up removes them
        (nothing references them yet)."""
        self.drop_partial()
        with self._lock:
            done, self._uploaded = self._uploaded, []
        return done

    def close(self) -> None:
        """Wait for the uploads in flight and stop the threads (partly filled packs are
        dropped: call ``flush`` first to keep them)."""
        with self._lock:
            for b in self._builders.values():
                b.discard()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _submit(self, builder: PackBuilder) -> None:
        self._slots.acquire()  # backpressure: at most connections + a few packs in flight (Tuning)
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.connections, thread_name_prefix="bk-upload")
            fut = self._pool.submit(self._upload, builder)
            self._inflight = [f for f in self._inflight if not f.done()]
            self._inflight.append(fut)

    def _upload(self, builder: PackBuilder) -> None:
        try:
            pack_id, pack, entries = builder.finish(self.repo.sealer)
            try:
                info = PackInfo(pack_id, builder.kind, pack.size)
                self.repo.store_pack(info, pack)
            finally:
                pack.close()
            if self.on_uploaded is not None:
                self.on_uploaded(info, entries)
            else:
                with self._lock:
                    self._uploaded.append((info, entries))
        except BaseException as e:  # surfaced by the next add or flush
            self._error = e
            raise
        finally:
            self._slots.release()


__all__ = ["PackWriter", "UploadedPack", "pack_name"]
