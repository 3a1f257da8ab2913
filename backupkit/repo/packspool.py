"""PackBuilder: a pack being filled, its sealed blobs spooled to a temporary file.

Vocabulary:
    spool         an unnamed temporary file (``O_TMPFILE`` where the kernel has it, so a
                  crash leaves nothing behind) holding a pack's sealed blobs in the order
                  they were added; it lives in the store's ``spool_dir`` (the local
                  store's root, so the final copy stays on one filesystem) or ``TMPDIR``.
    spooled pack  a finished pack (``SpooledPack``, an ``ObjectSource``): the spool's
                  blob ranges in the pack's random order, then padding, the sealed
                  header and its length (pack.py has the layout). Stores stream it from
                  the spool; nothing holds the pack's bytes in memory.

Why a spool and not the object's own temporary file: format v1 places blobs in a random
order (a CSPRNG shuffle, design.md section 4), which is only known once the pack is full,
so the blobs are written once as they arrive and copied once in pack order when the pack
is stored - the same two copies the in-memory pack made (a join, then the write), but in
the kernel (``copy_file_range``, no GIL, no process memory) and with every pack of the
writer in the page cache instead of the heap (docs/performance-limits.md, peak memory).
"""

from __future__ import annotations

import bisect
import errno
import io
import os
import tempfile

from backupkit.crypto import Sealer, secure_shuffle
from backupkit.errors import StoreError
from backupkit.repo.pack import PackEntry, pack_tail
from backupkit.store.base import SOURCE_PIECE, ObjectSource, write_all

# copy_file_range cannot copy between these two files: copy through memory instead
_NO_KERNEL_COPY = {errno.EXDEV, errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EBADF}


def _spool_error(exc: OSError, directory: str | None) -> StoreError:
    where = directory or tempfile.gettempdir()
    return StoreError(f"spooling a pack in {where}: {exc.strerror or exc}")


class PackBuilder:
    """Collects sealed blobs of one kind in a spool until the pack is big enough to store.

    Not thread-safe (``PackWriter`` serializes ``add``). The spool is created on the first
    ``add`` in ``spool_dir`` (None: ``TMPDIR``).
    """

    def __init__(self, kind: str, spool_dir: str | None = None) -> None:
        self.kind = kind
        self.spool_dir = spool_dir
        #: (type, blob id, offset in the spool, length, raw length) per blob, as added
        self.blobs: list[tuple[int, bytes, int, int, int]] = []
        self.size = 0
        self._spool: io.FileIO | None = None

    def __len__(self) -> int:
        return len(self.blobs)

    def add(self, blob_type: int, blob_id: bytes, sealed: bytes | memoryview, raw_length: int) -> None:
        """Append one sealed blob to the spool (the write releases the GIL)."""
        try:
            if self._spool is None:
                self._spool = _open_spool(self.spool_dir)
            write_all(self._spool.fileno(), sealed)
        except OSError as exc:
            raise _spool_error(exc, self.spool_dir) from None
        self.blobs.append((blob_type, blob_id, self.size, len(sealed), raw_length))
        self.size += len(sealed)

    def add_many(self, blob_type: int, blobs: list[tuple[bytes, bytes, int]]) -> None:
        """``add`` each (blob id, sealed, raw length), in order, with one spool write."""
        if not blobs:
            return
        try:
            if self._spool is None:
                self._spool = _open_spool(self.spool_dir)
            write_all(self._spool.fileno(), b"".join([s for _b, s, _n in blobs]))
        except OSError as exc:
            raise _spool_error(exc, self.spool_dir) from None
        at = self.size
        for blob_id, sealed, raw_length in blobs:
            self.blobs.append((blob_type, blob_id, at, len(sealed), raw_length))
            at += len(sealed)
        self.size = at

    def discard(self) -> None:
        """Drop the blobs and the spool (an interrupt, or a builder never finished)."""
        self.blobs, self.size = [], 0
        if self._spool is not None:
            self._spool.close()
            self._spool = None

    def finish(self, sealer: Sealer) -> tuple[bytes, SpooledPack, list[PackEntry]]:
        """Return (pack id, the pack, entries) with blobs shuffled and the size padded.

        The builder is emptied and hands its spool to the pack (close it when stored).
        """
        order, spool = self.blobs, self._spool
        self.blobs, self.size, self._spool = [], 0, None
        if spool is None:  # an empty pack: a spool of nothing
            spool = _open_spool(self.spool_dir)
        secure_shuffle(order)
        entries: list[PackEntry] = []
        segments: list[tuple[int, int]] = []
        offset = 0
        for blob_type, blob_id, at, length, raw_length in order:
            entries.append(PackEntry(blob_type, blob_id, offset, length, raw_length))
            segments.append((at, length))
            offset += length
        pack_id = os.urandom(32)
        tail = pack_tail(sealer, pack_id, entries, offset)
        return pack_id, SpooledPack(spool, segments, tail), entries


