"""Restore: a snapshot (or a subtree of it) to a directory, or as a ZIP/TAR stream.

Safety: every entry's path is checked before use (absolute, normalized, no ``.``/``..``
component, no NUL); unsafe entries are refused and reported. Directories are created and
entered with ``O_DIRECTORY | O_NOFOLLOW`` and every file is made relative to its parent's
directory descriptor, so nothing is ever written through a symlink, inside or outside the
target (borg CVE-2026-62268; restic security #1445). Hardlinks are made only to regular
files restored in this run.

Directory metadata (mode, owner, times, xattrs) is applied after their content, deepest
first, so restoring children does not disturb a directory's mtime.

Entries are written one at a time, in order, by the calling thread; the blobs of the
files ahead of it are fetched meanwhile on a pool (``readahead.Readahead``), so request
latency overlaps across files, small ones included, and blobs of one pack that are
wanted soon are fetched with one range request (``repo.coalesce.CoalescingReader``).
"""

from __future__ import annotations

import errno
import itertools
import os
import stat
import tarfile
import threading
import time
import zipfile
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, Protocol

import zstandard

from backupkit.crypto import T_DATA_BLOB
from backupkit.entry import display_path, name_of, parent_of
from backupkit.filters import select_entries
from backupkit.errors import PathNotFound, RestoreError, BadArgument, UsageError
from backupkit.managers.readahead import Readahead
from backupkit.repo.coalesce import CoalescingReader
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot
from backupkit.tree import SnapshotTree, normalize

FORMATS = ("zip", "tar", "tar.zst")
SEEK_DATA = getattr(os, "SEEK_DATA", 3)
_ZERO = bytes(1024 * 1024)
#: Bytes of file content read ahead of the writer per store connection (readahead.py):
#: enough to keep every connection busy with ~1 MiB blobs, little enough to stay small.
READAHEAD_PER_CONNECTION = 4 * 1024 * 1024


@dataclass(frozen=True)
class RestoreOptions:
    path: str = "/"
    target: str | None = None
    format: str | None = None  # zip, tar, tar.zst (streamed to ``output``)
    output: BinaryIO | None = None
    dry_run: bool = False
    verify: bool = False
    owners: bool | None = None  # None: restore owners when running as root
    sparse: bool = True
    connections: int = 8
    #: --include/--exclude: (path, entry) -> (restore it, look below it); None = everything
    select: Callable[[bytes, dict], tuple[bool, bool]] | None = None


@dataclass(frozen=True)
class RestoreResult:
    files: int
    dirs: int
    others: int
    bytes: int
    errors: tuple[tuple[str, str], ...]
    verified: int
    verify_failures: tuple[str, ...]
    seconds: float
    dry_run: bool


class RestoreReporter(Protocol):
    def start(self, files: int, size: int) -> None: ...
    def file_done(self, path: str, size: int) -> None: ...
    def bytes_done(self, n: int) -> None: ...
    def error(self, path: str, message: str) -> None: ...


class NullRestoreReporter:
    def start(self, files: int, size: int) -> None: ...
    def file_done(self, path: str, size: int) -> None: ...
    def bytes_done(self, n: int) -> None: ...
    def error(self, path: str, message: str) -> None: ...


def safe_path(path: bytes) -> bool:
    """True if ``path`` is absolute, normalized and free of ``.``, ``..`` and NUL."""
    if not path.startswith(b"/") or b"\x00" in path:
        return False
    if path == b"/":
        return True
    parts = path[1:].split(b"/")
    return all(p and p not in (b".", b"..") for p in parts)


def _rel(path: bytes, base: bytes) -> bytes:
    """Path below the restore base, as used inside the target (keeps the full path)."""
    return path.lstrip(b"/")


