"""Content lists: how a file's content is named, and where the list itself is kept.

Vocabulary:
    item          one element of a content list: a data blob id (32 bytes) or a hole
                  (an int: that many zero bytes).
    content list  a file's items in order; up to INLINE_CONTENT items are kept in the
                  entry itself (``Entry.content``), longer lists in content blobs
                  (``Entry.content_blobs``): metadata blobs of up to CONTENT_BLOB_ITEMS
                  items each, a msgpack list like the inline one.

This module is the only place that knows the two forms.
"""

from __future__ import annotations

from collections.abc import Callable

import msgpack

from backupkit.errors import FormatError
from backupkit.objects.entry import Entry

INLINE_CONTENT = 64
CONTENT_BLOB_ITEMS = 8192


def content_list(e: Entry, load_meta: Callable[[bytes], bytes]) -> list:
    """The full content list of a file entry, loading its content blobs if it has any."""
    if e.content_blobs is not None:
        out: list = []
        for bid in e.content_blobs:
            out.extend(decode_content_blob(bid, load_meta(bid)))
        return out
    return list(e.content or ())


def decode_content_blob(bid: bytes, plain: bytes) -> list:
    """The items a content blob holds; FormatError if it is not a list of items."""
    try:
        items = msgpack.unpackb(plain)
    except Exception as err:  # noqa: BLE001 - msgpack raises several kinds
        raise FormatError(f"content blob {bid.hex()[:16]} is malformed: {err}") from None
    if type(items) is not list or not all(
        (type(i) is bytes and len(i) == 32) or (type(i) is int and i >= 0) for i in items
    ):
        raise FormatError(f"content blob {bid.hex()[:16]} is malformed: not a list of blob ids and holes")
    return items


def with_content(e: Entry, items: list, save_meta: Callable[[bytes], bytes], **more) -> Entry:
    """``e`` with ``items`` as its content: inline, or in content blobs when long (and
    the fields ``more``, in the same copy)."""
    if len(items) <= INLINE_CONTENT:
        return e.replace(content=tuple(items), content_blobs=None, **more)
    blobs = tuple(
        save_meta(msgpack.packb(items[i : i + CONTENT_BLOB_ITEMS])) for i in range(0, len(items), CONTENT_BLOB_ITEMS)
    )
    return e.replace(content=None, content_blobs=blobs, **more)