def _open_spool(directory: str | None) -> io.FileIO:
    """A new spool in ``directory``, else in TMPDIR; StoreError if neither can hold one."""
    try:
        return tempfile.TemporaryFile(dir=directory, prefix=".tmp-spool-", buffering=0)  # type: ignore[return-value]
    except OSError as exc:
        if directory is None:
            raise _spool_error(exc, directory) from None
    try:
        return tempfile.TemporaryFile(prefix="bk-spool-", buffering=0)  # type: ignore[return-value]
    except OSError as exc:
        raise _spool_error(exc, None) from None


class SpooledPack(ObjectSource):
    """A finished pack: ranges of its spool in pack order, then ``tail`` (padding, sealed
    header, length). Owns the spool: ``close`` it once the pack is stored."""

    def __init__(self, spool: io.FileIO, segments: list[tuple[int, int]], tail: bytes) -> None:
        self._spool = spool
        self._segments = segments
        self._tail = tail
        self._starts: list[int] = []  # each segment's offset in the pack, then the tail's
        at = 0
        for _src, length in segments:
            self._starts.append(at)
            at += length
        self._starts.append(at)
        self.size = at + len(tail)

    def reader(self) -> _PackReader:
        return _PackReader(self)

    def copy_to(self, fd: int) -> None:
        """The blobs in the kernel (``copy_file_range``; through memory where it cannot),
        then the tail. Raises OSError (the store names the object)."""
        src = self._spool.fileno()
        kernel = True
        for offset, length in self._segments:
            end = offset + length
            while offset < end:
                n = 0
                if kernel:
                    try:
                        n = os.copy_file_range(src, fd, end - offset, offset)
                    except OSError as exc:
                        if exc.errno not in _NO_KERNEL_COPY:
                            raise
                        kernel = False
                if not kernel:
                    n = write_all(fd, os.pread(src, min(SOURCE_PIECE, end - offset), offset))
                if n <= 0:
                    raise OSError(errno.EIO, f"the pack's spool ended {end - offset} bytes short")
                offset += n
        write_all(fd, self._tail)

    def read_at(self, pos: int, buffer: memoryview) -> int:
        """Fill ``buffer`` from byte ``pos`` of the pack; returns the bytes read (0 at the end)."""
        done = 0
        while done < len(buffer) and pos < self.size:
            i = bisect.bisect_right(self._starts, pos) - 1
            want = buffer[done:]
            if i >= len(self._segments):  # the tail
                at = pos - self._starts[-1]
                n = min(len(want), len(self._tail) - at)
                want[:n] = self._tail[at : at + n]
            else:
                src, length = self._segments[i]
                at = pos - self._starts[i]
                n = os.preadv(self._spool.fileno(), [want[: length - at]], src + at)
                if n <= 0:
                    raise OSError(errno.EIO, "the pack's spool ended short")
            done += n
            pos += n
        return done

    def close(self) -> None:
        self._spool.close()


class _PackReader(io.RawIOBase):
    """A seekable reader over a SpooledPack (for a store that uploads a file object)."""

    def __init__(self, pack: SpooledPack) -> None:
        self._pack = pack
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        n = self._pack.read_at(self._pos, memoryview(buffer).cast("B"))
        self._pos += n
        return n

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._pack.size}[whence]
        if base + offset < 0:
            raise ValueError("negative seek position")
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return self._pack.size


__all__ = ["PackBuilder", "SpooledPack"]
