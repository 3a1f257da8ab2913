"""ContentReader: content lists in, file contents (or byte ranges of them) out, read
ahead across files.

Vocabulary:
    item    one element of a file's content list: a data blob id (bytes) or a hole (int,
            that many zero bytes).
    slot    the pending result of one item: a scheduled read (``_Pending``, whose
            Future gives the blob's plaintext), or the int.
    budget  bytes of blob plaintext requested but not yet consumed; reading ahead stops
            while the budget is spent, so memory stays bounded however large the files.
    parts   what the writer of one file iterates: bytes for blobs, ints for holes, in
            order.

A restore (to a directory or as an archive) consumes entries strictly in order, one file
after the other. Fetching each blob only when the writer reaches it would leave every
request's latency on the critical path (on S3, ~20 ms per small file); instead
:meth:`ContentReader.files` walks ahead of the writer through the same entry stream and
keeps up to ``budget`` bytes of blob reads in flight on a thread pool, across file
boundaries. Every blob scheduled is announced to the joined reader
(``repo.coalesce.CoalescingReader``), so blobs of one pack wanted soon are fetched with
one range request. Reading one file on its own (:meth:`ContentReader.parts`) is the same
mechanism with one entry.

A restore into a directory does not read in order: :meth:`ContentReader.plan` reads each
pack's wanted blobs once and writes them where they go (``objects/packplan.py``).

Failures stay with their file: a content list that cannot be loaded (a damaged content
blob) or a blob that cannot be read raises from that file's ``parts`` when the writer
gets there, never from another file's, and the stream goes on with the next entry. An
exception from the entry source itself is raised where it happened in the stream, after
every entry before it was handed out.
"""

from __future__ import annotations

import os

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from backupkit.crypto import T_DATA_BLOB, T_META_BLOB
from backupkit.errors import BlobNotFound
from backupkit.objects.content import content_list
from backupkit.objects.entry import Entry
from backupkit.objects.packplan import PackPlan
from backupkit.repo.coalesce import CoalescingReader
from backupkit.repo.repository import Repository
from backupkit.tuning import DEFAULT_TUNING, Tuning

Parts = Iterator[bytes | int]


@dataclass
class _Pending:
    """One scheduled blob read; ``future`` is set once its batch is submitted."""

    bid: bytes
    future: Future | None = None


@dataclass
class _File:
    key: Any  # passed through from the source (a path, or whatever the writer needs)
    entry: Any
    items: Iterator | None  # content items still to schedule; None: done or not wanted
    wanted: bool = False
    error: BaseException | None = None  # the content list could not be loaded
    slots: deque = field(default_factory=deque)
    sizes: deque = field(default_factory=deque)


class ContentReader:
    """Reads file contents of one repository; owns the read pool and the joined reads.

    Use as a context manager (or call :meth:`close`): the pool's threads end there.
    """

    def __init__(self, repo: Repository, connections: int = 8, tuning: Tuning = DEFAULT_TUNING) -> None:
        self.repo = repo
        self.tuning = tuning
        self.budget = tuning.readahead_bytes(connections)
        workers = connections
        if repo.free_requests:
            workers = tuning.read_threads_local or os.cpu_count() or 2
        self._pool = ThreadPoolExecutor(max_workers=max(2, workers), thread_name_prefix="bk-restore")
        self.joined = CoalescingReader(repo, max_span=tuning.join_max_span, budget=tuning.join_held)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> ContentReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- the pieces ------------------------------------------------------------------------
    def content_list(self, e: Entry) -> list:
        return content_list(e, lambda bid: self.repo.read_blob(bid, T_META_BLOB))

    def blob_size(self, bid: bytes) -> int:
        loc = self.repo.index.lookup(bid)
        return loc.raw_length if loc is not None else 0

    def read_blob(self, bid: bytes) -> bytes:
        return self.joined.read(bid, T_DATA_BLOB)

    def plan(self, max_files: int | None = None) -> PackPlan:
        """Reads planned per pack instead of in order (a restore into a directory), on
        this reader's pool; see ``objects/packplan.py``."""
        return PackPlan(self.repo, self._pool, self.tuning, max_files)

    # -- reading ---------------------------------------------------------------------------
    def files(
        self, entries: Iterable[tuple[Any, Entry]], wants: Callable[[Any, Entry], bool] | None = None
    ) -> Iterator[tuple[Any, Entry, Parts | None]]:
        """``(key, entry, parts)`` for each of ``entries``, contents read ahead.

        ``wants(key, entry)`` is asked once per regular file, in order (False: no
        content, e.g. for a second name of a hardlinked file). ``parts`` is None for
        anything else. Whatever the writer leaves of a file's parts is dropped when it
        asks for the next entry.
        """
        return iter(_ReadAhead(self, entries, wants))

    def read_range(self, e: Entry, offset: int, length: int) -> bytes:
        """``length`` bytes of the file from ``offset`` (fewer past its end); only the
        blobs that overlap the range are read."""
        out = bytearray()
        end = offset + length
        pos = 0
        for item in self.content_list(e):
            if pos >= end:
                break
            if isinstance(item, int):
                n = item
            else:
                loc = self.repo.index.lookup(bytes(item))
                if loc is None:
                    raise BlobNotFound(f"data blob {bytes(item).hex()[:16]} is not in the index")
                n = loc.raw_length
            if pos + n > offset:
                lo, hi = max(offset, pos) - pos, min(end, pos + n) - pos
                out += bytes(hi - lo) if isinstance(item, int) else self.read_blob(bytes(item))[lo:hi]
            pos += n
        return bytes(out)

    def parts(self, e: Entry) -> Parts:
        """The parts of one file, read on their own."""
        for _k, _e, parts in self.files([(None, e)]):
            yield from parts or ()
            return


