"""Content-defined chunking: split a byte stream into chunks at content-chosen points.

Vocabulary:
    chunker key   32 secret bytes from the repository's master secrets (see crypto).
    gear table    256 u64 derived from the chunker key (:func:`gear_table`).
    cut point     length of the next chunk; 0 from :meth:`Chunker.find_cut` means "need
                  more data".
    eof           no more data follows; only then may a chunk end short of a cut.

The behaviour is defined by the pure-Python :mod:`._reference`; the C extension
:mod:`._cdc` runs the same scan loop several hundred times faster and with the GIL
released. :class:`Chunker` picks one and binds the key and the size parameters; it holds
no mutable state, so one instance may be shared by many threads.

Example::

    chunker = Chunker(chunker_key)
    with open(path, "rb", buffering=0) as f:
        for chunk in chunker.chunks(f.read):
            store(chunk)
"""

from __future__ import annotations

import ctypes
import mmap

from collections.abc import Callable, Iterator
from types import ModuleType
from typing import Literal

from backupkit.chunker import _reference
from backupkit.chunker._reference import ChunkSizes, check_params, gear_table, gear_table_bytes

__all__ = [
    "C_AVAILABLE",
    "ChunkSizes",
    "DEFAULT_AVG",
    "DEFAULT_MAX",
    "DEFAULT_MIN",
    "Chunker",
    "gear_table",
    "gear_table_bytes",
]

DEFAULT_MIN = 512 * 1024
"""Default minimum chunk size (512 KiB); repositories store theirs in config."""
DEFAULT_AVG = 1024 * 1024
"""Default average chunk size (1 MiB); must be a power of two."""
DEFAULT_MAX = 8 * 1024 * 1024
"""Default maximum chunk size (8 MiB)."""

_cdc: ModuleType | None
try:
    from backupkit.chunker import _cdc
except ImportError as exc:  # not built: fall back to the (slow) reference
    _cdc = None
    _C_IMPORT_ERROR: ImportError | None = exc
else:
    _C_IMPORT_ERROR = None

C_AVAILABLE: bool = _cdc is not None
"""True if the C extension imported; ``impl="auto"`` then uses it."""

Buffer = bytes | bytearray | memoryview
Impl = Literal["auto", "c", "python"]


