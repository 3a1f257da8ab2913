"""How bk object names map onto restic's REST protocol paths, and back.

restic's protocol (v2) knows one file, ``config``, and five object types, each a flat
directory: ``data`` (which servers shard into ``data/<first 2 chars>/``), ``keys``,
``index``, ``snapshots`` and ``locks``. bk names are deeper and have two more kinds
(``meta/`` packs and the ``catalog``), so names are mapped; the mapping is a function
with an inverse, so every valid bk name round-trips (``decode(encode(n)) == n``).

    bk name                                  REST path (type/name)
    config                                   config
    keys/S  index/S  snapshots/S  locks/S    same          (S: one name segment)
    data/AB/H   (H lowercase hex, AB = H[:2]) data/H
    meta/AB/H   (same rule)                   data/H.meta
    data/..., meta/... (anything else)       data/~<name with / as ~>
    keys/..., index/..., ... (deeper)        <type>/~<name with / as ~>
    anything else (catalog, ...)             index/~<name with / as ~>

``~`` is not in the bk name alphabet, so an encoded name starting with ``~`` can never
collide with one of the first rows. Packs keep restic's sharding (``data/3f/3f...``) on
every server; meta packs sit beside data packs (``data/3f/3f....meta``).
"""

from __future__ import annotations

import re

from backupkit.store.base import check_name

#: restic's object types, in the order a full listing visits them.
TYPES = ("keys", "index", "snapshots", "locks", "data")
#: The type that holds names of no restic type (the catalog, test names).
OTHER_TYPE = "index"
_DIRECT_TYPES = ("keys", "index", "snapshots", "locks")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_HEX_RE = re.compile(r"^[0-9a-f]{2,}$")
_ESCAPED_RE = re.compile(r"^~[A-Za-z0-9._~-]+$")
META_SUFFIX = ".meta"


def _escaped(type_: str, name: str) -> tuple[str, str]:
    return type_, "~" + name.replace("/", "~")


def type_of_first_segment(segment: str) -> str:
    """The REST type that holds bk names whose first segment is ``segment``."""
    if segment in _DIRECT_TYPES:
        return segment
    if segment in ("data", "meta"):
        return "data"
    return OTHER_TYPE


def encode(name: str) -> tuple[str, str]:
    """(type, name) on the server for bk object ``name``; type "" means the config file.

    Raises ValueError for an invalid bk name.
    """
    check_name(name)
    if name == "config":
        return "", "config"
    parts = name.split("/")
    first = parts[0]
    if first in _DIRECT_TYPES and len(parts) == 2:
        return first, parts[1]
    if first in ("data", "meta") and len(parts) == 3:
        shard, obj = parts[1], parts[2]
        if _HEX_RE.match(obj) and obj[:2] == shard:
            return "data", obj + (META_SUFFIX if first == "meta" else "")
    return _escaped(type_of_first_segment(first), name)


def decode(type_: str, server_name: str) -> str | None:
    """The bk name stored as ``type_/server_name``, or None if it is not one of ours."""
    if type_ == "":
        return "config" if server_name == "config" else None
    if _ESCAPED_RE.match(server_name):
        name = server_name[1:].replace("~", "/")
        try:
            check_name(name)
        except ValueError:
            return None
        return name if encode(name) == (type_, server_name) else None
    if type_ == "data":
        base, meta = server_name, False
        if server_name.endswith(META_SUFFIX):
            base, meta = server_name[: -len(META_SUFFIX)], True
        if not _HEX_RE.match(base):
            return None
        return f"{'meta' if meta else 'data'}/{base[:2]}/{base}"
    if type_ in _DIRECT_TYPES and _SEGMENT_RE.match(server_name) and server_name not in (".", ".."):
        return f"{type_}/{server_name}"
    return None


def types_for_prefix(prefix: str) -> tuple[bool, list[str]]:
    """(whether ``config`` may match, the REST types to list) for a bk listing prefix."""
    first, slash, _ = prefix.partition("/")
    if slash:
        firsts = {first}
        config = False
    else:  # a partial first segment: every first segment starting with it
        firsts = {seg for seg in ("keys", "index", "snapshots", "locks", "data", "meta") if seg.startswith(first)}
        firsts.add("(other)")
        config = "config".startswith(prefix)
    types = {type_of_first_segment(seg) for seg in firsts}
    return config, [t for t in TYPES if t in types]
