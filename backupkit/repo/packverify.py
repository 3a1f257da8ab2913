"""Verifying what was read: one blob (``verify_blob``, the one blob verification every
reader uses), many blobs of one downloaded span (``open_blobs``: a restore's pack reads)
and a whole downloaded pack against the index (``verify_pack``, what ``check
--read-data`` does per pack; ``verify_pack_spans`` the same a range at a time, where a
request costs nothing).

``open_blobs`` runs the C module ``_blobopen``: it opens, decodes and re-hashes every blob
of the span with the GIL released once, where ``verify_blob`` gives the GIL up and takes
it back several times per blob (AES-GCM, zstd, the id's HMAC); with two threads reading
packs those hand-offs cost more than the work (a restore of `/usr` made 2.6 million futex
calls). ``verify_blob`` stays the reference: the C code only ever says "good", and every
blob it does not accept goes through ``verify_blob``, which decides and words the error,
so both paths fail alike. The module finds libcrypto and libzstd with ``dlopen`` (no
headers at build time); where either is missing, or the extension was not built,
everything runs the Python path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Mapping, Sequence

from backupkit.crypto import Sealer
from backupkit.errors import FormatError, IntegrityError, StoreError
from backupkit.limits import BLOB_MAX, PACK_HEADER_MAX
from backupkit.repo.blobruns import runs
from backupkit.repo.pack import TYPE_OF_KIND, decode_payload, read_pack_header

try:
    from backupkit.repo import _blobopen

    C_AVAILABLE = bool(_blobopen.available())
except ImportError:  # not built (a source checkout without the extension)
    _blobopen = None  # type: ignore[assignment]
    C_AVAILABLE = False

#: blob id -> (offset, stored length, raw length), as the index has them for one pack
PackEntries = Mapping[bytes, tuple[int, int, int]]
#: one blob of a span: (offset in the span, stored length, blob id, raw length)
SpanItem = tuple[int, int, bytes, int]


def verify_blob(
    sealer: Sealer,
    blob_id: bytes,
    blob_type: int,
    sealed: bytes | bytearray | memoryview,
    what: str,
    raw_length: int | None = None,
    view: bool = False,
) -> bytes | memoryview:
    """Open one sealed blob, decode it and re-hash it against its id (and, given
    ``raw_length``, check its size). Returns the plaintext (``view``: possibly as a
    memoryview, for callers that only verify: no copy of a raw payload). The payload
    decompresses to at most ``raw_length`` bytes (the index's word), else BLOB_MAX (issue
    10.4: a zstd bomb is refused, not allocated)."""
    limit = BLOB_MAX if raw_length is None else min(raw_length, BLOB_MAX)
    data = decode_payload(sealer.open(blob_type, blob_id, sealed, what), what, limit, view)
    if raw_length is not None and len(data) != raw_length:
        raise IntegrityError(f"{what}: {len(data)} bytes, the index says {raw_length}")
    if sealer.blob_id(data) != blob_id:
        raise IntegrityError(f"{what}: content does not match its id")
    return data


def open_blobs(
    sealer: Sealer, blob_type: int, data: bytes | bytearray | memoryview, items: Sequence[SpanItem],
    want: bool = True, native: bool = True,
) -> list:
    """For each item of ``data``: its plaintext (``want``; else True), or the
    IntegrityError / FormatError ``verify_blob`` raises for it (an item beyond the end of
    ``data`` included). ``native=False``: the Python path alone (tests compare the two)."""
    done: list | None = None
    if native and C_AVAILABLE and items:
        keys = sealer.keys
        done = _blobopen.open_blobs(keys.enc_key, keys.id_key, blob_type, data, items, want, BLOB_MAX)
    whole = memoryview(data)
    out: list = []
    for i, (off, ln, bid, raw) in enumerate(items):
        got = None if done is None else done[i]
        if got is None:
            what = f"blob {bid.hex()[:16]}"
            try:
                sealed = whole[off : off + ln]
                if off < 0 or len(sealed) != ln:
                    raise IntegrityError(f"{what}: beyond the end of the pack")
                plain = verify_blob(sealer, bid, blob_type, sealed, what, raw_length=raw, view=not want)
                got = (plain if isinstance(plain, bytes) else bytes(plain)) if want else True
            except (IntegrityError, FormatError) as err:
                got = err
        out.append(got)
    return out


def verify_pack(
    sealer: Sealer, pack_id: bytes, kind: str, size: int, data: bytes | bytearray | memoryview, entries: PackEntries
) -> tuple[str | None, dict[bytes, str]]:
    """(header problem, {blob id: problem}) for one downloaded pack of ``size`` bytes
    (the index's), whose blobs the index places at ``entries``."""
    header_problem = None
    if len(data) != size:
        header_problem = f"{len(data)} bytes read, {size} indexed"
    else:
        header_problem = _header_problem(sealer, pack_id, data, size, entries)
    t = TYPE_OF_KIND[kind]
    items = [(off, ln, bid, raw) for bid, (off, ln, raw) in entries.items()]
    results = open_blobs(sealer, t, data, items, want=False)
    bad = {item[2]: str(r) for item, r in zip(items, results) if r is not True}
    return header_problem, bad


def _header_problem(sealer: Sealer, pack_id: bytes, tail: bytes | bytearray | memoryview, size: int, entries: PackEntries) -> str | None:
    """What is wrong with the header at the end of ``tail`` (the pack's last bytes, or
    all of them) against the index's ``entries``; None when nothing is."""
    try:
        header = {e.blob_id: (e.offset, e.length) for e in read_pack_header(sealer, pack_id, tail, size)}
    except (IntegrityError, FormatError) as e:
        return str(e)
    wrong = [bid for bid, (off, ln, _r) in entries.items() if header.get(bid) != (off, ln)]
    return f"the header disagrees with the index about {len(wrong)} blob(s)" if wrong else None


def pack_spans(size: int, entries: PackEntries, span_max: int) -> list[tuple[int, int, list[SpanItem]]] | None:
    """A pack of ``size`` bytes cut into ranges that follow each other from 0 to ``size``
    (every byte read once): each holds one run of its blobs (``blobruns.runs``, the
    grouping prune's repack and the restore's plan read by, here with no gap limit) of at
    most ``span_max`` bytes unless one blob is larger, and the gap before it; the last
    range also holds the header. (start, length, its blobs as ``SpanItem``s), or None
    when the entries do not lie one after another inside the pack (overlapping, or
    reaching past ``size``): such a pack is verified whole, where every odd shape has its
    finding."""
    rows = sorted((off, ln, bid, raw) for bid, (off, ln, raw) in entries.items())
    end = 0
    for off, ln, _bid, _raw in rows:
        if off < end or ln < 0 or off + ln > size:
            return None
        end = off + ln
    spans: list[tuple[int, int, list[SpanItem]]] = []
    start = 0
    for _first, end, members in runs(rows, size, span_max):
        spans.append((start, end - start, [(off - start, ln, bid, raw) for off, ln, bid, raw in members]))
        start = end
    if not spans:
        return [(0, size, [])]
    last_start, _length, items = spans[-1]
    spans[-1] = (last_start, size - last_start, items)
    return spans


def verify_pack_spans(
    sealer: Sealer, pack_id: bytes, kind: str, size: int, entries: PackEntries,
    spans: list[tuple[int, int, list[SpanItem]]], datas: Iterable[bytes], read_range: Callable[[int, int], bytes],
) -> tuple[str | None, dict[bytes, str], int]:
    """``verify_pack`` of a pack read range by range: ``datas`` gives the bytes of each of
    ``spans`` (``pack_spans``) in turn, so one range is held at a time instead of the
    pack; ``read_range(start, length)`` reads the header's start when the header is
    longer than the last range. The same findings as ``verify_pack`` of the same bytes,
    and the bytes read; the caller reads the pack whole when a range cannot be read."""
    t = TYPE_OF_KIND[kind]
    bad: dict[bytes, str] = {}
    header_problem = None
    nread = 0
    ranges = iter(datas)
    for i, (start, length, items) in enumerate(spans):
        data = next(ranges)
        if len(data) != length:
            raise StoreError(f"{len(data)} bytes read of a range of {length}")
        nread += len(data)
        if i == len(spans) - 1:
            tail = data
            hlen = struct.unpack("<I", tail[-4:])[0] if len(tail) >= 4 else 0
            if len(tail) < hlen + 4 <= min(size, PACK_HEADER_MAX + 4):  # a header longer than the last range
                tail = read_range(size - hlen - 4, hlen + 4)
                nread += len(tail)
            header_problem = _header_problem(sealer, pack_id, tail, size, entries)
            del tail
        for item, r in zip(items, open_blobs(sealer, t, data, items, want=False)):
            if r is not True:
                bad[item[2]] = str(r)
        del data
    return header_problem, bad, nread


__all__ = ["C_AVAILABLE", "PackEntries", "SpanItem", "open_blobs", "pack_spans", "verify_blob", "verify_pack", "verify_pack_spans"]
