"""Read-ahead of file contents for restore: blobs of upcoming files fetched in parallel.

Vocabulary:
    item    one element of a file's content list: a data blob id (bytes) or a hole (int,
            that many zero bytes).
    slot    the pending result of one item: a scheduled read (``_Pending``, whose
            Future gives the blob's plaintext), or the int.
    budget  bytes of blob plaintext requested but not yet consumed; reading ahead stops
            while the budget is spent, so memory stays bounded however large the files.

A restore (to a directory or as an archive) consumes entries strictly in order, one file
after the other. Fetching each blob only when the writer reaches it would leave every
request's latency on the critical path (on S3, ~20 ms per small file); instead this
walks ahead of the writer through the same entry stream and keeps up to ``budget``
bytes of blob reads in flight on a thread pool, across file boundaries. The writer gets
each entry with an iterator over its parts, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

Entry = tuple[Any, dict]


@dataclass
class _Pending:
    """One scheduled blob read; ``future`` is set once its batch is submitted."""

    bid: bytes
    future: Future | None = None


@dataclass
class _File:
    key: Any  # passed through from the source (a path, or whatever the writer needs)
    entry: dict
    items: Iterator | None  # content items still to schedule; None: done or not wanted
    wanted: bool = False
    slots: deque = field(default_factory=deque)
    sizes: deque = field(default_factory=deque)


class Readahead:
    """Iterates ``(key, entry, parts)`` over ``entries`` with contents read ahead.

    Args:
        entries: (key, entry) in the order the writer wants them; ``key`` (a path, or a
            tuple starting with one) is passed through.
        content: ``content(entry) -> list of items`` for a regular file (may read
            content blobs).
        read: ``read(blob_id) -> plaintext`` (thread-safe; runs on ``pool``).
        size_of: ``size_of(blob_id) -> int``, the expected plaintext size (for the budget).
        pool: where reads run.
        wants_content: ``wants_content(key, entry) -> bool``, asked once per regular file
            in order (e.g. False for a second name of a hardlinked file).
        budget: bytes of reads in flight or unconsumed.
        lookahead: most entries held between the writer and the read-ahead front.
        expect: called with each blob id as its read is scheduled, before ``read``
            (``CoalescingReader.expect``, so reads of one pack can be joined).

    ``parts`` yields bytes for blobs and ints for holes, or is None when no content was
    read ahead (not a regular file, or not wanted). Whatever the writer leaves of a
    file's parts is dropped when it asks for the next entry.
    """

    def __init__(
        self,
        entries: Iterator[Entry],
        content: Callable[[dict], list],
        read: Callable[[bytes], bytes],
        size_of: Callable[[bytes], int],
        pool: ThreadPoolExecutor,
        wants_content: Callable[[bytes, dict], bool] | None = None,
        budget: int = 64 * 1024 * 1024,
        lookahead: int = 4096,
        expect: Callable[[bytes], None] | None = None,
    ) -> None:
        self._source = iter(entries)
        self._content = content
        self._read = read
        self._size_of = size_of
        self._pool = pool
        self._wants = wants_content or (lambda _p, _e: True)
        self._budget = budget
        self._lookahead = lookahead
        self._queue: deque[_File] = deque()  # read from the source, not yet handed out
        self._front = 0  # index in _queue of the file being scheduled
        self._inflight = 0
        self._exhausted = False
        self._expect = expect

    # -- scheduling ------------------------------------------------------------------------
    def _next_entry(self) -> bool:
        """Append the next source entry to the queue; False at the end of the source."""
        if self._exhausted:
            return False
        nxt = next(self._source, None)
        if nxt is None:
            self._exhausted = True
            return False
        key, e = nxt
        items = None
        if e.is_file and self._wants(key, e):
            items = iter(self._content(e))
        self._queue.append(_File(key, e, items, wanted=items is not None))
        return True

    def _fill(self, need: _File | None = None) -> None:
        """Schedule reads until the budget is spent (and at least one slot of ``need``).

        Reads are scheduled in batches: nothing until half the budget is free, then up to
        all of it at once, every blob announced (``expect``) before any of the batch is
        submitted. So when the first read of a batch runs, the others of its pack are
        known, and a coalescing reader fetches them with it in one request.
        """
        if need is None and self._inflight > self._budget // 2:
            return
        batch: list[_Pending] = []
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
                    size = self._size_of(bid)
                    if self._expect is not None:
                        self._expect(bid)
                    slot = _Pending(bid)
                    batch.append(slot)
                    f.slots.append(slot)
                    f.sizes.append(size)
                    self._inflight += size
        finally:
            for slot in batch:
                slot.future = self._pool.submit(self._read, slot.bid)

    # -- consuming -------------------------------------------------------------------------
    def __iter__(self) -> Iterator[tuple[Any, dict, Iterator[bytes | int] | None]]:
        while True:
            if not self._queue:
                self._fill()
                if not self._queue and not self._next_entry():
                    return
            f = self._queue[0]
            yield f.key, f.entry, (self._parts(f) if f.wanted else None)
            self.discard_file(f)
            self._queue.popleft()
            self._front = max(0, self._front - 1)

    def _parts(self, f: _File) -> Iterator[bytes | int]:
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

    def discard_file(self, f: _File) -> None:
        """Drop what is still pending for ``f`` (the writer is done with it)."""
        f.items = None  # if it is being scheduled, the scheduler moves past it
        while f.slots:
            slot = f.slots.popleft()
            size = f.sizes.popleft()
            if isinstance(slot, _Pending):
                if slot.future is not None:
                    slot.future.cancel()
                self._inflight -= size
