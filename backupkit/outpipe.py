"""An output stream written on a thread of its own, so producing the next bytes of an
archive overlaps writing the last ones.

A ZIP or TAR restore renders members on one thread (framing, CRC-32, the reader's
parts); writing them to a file or a pipe is the kernel copying every byte, ~0.6 s of a
1 GB archive's 4-5 s written to a file (against ``/dev/null``), all of it on that thread
before. ``BackgroundWriter.write`` queues the bytes instead (small writes, such as ZIP
headers, gathered into one piece first) and a writer thread hands them on in order;
queued bytes are bounded, so a slow reader of the pipe holds the archive back as
before. A write that fails on the writer thread (a closed pipe, a full disk) is raised
again, the same exception, by the next ``write``, ``flush`` or ``close`` on the
caller's thread; nothing queued after it is written.

Where ``out`` has a file descriptor (standard output, a file), it is flushed once and
the writer thread writes to the descriptor itself: a write stuck on a pipe nobody reads
then holds no lock of ``out``'s buffer, so an interrupted restore can leave the thread
behind (``abandon`` waits a bounded time) and exit, where joining it, or Python
flushing ``sys.stdout`` at exit, would hang.
"""

from __future__ import annotations

import errno
import io
import os
import threading
from collections import deque
from typing import BinaryIO

#: bytes queued at most before ``write`` waits for the writer thread
QUEUED_MAX = 16 * 1024 * 1024
#: writes smaller than this are gathered into one piece of about this size
GATHER = 256 * 1024
#: seconds ``abandon`` waits for the writer thread (stuck on a stalled pipe, it is left)
ABANDON_WAIT = 2.0


class BackgroundWriter:
    """``out`` (a binary stream), written in order by a thread of its own. ``close``
    (or ``flush``) waits for what is queued; ``abandon`` stops without waiting."""

    def __init__(self, out: BinaryIO, queued_max: int = QUEUED_MAX, gather: int = GATHER) -> None:
        self._out = out
        self._fd = _descriptor(out)
        if self._fd is not None:
            out.flush()  # what ``out``'s buffer holds goes first; the thread writes past it
        self._max = max(1, queued_max)
        self._gather = gather
        self._small = bytearray()
        self._queue: deque[bytes] = deque()
        self._queued = 0
        self._cv = threading.Condition()
        self._error: BaseException | None = None
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="bk-archive-out", daemon=True)
        self._thread.start()

    # -- the caller's side -----------------------------------------------------------------
    def write(self, b) -> int:
        n = len(b) if isinstance(b, bytes) else memoryview(b).nbytes
        if not n:
            return 0
        if n < self._gather:
            self._small += b
            if len(self._small) >= self._gather:
                self._push_small()
            return n
        self._push_small()
        self._push(b if type(b) is bytes else bytes(b))  # never a view of a buffer reused later
        return n

    def flush(self) -> None:
        """Wait until everything written so far is handed on, then flush ``out``."""
        self._push_small()
        with self._cv:
            while self._queue and self._error is None:
                self._cv.wait()
            self._raise()
        self._out.flush()

    def close(self) -> None:
        """``flush``, then end the writer thread (``out`` stays open: it is the caller's)."""
        try:
            self.flush()
        finally:
            self.abandon()

    def abandon(self) -> None:
        """End the writer thread; what is still queued is not written. A write in
        progress is waited for ``ABANDON_WAIT`` seconds at most (a pipe nobody reads
        would hold it for ever; the thread is a daemon)."""
        with self._cv:
            self._stopping = True
            self._queue.clear()
            self._queued = 0
            self._cv.notify_all()
        self._thread.join(ABANDON_WAIT)

    def _push_small(self) -> None:
        if self._small:
            data = bytes(self._small)
            self._small.clear()
            self._push(data)

    def _push(self, data: bytes) -> None:
        with self._cv:
            while self._queued and self._queued + len(data) > self._max and self._error is None:
                self._cv.wait()
            self._raise()
            if self._stopping:
                raise ValueError("write to a closed archive output")
            self._queue.append(data)
            self._queued += len(data)
            self._cv.notify_all()

    def _raise(self) -> None:
        if self._error is not None:
            raise self._error

    # -- the writer thread -----------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if not self._queue:
                    return
                data = self._queue[0]
            try:
                view = memoryview(data)
                while view:
                    n = os.write(self._fd, view) if self._fd is not None else self._out.write(view)
                    if n == 0:
                        raise OSError(errno.EIO, "the output took no bytes")
                    view = view[len(view) if n is None else n :]
            except BaseException as err:  # noqa: BLE001 - raised again on the caller's thread
                with self._cv:
                    self._error = err
                    self._queue.clear()
                    self._queued = 0
                    self._cv.notify_all()
                return
            with self._cv:
                if self._queue and self._queue[0] is data:
                    self._queue.popleft()
                    self._queued -= len(data)
                self._cv.notify_all()


def _descriptor(out: BinaryIO) -> int | None:
    """``out``'s file descriptor, or None (an in-memory stream, a compressor)."""
    try:
        return out.fileno()
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return None


__all__ = ["ABANDON_WAIT", "GATHER", "QUEUED_MAX", "BackgroundWriter"]
