"""Pure-Python reference chunker: this module *is* the chunking specification.

Vocabulary:
    chunker key   the 32 random bytes in the repository's master secrets that key the table.
    gear table    256 pseudo-random 64-bit words, one per byte value, derived from the key.
    gear hash     ``h = (h << 1) + gear[byte]`` modulo 2**64, restarted for every chunk.
    cut point     the length of a chunk measured from the start of the data scanned.
    min/avg/max   the chunk size parameters (:class:`ChunkSizes`); ``avg`` is a power of
                  two, ``2**bits``.
    eof           the caller promises no more data follows ``data``.

The C extension ``_cdc`` must return exactly what this module returns for every input;
the golden vectors in ``tests/chunker`` pin both to the repository format. Changing
anything here changes how every repository deduplicates: that is a new format version,
not a refactor.

It is slow (a few million bytes hashed per second); use it to define and to test, and
let :class:`backupkit.chunker.Chunker` pick the C kernel for real work.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import NamedTuple

# ---------------------------------------------------------------------------------------
# Why the algorithm is what it is
#
# * Gear hashing (FastCDC, Xia et al., USENIX ATC 2016). One shift and one add per byte:
#   after the shift, the top bit of the old hash falls off, so bit k of ``h`` depends only
#   on the last k+1 bytes. The hash is therefore a rolling hash over a 64-byte window
#   without any "remove the outgoing byte" step.
#
# * Masks over the HIGH bits. Because bit k only sees the last k+1 bytes, the low bits
#   would make cut decisions on a window of a few bytes (short, repetitive patterns would
#   cut everywhere or nowhere). The top bits see the whole 64-byte window, so we test
#   ``h & mask == 0`` with masks made of the top bits.
#
# * Normalized chunking (FastCDC "NC level 2"). Before the average size a stricter mask of
#   bits+2 top bits is used (cut probability 2**-(bits+2) per byte), after it a looser one
#   of bits-2 bits (2**-(bits-2)). This pulls the size distribution towards ``avg`` and
#   cuts the number of max-size (content-independent) cuts, which dedup badly.
#
# * Cut-point skipping. The first ``min_size`` bytes of a chunk are never hashed and the
#   hash restarts at 0 at offset ``min_size``: a chunk can never be shorter than
#   min_size + 1 (except the final one), and we save hashing a quarter to a half of the
#   data. The cost is a smaller effective window for the first 63 bytes after min_size,
#   which only matters for pathological inputs.
#
# * A keyed table. With a public table, chunk boundaries (and hence the sizes the store
#   can observe) would fingerprint known files. Deriving the table from a secret key, as
#   borg does, removes that; it does not make sizes safe to reveal (the 2025 attacks,
#   eprint 2025/532 and 2025/558, recover keyed-chunker secrets from chunk sizes), which
#   is why packs hide blob sizes. The derivation is HMAC-SHA256 with a versioned domain
#   label, so the table can never collide with any other use of the chunker key.
#
# * "Need more data" is the answer 0. The first chunk of a stream only depends on its
#   first ``max_size`` bytes, and a cut found at i + 1 only depends on bytes up to i. So
#   a cut is final as soon as it is found, and a streaming caller that retries with more
#   data when it gets 0 cuts exactly as if it had the whole stream at once.
# ---------------------------------------------------------------------------------------

GEAR_DOMAIN = b"bk-gear-v1"
"""HMAC message prefix for gear table entries (version 1 of the table)."""

CHUNKER_KEY_SIZE = 32
"""Length in bytes of the repository chunker key."""

GEAR_TABLE_BYTES = 256 * 8
"""Size of :func:`gear_table_bytes`: 256 little-endian unsigned 64-bit words."""

MIN_MIN_SIZE = 64
"""Smallest allowed ``min_size`` (one full gear window)."""

_MASK64 = 0xFFFF_FFFF_FFFF_FFFF


def gear_table(chunker_key: bytes) -> tuple[int, ...]:
    """Derive the 256-entry gear table from the repository chunker key.

    ``gear[i]`` is the first 8 bytes, read little-endian, of
    ``HMAC-SHA256(chunker_key, b"bk-gear-v1" + bytes([i]))``.

    Args:
        chunker_key: the 32-byte chunker key.

    Returns:
        256 integers in ``[0, 2**64)``.

    Raises:
        TypeError: the key is not bytes-like.
        ValueError: the key is not 32 bytes long.
    """
    key = bytes(_check_key(chunker_key))
    return tuple(
        int.from_bytes(
            hmac.new(key, GEAR_DOMAIN + bytes([i]), hashlib.sha256).digest()[:8], "little"
        )
        for i in range(256)
    )


def gear_table_bytes(chunker_key: bytes) -> bytes:
    """The gear table packed as 2048 bytes (256 little-endian u64), as ``_cdc`` takes it."""
    return b"".join(g.to_bytes(8, "little") for g in gear_table(chunker_key))


def _check_key(chunker_key: bytes) -> memoryview:
    if not isinstance(chunker_key, (bytes, bytearray, memoryview)):
        raise TypeError(f"chunker key must be bytes, not {type(chunker_key).__name__}")
    view = memoryview(chunker_key).cast("B")
    if len(view) != CHUNKER_KEY_SIZE:
        raise ValueError(f"chunker key must be {CHUNKER_KEY_SIZE} bytes, got {len(view)}")
    return view


class ChunkSizes(NamedTuple):
    """The chunk size parameters, as :func:`find_cut` and :func:`cut_all` (and ``_cdc``'s)
    take them: no chunk but a stream's last is shorter than ``min_size + 1`` or longer
    than ``max_size``; ``avg_size``, a power of two, is the target average."""

    min_size: int
    avg_size: int
    max_size: int


def check_params(min_size: int, avg_size: int, max_size: int) -> tuple[int, int]:
    """Validate chunk size parameters and return the masks ``(mask_s, mask_l)``.

    Rules: all are ints, ``64 <= min_size < avg_size < max_size`` and ``avg_size`` is a
    power of two, ``2**bits``. ``mask_s`` has the top ``bits + 2`` bits of a 64-bit word
    set, ``mask_l`` the top ``bits - 2`` bits.

    Raises:
        TypeError: a parameter is not an int.
        ValueError: the parameters break a rule above.
    """
    for name, value in (("min_size", min_size), ("avg_size", avg_size), ("max_size", max_size)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an int, not {type(value).__name__}")
    if min_size < MIN_MIN_SIZE:
        raise ValueError(f"min_size must be at least {MIN_MIN_SIZE}, got {min_size}")
    if not min_size < avg_size < max_size:
        raise ValueError(
            f"need min_size < avg_size < max_size, got {min_size}, {avg_size}, {max_size}"
        )
    if avg_size & (avg_size - 1):
        raise ValueError(f"avg_size must be a power of two, got {avg_size}")
    if max_size >= 2**62:
        raise ValueError(f"max_size is too large: {max_size}")
    bits = avg_size.bit_length() - 1  # avg > min >= 64, so 7 <= bits <= 61
    mask_s = (_MASK64 << (64 - (bits + 2))) & _MASK64
    mask_l = (_MASK64 << (64 - (bits - 2))) & _MASK64
    return mask_s, mask_l


def find_cut(
    table: Sequence[int], data: bytes | bytearray | memoryview, sizes: ChunkSizes, eof: bool
) -> int:
    """Return the length of the first chunk of ``data``, or 0 if more data is needed.

    Args:
        table: the gear table, 256 ints (see :func:`gear_table`).
        data: bytes-like; indexing it must give ints (bytes, bytearray, memoryview of
            format ``B``, mmap).
        sizes: the chunk size parameters (see :func:`check_params`).
        eof: True if no data follows ``data``; then a nonempty ``data`` always yields a
            cut, and the last chunk may be shorter than ``min_size``.

    Returns:
        ``0`` when ``data`` is empty or the cut cannot be decided without more data,
        otherwise the cut point ``c`` with ``1 <= c <= min(len(data), max_size)``.
    """
    min_size, avg_size, max_size = sizes
    mask_s, mask_l = check_params(min_size, avg_size, max_size)
    if len(table) != 256:
        raise ValueError(f"gear table must have 256 entries, got {len(table)}")
    n = len(data)
    if n <= min_size:
        # Too short to hold a whole chunk: only the end of the stream makes it one.
        return n if eof else 0
    limit = min(n, max_size)
    h = 0
    i = min_size  # bytes before min_size are never hashed
    # Before the average size: strict mask, cuts are rarer.
    normal = min(avg_size, limit)
    while i < normal:
        h = ((h << 1) + table[data[i]]) & _MASK64
        if h & mask_s == 0:
            return i + 1
        i += 1
    # From the average size on: loose mask, cuts are likelier.
    while i < limit:
        h = ((h << 1) + table[data[i]]) & _MASK64
        if h & mask_l == 0:
            return i + 1
        i += 1
    if limit == max_size or eof:
        return limit  # forced cut at max_size, or the final chunk
    return 0  # fewer than max_size bytes and no cut yet: wait for more


def cut_all(
    table: Sequence[int], data: bytes | bytearray | memoryview, sizes: ChunkSizes, eof: bool
) -> list[int]:
    """Cut ``data`` into as many whole chunks as can be decided; return their lengths.

    With ``eof=True`` the lengths sum to ``len(data)``. With ``eof=False`` the undecided
    tail (always shorter than ``max_size``) is left out.
    """
    view = memoryview(data)
    if view.format != "B" or view.ndim != 1:
        view = view.cast("B")
    cuts: list[int] = []
    offset = 0
    while offset < len(view):
        cut = find_cut(table, view[offset:], sizes, eof)
        if cut == 0:
            break
        cuts.append(cut)
        offset += cut
    return cuts
