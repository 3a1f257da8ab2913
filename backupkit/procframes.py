"""The frames between a worker process and its parent (``procs.py``), and the worker's
main loop: what a worker needs, and nothing of the parent's side (no threads, no
subprocess), so that it starts fast and small.

A frame is a msgpack part and an optional raw part (bytes such as a whole pack, which
msgpack would copy twice on each side: the raw part is written as it is and read into
one buffer), after a header of their two lengths.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Callable
from typing import IO, Any

import msgpack

_HEAD = struct.Struct("<QQ")
#: no frame part is larger (a pack is at most limits.PACK_MAX; a batch's sealed blobs far less)
FRAME_MAX = 1 << 30


def write_frame(out: IO[bytes], obj: Any, raw: bytes | bytearray | memoryview = b"") -> None:
    data = msgpack.packb(obj, use_bin_type=True)
    out.write(_HEAD.pack(len(data), len(raw)))
    out.write(data)
    if raw:
        out.write(raw)
    out.flush()


def _read_exact(inp: IO[bytes], n: int, buf: bytearray | None = None) -> memoryview:
    """``n`` bytes, read into ``buf`` if it is large enough, else into a new buffer."""
    if buf is None or len(buf) < n:
        buf = bytearray(n)
    view = memoryview(buf)[:n]
    got = 0
    while got < n:
        k = inp.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            raise EOFError
        got += k
    return view


def read_frame(inp: IO[bytes], into: bytearray | None = None) -> tuple[Any, memoryview]:
    """The next frame's (object, raw part); the raw part is read into ``into`` when it
    fits (the view is valid until the next read into it). EOFError at the end of the
    input (also mid-frame), ValueError for a frame larger than FRAME_MAX."""
    head = inp.read(_HEAD.size)
    if len(head) < _HEAD.size:
        raise EOFError
    n, r = _HEAD.unpack(head)
    if n > FRAME_MAX or r > FRAME_MAX:
        raise ValueError(f"frame of {n} + {r} bytes")
    obj = msgpack.unpackb(_read_exact(inp, n), raw=False)
    return obj, _read_exact(inp, r, into)


def serve(start: Callable[[list], Callable[[Any, memoryview], list]]) -> int:
    """A worker's main loop: ``start(arguments)`` gives the job handler; each job's
    answer is written back until the input ends. The jobs' raw parts are read into one
    buffer, kept as large as the largest so far (a pack: a new 16 MiB buffer per job
    is memory the allocator keeps and pages the kernel zeroes again), so a handler must
    not keep its raw part."""
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    buf = bytearray()
    try:
        args, _raw = read_frame(inp)
        handle = start(args)
        while True:
            job, raw = read_frame(inp, buf)
            if raw.obj is not buf and len(raw) > len(buf):
                buf = raw.obj  # grown: this one is reused from now on
            write_frame(out, handle(job, raw))
    except (EOFError, BrokenPipeError):
        return 0  # the caller closed the pipe, or is gone


__all__ = ["FRAME_MAX", "read_frame", "serve", "write_frame"]
