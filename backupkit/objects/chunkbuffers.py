"""ChunkBuffers: the chunker's read buffers of one reader thread, reused.

The chunker reads ~10 MiB at a time (``Chunker.chunks``) and yields its chunks as views
of that buffer; the backup hands them to the sealing pool without a copy. A fresh
anonymous map per refill costs a page fault per 4 KiB on first touch (kernel zeroing and
the trap: ~1.0 CPU s per GB read here, docs/performance-limits.md 1.1). A reader thread
instead keeps ``count`` maps and gives the chunker, for each refill, one whose chunks are
all stored (their futures done: finished, failed or cancelled before they ran), never the
one it gave last (the chunker copies the undecided tail from it). When every other map
still has chunks in the pool, it waits for the least recently given one's: that wait is
the reader's backpressure, and ``count`` maps per reader are its memory.
"""

from __future__ import annotations

import mmap
from concurrent.futures import Future, wait


class ChunkBuffers:
    """Up to ``count`` (>= 2) maps for one reader thread; not thread-safe (one per thread)."""

    def __init__(self, count: int) -> None:
        if count < 2:
            raise ValueError("a reader needs at least two buffers (the tail is copied between them)")
        self._count = count
        #: maps given so far, least recently given first; each with its chunks' futures
        self._maps: list[tuple[mmap.mmap, list[Future]]] = []

    def take(self, size: int) -> mmap.mmap:
        """A map of at least ``size`` bytes for the chunker's next refill (``buffers``)."""
        maps = self._maps
        pick = None
        for i, (m, futs) in enumerate(maps[:-1]):  # never the last one given
            if len(m) >= size and all(f.done() for f in futs):
                pick = i
                break
        if pick is None:
            if len(maps) < self._count:
                maps.append((mmap.mmap(-1, size), []))
                return maps[-1][0]
            pick = next((i for i, (m, _f) in enumerate(maps[:-1]) if len(m) >= size), None)
            if pick is None:  # a larger size than before: replace the oldest
                pick = 0
                maps[0] = (mmap.mmap(-1, size), [])
            wait(maps[pick][1])
        m, _futs = maps.pop(pick)
        maps.append((m, []))
        return m

    def track(self, fut: Future) -> None:
        """``fut`` uses a chunk of the map given last: that map is not given again
        before it is done."""
        self._maps[-1][1].append(fut)


__all__ = ["ChunkBuffers"]
