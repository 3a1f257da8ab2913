"""Sealing processes: batches of small files read, hashed, compressed and sealed in
worker processes, so that a backup of many tiny files uses both cores.

Why processes: per tiny file, a reader thread makes five system calls and three short
primitive calls, each of which gives up the GIL and takes it back; with the walking
thread and two readers contending, a first backup of 200,000 files of ~500 bytes spent
26-30 CPU seconds where the same work split over a process pool takes 9
(``python -m benchmarks.procpool``; docs/performance-limits.md). A process has its own
GIL: it runs the whole per-file pipeline of a batch (``smallfiles.read_batch``, the blob
id, zstd, AES-GCM) and hands back only ids and sealed blobs; the backup's reader thread
stores them (``ContentWriter.sealed_small``: the index decides which are new) and makes
the files' entries, as for a batch read on the thread.

The processes are started (``spawn``: the backup has threads, which ``fork`` would copy
mid-flight) once a backup has met ``Tuning.small_files_before_processes`` small files,
so short backups never pay for them. They ignore SIGINT (the backup's own handling stops
them), end by themselves within a second when the backup is killed, get the repository's keys from the parent through their start-up pipe, and never
touch the repository: a process that dies breaks only the batches in flight, which the
reader thread then reads itself (``BrokenProcessPool``).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
import time
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from backupkit.crypto import T_DATA_BLOB, MasterKeys, Sealer
from backupkit.errors import FileReadError
from backupkit.objects.smallfiles import read_batch, read_xattrs
from backupkit.repo.pack import encode_payload

#: what a sealing process gives for one file: the error's message, None (not one chunk:
#: the caller reads it), or (blob id, length, sealed blob, changed while read, xattrs or
#: None); an emptied file has length 0 (and no blob)
SealedRead = "str | None | tuple[bytes, int, bytes, bool]"

#: seconds between two looks at whether the backup that started this process still runs
_PARENT_POLL = 1.0

#: the process's own state, set by ``_start``
_sealer: Sealer | None = None
_level = 0
_min_size = 0
_ahead = 1


def _start(keys: MasterKeys, level: int, min_size: int, ahead: int) -> None:
    global _sealer, _level, _min_size, _ahead
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _sealer, _level, _min_size, _ahead = Sealer(keys), level, min_size, ahead
    threading.Thread(target=_orphaned, args=(os.getppid(),), name="bk-seal-parent", daemon=True).start()


def _orphaned(parent: int) -> None:
    """End this process once its backup is gone (killed: nothing told the pool): a
    sealing process never outlives the run it was started for by more than a second."""
    while os.getppid() == parent:
        time.sleep(_PARENT_POLL)
    os._exit(0)


def _more(_fd: int, _st: os.stat_result, _fst: os.stat_result) -> None:
    return None


def _no_bytes(_n: int) -> None:
    return None


class _Stat:
    """The fields of the walk's lstat that reading a file compares (a stat result is
    slow to pickle: these cross the pipe as a tuple)."""

    __slots__ = ("st_size", "st_mtime_ns", "st_ctime_ns")

    def __init__(self, size: int, mtime_ns: int, ctime_ns: int) -> None:
        self.st_size, self.st_mtime_ns, self.st_ctime_ns = size, mtime_ns, ctime_ns


def seal_batch(files: list[tuple[bytes, int, int, int, bool]]) -> list[Any]:
    """In a sealing process: each file of the batch (path, size, mtime_ns, ctime_ns as
    the walk's lstat saw them, and whether to read its xattrs) read
    (``smallfiles.read_batch``), and the content of each that is one chunk given its id
    and sealed as a data blob (``SealedRead``)."""
    sealer = _sealer
    assert sealer is not None, "seal_batch runs in a process started by SealProcesses"
    out: list[Any] = []
    got_all = read_batch(os, [(f[0], _Stat(f[1], f[2], f[3])) for f in files], _min_size, _ahead, _more, _no_bytes)
    for f, got in zip(files, got_all):
        if isinstance(got, FileReadError):
            out.append(str(got))
        elif got is None:
            out.append(None)
        else:
            data, ch = got
            xattrs = read_xattrs(os, f[0]) if f[4] else None
            if not data:
                out.append((b"", 0, b"", ch, xattrs))
                continue
            bid = sealer.blob_id(data)
            out.append((bid, len(data), sealer.seal(T_DATA_BLOB, bid, encode_payload(data, _level)), ch, xattrs))
    return out


class SealProcesses:
    """A pool of ``n`` sealing processes for one backup."""

    def __init__(self, n: int, keys: MasterKeys, level: int, min_size: int, ahead: int) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=n,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(keys, level, min_size, ahead),
        )

    def submit(self, files: list[tuple[bytes, os.stat_result]], xattrs: list[bool]) -> Future:
        """``seal_batch`` of ``files`` (path, the walk's lstat) in a process; ``xattrs``:
        whose extended attributes it reads as well."""
        return self._pool.submit(
            seal_batch, [(p, st.st_size, st.st_mtime_ns, st.st_ctime_ns, x) for (p, st), x in zip(files, xattrs)]
        )

    def close(self, cancel: bool) -> None:
        """Stop the processes (``cancel``: drop the batches not yet started)."""
        self._pool.shutdown(wait=True, cancel_futures=cancel)


__all__ = ["SealProcesses", "SealedRead", "seal_batch"]
