"""Contract checks of ``ObjectStore.put_source`` (objects streamed from a file), part of
the one contract suite (``store_contract.CHECKS`` lists them).

``FileSource`` is an ObjectSource over a temporary file (what a spooled pack is, without
the pack layout); ``failing`` makes its readers and its copy fail part-way, as a full or
broken spool disk would.
"""

from __future__ import annotations

import io
import os
import tempfile

from backupkit.errors import ObjectNotFound, StoreError
from backupkit.store.base import ObjectSource, ObjectStore

MiB = 1024 * 1024


class _FailingReader(io.RawIOBase):
    """Reads ``good`` bytes of ``f``, then raises OSError (EIO)."""

    def __init__(self, f: io.FileIO, good: int) -> None:
        self._f, self._good = f, good

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def readinto(self, buffer) -> int:  # type: ignore[override]
        if self._f.tell() >= self._good:
            raise OSError(5, "Input/output error (test)")
        view = memoryview(buffer)[: self._good - self._f.tell()]
        return self._f.readinto(view) or 0

    def close(self) -> None:
        self._f.close()
        super().close()


class FileSource(ObjectSource):
    """``data`` in a temporary file; with ``failing``, every read past half of it fails."""

    def __init__(self, data: bytes, failing: bool = False) -> None:
        self._file = tempfile.TemporaryFile()
        self._file.write(data)
        self._file.flush()
        self.size = len(data)
        self._failing = failing

    def reader(self):
        f = open(f"/proc/self/fd/{self._file.fileno()}", "rb", buffering=0)
        return _FailingReader(f, self.size // 2) if self._failing else f

    def close(self) -> None:
        self._file.close()


def check_put_source(store: ObjectStore) -> None:
    """put_source stores exactly the source's bytes (small, and large enough for an S3
    multipart upload), replaces an existing object like put, and counts as one object."""
    for name, data in (("data/aa/small", os.urandom(1000)), ("data/aa/large", os.urandom(20 * MiB + 17))):
        source = FileSource(data)
        try:
            store.put_source(name, source)
        finally:
            source.close()
        assert store.stat(name).size == len(data)
        assert store.get(name) == data, f"{name} stored from a source differs"
        assert store.get_range(name, len(data) - 10, 10) == data[-10:]
    store.put("data/aa/over", b"old")
    source = FileSource(b"new bytes")
    store.put_source("data/aa/over", source)
    source.close()
    assert store.get("data/aa/over") == b"new bytes"
    assert sorted(o.name for o in store.list("data/")) == ["data/aa/large", "data/aa/over", "data/aa/small"]


def check_put_source_failure_leaves_nothing(store: ObjectStore) -> None:
    """A source that fails part-way raises, and leaves no object (not even a partial one)
    under the name, and nothing new in a listing."""
    store.put("data/bb/keep", b"keep")
    source = FileSource(os.urandom(3 * MiB), failing=True)
    try:
        store.put_source("data/bb/broken", source)
    except (StoreError, OSError):
        pass
    else:
        raise AssertionError("put_source of a failing source did not raise")
    finally:
        source.close()
    try:
        store.stat("data/bb/broken")
    except ObjectNotFound:
        pass
    else:
        raise AssertionError("a partial object is visible after a failed put_source")
    assert [o.name for o in store.list("")] == ["data/bb/keep"]


CHECKS = [check_put_source, check_put_source_failure_leaves_nothing]
