"""Type stub for the C scan loop; behaviour is defined by ``_reference.py``."""

import mmap

from backupkit.chunker._reference import ChunkSizes

_Data = bytes | bytearray | memoryview | mmap.mmap

GEAR_TABLE_BYTES: int

def find_cut(table: bytes, data: _Data, sizes: ChunkSizes, eof: bool) -> int:
    """Length of the first chunk of ``data``, or 0 if more data is needed.

    ``table`` is the 2048-byte gear table (256 little-endian u64); ``data`` is any
    C-contiguous buffer; ``sizes`` is ``(min_size, avg_size, max_size)``. Raises
    ValueError on a bad table or size parameters.
    """

def cut_all(table: bytes, data: _Data, sizes: ChunkSizes, eof: bool) -> list[int]:
    """Lengths of all chunks of ``data`` that can be decided.

    With ``eof=True`` they sum to ``len(data)``; with ``eof=False`` the undecided tail is
    left out.
    """
