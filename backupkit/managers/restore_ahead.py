"""The entries of a restore into a fresh directory, walked ahead on a thread of their own,
which creates the directories among them as it goes.

Creating a directory on ext4 with a cold cache waits for the disk (the allocator reads the
group's bitmaps): 0.8 ms each while the restore's reads and writes queue beside it. On the
walking thread that was a fifth of a `/usr` restore's wall time (15,588 directories, one
after another, py-spy --idle), with the planning of every file behind each wait. Here a
thread reads the snapshot's entries (the trie walk and the entry decoding move with it)
and makes each directory before handing its entry on, so the walking thread's
``mkdir_at`` finds it there (``EEXIST``) and only opens it.

Only for a target this restore created (nothing else is in it), not in a dry run, and
exactly as the walking thread would: a directory is made relative to its parent's
descriptor (``mkdir_at``: ``O_NOFOLLOW``), only if the path is safe and its parent was
made here. Whatever fails here is left to the walking thread, which does it again and
names the failure. The thread keeps the descriptors of the directories it is inside of
(the tree's depth) and closes them as it leaves them.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator

from backupkit.managers.restore_files import mkdir_at, safe_path
from backupkit.objects.entry import Entry

_BATCH = 256  # entries handed over at once, unless the walking thread is waiting
_DEPTH = 64  # batches held between the two threads
_END = object()


class DirsAhead:
    """Iterates ``entries`` like the plain iterator; ``close`` stops the thread (call it
    before the target's descriptor is closed)."""

    def __init__(self, entries: Iterator[tuple[bytes, Entry]], root_fd: int, rel_of: Callable[[bytes], bytes]) -> None:
        self._entries = entries
        self._rel_of = rel_of
        self._q: queue.Queue = queue.Queue(maxsize=_DEPTH)
        self._stop = threading.Event()
        self._stack: list[tuple[bytes, int]] = [(b"", os.dup(root_fd))]  # (rel, fd) the walk is inside of
        self._thread = threading.Thread(target=self._run, name="bk-restore-walk", daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[tuple[bytes, Entry]]:
        while True:
            item = self._q.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item

    def close(self) -> None:
        self._stop.set()
        while self._thread.is_alive():
            try:  # unblock a put
                self._q.get(timeout=0.05)
            except queue.Empty:
                pass
        self._thread.join()

    # -- the thread --------------------------------------------------------------------------
    def _put(self, item: object) -> bool:
        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        batch: list = []
        try:
            for path, e in self._entries:
                if self._stop.is_set():
                    return
                if e.type == "d" and safe_path(path):
                    self._mkdir(self._rel_of(path))
                batch.append((path, e))
                if len(batch) >= _BATCH or self._q.empty():  # full, or the walking thread waits
                    if not self._put(batch):
                        return
                    batch = []
            if batch and not self._put(batch):
                return
            self._put(_END)
        except BaseException as err:  # noqa: BLE001 - raised on the walking thread, after the entries before it
            if not batch or self._put(batch):
                self._put(err)
        finally:
            for _rel, fd in self._stack:
                os.close(fd)
            self._stack.clear()

    def _mkdir(self, rel: bytes) -> None:
        if not rel:
            return
        stack = self._stack
        while len(stack) > 1 and not rel.startswith(stack[-1][0] + b"/"):
            os.close(stack.pop()[1])
        parent, _sep, name = rel.rpartition(b"/")
        if stack[-1][0] != parent:
            return  # its parent was not made here: the walking thread finds out why
        try:
            stack.append((rel, mkdir_at(stack[-1][1], name)))
        except OSError:
            pass
