"""Forging repository objects with the real keys: what a malicious client could write.

Vocabulary:
    payload     what is sealed: flag byte (0 raw, 1 zstd) + bytes (``backupkit.repo.pack``).
    forged      sealed with the repository's keys, so it authenticates: only its shape
                or size is hostile.
    bomb        a zstd payload far larger decompressed than stored.

Everything writes straight to the store, bypassing every check the product makes when
it writes, so the readers' checks are what the tests exercise.
"""

from __future__ import annotations

import functools
import os
import struct
import time

import msgpack
import zstandard

from backupkit.crypto import T_CATALOG, T_INDEX, T_LOCK, T_META_BLOB, T_PACK_HEADER, T_SNAPSHOT
from backupkit.entry import Keyer
from backupkit.repo.pack import KIND_DATA, KIND_META, pack_name
from backupkit.repo.repository import Repository

GiB = 1 << 30


def raw_payload(data: bytes) -> bytes:
    return b"\x00" + data


def zstd_payload(data: bytes) -> bytes:
    return b"\x01" + zstandard.ZstdCompressor(level=3).compress(data)


@functools.lru_cache(maxsize=4)
def bomb(size: int = 4 * GiB, declare: bool = True) -> bytes:
    """A zstd payload of ``size`` zero bytes (~32 KiB a GiB); with ``declare`` its frame
    states the size (what bk's own compressor writes), else it states none."""
    c = zstandard.ZstdCompressor(level=1)
    obj = c.compressobj(size=size if declare else -1)
    chunk = bytes(1 << 24)
    out = []
    left = size
    while left:
        n = min(left, len(chunk))
        out.append(obj.compress(chunk[:n] if n < len(chunk) else chunk))
        left -= n
    out.append(obj.flush())
    return b"\x01" + b"".join(out)


def put_sealed(repo: Repository, obj_type: int, name: str, obj_id: bytes, payload: bytes) -> None:
    """Seal ``payload`` (already flag-prefixed) as ``obj_type``/``obj_id`` under ``name``."""
    repo.store.put(name, repo.sealer.seal(obj_type, obj_id, payload))


def put_index(repo: Repository, doc: object, payload: bytes | None = None) -> str:
    """A new index object holding ``doc`` (msgpack), or exactly ``payload``."""
    obj_id = os.urandom(32)
    name = f"index/{obj_id.hex()}"
    put_sealed(repo, T_INDEX, name, obj_id, payload if payload is not None else raw_payload(msgpack.packb(doc)))
    return name


def put_lock(repo: Repository, payload: bytes) -> str:
    obj_id = os.urandom(32)
    name = f"locks/{obj_id.hex()}"
    put_sealed(repo, T_LOCK, name, obj_id, payload)
    return name


def put_catalog(repo: Repository, payload: bytes) -> None:
    put_sealed(repo, T_CATALOG, "catalog", b"catalog", payload)


def put_snapshot_plain(repo: Repository, plain: bytes, payload: bytes | None = None) -> str:
    """A snapshot object whose plaintext is ``plain`` (its id is its MAC, as bk's)."""
    sid = repo.sealer.blob_id(plain)
    put_sealed(repo, T_SNAPSHOT, f"snapshots/{sid.hex()}", sid, payload if payload is not None else raw_payload(plain))
    return sid.hex()


def snapshot_doc(root: bytes, **over) -> dict:
    doc = {
        "v": 1, "root": root, "time": time.time_ns(), "host": "forge", "user": "forge", "paths": [b"/src"],
        "source": {"type": "local", "account": "forge", "path": ""}, "tags": [], "meta": {}, "parent": None,
        "generator": "forge", "summary": {},
    }
    doc.update(over)
    return doc


def put_snapshot(repo: Repository, root: bytes, **over) -> str:
    return put_snapshot_plain(repo, msgpack.packb(snapshot_doc(root, **over)))


