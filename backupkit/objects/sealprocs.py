"""Sealing processes: batches of small files read, hashed, compressed and sealed in
worker processes, so that a backup of many tiny files uses both cores.

Why processes: per tiny file, a reader thread makes five system calls and three short
primitive calls, each of which gives up the GIL and takes it back; with the walking
thread and two readers contending, a first backup of 200,000 files of ~500 bytes spent
30 CPU seconds where the same backup with a sealing process takes 17 and half the time
(``python -m benchmarks.procpool``, ``benchmarks.ab``; docs/performance-limits.md). A
process has its own GIL: it runs the whole per-file pipeline of a batch
(``smallfiles.read_batch``, the blob id, zstd, AES-GCM) and hands back only ids and
sealed blobs; the backup's reader thread stores them (``ContentWriter.sealed_small``:
the index decides which are new) and makes the files' entries, as for a batch read on
the thread.

A sealing process is a worker of role ``seal`` (``procs.py``: frames over two pipes, the
keys first, then a batch per frame in and a result per frame out, in order; its handler
is ``sealworker.py``). A process that dies or answers nonsense breaks the batches in
flight (``procs.BrokenWorker``), which the reader thread then reads itself; the backup
goes on without processes. The backup starts them once it has met
``Tuning.small_files_before_processes`` small files, so short backups never pay for them.
"""

from __future__ import annotations

import os
from concurrent.futures import Future

from backupkit.crypto import MasterKeys
from backupkit.procs import WorkerPool

#: what a sealing process gives for one file: the error's message, None (not one chunk:
#: the caller reads it), or (blob id, length, sealed blob, changed while read, xattrs or
#: None); an emptied file has length 0 (and no blob)
SealedRead = "str | None | tuple[bytes, int, bytes, bool, tuple | None]"


class SealProcesses:
    """``n`` sealing processes for one backup."""

    def __init__(self, n: int, keys: MasterKeys, level: int, min_size: int, ahead: int) -> None:
        self._pool = WorkerPool("seal", n, [keys.enc_key, keys.id_key, keys.chunker_key, level, min_size, ahead])

    @property
    def pids(self) -> list[int]:
        return self._pool.pids

    def submit(self, files: list[tuple[bytes, os.stat_result]], xattrs: list[bool]) -> Future:
        """The batch ``files`` (path, the walk's lstat) to the least busy process; its
        future gives a ``SealedRead`` per file. ``xattrs``: whose extended attributes it
        reads as well. BrokenWorker when no process is left."""
        return self._pool.submit([[p, st.st_size, st.st_mtime_ns, st.st_ctime_ns, x] for (p, st), x in zip(files, xattrs)])

    def close(self, cancel: bool) -> None:
        """End the processes (``cancel``: at once, dropping their batches)."""
        self._pool.close(cancel)


__all__ = ["SealProcesses", "SealedRead"]