class RestoreManager:
    def __init__(self, repo: Repository, reporter: RestoreReporter | None = None) -> None:
        self.repo = repo
        self.reporter = reporter or NullRestoreReporter()
        self._lock = threading.Lock()

    # -- shared ----------------------------------------------------------------------------
    def _entries(self, snap: Snapshot, path: str) -> Iterator[tuple[bytes, dict]]:
        """Entries to restore, parents first: the ancestors of ``path``, then its subtree."""
        base = normalize(path)
        tree = self.tree = SnapshotTree(self.repo, snap.root)
        if tree.get(base) is None:
            raise PathNotFound(f"{display_path(base)} is not in snapshot {snap.short_id}")
        anc = []
        p = parent_of(base)
        while p:
            e = tree.get(p)
            if e is not None:
                anc.append((p, e))
            p = parent_of(p)
        walk = itertools.chain(reversed(anc), ((p, e) for p, e in tree.walk(base) if p != b"/" or base == b"/"))
        yield from select_entries(walk, self.select) if self.select is not None else walk

    def _refuse(self, path: bytes, why: str) -> None:
        with self._lock:
            self.errors.append((display_path(path), why))
        self.reporter.error(display_path(path), why)

    def _readahead(self, entries: Iterator[tuple], opts: RestoreOptions, links: bool) -> Readahead:
        """Entries with their contents read ahead on the pool.

        With ``links``, a second name of a hardlinked file gets no content (the writer
        links it to the first); the writer falls back to ``_blobs`` for any file it
        wants content for that was not read ahead.
        """
        seen: set[tuple[int, int]] = set()

        def wants(key, e: dict) -> bool:
            path = key[0] if isinstance(key, tuple) else key
            if opts.dry_run or not safe_path(path):
                return False
            if links and e.get("n", 1) > 1:
                key = (e.get("dv", 0), e.get("i", 0))
                if key in seen:
                    return False
                seen.add(key)
            return True

        def size_of(bid: bytes) -> int:
            loc = self.repo.index.lookup(bid)
            return loc.raw_length if loc is not None else 0

        return Readahead(
            entries,
            lambda e: self.tree.content(e),
            lambda bid: self._reader.read(bid, T_DATA_BLOB),
            size_of,
            self._pool,
            wants_content=wants,
            budget=max(4, opts.connections) * READAHEAD_PER_CONNECTION,
            expect=self._reader.expect,
        )

    def _blobs(self, items: list) -> Iterator[bytes | int]:
        """Content in order: bytes for data blobs (prefetched in parallel), ints for holes."""
        if len(items) <= 1:  # one blob: a pool hand-off costs more than the read
            for x in items:
                yield x if isinstance(x, int) else self.repo.read_blob(bytes(x), T_DATA_BLOB)
            return
        window: deque[Future | int] = deque()
        it = iter(items)
        done = False
        while True:
            while not done and len(window) < self.prefetch:
                nxt = next(it, None)
                if nxt is None:
                    done = True
                    break
                if isinstance(nxt, int):
                    window.append(nxt)
                else:
                    window.append(self._pool.submit(self.repo.read_blob, bytes(nxt), T_DATA_BLOB))
            if not window:
                return
            x = window.popleft()
            yield x if isinstance(x, int) else x.result()

    # -- to a directory --------------------------------------------------------------------
    def restore(self, snap: Snapshot, opts: RestoreOptions) -> RestoreResult:
        if opts.format:
            if opts.format not in FORMATS:
                raise BadArgument(f"unknown format {opts.format!r}: use one of {', '.join(FORMATS)}")
            return self._archive(snap, opts)
        if not opts.target:
            raise BadArgument("give --target DIR, or --format zip|tar|tar.zst to stream an archive")
        return self._to_dir(snap, opts)

    def _setup(self, opts: RestoreOptions) -> None:
        self.select = opts.select
        self.errors: list[tuple[str, str]] = []
        self.prefetch = max(2, opts.connections)
        self._pool = ThreadPoolExecutor(max_workers=max(2, opts.connections), thread_name_prefix="bk-restore")
        self._reader = CoalescingReader(self.repo)
        self.counts = {"files": 0, "dirs": 0, "others": 0, "bytes": 0}

    def _to_dir(self, snap: Snapshot, opts: RestoreOptions) -> RestoreResult:
        t0 = time.monotonic()
        self._setup(opts)
        target = os.path.abspath(opts.target)  # type: ignore[arg-type]
        if os.path.lexists(target) and not os.path.isdir(target):
            raise RestoreError(f"target {target} exists and is not a directory")
        owners = (os.geteuid() == 0) if opts.owners is None else opts.owners
        if not opts.dry_run:
            os.makedirs(target, exist_ok=True)
        root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY) if not opts.dry_run else -1
        dir_fds: dict[bytes, int] = {b"": root_fd}
        dirs_meta: list[tuple[bytes, dict]] = []
        links: dict[tuple[int, int], bytes] = {}
        self.verified = 0
        self.verify_failures: list[str] = []
        try:
            for path, e, parts in self._readahead(self._entries(snap, opts.path), opts, links=True):
                if not safe_path(path):
                    self._refuse(path, "unsafe path in snapshot, refused")
                    continue
                rel = _rel(path, b"/")
                if not rel:
                    dirs_meta.append((b"", e))
                    continue
                parent_rel, name = rel.rpartition(b"/")[0], name_of(path)
                pfd = dir_fds.get(parent_rel)
                if pfd is None:
                    self._refuse(path, "parent directory was not restored, skipped")
                    continue
                t = e["t"]
                if opts.dry_run:
                    self._count(t, e)
                    if t == "d":
                        dir_fds[rel] = -1
                    continue
                try:
                    if t == "d":
                        dir_fds[rel] = self._mkdir(pfd, name)
                        dirs_meta.append((rel, e))
                        self.counts["dirs"] += 1
                    elif t == "f":
                        key = (e.get("dv", 0), e.get("i", 0))
                        if e.get("n", 1) > 1 and key in links:
                            self._replace(pfd, name)
                            os.link(links[key], name, src_dir_fd=root_fd, dst_dir_fd=pfd, follow_symlinks=False)
                            self.counts["files"] += 1
                            continue
                        if e.get("n", 1) > 1:
                            links[key] = rel  # later names of this file link to it
                        self._write_file(pfd, name, path, e, owners, opts, parts)
                    else:
                        self._special(pfd, name, path, e, owners)
                except OSError as err:
                    self._refuse(path, f"cannot restore: {err.strerror or err}")
            for rel, e in sorted(dirs_meta, key=lambda x: -x[0].count(b"/") - (1 if x[0] else 0)):
                if opts.dry_run:
                    continue
                fd = dir_fds[rel]
                try:
                    self._apply_meta(fd, None, e, owners)
                except OSError as err:
                    self._refuse(b"/" + rel, f"cannot set metadata: {err.strerror}")
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)
            for fd in dir_fds.values():
                if fd >= 0:
                    os.close(fd)
        return RestoreResult(
            self.counts["files"],
            self.counts["dirs"],
            self.counts["others"],
            self.counts["bytes"],
            tuple(self.errors),
            self.verified,
            tuple(self.verify_failures),
            time.monotonic() - t0,
            opts.dry_run,
        )

    def _count(self, t: str, e: dict) -> None:
        with self._lock:
            if t == "f":
                self.counts["files"] += 1
                self.counts["bytes"] += e.get("s", 0)
            elif t == "d":
                self.counts["dirs"] += 1
            else:
                self.counts["others"] += 1

    def _mkdir(self, pfd: int, name: bytes) -> int:
        try:
            os.mkdir(name, 0o700, dir_fd=pfd)
        except FileExistsError:
            pass
        # O_NOFOLLOW: an existing symlink in place of the directory is refused (ELOOP)
        try:
            return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                raise OSError(err.errno, "a non-directory (or symlink) is in the way") from None
            raise

    def _replace(self, pfd: int, name: bytes) -> None:
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise OSError(errno.EISDIR, "a directory is in the way")
        os.unlink(name, dir_fd=pfd)

    def _write_file(
        self, pfd: int, name: bytes, path: bytes, e: dict, owners: bool, opts: RestoreOptions, parts: Iterator | None
    ) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
        try:
            try:
                fd = os.open(name, flags, 0o600, dir_fd=pfd)
            except FileExistsError:  # restoring over an earlier restore: replace it
                self._replace(pfd, name)
                fd = os.open(name, flags, 0o600, dir_fd=pfd)
        except OSError as err:
            self._refuse(path, f"cannot create: {err.strerror}")
            return
        try:
            size = e.get("s", 0)
            written = 0
            hole_at_end = False
            for part in parts if parts is not None else self._blobs(self.tree.content(e)):
                if isinstance(part, int) or (opts.sparse and len(part) >= 4096 and _all_zero(part)):
                    n = part if isinstance(part, int) else len(part)
                    os.lseek(fd, n, os.SEEK_CUR)
                    written += n
                    hole_at_end = True
                else:
                    mv = memoryview(part)
                    while mv:
                        k = os.write(fd, mv)
                        mv = mv[k:]
                    written += len(part)
                    hole_at_end = False
                    self.reporter.bytes_done(len(part))
            if hole_at_end:
                os.ftruncate(fd, written)  # a seek past the end does not extend the file
            if written != size:
                self._refuse(path, f"restored {written} bytes, snapshot says {size}")
            self._apply_meta(fd, None, e, owners)
        except OSError as err:
            self._refuse(path, f"write failed: {err.strerror}")
            return
        except Exception as err:  # a damaged blob must not stop the other files
            self._refuse(path, str(err))
            return
        finally:
            os.close(fd)
        with self._lock:
            self.counts["files"] += 1
            self.counts["bytes"] += written
        self.reporter.file_done(display_path(path), written)
        if opts.verify:
            self._verify(pfd, name, path, e)

    def _verify(self, pfd: int, name: bytes, path: bytes, e: dict) -> None:
        ok = True
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=pfd)
        except OSError:
            ok = False
        else:
            try:
                if os.fstat(fd).st_size != e.get("s", 0):
                    ok = False
                for item in self.tree.content(e) if ok else ():
                    if isinstance(item, int):
                        ok = _zeros_ahead(fd, item)
                    else:
                        loc = self.repo.index.lookup(bytes(item))
                        want = loc.raw_length if loc else -1
                        b = os.read(fd, want) if want > 0 else b""
                        while want > 0 and len(b) < want:
                            more = os.read(fd, want - len(b))
                            if not more:
                                break
                            b += more
                        if self.repo.sealer.blob_id(b) != bytes(item):
                            ok = False
                    if not ok:
                        break
                if ok and os.read(fd, 1):
                    ok = False
            finally:
                os.close(fd)
        with self._lock:
            if ok:
                self.verified += 1
            else:
                self.verify_failures.append(display_path(path))
        if not ok:
            self.reporter.error(display_path(path), "verification failed: content differs from the snapshot")

    def _special(self, pfd: int, name: bytes, path: bytes, e: dict, owners: bool) -> None:
        t = e["t"]
        self._replace(pfd, name)
        if t == "l":
            os.symlink(e["l"], name, dir_fd=pfd)
        elif t == "p":
            os.mkfifo(name, e.get("m", 0o600), dir_fd=pfd)
        elif t in ("c", "b"):
            if os.geteuid() != 0:
                self._refuse(path, "device nodes need root, skipped")
                return
            kind = stat.S_IFCHR if t == "c" else stat.S_IFBLK
            os.mknod(name, kind | e.get("m", 0o600), e.get("rd", 0), dir_fd=pfd)
        elif t == "s":
            with self._lock:
                self.counts["others"] += 1
            return  # sockets are recorded, not recreated (like restic)
        self._apply_meta(None, (pfd, name), e, owners)
        with self._lock:
            self.counts["others"] += 1

    def _apply_meta(self, fd: int | None, at: tuple[int, bytes] | None, e: dict, owners: bool) -> None:
        """Owner, xattrs, mode and times; on an fd, or on (dir_fd, name) without following."""
        is_link = e["t"] == "l"
        if fd is not None:
            kw: dict = {}
            target: int | bytes = fd
        else:
            assert at is not None
            target = at[1]
            kw = {"dir_fd": at[0], "follow_symlinks": False}
        if owners:
            try:
                os.chown(target, e.get("u", -1), e.get("g", -1), **kw)
            except OSError:
                pass
        if e.get("x") and fd is not None:
            for k, v in e["x"].items():
                try:
                    os.setxattr(fd, k, v)
                except OSError as err:
                    self.reporter.error("", f"xattr {k!r}: {err.strerror}")
        if not is_link:
            if fd is not None:
                os.chmod(fd, e.get("m", 0o644))
            else:
                os.chmod(target, e.get("m", 0o644), dir_fd=at[0])  # type: ignore[index]
        mt = e.get("mt", 0)
        os.utime(target, ns=(mt, mt), **kw)

    # -- archives --------------------------------------------------------------------------
    def _archive(self, snap: Snapshot, opts: RestoreOptions) -> RestoreResult:
        t0 = time.monotonic()
        self._setup(opts)
        out = opts.output
        if out is None:
            raise UsageError("no output stream for the archive")
        try:
            if opts.format == "zip":
                self._zip(snap, opts, out)
            else:
                if opts.format == "tar.zst":
                    zw = zstandard.ZstdCompressor(level=3, threads=-1).stream_writer(out, closefd=False)
                    self._tar(snap, opts, zw)
                    zw.flush(zstandard.FLUSH_FRAME)
                else:
                    self._tar(snap, opts, out)
            out.flush()
        finally:
            self._pool.shutdown(wait=True)
        return RestoreResult(
            self.counts["files"], self.counts["dirs"], self.counts["others"], self.counts["bytes"],
            tuple(self.errors), 0, (), time.monotonic() - t0, opts.dry_run,
        )

    def _archive_entries(self, snap: Snapshot, opts: RestoreOptions) -> Iterator[tuple[bytes, bytes, dict]]:
        # As for a directory restore, an entry goes out only below a directory that went
        # out, and a name already used by a directory or symlink is not reused: an
        # extractor would write a member "s/x" through an earlier member "s" that is a
        # symlink (possible only in a forged snapshot). Only non-files are remembered.
        dirs = {b"/"}
        non_files: set[bytes] = set()
        for path, e in self._entries(snap, opts.path):
            if path == b"/":
                continue
            if not safe_path(path):
                self._refuse(path, "unsafe path in snapshot, refused")
                continue
            if parent_of(path) not in dirs:
                self._refuse(path, "parent is not a directory in the archive, skipped")
                continue
            if path in non_files:
                self._refuse(path, "name appears twice in the snapshot, skipped")
                continue
            if e["t"] != "f":
                non_files.add(path)
            if e["t"] == "d":
                dirs.add(path)
            yield path, path.lstrip(b"/"), e

    def _content_stream(self, e: dict, parts: Iterator | None) -> Iterator[bytes]:
        for part in parts if parts is not None else self._blobs(self.tree.content(e)):
            if isinstance(part, int):
                n = part
                while n > 0:
                    k = min(n, len(_ZERO))
                    yield _ZERO[:k]
                    n -= k
            else:
                self.reporter.bytes_done(len(part))
                yield part

    def _zip(self, snap: Snapshot, opts: RestoreOptions, out: BinaryIO) -> None:
        with zipfile.ZipFile(_Unseekable(out), "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            entries = (((path, rel), e) for path, rel, e in self._archive_entries(snap, opts))
            for (path, rel), e, parts in self._readahead(entries, opts, links=False):
                t = e["t"]
                mt = time.localtime(max(e.get("mt", 0) / 1e9, 315532800))[:6]
                if t == "d":
                    zi = _RawZipInfo(rel + b"/", mt)
                    zi.external_attr = ((stat.S_IFDIR | e.get("m", 0o755)) << 16) | 0x10
                    zf.writestr(zi, b"")
                    self._count("d", e)
                elif t == "l":
                    zi = _RawZipInfo(rel, mt)
                    zi.external_attr = (stat.S_IFLNK | 0o777) << 16
                    zf.writestr(zi, bytes(e["l"]))
                    self._count("l", e)
                elif t == "f":
                    zi = _RawZipInfo(rel, mt)
                    zi.external_attr = (stat.S_IFREG | e.get("m", 0o644)) << 16
                    zi.file_size = e.get("s", 0)
                    if opts.dry_run:
                        self._count("f", e)
                        continue
                    with zf.open(zi, "w", force_zip64=zi.file_size >= zipfile.ZIP64_LIMIT) as w:
                        for part in self._content_stream(e, parts):
                            w.write(part)
                    self._count("f", e)
                    self.reporter.file_done(display_path(path), e.get("s", 0))
                else:
                    self._count(t, e)  # fifos, devices, sockets have no ZIP form

    def _tar(self, snap: Snapshot, opts: RestoreOptions, out) -> None:
        links: dict[tuple[int, int], str] = {}
        with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape") as tf:
            entries = (((path, rel), e) for path, rel, e in self._archive_entries(snap, opts))
            for (path, rel), e, parts in self._readahead(entries, opts, links=True):
                t = e["t"]
                ti = tarfile.TarInfo(rel.decode("utf-8", "surrogateescape"))
                ti.mode = e.get("m", 0o644)
                ti.uid, ti.gid = e.get("u", 0), e.get("g", 0)
                ti.uname, ti.gname = e.get("un", ""), e.get("gn", "")
                ti.mtime = e.get("mt", 0) / 1e9
                if e.get("x"):
                    ti.pax_headers = {
                        "SCHILY.xattr." + k.decode("utf-8", "surrogateescape"): v.decode("utf-8", "surrogateescape")
                        for k, v in e["x"].items()
                    }
                fileobj = None
                if t == "d":
                    ti.type = tarfile.DIRTYPE
                elif t == "l":
                    ti.type = tarfile.SYMTYPE
                    ti.linkname = bytes(e["l"]).decode("utf-8", "surrogateescape")
                elif t == "p":
                    ti.type = tarfile.FIFOTYPE
                elif t in ("c", "b"):
                    ti.type = tarfile.CHRTYPE if t == "c" else tarfile.BLKTYPE
                    ti.devmajor, ti.devminor = os.major(e.get("rd", 0)), os.minor(e.get("rd", 0))
                elif t == "s":
                    self._count(t, e)
                    continue
                else:
                    key = (e.get("dv", 0), e.get("i", 0))
                    if e.get("n", 1) > 1 and key in links:
                        ti.type = tarfile.LNKTYPE
                        ti.linkname = links[key]
                    else:
                        if e.get("n", 1) > 1:
                            links[key] = ti.name
                        ti.size = e.get("s", 0)
                        fileobj = _StreamReader(self._content_stream(e, parts)) if not opts.dry_run else None
                if opts.dry_run:
                    self._count(t, e)
                    continue
                tf.addfile(ti, fileobj)
                self._count(t, e)
                if t == "f":
                    self.reporter.file_done(display_path(path), e.get("s", 0))


def _all_zero(data: bytes) -> bool:
    """True if every byte is zero; most data is rejected by its first or last byte
    without a scan (``bytes.count`` of every blob cost a sixth of restore's GIL time)."""
    if data[0] or data[-1]:
        return False
    n = len(data)
    return data == _ZERO[:n] if n <= len(_ZERO) else data.count(0) == n


def _zeros_ahead(fd: int, n: int) -> bool:
    """True if the next ``n`` bytes at fd's offset are zeros; leaves the offset after them.

    Holes are skipped with SEEK_DATA, so verifying a sparse file reads only its data.
    """
    pos = os.lseek(fd, 0, os.SEEK_CUR)
    end = pos + n
    while pos < end:
        try:
            pos = os.lseek(fd, pos, SEEK_DATA)
        except OSError as err:
            if err.errno != errno.ENXIO:  # no SEEK_DATA here: read everything
                os.lseek(fd, pos, os.SEEK_SET)
            else:  # only a hole up to the end of the file
                pos = end
        if pos >= end:
            break
        b = os.read(fd, min(end - pos, len(_ZERO)))
        if not b or b != _ZERO[: len(b)]:
            return False
        pos += len(b)
    os.lseek(fd, end, os.SEEK_SET)
    return True


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
