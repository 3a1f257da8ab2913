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

A sealing process is ``python -m backupkit.objects.sealworker`` with two pipes: length-
prefixed msgpack frames, the keys first, then a batch per frame in, a result per frame
out, in order. It runs in a session of its own (a terminal's Ctrl-C reaches the backup,
which stops it), never touches the repository, and ends at the end of its input: when
the backup closes the pipe, or dies. A process that dies or answers nonsense breaks the
batches in flight (``_BrokenSealProcess``), which the reader thread then reads itself;
the backup goes on without processes and says so once among its warnings
(``backup_reads.SEALING_STOPPED``). The backup starts them once it has met
``Tuning.small_files_before_processes`` small files, so short backups never pay for them.
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future
from typing import IO, Any

import msgpack

from backupkit.crypto import MasterKeys

#: what a sealing process gives for one file: the error's message, None (not one chunk:
#: the caller reads it), or (blob id, length, sealed blob, changed while read, xattrs or
#: None); an emptied file has length 0 (and no blob)
SealedRead = "str | None | tuple[bytes, int, bytes, bool, tuple | None]"

_LEN = struct.Struct("<Q")
#: no frame is larger (a batch's sealed blobs: Tuning.small_files_per_job files of at most
#: Tuning.small_file bytes each, far below this)
FRAME_MAX = 1 << 30


class _BrokenSealProcess(Exception):
    """A sealing process ended or answered nonsense: the batches it had are read by the
    backup's reader threads instead. Private control flow between this module and
    ``FileReads``: it never reaches a user, so it is not in ``errors.py``."""


def write_frame(out: IO[bytes], obj: Any) -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    out.write(_LEN.pack(len(data)) + data)
    out.flush()


def read_frame(inp: IO[bytes]) -> Any:
    """The next frame's object; EOFError at the end of the input (also mid-frame)."""
    head = inp.read(_LEN.size)
    if len(head) < _LEN.size:
        raise EOFError
    (n,) = _LEN.unpack(head)
    if n > FRAME_MAX:
        raise ValueError(f"frame of {n} bytes")
    data = inp.read(n)
    if len(data) < n:
        raise EOFError
    return msgpack.unpackb(data, raw=False)


class _Worker:
    """One sealing process, its batches in flight, and the thread reading its answers."""

    def __init__(self, start: list) -> None:
        self.proc = subprocess.Popen(
            # -P: the working directory is not put on the module path (a backup run
            # from a directory someone else can write must not import from it)
            [sys.executable, "-P", "-m", "backupkit.objects.sealworker"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        #: batches handed over and not answered, oldest first; appended under
        #: ``write_lock``, taken by the answering thread (deque ends are thread-safe)
        self.pending: deque[Future] = deque()
        #: held while a batch is written: never while waiting for an answer (the process
        #: may be blocked writing one, with its input pipe full)
        self.write_lock = threading.Lock()
        self.broken = False
        assert self.proc.stdin is not None and self.proc.stdout is not None
        write_frame(self.proc.stdin, start)
        self.reader = threading.Thread(target=self._answers, name="bk-seal-answers", daemon=True)
        self.reader.start()

    def submit(self, batch: list) -> Future:
        fut: Future = Future()
        with self.write_lock:
            if self.broken:
                raise _BrokenSealProcess("the sealing process has ended")
            self.pending.append(fut)
            try:
                write_frame(self.proc.stdin, batch)  # type: ignore[arg-type]
            except (OSError, ValueError) as e:
                self._break(f"cannot hand it a batch: {e}")
        if self.broken:  # broke meanwhile: nobody will answer what was appended
            self._break("it ended")
        return fut

    def _answers(self) -> None:
        out = self.proc.stdout
        try:
            while True:
                got = read_frame(out)  # type: ignore[arg-type]
                try:
                    fut = self.pending.popleft()
                except IndexError:
                    fut = None
                if fut is None or type(got) is not list:
                    raise ValueError("an answer nobody asked for")
                fut.set_result(got)
        except (EOFError, OSError, ValueError, msgpack.UnpackException) as e:
            self._break(f"it ended ({type(e).__name__})")
            self.proc.kill()  # it may be alive and talking nonsense: nobody listens now

    def _break(self, why: str) -> None:
        """Fail every batch in flight; no more are taken."""
        self.broken = True
        while True:
            try:
                fut = self.pending.popleft()
            except IndexError:
                return
            fut.set_exception(_BrokenSealProcess(f"a sealing process broke: {why}"))

    def close(self, cancel: bool) -> None:
        try:
            self.proc.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        if cancel:
            self.proc.kill()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.reader.join(timeout=30)
        self.proc.stdout.close()  # type: ignore[union-attr]
        self._break("the backup closed it")


class SealProcesses:
    """``n`` sealing processes for one backup."""

    def __init__(self, n: int, keys: MasterKeys, level: int, min_size: int, ahead: int) -> None:
        start = [keys.enc_key, keys.id_key, keys.chunker_key, level, min_size, ahead]
        self._workers: list[_Worker] = []
        try:
            for _ in range(max(1, n)):
                self._workers.append(_Worker(start))
        except BaseException:
            self.close(cancel=True)
            raise

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def submit(self, files: list[tuple[bytes, os.stat_result]], xattrs: list[bool]) -> Future:
        """The batch ``files`` (path, the walk's lstat) to the least busy process; its
        future gives a ``SealedRead`` per file. ``xattrs``: whose extended attributes it
        reads as well. _BrokenSealProcess when no process is left."""
        live = [w for w in self._workers if not w.broken]
        if not live:
            raise _BrokenSealProcess("no sealing process is left")
        w = min(live, key=lambda w: len(w.pending))
        return w.submit([[p, st.st_size, st.st_mtime_ns, st.st_ctime_ns, x] for (p, st), x in zip(files, xattrs)])

    def close(self, cancel: bool) -> None:
        """End the processes (``cancel``: at once, dropping their batches)."""
        for w in self._workers:
            w.close(cancel)


__all__ = ["SealProcesses", "SealedRead", "read_frame", "write_frame"]
