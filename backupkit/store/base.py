"""The ObjectStore contract.

Vocabulary: an *object* is an immutable-by-convention byte string stored under a *name*.
Names are ``/``-separated relative paths made of ``[A-Za-z0-9._-]`` segments, e.g.
``config``, ``keys/3fa0...``, ``data/3f/3fa0...``. A *prefix* is a name prefix ending in
``/`` (or empty for everything).

Every backend (local directory, memory, S3) implements this class and passes the one
contract suite in ``tests/support/store_contract.py``. Errors are always ``backupkit.errors.StoreError``
subclasses; no backend library exception escapes a store.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterator
from dataclasses import dataclass

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid object name, else raise ValueError."""
    if not _NAME_RE.match(name) or any(seg in (".", "..") for seg in name.split("/")):
        raise ValueError(f"invalid object name: {name!r}")
    return name


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or stat says about one object.

    Attributes:
        name: the object's full name.
        size: its size in bytes.
        mtime: its modification time by the *store's* clock, seconds since the epoch.
    """

    name: str
    size: int
    mtime: float


class ObjectStore(abc.ABC):
    """A flat namespace of named byte strings."""

    #: A short URL-like description for messages (never contains credentials).
    location: str = ""

    @abc.abstractmethod
    def get(self, name: str) -> bytes:
        """Return the whole object. Raises ObjectNotFound if it does not exist."""

    @abc.abstractmethod
    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes starting at ``offset``.

        Raises ObjectNotFound if the object does not exist, and StoreError if the range
        extends past its end (a short read is never returned silently).
        """

    @abc.abstractmethod
    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` atomically, replacing any existing object.

        Readers see either the old object, the complete new one, or (for a new name)
        nothing; never a partial object. ``data`` may be any bytes-like object (packs
        are assembled in a bytearray); a store that keeps it must copy it.
        """

    @abc.abstractmethod
    def put_if_absent(self, name: str, data: bytes) -> bool:
        """Store ``data`` only if ``name`` does not exist yet, atomically.

        Returns True if this call created the object, False if the name was taken.
        Backends that cannot do this atomically set ``atomic_put_if_absent`` False.
        """

    #: True when put_if_absent is a real atomic conditional create.
    atomic_put_if_absent: bool = True

    #: Bytes worth transferring to save one request: ~0 for a local directory, about
    #: what the link moves in one request's latency for a remote store. Readers use it
    #: to decide when to join neighbouring byte ranges into one request.
    request_bytes: int = 0

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Delete the object. Raises ObjectNotFound if it does not exist."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose name starts with ``prefix``, each exactly once.

        Order is unspecified. A failure part-way raises StoreError; it never ends the
        iteration early as if the listing were complete.
        """

    @abc.abstractmethod
    def stat(self, name: str) -> ObjectInfo:
        """Return size and modification time. Raises ObjectNotFound."""

    def exists(self, name: str) -> bool:
        """True if the object exists."""
        from backupkit.errors import ObjectNotFound

        try:
            self.stat(name)
        except ObjectNotFound:
            return False
        return True

    def remove_abandoned(self, older_than: float) -> int:
        """Delete partial writes left by writers that died (a local store's temp files)
        untouched for ``older_than`` seconds; returns how many. Default: there are none
        (an S3 PUT is atomic). Only call it while no writer can be active (prune holds
        the exclusive lock)."""
        return 0

    def close(self) -> None:
        """Release connections and other resources."""