def put_pack(
    repo: Repository,
    kind: str,
    blobs: list[tuple[int, bytes, bytes, int]],
    *,
    index: bool = True,
    index_rows=None,
    header_rows=None,
    header_plain: bytes | None = None,
    tail: bytes | None = None,
) -> tuple[bytes, list[list]]:
    """Write a pack of ``blobs`` (type, id, payload, raw length) and, with ``index``, an
    index object naming it. ``index_rows``/``header_rows`` replace the true rows (lies);
    ``header_plain`` replaces the header's whole plaintext (sealed with the pack's id, so
    it authenticates); ``tail`` replaces the sealed header and its length. Returns (pack
    id, true index rows)."""
    pack_id = os.urandom(32)
    parts, rows, hrows, off = [], [], [], 0
    for t, bid, payload, raw_len in blobs:
        sealed = repo.sealer.seal(t, bid, payload)
        parts.append(sealed)
        rows.append([bid, off, len(sealed), raw_len])
        hrows.append([t, bid, off, len(sealed), raw_len])
        off += len(sealed)
    if tail is None:
        body = msgpack.packb([1, header_rows if header_rows is not None else hrows])
        plain = struct.pack("<I", len(body)) + body if header_plain is None else header_plain
        header = repo.sealer.seal(T_PACK_HEADER, pack_id, plain)
        tail = header + struct.pack("<I", len(header))
    data = b"".join(parts) + tail
    repo.store.put(pack_name(kind, pack_id), data)
    if index:
        put_index(repo, {"v": 1, "packs": [[pack_id, kind, len(data), index_rows if index_rows is not None else rows]], "supersedes": []})
    return pack_id, rows


def put_meta_blobs(repo: Repository, plains: list[bytes]) -> list[bytes]:
    """Store plaintexts as metadata blobs (HAMT nodes, content lists) in one pack; ids."""
    ids = [repo.sealer.blob_id(p) for p in plains]
    uniq = {}
    for bid, p in zip(ids, plains):
        uniq[bid] = p
    put_pack(repo, KIND_META, [(T_META_BLOB, bid, raw_payload(p), len(p)) for bid, p in uniq.items()])
    return ids


def file_entry(blob_ids: list, size: int, **over) -> dict:
    e = {"t": "f", "m": 0o644, "u": 0, "g": 0, "un": "", "gn": "", "mt": 0, "ct": 0, "i": 1, "dv": 1, "n": 1,
         "s": size, "c": list(blob_ids)}
    e.update(over)
    return e


def dir_entry(**over) -> dict:
    e = {"t": "d", "m": 0o755, "u": 0, "g": 0, "un": "", "gn": "", "mt": 0, "ct": 0, "i": 2, "dv": 1, "n": 2}
    e.update(over)
    return e


def encode_entry(e: dict) -> bytes:
    """An entry's wire bytes from a dict of wire keys (any values: forged entries may be
    malformed), sorted as bk writes them."""
    return msgpack.packb({k: e[k] for k in sorted(e)})


def leaf(repo: Repository, entries: dict[bytes, dict]) -> list:
    """A leaf node (as a list) holding ``{path: entry}`` with the repository's keys."""
    keyer = Keyer(repo.sealer.keyed_hash)
    rows = sorted([keyer.key(p), p, encode_entry(e)] for p, e in entries.items())
    return [0, rows]


def leaf_raw(repo: Repository, rows: list[tuple[bytes, bytes]]) -> bytes:
    """The id of a one-leaf trie of (path, raw entry bytes) rows (``/`` added): entries
    that are not even msgpack maps."""
    keyer = Keyer(repo.sealer.keyed_hash)
    rows = [(b"/", encode_entry(dir_entry())), *rows]
    node = [0, sorted([keyer.key(p), p, e] for p, e in rows)]
    (nid,) = put_meta_blobs(repo, [msgpack.packb(node)])
    return nid


def tree_with(repo: Repository, entries: dict[bytes, dict]) -> bytes:
    """The id of a one-leaf trie holding ``entries`` (``/`` added if missing)."""
    entries = {b"/": dir_entry(), **entries}
    (nid,) = put_meta_blobs(repo, [msgpack.packb(leaf(repo, entries))])
    return nid


def key_of(repo: Repository, path: bytes) -> bytes:
    return Keyer(repo.sealer.keyed_hash).key(path)


__all__ = [
    "GiB", "KIND_DATA", "KIND_META", "bomb", "dir_entry", "file_entry", "key_of", "leaf", "leaf_raw", "put_catalog",
    "put_index", "put_lock", "put_meta_blobs", "put_pack", "put_sealed", "put_snapshot", "put_snapshot_plain",
    "raw_payload", "snapshot_doc", "tree_with", "zstd_payload",
]