class _ReadAhead:
    def __init__(self, reader: ContentReader, entries: Iterable, wants: Callable | None) -> None:
        self._r = reader
        self._source = iter(entries)
        self._wants = wants or (lambda _k, _e: True)
        self._budget = reader.budget
        self._lookahead = reader.tuning.readahead_entries
        self._queue: deque[_File] = deque()  # read from the source, not yet handed out
        self._front = 0  # index in _queue of the file being scheduled
        self._inflight = 0
        self._exhausted = False
        self._source_error: BaseException | None = None

    # -- scheduling ------------------------------------------------------------------------
    def _next_entry(self) -> bool:
        """Append the next source entry to the queue; False at the end of the source."""
        if self._exhausted:
            return False
        try:
            nxt = next(self._source, None)
        except Exception as err:  # noqa: BLE001 - raised in its place in the stream
            self._source_error = err
            nxt = None
        if nxt is None:
            self._exhausted = True
            return False
        key, e = nxt
        f = _File(key, e, None)
        if e.is_file and self._wants(key, e):
            f.wanted = True
            try:
                f.items = iter(self._r.content_list(e))
            except Exception as err:  # noqa: BLE001 - charged to this file only
                f.error = err
        self._queue.append(f)
        return True

    def _fill(self, need: _File | None = None) -> None:
        """Schedule reads until the budget is spent (and at least one slot of ``need``).

        Reads are scheduled in batches: nothing until half the budget is free, then up to
        all of it at once, every blob announced (``expect``) before any of the batch is
        submitted. So when the first read of a batch runs, the others of its pack are
        known, and the joined reader fetches them with it in one request.
        """
        if need is None and self._inflight > self._budget // 2:
            return
        batch: list[_Pending] = []
        r = self._r
        try:
            while True:
                if self._front >= len(self._queue):
                    if len(self._queue) >= self._lookahead and need is None:
                        return
                    if not self._next_entry():
                        return
                f = self._queue[self._front]
                if f.items is None:
                    self._front += 1
                    continue
                if self._inflight >= self._budget and (need is None or need.slots):
                    return
                item = next(f.items, None)
                if item is None:
                    f.items = None
                    self._front += 1
                    continue
                if isinstance(item, int):
                    f.slots.append(item)
                    f.sizes.append(0)
                else:
                    bid = bytes(item)
                    size = r.blob_size(bid)
                    r.joined.expect(bid)
                    slot = _Pending(bid)
                    batch.append(slot)
                    f.slots.append(slot)
                    f.sizes.append(size)
                    self._inflight += size
        finally:
            for slot in batch:
                slot.future = r._pool.submit(r.read_blob, slot.bid)

    # -- consuming -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[Any, Entry, Parts | None]]:
        while True:
            if not self._queue:
                self._fill()
                if not self._queue and not self._next_entry():
                    if self._source_error is not None:
                        err, self._source_error = self._source_error, None
                        raise err
                    return
            f = self._queue[0]
            yield f.key, f.entry, (self._parts(f) if f.wanted else None)
            self._discard(f)
            self._queue.popleft()
            self._front = max(0, self._front - 1)

    def _parts(self, f: _File) -> Parts:
        if f.error is not None:
            raise f.error
        while True:
            if not f.slots:
                if f.items is None:
                    return
                self._fill(need=f)
                if not f.slots:
                    return
            slot = f.slots.popleft()
            size = f.sizes.popleft()
            if isinstance(slot, int):
                yield slot
                continue
            try:
                data = slot.future.result()
            finally:
                self._inflight -= size
            self._fill()
            yield data

    def _discard(self, f: _File) -> None:
        """Drop what is still pending for ``f`` (the writer is done with it)."""
        f.items = None  # if it is being scheduled, the scheduler moves past it
        while f.slots:
            slot = f.slots.popleft()
            size = f.sizes.popleft()
            if isinstance(slot, _Pending):
                if slot.future is not None:
                    slot.future.cancel()
                self._inflight -= size


__all__ = ["ContentReader", "Parts"]
