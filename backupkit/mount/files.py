"""OpenFile: random access to one file of a snapshot, for the mounted file system.

Opening a file loads its content list once and turns it into a table of where each item
starts (blob sizes come from the index, holes are their own size), so a read at any
offset finds its first item by bisection and fetches only the blobs it overlaps, through
the ContentReader (whose joined reads serve blobs of one pack together). The last few
blobs read stay in a small per-file cache (``cache_bytes``, at least two blobs), because
the kernel reads in pieces of 128 KiB and a blob is about 1 MiB: a sequential read
fetches each blob once. When reads run sequentially, the blob after the one being read is
fetched ahead on the file system's read pool, so decoding the next blob overlaps with the
kernel copying this one out.
"""

from __future__ import annotations

import threading
from bisect import bisect_right
from collections import OrderedDict
from concurrent.futures import Executor, Future

from backupkit.errors import BlobNotFound
from backupkit.objects.entry import Entry
from backupkit.objects.reader import ContentReader

DEFAULT_CACHE_BYTES = 16 << 20


class OpenFile:
    """One open file; ``read`` is safe to call from several threads (reads are serialized)."""

    def __init__(self, reader: ContentReader, entry: Entry, pool: Executor | None = None, cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.reader = reader
        self.entry = entry
        self._pool = pool
        self._cache_bytes = cache_bytes
        self._items: list[bytes | int] = []
        self._starts: list[int] = []
        pos = 0
        for item in reader.content_list(entry) if entry.has_content else ():
            if isinstance(item, int):
                n = item
            else:
                item = bytes(item)
                n = reader.blob_size(item)
                if n == 0 and reader.repo.index.lookup(item) is None:
                    raise BlobNotFound(f"data blob {item.hex()[:16]} is not in the index")
            self._items.append(item)
            self._starts.append(pos)
            pos += n
        self.size = pos
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cached = 0
        self._ahead: dict[int, Future] = {}
        self._last = -1
        self._lock = threading.Lock()

    def read(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset`` (fewer at the end of the file)."""
        if offset < 0 or size <= 0 or offset >= self.size:
            return b""
        end = min(self.size, offset + size)
        out = []
        with self._lock:
            i = bisect_right(self._starts, offset) - 1
            pos = offset
            while pos < end:
                start = self._starts[i]
                item = self._items[i]
                nxt = self._starts[i + 1] if i + 1 < len(self._starts) else self.size
                lo, hi = pos - start, min(end, nxt) - start
                if isinstance(item, int):
                    out.append(bytes(hi - lo))
                else:
                    out.append(self._blob(i)[lo:hi])
                pos = start + hi
                i += 1
        return b"".join(out)

    def close(self) -> None:
        with self._lock:
            for fut in self._ahead.values():
                fut.cancel()
            self._ahead.clear()
            self._cache.clear()
            self._cached = 0

    # -- blobs (lock held) -----------------------------------------------------------------
    def _blob(self, i: int) -> bytes:
        data = self._cache.get(i)
        if data is not None:
            self._cache.move_to_end(i)
        else:
            fut = self._ahead.pop(i, None)
            data = fut.result() if fut is not None else self.reader.read_blob(self._items[i])  # type: ignore[arg-type]
            self._remember(i, data)
        if i == self._last + 1 or i == self._last:
            self._read_ahead(i + 1)
        self._last = i
        return data

    def _remember(self, i: int, data: bytes) -> None:
        self._cache[i] = data
        self._cached += len(data)
        while len(self._cache) > 2 and self._cached > self._cache_bytes:
            _k, old = self._cache.popitem(last=False)
            self._cached -= len(old)

    def _read_ahead(self, i: int) -> None:
        if self._pool is None or i >= len(self._items) or i in self._cache or i in self._ahead:
            return
        item = self._items[i]
        if isinstance(item, int):
            return
        for k in [k for k in self._ahead if k < i]:  # a seek left them behind
            self._ahead.pop(k).cancel()
        self._ahead[i] = self._pool.submit(self.reader.read_blob, item)


__all__ = ["OpenFile", "DEFAULT_CACHE_BYTES"]
