"""Worker processes for CPU stages that hold the GIL too often to share one interpreter:
sealing small files in a backup (``objects/sealprocs.py``) and verifying packs in
``check --read-data`` (``repo/packverify.py``).

A worker is ``python -P -m backupkit.procmain ROLE`` with two pipes. Each message is a
frame: a msgpack part and an optional raw part (bytes such as a whole pack, which msgpack
would copy twice on each side; the raw part is written as it is and read into one
buffer). The parent sends the role's start arguments first (the keys, never on the
command line), then one job per frame; the worker answers each job with one frame, in
order. A worker runs in a session of its own (a terminal's Ctrl-C reaches the parent,
which stops it), never touches the repository, and ends at the end of its input: when
the parent closes the pipe, or dies.

A worker that dies or answers nonsense breaks the jobs it had (``BrokenWorker``); the
caller does that work itself, on its own threads, and goes on without processes.
"""

from __future__ import annotations

import fcntl
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import IO, Any

import msgpack

_HEAD = struct.Struct("<QQ")
#: no frame part is larger (a pack is at most limits.PACK_MAX; a batch's sealed blobs far less)
FRAME_MAX = 1 << 30
#: pipe buffers this large (Linux's default is 64 KiB: a 16 MiB pack would take 256
#: wake-ups each way); 1 MiB is the largest an unprivileged process may ask for
PIPE_BYTES = 1 << 20


class BrokenWorker(Exception):
    """A worker process ended or answered nonsense: the jobs it had are done by the
    caller instead. Control flow between this module and its callers: it never reaches a
    user, so it is not in ``errors.py``."""


def write_frame(out: IO[bytes], obj: Any, raw: bytes | bytearray | memoryview = b"") -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    out.write(_HEAD.pack(len(data), len(raw)))
    out.write(data)
    if raw:
        out.write(raw)
    out.flush()


def _read_exact(inp: IO[bytes], n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = inp.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            raise EOFError
        got += k
    return buf


def read_frame(inp: IO[bytes]) -> tuple[Any, bytearray]:
    """The next frame's (object, raw part); EOFError at the end of the input (also
    mid-frame), ValueError for a frame larger than FRAME_MAX."""
    head = inp.read(_HEAD.size)
    if len(head) < _HEAD.size:
        raise EOFError
    n, r = _HEAD.unpack(head)
    if n > FRAME_MAX or r > FRAME_MAX:
        raise ValueError(f"frame of {n} + {r} bytes")
    obj = msgpack.unpackb(_read_exact(inp, n), raw=False)
    return obj, (_read_exact(inp, r) if r else bytearray())


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


def serve(start: Callable[[list], Callable[[Any, bytearray], list]]) -> int:
    """A worker's main loop: ``start(arguments)`` gives the job handler; each job's
    answer is written back until the input ends."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        args, _raw = read_frame(inp)
        handle = start(args)
        while True:
            write_frame(out, handle(*read_frame(inp)))
    except (EOFError, BrokenPipeError):
        return 0  # the caller closed the pipe, or is gone


__all__ = ["BrokenWorker", "WorkerPool", "WorkerProcess", "read_frame", "serve", "write_frame"]
