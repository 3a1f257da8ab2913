"""ContentWriter: a file or a stream in, a content list out (the backup's side of the
object layer).

Pipeline: the caller's thread (the walk, or a reader thread of the backup) reads the file
into the keyed chunker's buffers (``os.readv``, GIL released); each chunk goes, as a view,
to the sealing pool, which hashes, compresses, seals and packs it
(``Repository.add_blob``). Each reader thread reuses ``Tuning.chunk_buffers_per_reader``
buffers across its files (``chunkbuffers.py``): a buffer is refilled only once every
chunk cut from it is stored, which bounds memory; at most ``Tuning.chunks_in_flight``
chunks of one file are in the pool at a time. Holes of sparse files (SEEK_DATA /
SEEK_HOLE) are not read: they become ints in the content list.

A file is read up to the size it had when opened, never further, and a file that shrinks
while being read is stored with what was read: no zeros are invented for a missing tail.
Whether it changed (size, mtime or ctime differ from the ``lstat`` the walk made) is in
the result, for the caller to report.

``cancel()`` makes every read in progress stop at its next chunk (``Cancelled``).
All file system calls go through ``fs`` (the ``os`` module by default), so a test can
stand in for it.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from backupkit.chunker import Chunker
from backupkit.crypto import T_DATA_BLOB, T_META_BLOB
from backupkit.errors import Cancelled, FileReadError
from backupkit.objects.chunkbuffers import ChunkBuffers
from backupkit.objects.content import with_content
from backupkit.objects.entry import Entry
from backupkit.objects.sealprocs import _BrokenSealProcess, SealedRead, SealProcesses
from backupkit.objects.smallfiles import changed, open_file, read_batch, read_one_chunk
from backupkit.repo.repository import Repository
from backupkit.tuning import DEFAULT_TUNING, Tuning

SEEK_DATA = getattr(os, "SEEK_DATA", 3)
SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)


@dataclass(frozen=True)
class FileContent:
    """What reading one file gave."""

    items: list
    #: bytes read (holes not counted) and the size stored (holes counted)
    bytes_read: int
    size: int
    #: size, mtime or ctime differ from the walk's lstat after the read
    changed: bool
    #: the file's extended attributes, when the reading process was asked for them
    #: (``xattrs_read``; else the caller reads them)
    xattrs: tuple[tuple[bytes, bytes], ...] | None = None
    xattrs_read: bool = False


class ContentWriter:
    """Reads files and streams into blobs of ``repo``; thread-safe (reads of several
    files may run at once, from several threads)."""

    def __init__(
        self,
        repo: Repository,
        tuning: Tuning = DEFAULT_TUNING,
        dry_run: bool = False,
        on_bytes: Callable[[int], None] | None = None,
        fs: Any = os,
        level: int | None = None,
    ) -> None:
        """``level``: zstd level of this writer's blobs (0 = raw); None = the repository's."""
        self.repo = repo
        self.level = level
        self.tuning = tuning
        self.dry_run = dry_run
        self.fs = fs
        cfg = repo.config
        self.chunker = Chunker(repo.keys.chunker_key, cfg.chunker_min, cfg.chunker_avg, cfg.chunker_max)
        self._on_bytes = on_bytes or (lambda n: None)
        self._pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="bk-blob")
        self._cancelled = threading.Event()
        #: each reader thread's chunker buffers (``pool``: a ChunkBuffers), reused across files
        self._buffers = threading.local()

    def cancel(self) -> None:
        self._cancelled.set()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=self._cancelled.is_set())

    # -- blobs -----------------------------------------------------------------------------
    def store_chunk(self, chunk: bytes | memoryview) -> bytes:
        if self.dry_run:
            return self.repo.sealer.blob_id(chunk)
        return self.repo.add_blob(T_DATA_BLOB, chunk, level=self.level)[0]

    def store_chunks(self, chunks: list[bytes]) -> list[bytes]:
        """``store_chunk`` of each, in one ``Repository.add_blobs`` call."""
        if not chunks:
            return []
        if self.dry_run:
            return [self.repo.sealer.blob_id(c) for c in chunks]
        return self.repo.add_blobs(T_DATA_BLOB, chunks, level=self.level)

    def store_meta(self, data: bytes) -> bytes:
        if self.dry_run:
            return self.repo.sealer.blob_id(data)
        return self.repo.add_blob(T_META_BLOB, data, level=self.level)[0]

    def with_content(self, e: Entry, items: list, **more) -> Entry:
        """``e`` with its content list (kept inline, or in content blobs when long) and
        the fields ``more``."""
        return with_content(e, items, self.store_meta, **more)

    # -- sealing processes -----------------------------------------------------------------
    def can_seal_in_processes(self) -> bool:
        """Whether batches of small files may be read and sealed in other processes:
        they read the real file system and write blobs (not a dry run, nor a test's
        stand-in ``fs``)."""
        return self.fs is os and not self.dry_run

    def seal_processes(self, n: int) -> SealProcesses:
        """``n`` sealing processes with this writer's keys, zstd level and chunk minimum."""
        level = self.repo.config.compression_level if self.level is None else self.level
        return SealProcesses(n, self.repo.keys, level, self.chunker.sizes.min_size, self.tuning.small_reads_ahead)

    # -- streams ---------------------------------------------------------------------------
    def read_stream(self, stream: BinaryIO) -> tuple[list, int]:
        """(content list, size) of everything ``stream`` gives until its end."""
        items: list = []
        total = 0
        read = getattr(stream, "read1", stream.read)
        for chunk in self.chunker.chunks(read):
            if self._cancelled.is_set():
                raise Cancelled()
            total += len(chunk)
            self._on_bytes(len(chunk))
            items.append(self.store_chunk(bytes(chunk)))
        return items, total

    # -- files -----------------------------------------------------------------------------
    def read_file(self, path: bytes, st: os.stat_result) -> FileContent:
        """Read the regular file ``path`` (``st``: the walk's lstat of it); FileReadError
        if it cannot be read or is no longer a regular file."""
        fd = open_file(self.fs, path)
        try:
            data, ch, fst = read_one_chunk(self.fs, fd, st, self.chunker.sizes.min_size)
            if fst is not None:
                return self._read_open(fd, st, fst)
            if data:
                self._on_bytes(len(data))
            # one chunk: stored here, no hand-off to the sealing pool
            return FileContent([self.store_chunk(data)] if data else [], len(data), len(data), ch)
        finally:
            self.fs.close(fd)

    def read_small(self, files: list[tuple[bytes, os.stat_result]]) -> list[FileContent | FileReadError]:
        """``read_file`` of each (path, lstat) of a batch of small files: for each, what
        it gave or the FileReadError it raised (one file's error never touches the others).

        The same system calls per file as ``read_file`` plus one: each file is opened
        ``Tuning.small_reads_ahead`` files ahead of its read and its data asked for at once
        (``smallfiles.read_batch``: cold, tiny files, half the wall time). The contents of
        the files that are one chunk (below the chunker's minimum, no holes) are stored
        together (``store_chunks``: one index lookup and one spool write for many blobs)."""
        if self._cancelled.is_set():
            raise Cancelled()
        got = read_batch(
            self.fs, files, self.chunker.sizes.min_size, self.tuning.small_reads_ahead, self._read_open, self._on_bytes
        )
        held = [(i, g[0], g[1]) for i, g in enumerate(got) if type(g) is tuple and g[0]]
        for (i, data, ch), bid in zip(held, self.store_chunks([data for _i, data, _c in held])):
            got[i] = FileContent([bid], len(data), len(data), ch)
        # a file emptied since its fstat: no content
        return [FileContent([], 0, 0, g[1]) if type(g) is tuple else g for g in got]

    def sealed_small(
        self, files: list[tuple[bytes, os.stat_result]], sealed: list[SealedRead]
    ) -> list[FileContent | FileReadError]:
        """``read_small``'s result from what a sealing process gave for ``files``
        (``sealworker.seal_batch``): the sealed blobs are stored as they are (those the
        repository has are dropped), and a file that is more than one chunk is read here."""
        if self._cancelled.is_set():
            raise Cancelled()
        if type(sealed) is not list or len(sealed) != len(files):
            raise _BrokenSealProcess("a sealing process answered for other files than it was given")
        out: list[FileContent | FileReadError] = []
        blobs = []
        for (path, st), got in zip(files, sealed):
            if type(got) is str:
                out.append(FileReadError(got))
            elif type(got) is not list and got is not None:
                raise _BrokenSealProcess(f"a sealing process answered {type(got).__name__} for a file")
            elif got is None:
                try:
                    out.append(self.read_file(path, st))
                except FileReadError as err:
                    out.append(err)
            else:
                try:
                    bid, n, blob, ch, xattrs = got
                    xattrs = tuple((k, v) for k, v in xattrs) if xattrs else None
                    if type(n) is not int or not 0 <= n <= st.st_size or (n and (len(bid) != 32 or type(blob) is not bytes)):
                        raise ValueError
                except (TypeError, ValueError):
                    raise _BrokenSealProcess("a sealing process answered a malformed row") from None
                if n:
                    self._on_bytes(n)
                    blobs.append((bid, blob, n))
                out.append(FileContent([bid] if n else [], n, n, ch, xattrs, True))
        if blobs and not self.dry_run:
            self.repo.add_sealed(T_DATA_BLOB, blobs)
        return out

    def _read_open(self, fd: int, st: os.stat_result, fst: os.stat_result) -> FileContent:
        """Read the open regular file ``fd`` that is more than one chunk, from its start
        (``st``: the walk's lstat; ``fst``: its fstat, from ``_read_one_chunk``)."""
        fs = self.fs
        try:
            # never past the size at open: a file truncated since lstat gets no zero tail
            size = min(st.st_size, fst.st_size)
            items: list = []
            pos = nread = 0
            shrank = False
            for off, length in self._segments(fd, size, fst):
                if off > pos:
                    items.append(off - pos)  # a hole
                got = self._read_segment(fd, off, length, items)
                nread += got
                pos = off + got
                if got < length:
                    shrank = True
                    break
            after = fs.fstat(fd)
            if not shrank and pos < size:
                end = min(size, after.st_size)  # a trailing hole, as far as the file still goes
                if pos < end:
                    items.append(end - pos)
        except OSError as err:
            raise FileReadError(f"read error: {err.strerror}") from None
        stored = sum(i for i in items if isinstance(i, int)) + nread
        return FileContent(items, nread, stored, changed(after, st))

    def _read_segment(self, fd: int, off: int, length: int, items: list) -> int:
        """Chunk ``length`` bytes at ``off`` into ``items``; the bytes read (fewer if the
        file ends sooner)."""
        fs = self.fs
        fs.lseek(fd, off, os.SEEK_SET)
        remaining = [length]

        def readinto(view: memoryview, _r=remaining) -> int:
            # os.readv fills the chunker's buffer in the kernel, GIL released
            if _r[0] <= 0:
                return 0
            n = fs.readv(fd, [view[: _r[0]]])
            _r[0] = 0 if not n else _r[0] - n
            return n

        got = 0
        window = self.tuning.chunks_in_flight
        buffers = getattr(self._buffers, "pool", None)
        if buffers is None:
            buffers = self._buffers.pool = ChunkBuffers(self.tuning.chunk_buffers_per_reader)
        futs: deque[Future] = deque()
        try:
            for chunk in self.chunker.chunks(readinto=readinto, buffers=buffers.take):
                if self._cancelled.is_set():
                    raise Cancelled()
                got += len(chunk)
                self._on_bytes(len(chunk))
                # a view, no copy: its buffer is not reused before this future is done
                fut = self._pool.submit(self.store_chunk, chunk)
                buffers.track(fut)
                futs.append(fut)
                if len(futs) > window:
                    # wait for the chunk that leaves half the window in flight, then take
                    # the older ones (done by then, as the pool runs them in order): one
                    # wake-up of this thread per half window, not one per chunk
                    k = len(futs) - 1 - window // 2
                    futs[k].exception()  # waits; an error is raised below, in chunk order
                    for _ in range(k + 1):
                        items.append(futs.popleft().result())
            while futs:
                items.append(futs.popleft().result())
        finally:
            for f in futs:
                f.cancel()
        return got

    def _segments(self, fd: int, size: int, st: os.stat_result) -> Iterator[tuple[int, int]]:
        """(offset, length) of data regions; holes between them are not read."""
        if size == 0:
            return
        if st.st_blocks * 512 >= size:
            yield 0, size
            return
        fs = self.fs
        pos = 0
        while pos < size:
            try:
                data = fs.lseek(fd, pos, SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole remains
                    return
                yield pos, size - pos
                return
            if data >= size:
                return
            hole = min(fs.lseek(fd, data, SEEK_HOLE), size)
            yield data, hole - data
            pos = hole


__all__ = ["Cancelled", "ContentWriter", "FileContent", "FileReadError"]
