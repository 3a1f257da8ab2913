"""Downloads from S3: one GetObject (a whole object or a byte range), checked and retried.

botocore retries a request whose answer never came; two things it cannot retry are done
here. A body cut short mid-download (the status line was 200, the bytes stopped) is
retried with the store's ``Backoff``; a complete answer whose length does not match what
was asked (a server bug) is retried once, then reported as StoreError. A whole-object
read with a bound (``max_size``) is refused from its Content-Length before the body is
read, and reads no more than the bound allows when there is none. Errors leave as
StoreErrors (``s3_boto.map_error``); ``s3.py`` holds the store.

``stream_ranges`` reads several ranges of one object with one GetObject from the first
to the last and hands them over one at a time as the body arrives: a restore holds one
group of blobs of a pack, not the pack, so more packs can be read at once in the same
memory. A body cut short is asked for again from the byte where it stopped (no byte is
downloaded twice).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import Any

from backupkit.errors import StoreError, StoreUnavailable
from backupkit.store.base import read_at_most, too_large
from backupkit.store.retry import Backoff, RequestStats
from backupkit.store.s3_boto import BOTO_ERRORS, error_code, map_error

_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")


def download(
    client: Any, bucket: str, key: str, name: str, stats: RequestStats, backoff: Backoff,
    offset: int | None = None, length: int = 0, max_size: int | None = None,
) -> bytes:
    """Object ``name`` (at ``key`` in ``bucket``), or ``length`` bytes of it from
    ``offset``; ``max_size``: ObjectTooLarge for a larger whole object."""
    what = f"reading {name}"
    request: dict[str, Any] = {"Bucket": bucket, "Key": key}
    if offset is not None:
        request["Range"] = f"bytes={offset}-{offset + length - 1}"
    cut_short = 0
    mismatches = 0
    while True:
        try:
            response = client.get_object(**request)
        except BOTO_ERRORS as exc:
            code, status = error_code(exc)
            if code == "InvalidRange" or status == 416:
                raise StoreError(f"{what}: range {offset}+{length} is past the end of the object") from exc
            raise map_error(exc, what) from exc
        size = response.get("ContentLength")
        if max_size is not None and size is not None and int(size) > max_size:
            response["Body"].close()
            too_large(name, int(size), max_size)
        try:
            data = _read_body(response, what, stats, max_size if offset is None else None)
        except StoreUnavailable:
            cut_short += 1
            if cut_short >= backoff.attempts:
                raise
            stats.add("retries")
            backoff.wait(cut_short - 1)
            continue
        if offset is None:
            too_large(name, len(data), max_size)
            expected = response.get("ContentLength")
            if expected is None or len(data) == expected:
                return data
        else:
            if len(data) == length:
                return data
            total = _range_total(response)
            if total is not None and offset + length > total:
                raise StoreError(f"{what}: range {offset}+{length} is past the end of the object ({total} bytes)")
            expected = length
        mismatches += 1
        if mismatches > 1:
            raise StoreError(f"{what}: the store sent {len(data)} bytes where {expected} were expected")
        stats.add("retries")


def _read_body(response: dict[str, Any], what: str, stats: RequestStats, limit: int | None = None) -> bytes:
    """The body, or its first ``limit`` + 1 bytes: without a Content-Length to check
    first (a chunked answer), a bounded get reads no more than its bound allows."""
    body = response["Body"]
    try:
        data: bytes = body.read() if limit is None else read_at_most(body.read, limit + 1)
    except BOTO_ERRORS as exc:
        raise StoreUnavailable(f"{what}: the download was cut short ({type(exc).__name__}: {exc})") from exc
    finally:
        body.close()
    stats.add("bytes_down", len(data))
    return data


def _range_total(response: dict[str, Any]) -> int | None:
    """The object's size from a range answer's Content-Range (None: not told)."""
    match = _CONTENT_RANGE_RE.match(str(response.get("ContentRange") or ""))
    if match and match.group(3) != "*":
        return int(match.group(3))
    return None


#: what ``stream_ranges`` asks of the body at once (a bounded allocation per read)
_PIECE = 1 << 20


def stream_ranges(
    client: Any, bucket: str, key: str, name: str, stats: RequestStats, backoff: Backoff,
    ranges: Sequence[tuple[int, int]],
) -> Iterator[bytes]:
    """The bytes of each (offset, length) of ``ranges`` in turn, read with one ranged
    GetObject from the first offset to the last range's end (the gaps between them are
    read and dropped). The ranges must ascend without overlapping and none may be empty
    (ValueError). A body cut short is asked for again from where it stopped, with the
    store's ``Backoff``; a range past the object's end is StoreError, as ``download``'s."""
    what = f"reading {name}"
    if not ranges:
        return
    if not streamable(ranges):
        raise ValueError(f"{what}: ranges must ascend without overlapping and not be empty")
    end = ranges[-1][0] + ranges[-1][1]
    pos = ranges[0][0]  # the next byte of the object the body gives
    body: Any = None
    cut_short = 0
    try:
        for offset, length in ranges:
            parts: list[bytes] = []
            stop = offset + length
            while pos < stop:
                if body is None:
                    body = _open_range(client, bucket, key, what, pos, end)
                try:
                    piece = body.read(min(_PIECE, stop - pos))
                except BOTO_ERRORS as exc:
                    piece, cause = b"", exc
                else:
                    cause = None
                if not piece:  # cut short, or the object ends before the range does
                    body.close()
                    body = None
                    cut_short += 1
                    if cut_short >= backoff.attempts:
                        detail = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
                        raise StoreUnavailable(f"{what}: the download was cut short{detail}")
                    stats.add("retries")
                    backoff.wait(cut_short - 1)
                    continue
                got = len(piece)
                stats.add("bytes_down", got)
                skip = offset - pos  # bytes of a gap before the range, still in this piece
                if skip > 0:
                    piece = piece[skip:]
                pos += got
                if piece:
                    parts.append(piece)
            data = parts[0] if len(parts) == 1 else b"".join(parts)
            parts = []
            yield data
            del data
    finally:
        if body is not None:
            body.close()


