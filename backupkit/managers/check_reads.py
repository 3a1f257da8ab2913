"""check --read-data's pack reads as data: what one read found (``PackRead``), and the
reads that go on while the trees are walked (``ReadAhead``). ``check.py`` records them."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

from backupkit.repo.index import PackInfo


@dataclass(frozen=True)
class PackRead:
    """What reading one pack found: ``gone`` (deleted since it was listed), ``too_large``
    (the store's error), or the bytes read (twice when the first read was bad), the
    header's problem, each bad blob's problem, and whether a retry read it clean."""

    pack: PackInfo
    bytes_read: int = 0
    header_problem: str | None = None
    bad: dict[bytes, str] = field(default_factory=dict)
    retried_ok: bool = False
    gone: bool = False
    too_large: str | None = None


class ReadAhead:
    """Pack reads that go on while the trees are walked: a thread takes the results of
    ``results`` (an ordered, bounded map over the pool) and keeps at most ``keep`` of
    them until ``__iter__`` hands them out in order; an error is raised there. ``size``:
    the bytes of the packs chosen."""

    _END = object()

    def __init__(self, results: Iterator[PackRead], size: int, keep: int = 256) -> None:
        self.size = size
        self._q: queue.Queue = queue.Queue(maxsize=keep)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, args=(results,), name="check-read-ahead", daemon=True)
        self._thread.start()

    def _feed(self, results: Iterator[PackRead]) -> None:
        try:
            for r in results:
                if not self._put(r):
                    return
        except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
            self._put(e)
            return
        self._put(self._END)

    def _put(self, item) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def __iter__(self) -> Iterator[PackRead]:
        while True:
            item = self._q.get()
            if item is self._END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item

    def close(self) -> None:
        """Stop taking results (the calls in flight finish) and wait for the thread."""
        self._stop.set()
        self._thread.join()


__all__ = ["PackRead", "ReadAhead"]
