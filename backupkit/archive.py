"""Archive writers: snapshot entries as a streamed ZIP or (PAX) TAR, optionally zstd.

Both write to any binary stream, seekable or not (ZIP in streaming mode, with data
descriptors), and keep names byte-exact (ZIP: the raw bytes, flagged UTF-8 when they
are; TAR: PAX with surrogateescape). A member's content comes as an iterator of byte
strings that yields exactly the entry's size. Which entries go in, and in what order,
is the caller's business (``managers/restore.py``); a writer only renders them.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tarfile
import time
import zipfile
from collections.abc import Iterator
from typing import BinaryIO

import zstandard

from backupkit.objects.entry import Entry
from backupkit.outpipe import BackgroundWriter

FORMATS = ("zip", "tar", "tar.zst")


class ZipWriter:
    def __init__(self, out: BinaryIO) -> None:
        self._zf = zipfile.ZipFile(_Unseekable(out), "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def add(self, rel: bytes, e: Entry, content: Iterator[bytes] | None) -> bool:
        """Write one member; False if the entry has no ZIP form (fifo, device, socket)."""
        mt = time.localtime(max((e.mtime or 0) / 1e9, 315532800))[:6]
        mode = e.mode if e.mode is not None else 0o644
        if e.type == "d":
            zi = _RawZipInfo(rel + b"/", mt)
            zi.external_attr = ((stat.S_IFDIR | mode) << 16) | 0x10
            self._zf.writestr(zi, b"")
        elif e.type == "l":
            zi = _RawZipInfo(rel, mt)
            zi.external_attr = (stat.S_IFLNK | 0o777) << 16
            self._zf.writestr(zi, e.target or b"")
        elif e.type == "f":
            zi = _RawZipInfo(rel, mt)
            zi.external_attr = (stat.S_IFREG | mode) << 16
            zi.file_size = e.size or 0
            with self._zf.open(zi, "w", force_zip64=zi.file_size >= zipfile.ZIP64_LIMIT) as w:
                for part in content or ():
                    w.write(part)
        else:
            return False
        return True

    def close(self) -> None:
        self._zf.close()

    def abandon(self) -> None:
        """Leave the archive unfinished (its output failed): nothing more is written,
        not even by the ZipFile's own clean-up when it is collected."""
        self._zf.fp = None


class TarWriter:
    def __init__(self, out) -> None:
        self._tf = tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape")
        #: (device, inode) of a hardlinked file -> the member name its content went to
        self._links: dict[tuple[int, int], str] = {}

    def add(self, rel: bytes, e: Entry, content: Iterator[bytes] | None) -> bool:
        """Write one member; False for a socket (no TAR form). A second name of a
        hardlinked file becomes a link member (its ``content`` is not read)."""
        t = e.type
        ti = tarfile.TarInfo(rel.decode("utf-8", "surrogateescape"))
        ti.mode = e.mode if e.mode is not None else 0o644
        ti.uid, ti.gid = e.uid or 0, e.gid or 0
        ti.uname, ti.gname = e.user or "", e.group or ""
        ti.mtime = (e.mtime or 0) / 1e9
        if e.xattrs:
            ti.pax_headers = {
                "SCHILY.xattr." + k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
                for k, v in e.xattrs
            }
        fileobj = None
        if t == "d":
            ti.type = tarfile.DIRTYPE
        elif t == "l":
            ti.type = tarfile.SYMTYPE
            ti.linkname = (e.target or b"").decode("utf-8", "surrogateescape")
        elif t == "p":
            ti.type = tarfile.FIFOTYPE
        elif t in ("c", "b"):
            ti.type = tarfile.CHRTYPE if t == "c" else tarfile.BLKTYPE
            ti.devmajor, ti.devminor = os.major(e.rdev or 0), os.minor(e.rdev or 0)
        elif t == "s":
            return False
        else:
            key = e.hardlink_key
            if key is not None and key in self._links:
                ti.type = tarfile.LNKTYPE
                ti.linkname = self._links[key]
            else:
                if key is not None:
                    self._links[key] = ti.name
                ti.size = e.size or 0
                fileobj = _StreamReader(content or iter(()))
        self._tf.addfile(ti, fileobj)
        return True

    def is_link(self, e: Entry) -> bool:
        """True if ``e`` will be written as a link to an earlier member (no content)."""
        return e.hardlink_key is not None and e.hardlink_key in self._links

    def close(self) -> None:
        self._tf.close()


@contextlib.contextmanager
def open_archive(fmt: str, out: BinaryIO):
    """A ZipWriter or TarWriter on ``out`` for ``fmt`` (one of FORMATS), closed (and the
    zstd frame finished) on leaving. ``out`` is written on a thread of its own
    (``outpipe.BackgroundWriter``): rendering the next members overlaps writing these."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown archive format {fmt!r}")
    bg = BackgroundWriter(out)
    try:
        if fmt == "zip":
            w = ZipWriter(bg)  # type: ignore[arg-type]
            try:
                yield w
            except BaseException:
                w.abandon()
                raise
            w.close()
        elif fmt == "tar":
            w2 = TarWriter(bg)
            yield w2
            w2.close()
        else:
            zw = zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(bg, closefd=False)
            w3 = TarWriter(zw)
            yield w3
            w3.close()
            zw.flush(zstandard.FLUSH_FRAME)
        bg.close()  # flushes ``out`` too
    finally:
        bg.abandon()


class _RawZipInfo(zipfile.ZipInfo):
    """A ZipInfo whose name is written as the snapshot's raw bytes (UTF-8 flag if valid)."""

    def __init__(self, raw: bytes, date_time) -> None:
        super().__init__(raw.decode("utf-8", "surrogateescape"), date_time)
        self._raw = raw
        self.create_system = 3

    def _encodeFilenameFlags(self):  # noqa: N802 (zipfile's name)
        try:
            self._raw.decode("utf-8")
            return self._raw, self.flag_bits | 0x800
        except UnicodeDecodeError:
            return self._raw, self.flag_bits


class _Unseekable:
    """Forces zipfile's streaming mode (data descriptors) on any output."""

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        self._pos = 0

    def write(self, b) -> int:
        n = self._out.write(b)
        n = len(b) if n is None else n
        self._pos += n
        return n

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        self._out.flush()


class _StreamReader:
    """A read() interface over an iterator of byte strings (for tarfile.addfile)."""

    def __init__(self, parts: Iterator[bytes]) -> None:
        self._parts = parts
        self._cur = memoryview(b"")

    def read(self, n: int = -1) -> bytes:
        out = []
        want = n
        while want != 0:
            if not self._cur:
                nxt = next(self._parts, None)
                if nxt is None:
                    break
                self._cur = memoryview(nxt)
            take = len(self._cur) if want < 0 else min(want, len(self._cur))
            out.append(self._cur[:take])
            self._cur = self._cur[take:]
            if want > 0:
                want -= take
        return b"".join(out)


__all__ = ["FORMATS", "TarWriter", "ZipWriter", "open_archive"]