def streamable(ranges: Sequence[tuple[int, int]]) -> bool:
    """Whether ``stream_ranges`` takes ``ranges``: none empty or before the object's
    start, each after the one before it."""
    prev_end = 0
    for offset, length in ranges:
        if offset < prev_end or length <= 0:
            return False
        prev_end = offset + length
    return True


def _open_range(client: Any, bucket: str, key: str, what: str, start: int, end: int) -> Any:
    """The body of a GetObject of bytes ``start`` to ``end`` - 1, checked: an answer
    that does not start at ``start`` or ends before ``end`` is StoreError."""
    try:
        response = client.get_object(Bucket=bucket, Key=key, Range=f"bytes={start}-{end - 1}")
    except BOTO_ERRORS as exc:
        code, status = error_code(exc)
        if code == "InvalidRange" or status == 416:
            raise StoreError(f"{what}: range {start}+{end - start} is past the end of the object") from exc
        raise map_error(exc, what) from exc
    match = _CONTENT_RANGE_RE.match(str(response.get("ContentRange") or ""))
    body = response["Body"]
    if match is not None:
        first, last, total = int(match.group(1)), int(match.group(2)), match.group(3)
        if first != start:
            body.close()
            raise StoreError(f"{what}: the store answered bytes {first}-{last} for range {start}+{end - start}")
        if last + 1 < end:
            body.close()
            whole = f" ({total} bytes)" if total != "*" else ""
            raise StoreError(f"{what}: range {start}+{end - start} is past the end of the object{whole}")
    else:
        size = response.get("ContentLength")
        if size is None or int(size) != end - start:
            body.close()
            raise StoreError(f"{what}: the store did not answer range {start}+{end - start} as asked")
    return body


__all__ = ["download", "stream_ranges", "streamable"]