class Chunker:
    """A content-defined chunker bound to one key and one set of size parameters.

    Args:
        chunker_key: the repository's 32-byte chunker key.
        min_size: no chunk but the last of a stream is shorter than ``min_size + 1``.
        avg_size: target average chunk size, a power of two.
        max_size: no chunk is longer than this.
        impl: ``"c"``, ``"python"`` (the reference, slow) or ``"auto"`` (C if built).

    Raises:
        ValueError: bad parameters (need ``64 <= min < avg < max``, avg a power of two),
            a key that is not 32 bytes, or an unknown ``impl``.
        ImportError: ``impl="c"`` but the extension is not built.
    """

    __slots__ = ("impl", "sizes", "_table", "_table_bytes")

    sizes: ChunkSizes
    impl: Literal["c", "python"]

    def __init__(
        self,
        chunker_key: bytes,
        min_size: int = DEFAULT_MIN,
        avg_size: int = DEFAULT_AVG,
        max_size: int = DEFAULT_MAX,
        impl: str = "auto",
    ) -> None:
        check_params(min_size, avg_size, max_size)
        if impl == "auto":
            impl = "c" if C_AVAILABLE else "python"
        elif impl not in ("c", "python"):
            raise ValueError(f"impl must be 'auto', 'c' or 'python', not {impl!r}")
        if impl == "c" and not C_AVAILABLE:
            raise ImportError(
                "backupkit.chunker._cdc is not built (pip install . builds it; for a work "
                "tree run: python setup.py build_ext --inplace)"
            ) from _C_IMPORT_ERROR
        self.sizes = ChunkSizes(min_size, avg_size, max_size)
        self.impl = "c" if impl == "c" else "python"
        self._table = gear_table(chunker_key)
        self._table_bytes = b"".join(g.to_bytes(8, "little") for g in self._table)

    def __repr__(self) -> str:
        min_size, avg_size, max_size = self.sizes
        return f"Chunker({min_size=}, {avg_size=}, {max_size=}, impl={self.impl!r})"

    def find_cut(self, data: Buffer, eof: bool) -> int:
        """Length of the first chunk of ``data``, or 0 if it needs more data to decide.

        A nonzero answer is final: more data after ``data`` would not change it.
        ``data`` may be any C-contiguous buffer (bytes, bytearray, memoryview, mmap).
        """
        if _cdc is not None and self.impl == "c":
            return int(_cdc.find_cut(self._table_bytes, data, self.sizes, eof))
        return _reference.find_cut(self._table, _byte_view(data), self.sizes, eof)

    def cut_all(self, data: Buffer, eof: bool) -> list[int]:
        """Lengths of the chunks of ``data``, as many as can be decided.

        With ``eof=True`` they sum to ``len(data)``; with ``eof=False`` the undecided
        tail, always shorter than ``max_size``, is left out.
        """
        if _cdc is not None and self.impl == "c":
            cuts: list[int] = _cdc.cut_all(self._table_bytes, data, self.sizes, eof)
            return cuts
        return _reference.cut_all(self._table, _byte_view(data), self.sizes, eof)

    def chunks(
        self,
        reader: Callable[[int], Buffer] | None = None,
        *,
        readinto: Callable[[memoryview], int] | None = None,
        buffers: Callable[[int], mmap.mmap] | None = None,
    ) -> Iterator[memoryview]:
        """Read a stream to its end and yield its chunks, in order, each exactly once.

        The chunks are exactly those of ``cut_all(whole_stream, eof=True)``.

        Args:
            reader: ``read(n)`` returning at most about ``n`` bytes, and ``b""`` only at
                the end of the stream (short reads are fine), e.g. ``fileobj.read``.
            readinto: instead of ``reader``: ``readinto(view) -> n`` filling the start of
                ``view`` (0 only at the end), e.g. ``fileobj.readinto`` or a wrapper of
                ``os.readv``. The data then lands in the chunk buffer straight from the
                kernel, without a copy made while holding the GIL.
            buffers: with ``readinto``: ``buffers(size)`` gives the map each refill reads
                into (at least ``size`` bytes); by default a fresh anonymous map each
                time. A caller that recycles maps (``objects/chunkbuffers.py``) must
                give none whose chunks are still in use, nor the one it gave last (the
                undecided tail is copied from it).

        Yields:
            Read-only memoryviews. Without ``buffers`` each stays valid after the
            iterator moves on (it keeps its read buffer alive, and a buffer is never
            written again once a view of it is out), so a consumer may keep them
            without copying; with ``buffers``, for as long as that caller says.

        The buffer is refilled to ``max_size + step`` bytes before each scan (``step =
        min(2 MiB, max_size)``, also the request size of ``reader``), so every scan
        decides at least one chunk (a window of ``max_size`` always does) while a
        reader holds ~10 MiB with the product's sizes. The undecided tail, on average
        about one chunk, is copied to the next buffer and scanned again.
        """
        if (reader is None) == (readinto is None):
            raise TypeError("give exactly one of reader and readinto")
        if buffers is not None and readinto is None:
            raise TypeError("buffers go with readinto")
        max_size = self.sizes.max_size
        step = min(2 << 20, max_size)
        target = max_size + step
        tail = b""
        eof = False
        area: mmap.mmap | None = None
        offset = 0
        while not eof:
            if readinto is not None:
                # An anonymous map, not a bytearray: bytearray(n) zero-fills 10 MiB while
                # holding the GIL (a third of a backup's GIL time); the map's pages are
                # zeroed by the kernel as readinto's system call first touches them.
                prev, area = area, (buffers(target) if buffers is not None else mmap.mmap(-1, target))
                _copy_tail(area, prev, offset, tail)
                prev = None  # the old map lives as long as its chunks' views, no longer
                filled = len(tail)
                with memoryview(area) as mv:
                    while filled < target:
                        n = readinto(mv[filled:target])
                        if not n:
                            eof = True
                            break
                        filled += n
                buf = memoryview(area)[:filled]
            else:
                buf = bytearray(tail)
                while len(buf) < target:
                    piece = reader(step)  # type: ignore[misc]
                    if not piece:
                        eof = True
                        break
                    buf += piece
            view = memoryview(buf).toreadonly()
            offset = 0
            for cut in self.cut_all(view, eof):
                yield view[offset : offset + cut]
                offset += cut
            # Views already yielded pin this buffer: never touch it again.
            tail = view[offset:]


#: Tails at least this long are copied with ``ctypes.memmove``, which releases the GIL;
#: shorter ones by a slice assignment (the foreign call costs more than the copy).
GIL_FREE_COPY_MIN = 64 * 1024


def _copy_tail(dst: mmap.mmap, src: mmap.mmap | None, src_off: int, tail: Buffer) -> None:
    """Copy ``tail`` (``src[src_off:src_off + len(tail)]`` when ``src`` is given) to the
    start of ``dst``. The undecided tail of each buffer, ~1 MiB on average and up to
    ``max_size``, was copied holding the GIL, faulting in the new map's pages as it went:
    8% of a first backup's GIL-held samples (docs/performance-limits.md)."""
    n = len(tail)
    if n >= GIL_FREE_COPY_MIN and src is not None:
        if src_off < 0 or src_off + n > len(src) or n > len(dst):
            raise ValueError(f"tail of {n} bytes at {src_off} outside the buffers")
        d = ctypes.c_char.from_buffer(dst)
        s = ctypes.c_char.from_buffer(src)  # src is written no more: only views of it are out
        try:
            ctypes.memmove(ctypes.addressof(d), ctypes.addressof(s) + src_off, n)
        finally:
            del d, s
    elif n:
        dst[:n] = tail


def _byte_view(data: Buffer) -> memoryview:
    """A flat unsigned-byte view of any C-contiguous buffer, for the reference."""
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    return view
