"""The snapshot catalog codec: one sealed object ``catalog`` holding every snapshot's
document, so listing snapshots costs one LIST and one GET.

Plaintext (before the payload encoding)::

    msgpack({"v": 1, "snapshots": {hex snapshot id: snapshot document, ...}})

The catalog is derived data (``snapshot.list_snapshots`` reconciles it with the listing
of ``snapshots/``); this module only reads and writes it, exactly as stored.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import msgpack

from backupkit.crypto import T_CATALOG
from backupkit.errors import FormatError, IntegrityError, ObjectNotFound
from backupkit.repo.repository import Repository

CATALOG = "catalog"
_SNAPSHOT_ID = re.compile(r"[0-9a-f]{64}")


def encode_catalog(entries: dict[str, dict]) -> bytes:
    return msgpack.packb({"v": 1, "snapshots": entries})


def decode_catalog(plain: bytes) -> dict[str, dict]:
    """Snapshot id -> document; FormatError if it does not parse. Entries whose key is
    not a snapshot id or whose document is not a map are left out."""
    try:
        doc = msgpack.unpackb(plain)
        if not isinstance(doc, dict) or doc.get("v") != 1 or not isinstance(doc.get("snapshots"), dict):
            raise FormatError("the catalog is malformed or of an unknown version")
    except (ValueError, TypeError, RecursionError) as e:
        raise FormatError(f"the catalog is malformed: {e}") from None
    return {k: v for k, v in doc["snapshots"].items() if isinstance(k, str) and _SNAPSHOT_ID.fullmatch(k) and isinstance(v, dict)}


@dataclass(frozen=True)
class CatalogRead:
    """The catalog as stored: ``entries`` is None when it is missing or unreadable;
    ``problem`` says why it is unreadable (None when it is fine or missing)."""

    entries: dict[str, dict] | None
    problem: str | None = None


def load_catalog(repo: Repository) -> CatalogRead:
    """Read the catalog, telling a missing one from a damaged one."""
    try:
        return CatalogRead(decode_catalog(repo.get_object(T_CATALOG, CATALOG, b"catalog")))
    except ObjectNotFound:
        return CatalogRead(None)
    except (IntegrityError, FormatError) as e:
        return CatalogRead(None, str(e))


def read_catalog(repo: Repository) -> dict[str, dict] | None:
    """The catalog exactly as stored (snapshot id -> document), not reconciled with the
    listing; None when it is missing or unreadable."""
    return load_catalog(repo).entries


def write_catalog(repo: Repository, entries: dict[str, dict]) -> None:
    repo.put_object(T_CATALOG, CATALOG, b"catalog", encode_catalog(entries))
