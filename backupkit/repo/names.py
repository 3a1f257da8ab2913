"""The names bk writes in a store, and how to tell them from everything else.

Ours (format v1)::

    config  catalog
    keys/<64 hex>  index/<64 hex>  snapshots/<64 hex>  locks/<64 hex>
    data/<2 hex>/<64 hex>  meta/<2 hex>/<64 hex>     (the 2 hex are the id's first two)

Any other name under these prefixes (``index/zz``, ``snapshots/x``, a file someone copied
in) is *foreign*: every listing skips it, the repository records it with a warning, and
``check`` lists it. Nothing is ever read or deleted by a foreign name.
"""

from __future__ import annotations

import re

from backupkit.repo.pack import KIND_DATA, KIND_META

#: prefixes whose objects are named by a 64-hex id directly below them
FLAT_PREFIXES = ("keys", "index", "snapshots", "locks")
PACK_PREFIXES = (KIND_DATA, KIND_META)

_HEX64 = re.compile(r"[0-9a-f]{64}")


def id_of(prefix: str, name: str) -> bytes | None:
    """The 32-byte id in ``name`` if it is one of ours under ``prefix`` (``index``,
    ``data``, ...), else None."""
    head, sep, tail = name.partition("/")
    if head != prefix or not sep:
        return None
    if prefix in PACK_PREFIXES:
        sub, sep, tail = tail.partition("/")
        if not sep or not _HEX64.fullmatch(tail) or sub != tail[:2]:
            return None
    elif prefix not in FLAT_PREFIXES or not _HEX64.fullmatch(tail):
        return None
    return bytes.fromhex(tail)


def is_ours(name: str) -> bool:
    """True for every name bk writes (see the module docstring)."""
    if name in ("config", "catalog"):
        return True
    return id_of(name.partition("/")[0], name) is not None
