"""The backup's reader pool: the files the walk found new or changed, read on reader threads.

The walk (``backup_walk.py``) hands each file over with its entry and the parent's entry
(``FileReads.add``). Small files (at most ``Tuning.small_file`` bytes) go in batches of
``Tuning.small_files_per_job``: a hand-off per small file costs more than its read, and
batches let the walk's system calls and Python overlap the reads and sealing. Larger
files are one job each, and the walk waits while more than ``Tuning.files_in_flight``
jobs are queued. A job reads its files through the run's ``ContentWriter``
(``backupkit/objects/writer.py``: a batch with ``read_small``, which queues the batch's
reads on the disk together and stores their blobs together), which cuts, seals and
stores their content; it asks for a file's xattrs when the walk left that to it, and
makes each file's trie change (key and encoded entry: ``change``), so the walking
thread, the one a backup of tiny files waits on, does none of that.

Finished jobs are collected in the order they were handed over (``drain``): each file's
change goes to ``record`` and into the counters. An unreadable file is reported and
left out, the other files of its batch are not; a file that changed while being read is
reported as changed (its entry keeps the pre-read times, so the next backup reads it
again).
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from backupkit.errors import FileReadError
from backupkit.objects.entry import Entry
from backupkit.objects.sealprocs import _BrokenSealProcess, SealProcesses
from backupkit.objects.smallfiles import read_xattrs
from backupkit.objects.writer import ContentWriter, FileContent

if TYPE_CHECKING:
    from backupkit.managers.backup_walk import WalkStats

#: a small file waiting for its batch: (path, parent's entry, lstat, entry, ask its xattrs)
_Small = tuple[bytes, Entry | None, os.stat_result, Entry, bool]
#: ``change(path, entry, old)``: (trie key, encoded entry) of a file read, with its content
#: list, or None when it equals ``old`` (the parent's entry); run on the reader threads
Change = Callable[[bytes, Entry, Entry | None], "tuple[bytes, bytes] | None"]
#: ``record(key, path, encoded entry)``: a change for the snapshot, in hand-over order
Record = Callable[[bytes, bytes, bytes], None]
#: what reading one file gave: None (unreadable, reported), () (no change) or a change
_Done = "tuple[bytes, bytes] | tuple[()] | None"


#: the one line a backup adds to its warnings when its sealing processes could not start
#: or one broke (the files are read on the threads instead: nothing is lost)
SEALING_STOPPED = (
    "small files were read on this process's threads after a sealing process ended or could "
    "not start (nothing is lost; the backup was slower)"
)


class FileReads:
    """The reader threads of one run, reading through ``writer`` (and within its
    tuning's budgets); ``change`` makes each file's trie change on them, ``record``
    takes the changes in hand-over order, and ``stats`` counts and reports the files."""

    def __init__(self, writer: ContentWriter, threads: int, stats: WalkStats, change: Change, record: Record) -> None:
        self._writer = writer
        self._tuning = writer.tuning
        self._stats = stats
        self._change = change
        self._record = record
        self._pool = ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="bk-read")
        #: files being read: (path, parent's entry, entry, future), or for a batch of
        #: small files (b"", None, [_Small, ...], future)
        self._pending: deque[tuple[bytes, Entry | None, Any, Future]] = deque()
        self._small: list[_Small] = []
        #: the sealing processes (``sealprocs.py``), once enough small files came
        self._procs: SealProcesses | None = None
        self._procs_wanted = self._tuning.seal_processes > 0 and writer.can_seal_in_processes()
        self._small_seen = 0
        #: batches handed to the processes whose answers no reader thread has taken
        #: yet (they hold sealed blobs: bounded by Tuning.sealed_batches_in_flight)
        self._sealed_out = 0
        self._sealed_lock = threading.Lock()

    def add(self, path: bytes, old: Entry | None, st: os.stat_result, e: Entry, ask_xattrs: bool = False) -> None:
        """Read file ``path`` (``e``: its entry without content; ``old``: the parent's;
        ``ask_xattrs``: ``e`` still needs its xattrs, asked for after the read)."""
        if st.st_size <= self._tuning.small_file:
            self._small.append((path, old, st, e, ask_xattrs))
            if len(self._small) >= self._tuning.small_files_per_job:
                self._submit_small()
            return
        fut = self._pool.submit(self._read_file, path, old, st, e, ask_xattrs)
        self._pending.append((path, old, e, fut))
        self.drain(self._tuning.files_in_flight)

    def drain(self, keep: int) -> None:
        """Collect finished file jobs, waiting while more than ``keep`` are in flight."""
        self._submit_small()
        pending = self._pending
        while pending and (len(pending) > keep or pending[0][3].done()):
            path, old, e, fut = pending.popleft()
            if path:
                self._finish_file(path, old, fut.result())
            else:  # a batch of small files: counted at once, recorded in order
                new = changed = 0
                record = self._record
                for (p, o, _st, _e, _x), got in zip(e, fut.result()):
                    if got is not None:
                        if o is None:
                            new += 1
                        else:
                            changed += 1
                        if got:
                            record(got[0], p, got[1])
                self._stats.stored(new, changed)

    def close(self, cancel: bool) -> None:
        """Stop the reader threads (once their jobs ended), then the sealing processes;
        ``cancel``: drop queued jobs."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)
        if self._procs is not None:
            self._procs.close(cancel)

    def _finish_file(self, path: bytes, old: Entry | None, got: _Done) -> None:
        if got is None:
            return
        self._stats.stored(int(old is None), int(old is not None))
        if got:
            self._record(got[0], path, got[1])

    def _submit_small(self) -> None:
        """Hand the batch of small files to the reader threads as one job (and, once
        there are sealing processes, its reading and sealing to them first)."""
        batch, self._small = self._small, []
        if batch:
            files = [(path, st) for path, _old, st, _e, _x in batch]
            sealed = self._seal_elsewhere(files, [x for _p, _o, _st, _e, x in batch])
            fut = self._pool.submit(self._read_small, batch, files, sealed)
            self._pending.append((b"", None, batch, fut))

    def _seal_elsewhere(self, files: list[tuple[bytes, os.stat_result]], xattrs: list[bool]) -> Future | None:
        """The batch handed to a sealing process (``xattrs``: which files' extended
        attributes it reads too), or None: no processes
        (not wanted, not yet ``Tuning.small_files_before_processes`` small files, or
        broken: then never again in this run)."""
        if not self._procs_wanted:
            return None
        self._small_seen += len(files)
        try:
            if self._procs is None:
                if self._small_seen < self._tuning.small_files_before_processes:
                    return None
                self._procs = self._writer.seal_processes(self._tuning.seal_processes)
            limit = self._tuning.sealed_batches_in_flight * self._tuning.seal_processes
            while self._sealed_out >= limit and self._pending:
                self.drain(len(self._pending) - 1)  # the oldest job first
            fut = self._procs.submit(files, xattrs)
        except (_BrokenSealProcess, OSError):  # cannot start one, or none is left
            self._procs_wanted = False
            self._writer.repo.warn(SEALING_STOPPED)
            return None
        with self._sealed_lock:
            self._sealed_out += 1
        return fut

    def _read_small(self, batch: list[_Small], files: list[tuple[bytes, os.stat_result]], sealed: Future | None) -> list[_Done]:
        """One job: the batch's files read together (``ContentWriter.read_small``, or by
        a sealing process: ``sealed_small``), each file's change (None: unreadable,
        reported) in the batch's order."""
        results = None
        if sealed is not None:
            try:
                results = self._writer.sealed_small(files, sealed.result())
            except CancelledError:
                results = None  # the backup is stopping: this thread reads the batch
            except _BrokenSealProcess:
                results = None  # a sealing process died: this thread reads the batch
                self._writer.repo.warn(SEALING_STOPPED)
            finally:
                with self._sealed_lock:
                    self._sealed_out -= 1
        if results is None:
            results = self._writer.read_small(files)
        out: list = []
        done = []
        change = self._change
        for (path, old, _st, e, ask_xattrs), got in zip(batch, results):
            if isinstance(got, FileReadError):
                self._stats.error(path, str(got))
                out.append(None)
                continue
            out.append(change(path, self._entry(path, e, got, ask_xattrs), old) or ())
            done.append((path, got.size, got.bytes_read))
        self._stats.read_done(done)
        return out

    def _read_file(self, path: bytes, old: Entry | None, st: os.stat_result, e: Entry, ask_xattrs: bool) -> _Done:
        try:
            got = self._writer.read_file(path, st)
        except FileReadError as err:
            self._stats.error(path, str(err))
            return None
        e = self._entry(path, e, got, ask_xattrs)
        self._stats.read_done([(path, got.size, got.bytes_read)])
        return self._change(path, e, old) or ()

    def _entry(self, path: bytes, e: Entry, got: FileContent, ask_xattrs: bool) -> Entry:
        """``e`` with what reading it gave (a change while read is reported), and its
        xattrs if still to be asked for."""
        if got.changed:
            self._stats.changed_while_read(path)
        if ask_xattrs:
            xattrs = got.xattrs if got.xattrs_read else read_xattrs(self._writer.fs, path)
            return self._writer.with_content(e, got.items, size=got.size, xattrs=xattrs)
        return self._writer.with_content(e, got.items, size=got.size)


__all__ = ["FileReads"]
