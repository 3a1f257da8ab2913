"""Verifying what was read: one blob (``verify_blob``, the one blob verification every
reader uses) and a whole downloaded pack against the index (``verify_pack``, what
``check --read-data`` does per pack).
"""

from __future__ import annotations

from collections.abc import Mapping

from backupkit.crypto import Sealer
from backupkit.errors import FormatError, IntegrityError
from backupkit.limits import BLOB_MAX
from backupkit.repo.pack import TYPE_OF_KIND, decode_payload, read_pack_header

#: blob id -> (offset, stored length, raw length), as the index has them for one pack
PackEntries = Mapping[bytes, tuple[int, int, int]]


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


def verify_pack(
    sealer: Sealer, pack_id: bytes, kind: str, size: int, data: bytes | bytearray | memoryview, entries: PackEntries
) -> tuple[str | None, dict[bytes, str]]:
    """(header problem, {blob id: problem}) for one downloaded pack of ``size`` bytes
    (the index's), whose blobs the index places at ``entries``."""
    header_problem = None
    if len(data) != size:
        header_problem = f"{len(data)} bytes read, {size} indexed"
    else:
        try:
            header = {e.blob_id: (e.offset, e.length) for e in read_pack_header(sealer, pack_id, data, len(data))}
            wrong = [bid for bid, (off, ln, _r) in entries.items() if header.get(bid) != (off, ln)]
            if wrong:
                header_problem = f"the header disagrees with the index about {len(wrong)} blob(s)"
        except (IntegrityError, FormatError) as e:
            header_problem = str(e)
    t = TYPE_OF_KIND[kind]
    bad: dict[bytes, str] = {}
    whole = memoryview(data)  # blobs as views: a slice of bytes is a copy made holding the GIL
    for bid, (off, ln, raw) in entries.items():
        what = f"blob {bid.hex()[:16]}"
        sealed = whole[off : off + ln]
        try:
            if len(sealed) != ln:
                raise IntegrityError(f"{what}: beyond the end of the pack")
            verify_blob(sealer, bid, t, sealed, what, raw_length=raw, view=True)
        except (IntegrityError, FormatError) as e:
            bad[bid] = str(e)
    return header_problem, bad


__all__ = ["PackEntries", "verify_blob", "verify_pack"]
