"""Worker processes for CPU stages that hold the GIL too often to share one interpreter:
sealing small files in a backup (``objects/sealprocs.py``) and verifying packs in
``check --read-data`` (``repo/verifyprocs.py``).

A worker is ``python -P -m backupkit.procmain ROLE`` with two pipes. Each message is a
frame (``procframes.py``: a msgpack part and an optional raw part, such as a whole
pack's bytes). The parent sends the role's start arguments first (the keys, never on the
command line), then one job per frame; the worker answers each job with one frame, in
order. A worker runs in a session of its own (a terminal's Ctrl-C reaches the parent,
which stops it), never touches the repository, and ends at the end of its input: when
the parent closes the pipe, or dies.

A worker that dies or answers nonsense breaks the jobs it had (``BrokenWorker``); the
caller does that work itself, on its own threads, and goes on without processes.
"""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
from collections import deque
from concurrent.futures import Future
from typing import IO, Any

import msgpack

from backupkit.procframes import read_frame, write_frame

#: pipe buffers this large (Linux's default is 64 KiB: a 16 MiB pack would take 256
#: wake-ups each way); 1 MiB is the largest an unprivileged process may ask for
PIPE_BYTES = 1 << 20


class BrokenWorker(Exception):
    """A worker process ended or answered nonsense: the jobs it had are done by the
    caller instead. Control flow between this module and its callers: it never reaches a
    user, so it is not in ``errors.py``."""


def _grow_pipe(f: IO[bytes]) -> None:
    try:
        fcntl.fcntl(f.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (OSError, AttributeError):
        pass  # a smaller pipe works too, with more wake-ups


class WorkerProcess:
    """One worker process, its jobs in flight, and the thread reading its answers."""

    def __init__(self, role: str, start: list) -> None:
        self.proc = subprocess.Popen(
            # -P: the working directory is not put on the module path (a backup run
            # from a directory someone else can write must not import from it)
            [sys.executable, "-P", "-m", "backupkit.procmain", role],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        #: jobs handed over and not answered, oldest first; appended under
        #: ``write_lock``, taken by the answering thread (deque ends are thread-safe)
        self.pending: deque[Future] = deque()
        #: held while a job is written: never while waiting for an answer (the process
        #: may be blocked writing one, with its input pipe full)
        self.write_lock = threading.Lock()
        self.broken = False
        assert self.proc.stdin is not None and self.proc.stdout is not None
        _grow_pipe(self.proc.stdin)
        _grow_pipe(self.proc.stdout)
        write_frame(self.proc.stdin, start)
        self.reader = threading.Thread(target=self._answers, name=f"bk-{role}-answers", daemon=True)
        self.reader.start()

    def submit(self, job: Any, raw: bytes | bytearray | memoryview = b"") -> Future:
        fut: Future = Future()
        with self.write_lock:
            if self.broken:
                raise BrokenWorker("the worker process has ended")
            self.pending.append(fut)
            try:
                write_frame(self.proc.stdin, job, raw)  # type: ignore[arg-type]
            except (OSError, ValueError) as e:
                self._break(f"cannot hand it a job: {e}")
        if self.broken:  # broke meanwhile: nobody will answer what was appended
            self._break("it ended")
        return fut

    def _answers(self) -> None:
        out = self.proc.stdout
        try:
            while True:
                got, _raw = read_frame(out)  # type: ignore[arg-type]
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
        """Fail every job in flight; no more are taken."""
        self.broken = True
        while True:
            try:
                fut = self.pending.popleft()
            except IndexError:
                return
            fut.set_exception(BrokenWorker(f"a worker process broke: {why}"))

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
        self._break("its caller closed it")


class WorkerPool:
    """``n`` worker processes of one role; a job goes to the least busy."""

    def __init__(self, role: str, n: int, start: list) -> None:
        self._workers: list[WorkerProcess] = []
        try:
            for _ in range(max(1, n)):
                self._workers.append(WorkerProcess(role, start))
        except BaseException:
            self.close(cancel=True)
            raise

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def submit(self, job: Any, raw: bytes | bytearray | memoryview = b"", idle_only: bool = False) -> Future | None:
        """``job`` (and its raw part) to the least busy process; its future gives the
        answer (a list). ``idle_only``: None unless a process has nothing to do.
        BrokenWorker when no process is left."""
        live = [w for w in self._workers if not w.broken]
        if not live:
            raise BrokenWorker("no worker process is left")
        w = min(live, key=lambda w: len(w.pending))
        if idle_only and w.pending:
            return None
        return w.submit(job, raw)

    def close(self, cancel: bool) -> None:
        """End the processes (``cancel``: at once, dropping their jobs)."""
        for w in self._workers:
            w.close(cancel)


__all__ = ["BrokenWorker", "WorkerPool", "WorkerProcess"]
