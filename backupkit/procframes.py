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


class Buffer:
    """One buffer for the raw parts of many frames, grown when a larger one comes (the
    old one dropped first: two packs' worth at once is what it is there to avoid)."""

    def __init__(self) -> None:
        self.data = bytearray()

    def view(self, n: int) -> memoryview:
        if len(self.data) < n:
            self.data = bytearray()
            self.data = bytearray(n + n // 8)  # packs differ in size: grow seldom
        return memoryview(self.data)[:n]


def _read_exact(inp: IO[bytes], n: int, buf: Buffer | None = None) -> memoryview:
    """``n`` bytes, read into ``buf``, else into a new buffer."""
    view = memoryview(bytearray(n)) if buf is None else buf.view(n)
    got = 0
    while got < n:
        k = inp.readinto(view[got:])  # type: ignore[attr-defined]
        if not k:
            raise EOFError
        got += k
    return view


def read_frame(inp: IO[bytes], into: Buffer | None = None) -> tuple[Any, memoryview]:
    """The next frame's (object, raw part); the raw part is read into ``into`` if given
    (the view is valid until the next read into it). EOFError at the end of the
    input (also mid-frame), ValueError for a frame larger than FRAME_MAX."""
    head = inp.read(_HEAD.size)
    if len(head) < _HEAD.size:
        raise EOFError
    n, r = _HEAD.unpack(head)
    if n > FRAME_MAX or r > FRAME_MAX:
        raise ValueError(f"frame of {n} + {r} bytes")
    obj = msgpack.unpackb(_read_exact(inp, n), raw=False)
    return obj, _read_exact(inp, r, into)


def _keep_little_memory(threshold: int = 4 << 20) -> None:
    """malloc (glibc) returns what it frees beyond ``threshold``: by default the mmap
    threshold follows the largest buffer freed, so a worker that decompressed 8 MiB blobs
    serves later ones from a heap it never gives back (a verifying process grew to 54
    MiB). Blocks of ``threshold`` or more are mapped and unmapped; smaller ones reuse
    the heap."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
        libc.mallopt(M_MMAP_THRESHOLD, threshold)
        libc.mallopt(M_TRIM_THRESHOLD, threshold)
    except (OSError, AttributeError):
        pass


def serve(start: Callable[[list], Callable[[Any, memoryview], list]]) -> int:
    """A worker's main loop: ``start(arguments)`` gives the job handler; each job's
    answer is written back until the input ends. The jobs' raw parts are read into one
    buffer, kept as large as the largest so far (a pack: a new 16 MiB buffer per job
    is memory the allocator keeps and pages the kernel zeroes again), so a handler must
    not keep its raw part."""
    _keep_little_memory()
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    buf = Buffer()
    try:
        args, _raw = read_frame(inp)
        handle = start(args)
        while True:
            job, raw = read_frame(inp, buf)
            answer = handle(job, raw)
            del raw  # before the next read: a larger frame replaces the buffer
            write_frame(out, answer)
    except (EOFError, BrokenPipeError):
        return 0  # the caller closed the pipe, or is gone


__all__ = ["FRAME_MAX", "read_frame", "serve", "write_frame"]
