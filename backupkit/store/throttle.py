"""Bandwidth limits (restic's ``--limit-upload`` / ``--limit-download``): a store wrapper
that holds transfers to a rate, for a backup from cron that must not fill a laptop's or
an office's uplink.

Vocabulary: a *rate* is bytes per second, shared by every thread of the command (one
``Rate`` for uploads, one for downloads); *taking* ``n`` bytes waits until the rate allows
them. Uploads that stream (packs, ``put_source``) take their bytes piece by piece as the
backend reads them, 1 MiB at a time, so the link never sees more than a piece above the
rate (bytes read again, as S3 does for its MD5, are not taken twice). Small objects
(``put``: index objects, snapshots) take their bytes whole before the upload, downloads
theirs whole after it: the rate holds on average, and one object may pass at the link's
speed. Names given as ``exempt`` (the CLI gives the locks) are never held back; listings,
stats and deletes are not limited.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence

from backupkit.store.base import ObjectInfo, ObjectSource, ObjectStore, iter_pieces, write_all

#: How far ahead of the rate a burst may run: a second's worth (restic's limiter, a
#: token bucket, allows about as much).
BURST_SECONDS = 1.0


class Rate:
    """A byte rate shared by threads: ``take(n)`` returns once ``n`` more bytes fit."""

    def __init__(
        self,
        bytes_per_second: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if bytes_per_second <= 0:
            raise ValueError("a rate is a positive number of bytes per second")
        self.bytes_per_second = bytes_per_second
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        #: when the bucket would be full again (empty of debt) after what was taken
        self._full_at = clock()

    def take(self, n: int) -> None:
        """Count ``n`` bytes (about to move, or just moved) and wait until the rate is kept:
        a token bucket of BURST_SECONDS of bytes, so that by any time t at most
        ``rate * (t + BURST_SECONDS)`` bytes have been taken since it was last full."""
        with self._lock:
            now = self._clock()
            self._full_at = max(self._full_at, now) + n / self.bytes_per_second
            wait = self._full_at - BURST_SECONDS - now
        if wait > 0:
            self._sleep(wait)


class _PacedReader:
    """A reader of a ``_PacedSource``: its reads take, from the source's rate, the bytes
    no reader of that source has read before (S3 reads a source twice, for its MD5 and
    to send it; a retried upload reads it again: those bytes are not taken twice)."""

    def __init__(self, inner, source: _PacedSource) -> None:
        self._inner = inner
        self._source = source

    def read(self, n: int = -1) -> bytes:
        start = self._inner.tell()
        data = self._inner.read(n)
        self._source.charge(start, start + len(data))
        return data

    def readinto(self, buf) -> int:
        start = self._inner.tell()
        got = self._inner.readinto(buf) or 0
        self._source.charge(start, start + got)
        return got

    def __getattr__(self, name: str):  # seek, tell, close, ...
        return getattr(self._inner, name)

    def __enter__(self) -> _PacedReader:
        return self

    def __exit__(self, *exc) -> None:
        self._inner.close()


class _PacedSource(ObjectSource):
    """``source`` read at ``rate`` (its own fast copy, ``copy_to``, is not used)."""

    def __init__(self, source: ObjectSource, rate: Rate) -> None:
        self._source = source
        self._rate = rate
        self.size = source.size
        self._lock = threading.Lock()
        self._charged = 0  # bytes [0, _charged) were taken from the rate

    def charge(self, start: int, end: int) -> None:
        with self._lock:
            n = max(0, end - max(start, self._charged))
            self._charged = max(self._charged, end)
        if n:
            self._rate.take(n)

    def reader(self) -> _PacedReader:
        return _PacedReader(self._source.reader(), self)

    def copy_to(self, fd: int) -> None:
        with self.reader() as r:
            for piece in iter_pieces(r):
                write_all(fd, piece)


class ThrottledStore(ObjectStore):
    """``inner`` with uploads held to ``upload`` and downloads to ``download`` (``Rate``s;
    None: not limited); objects whose names start with one of ``exempt`` pass at once
    (the repository's locks: a lock's refresh must not queue behind packs, the stale-lock
    rules count on it). Everything else is the inner store's."""

    def __init__(
        self, inner: ObjectStore, upload: Rate | None = None, download: Rate | None = None, exempt: tuple[str, ...] = ()
    ) -> None:
        self.inner = inner
        self.upload, self.download = upload, download
        self.exempt = exempt

    # the inner store's description and capabilities, read through
    @property
    def location(self) -> str:  # type: ignore[override]
        return self.inner.location

    @property
    def spool_dir(self) -> str | None:  # type: ignore[override]
        return self.inner.spool_dir

    @property
    def request_bytes(self) -> int:  # type: ignore[override]
        return self.inner.request_bytes

    @property
    def atomic_put_if_absent(self) -> bool:  # type: ignore[override]
        return self.inner.atomic_put_if_absent

    @property
    def streams_ranges(self) -> bool:  # type: ignore[override]
        return self.inner.streams_ranges

    def _down(self, name: str, data: bytes) -> bytes:
        if self.download is not None and not name.startswith(self.exempt):
            self.download.take(len(data))
        return data

    def _up(self, name: str, n: int) -> None:
        if self.upload is not None and not name.startswith(self.exempt):
            self.upload.take(n)

    def get(self, name: str, max_size: int | None = None) -> bytes:
        return self._down(name, self.inner.get(name, max_size))

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self._down(name, self.inner.get_range(name, offset, length))

    def get_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        for data in self.inner.get_ranges(name, ranges):
            yield self._down(name, data)

    def put(self, name: str, data: bytes) -> None:
        self._up(name, len(data))
        self.inner.put(name, data)

    def put_source(self, name: str, source: ObjectSource) -> None:
        self.inner.put_source(name, source if self.upload is None else _PacedSource(source, self.upload))

    def put_if_absent(self, name: str, data: bytes) -> bool:
        self._up(name, len(data))
        return self.inner.put_if_absent(name, data)

    def probe_conditional_writes(self) -> bool:
        return self.inner.probe_conditional_writes()

    def rewrite_existing(self, name: str, data: bytes) -> float:
        self._up(name, len(data))
        return self.inner.rewrite_existing(name, data)

    def delete(self, name: str) -> None:
        self.inner.delete(name)

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)

    def stat(self, name: str) -> ObjectInfo:
        return self.inner.stat(name)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def holds(self, name: str, data: bytes) -> bool:
        return self.inner.holds(name, data)

    def remove_abandoned(self, older_than: float) -> int:
        return self.inner.remove_abandoned(older_than)

    def stats(self) -> dict[str, int] | None:
        return self.inner.stats()

    def close(self) -> None:
        self.inner.close()


__all__ = ["BURST_SECONDS", "Rate", "ThrottledStore"]
