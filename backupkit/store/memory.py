"""MemoryObjectStore: a dict behind a lock, for tests and fault injection wrappers."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from backupkit.errors import ObjectNotFound, StoreError
from backupkit.store.base import Backend, ObjectInfo, ObjectStore, check_name, too_large


class MemoryObjectStore(ObjectStore):
    """Keeps every object in a dict; modification times come from ``clock``."""

    immediate_listings = True

    def __init__(self, clock=time.time) -> None:
        self._objects: dict[str, tuple[bytes, float]] = {}
        self._lock = threading.Lock()
        self._clock = clock
        self.location = "memory:"

    def get(self, name: str, max_size: int | None = None) -> bytes:
        with self._lock:
            try:
                data = self._objects[name][0]
            except KeyError:
                raise ObjectNotFound(f"object {name} not found") from None
        too_large(name, len(data), max_size)
        return data

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        data = self.get(name)
        if offset < 0 or length < 0 or offset + length > len(data):
            raise StoreError(f"range {offset}+{length} past the end of {name} ({len(data)} bytes)")
        return data[offset : offset + length]

    def put(self, name: str, data: bytes) -> None:
        check_name(name)
        with self._lock:
            self._objects[name] = (bytes(data), self._clock())

    def put_if_absent(self, name: str, data: bytes) -> bool:
        check_name(name)
        with self._lock:
            if name in self._objects:
                return False
            self._objects[name] = (bytes(data), self._clock())
            return True

    def delete(self, name: str) -> None:
        with self._lock:
            if self._objects.pop(name, None) is None:
                raise ObjectNotFound(f"object {name} not found")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        with self._lock:
            items = [
                ObjectInfo(n, len(d), m) for n, (d, m) in self._objects.items() if n.startswith(prefix)
            ]
        yield from items

    def stat(self, name: str) -> ObjectInfo:
        with self._lock:
            try:
                data, mtime = self._objects[name]
            except KeyError:
                raise ObjectNotFound(f"object {name} not found") from None
        return ObjectInfo(name, len(data), mtime)


def open_memory(location: str, *, connections: int | None = None, **options: object) -> MemoryObjectStore:
    """``memory:``: a new, empty MemoryObjectStore (``location`` and ``connections`` unused)."""
    return MemoryObjectStore(**options)  # type: ignore[arg-type]


BACKEND = Backend(name="memory", open=open_memory, forms=("memory:",), connections=2)
