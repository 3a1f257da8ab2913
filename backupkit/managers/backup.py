"""Backup: walk local paths (or read stdin), store new content, write a snapshot.

Pipeline: the caller's thread walks the sources directory by directory (names sorted)
and compares each entry with the parent snapshot's entry for the same path, fetched one
directory at a time by key prefix. A regular file whose size, mtime, ctime and inode
match the parent keeps the parent's content list and is not opened. Other files go to a
pool of reader threads; each cuts its file with the keyed chunker and hands chunks to a
second pool that hashes, compresses and seals them (the chunker, HMAC, zstd and AES
release the GIL). Entries that differ from the parent become trie changes; paths the
parent had and the walk did not find become deletions. At the end: flush packs and index,
apply the changes to the parent's trie, write the snapshot, then the catalog.

Unreadable files are reported and left out; the snapshot is still written. Files whose
size, mtime or ctime change while being read are reported as changed (their entry keeps
the pre-read times, so the next backup reads them again).
"""

from __future__ import annotations

import errno
import getpass
import os
import socket
import stat
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import BinaryIO, Protocol

import backupkit
from backupkit.chunker import Chunker
from backupkit.crypto import T_DATA_BLOB, T_META_BLOB
from backupkit.entry import Keyer, encode_entry, entry_from_stat, join, name_of, parent_of, set_content
from backupkit.errors import PathNotFound, BadArgument
from backupkit.excluder import Excluder
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot, find_snapshot, list_snapshots, save_snapshot
from backupkit.tree import SnapshotTree, make_hamt

SEEK_DATA = getattr(os, "SEEK_DATA", 3)
#: Files up to this size are read by the walking thread itself.
SMALL_FILE = 64 * 1024
SEEK_HOLE = getattr(os, "SEEK_HOLE", 4)
#: highest zstd level a run may ask for (20-22 need hundreds of MiB per thread)
MAX_COMPRESSION = 19


@dataclass(frozen=True)
class BackupOptions:
    """What to back up and how."""

    paths: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    host: str | None = None
    #: restic's patterns (backupkit.filters); the walk asks an Excluder built from these
    excludes: tuple[str, ...] = ()
    iexcludes: tuple[str, ...] = ()
    exclude_files: tuple[str, ...] = ()
    iexclude_files: tuple[str, ...] = ()
    exclude_if_present: tuple[str, ...] = ()
    exclude_caches: bool = False
    exclude_larger_than: int | None = None
    #: per-directory ignore files read with gitignore rules (e.g. ".gitignore")
    exclude_ignorefiles: tuple[str, ...] = ()
    one_file_system: bool = False
    dry_run: bool = False
    stdin: BinaryIO | None = None
    stdin_filename: str = "stdin"
    time: datetime | None = None
    parent: str | None = None
    force: bool = False
    meta: tuple[tuple[str, str], ...] = ()
    #: zstd level for this run's blobs (0 = off); None = the repository's level
    compression: int | None = None
    #: no new snapshot when nothing differs from the parent (restic 0.17)
    skip_if_unchanged: bool = False
    read_concurrency: int = 2
    lock_check: Callable[[], None] | None = None
    #: Walk the sources once more up front for the reporter's totals (a progress bar's
    #: ETA); costs a second stat of every file, so only worth it when someone watches.
    scan_totals: bool = True


@dataclass(frozen=True)
class BackupError:
    path: str
    message: str


@dataclass(frozen=True)
class BackupResult:
    snapshot: Snapshot | None
    parent: str | None
    files_new: int
    files_changed: int
    files_unchanged: int
    dirs: int
    others: int
    files_read: int
    bytes_total: int
    bytes_read: int
    bytes_added: int
    blobs_added: int
    errors: tuple[BackupError, ...]
    changed_during_read: tuple[str, ...]
    seconds: float
    dry_run: bool
    #: --skip-if-unchanged found nothing new: no snapshot was written
    skipped: bool = False

    @property
    def incomplete(self) -> bool:
        return bool(self.errors)


class BackupReporter(Protocol):
    def scan_total(self, files: int, size: int, done: bool) -> None: ...
    def file_done(self, path: str, size: int, status: str) -> None: ...
    def bytes_done(self, n: int) -> None: ...
    def error(self, path: str, message: str) -> None: ...


class NullBackupReporter:
    def scan_total(self, files: int, size: int, done: bool) -> None: ...
    def file_done(self, path: str, size: int, status: str) -> None: ...
    def bytes_done(self, n: int) -> None: ...
    def error(self, path: str, message: str) -> None: ...


def _disp(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


class _Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files_new = self.files_changed = self.files_unchanged = 0
        self.dirs = self.others = self.files_read = 0
        self.bytes_total = self.bytes_read = 0
        self.errors: list[BackupError] = []
        self.changed: list[str] = []


class BackupManager:
    """Runs one backup against an open repository."""

    def __init__(self, repo: Repository, reporter: BackupReporter | None = None) -> None:
        self.repo = repo
        self.reporter = reporter or NullBackupReporter()
        cfg = repo.config
        self.chunker = Chunker(repo.keys.chunker_key, cfg.chunker_min, cfg.chunker_avg, cfg.chunker_max)
        self.keyer = Keyer(repo.sealer.keyed_hash)

    # -- entry point -----------------------------------------------------------------------
    def run(self, opts: BackupOptions) -> BackupResult:
        t0 = time.monotonic()
        self.opts = opts
        self.stats = _Stats()
        # the repository's counters run over its lifetime; report this run's share
        stats0 = dict(self.repo.stats)
        self.changes: list[tuple[bytes, bytes, bytes | None]] = []
        self.dry = opts.dry_run
        if opts.compression is not None and not 0 <= opts.compression <= MAX_COMPRESSION:
            raise BadArgument(f"invalid compression level {opts.compression}: use 0 (off) to {MAX_COMPRESSION}")
        host = opts.host or socket.gethostname()
        if opts.stdin is not None:
            name = opts.stdin_filename.strip("/")
            if not name or "/" in name or name in (".", ".."):
                raise BadArgument(f"invalid --stdin-filename {opts.stdin_filename!r}")
            sources = [b"/" + name.encode("utf-8", "surrogateescape")]
        else:
            if not opts.paths:
                raise BadArgument("nothing to back up: give at least one path (or - for stdin)")
            sources = sorted({os.fsencode(os.path.abspath(p)) for p in opts.paths})
            sources = [s for s in sources if not any(s != o and s.startswith(o.rstrip(b"/") + b"/") for o in sources)]
            missing = [s for s in sources if not os.path.lexists(s)]
            if len(missing) == len(sources):
                raise PathNotFound(f"{_disp(missing[0])}: no such file or directory")
            for m in missing:
                self._error(m, "no such file or directory")
            sources = [s for s in sources if s not in missing]
        parent = self._find_parent(opts, host, sources)
        self.parent_tree = SnapshotTree(self.repo, parent.root) if parent else None
        self.excluder = Excluder(opts)
        self._files_pool = ThreadPoolExecutor(max_workers=max(1, opts.read_concurrency), thread_name_prefix="bk-read")
        self._blob_pool = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2), thread_name_prefix="bk-blob")
        self._pending: deque[tuple[bytes, dict, Future]] = deque()
        scan = None
        try:
            if opts.stdin is not None:
                self._backup_stdin(sources[0], opts.stdin)
            else:
                if opts.scan_totals:
                    scan = threading.Thread(target=self._scan, args=(sources,), daemon=True)
                    scan.start()
                self._walk_sources(sources)
            self._drain(0)
        finally:
            self._files_pool.shutdown(wait=True)
            self._blob_pool.shutdown(wait=True)
        snap = None
        if not self.dry:
            self.repo.flush()
            hamt = make_hamt(self.repo)
            base = parent.root if parent else hamt.empty()
            root = hamt.update(base, self.changes)
            self.repo.flush()
            if opts.lock_check is not None:
                opts.lock_check()
        skipped = bool(not self.dry and opts.skip_if_unchanged and parent is not None and root == parent.root)
        if not self.dry and not skipped:
            st = self.stats
            summary = {
                "files_new": st.files_new,
                "files_changed": st.files_changed,
                "files_unchanged": st.files_unchanged,
                "dirs": st.dirs,
                "others": st.others,
                "files_read": st.files_read,
                "bytes_total": st.bytes_total,
                "bytes_read": st.bytes_read,
                "bytes_added": self.repo.stats["bytes_stored_new"] - stats0["bytes_stored_new"],
                "blobs_added": self.repo.stats["blobs_new"] - stats0["blobs_new"],
                "errors": len(st.errors),
                "seconds": round(time.monotonic() - t0, 3),
            }
            doc = {
                "v": 1,
                "root": root,
                "time": int((opts.time.timestamp() if opts.time else time.time()) * 1e9),
                "host": host,
                "user": getpass.getuser(),
                "paths": sources,
                "source": {
                    "type": "stdin" if opts.stdin is not None else "local",
                    "account": getpass.getuser(),
                    "path": _disp(sources[0]) if opts.stdin is not None else "",
                },
                "tags": sorted(set(opts.tags)),
                "meta": dict(opts.meta),
                "parent": parent.id if parent else None,
                "generator": f"backupkit {backupkit.__version__}",
                "summary": summary,
            }
            snap = save_snapshot(self.repo, doc)
        st = self.stats
        return BackupResult(
            snapshot=snap,
            parent=parent.id if parent else None,
            files_new=st.files_new,
            files_changed=st.files_changed,
            files_unchanged=st.files_unchanged,
            dirs=st.dirs,
            others=st.others,
            files_read=st.files_read,
            bytes_total=st.bytes_total,
            bytes_read=st.bytes_read,
            bytes_added=self.repo.stats["bytes_stored_new"] - stats0["bytes_stored_new"],
            blobs_added=self.repo.stats["blobs_new"] - stats0["blobs_new"],
            errors=tuple(st.errors),
            changed_during_read=tuple(st.changed),
            seconds=time.monotonic() - t0,
            dry_run=self.dry,
            skipped=skipped,
        )

    def _find_parent(self, opts: BackupOptions, host: str, sources: list[bytes]) -> Snapshot | None:
        if opts.force:
            return None
        snaps = list_snapshots(self.repo)
        if opts.parent:
            return find_snapshot(self.repo, opts.parent)
        same = [s for s in snaps if s.host == host and sorted(s.paths) == sorted(sources)]
        return max(same, key=lambda s: s.time_ns) if same else None

    def _error(self, path: bytes, message: str) -> None:
        with self.stats.lock:
            self.stats.errors.append(BackupError(_disp(path), message))
        self.reporter.error(_disp(path), message)

    # -- scanning for progress totals -------------------------------------------------------
    def _scan(self, sources: list[bytes]) -> None:
        files = size = 0
        last = time.monotonic()
        try:
            for src in sources:
                stack = [src]
                while stack:
                    p = stack.pop()
                    try:
                        st = os.lstat(p)
                    except OSError:
                        continue
                    if p != src and self.excluder.excluded(p, st):
                        continue  # totals of what the walk will back up (tag files aside)
                    if stat.S_ISDIR(st.st_mode):
                        try:
                            stack.extend(os.path.join(p, n) for n in os.listdir(p))
                        except OSError:
                            pass
                    elif stat.S_ISREG(st.st_mode):
                        files += 1
                        size += st.st_size
                    if time.monotonic() - last > 0.5:
                        self.reporter.scan_total(files, size, False)
                        last = time.monotonic()
        finally:
            self.reporter.scan_total(files, size, True)

    # -- walking ---------------------------------------------------------------------------
    def _parent_children(self, dirpath: bytes) -> dict[bytes, dict]:
        if self.parent_tree is None:
            return {}
        return {name_of(p): e for p, e in self.parent_tree.children(dirpath)}

    def _parent_entry(self, path: bytes) -> dict | None:
        return self.parent_tree.get(path) if self.parent_tree is not None else None

    def _walk_sources(self, sources: list[bytes]) -> None:
        ancestors: set[bytes] = set()
        for src in sources:
            p = parent_of(src)
            while p:
                ancestors.add(p)
                p = parent_of(p)
        for a in sorted(ancestors):
            try:
                st = os.lstat(a)
            except OSError as e:
                self._error(a, e.strerror or str(e))
                continue
            old_a = self._parent_entry(a)
            self._record(a, self._meta_entry(a, st, old_a), old_a)
        # Deletions among ancestors' children: children the parent snapshot had under an
        # ancestor that are neither ancestors nor sources now.
        keep = ancestors | set(sources)
        for a in sorted(ancestors):
            for name, old in self._parent_children(a).items():
                p = join(a, name)
                if p not in keep:
                    self._delete(p, old)
        for src in sources:
            try:
                st = os.lstat(src)
            except OSError as e:
                self._error(src, e.strerror or str(e))
                continue
            if self.excluder.source_excluded(src, st):
                old_src = self._parent_entry(src)
                if old_src is not None:
                    self._delete(src, old_src)
                continue
            self._visit(src, st, self._parent_entry(src), st.st_dev)

    def _visit(self, path: bytes, st: os.stat_result, old: dict | None, root_dev: int) -> None:
        """Back up one path found by the walk; directories recursively (iteratively)."""
        if not stat.S_ISDIR(st.st_mode):
            self._leaf(path, st, old)
            return
        stack: list[tuple[bytes, os.stat_result, dict | None]] = [(path, st, old)]
        while stack:
            dpath, dst, dold = stack.pop()
            self._record(dpath, self._meta_entry(dpath, dst, dold), dold)
            with self.stats.lock:
                self.stats.dirs += 1
            if self.opts.one_file_system and dst.st_dev != root_dev:
                children_old = self._parent_children(dpath)
                for name, o in children_old.items():
                    self._delete(join(dpath, name), o)
                continue
            try:
                names = sorted(os.listdir(dpath))
            except OSError as e:
                self._error(dpath, f"cannot list directory: {e.strerror}")
                names = None
            children_old = self._parent_children(dpath)
            if names is None:
                # keep nothing we cannot see; the error is reported
                for name, o in children_old.items():
                    self._delete(join(dpath, name), o)
                continue
            names = self.excluder.children(dpath, names)
            present = set()
            subdirs = []
            for name in names:
                cpath = join(dpath, name)
                try:
                    cst = os.lstat(cpath)
                except OSError as e:
                    self._error(cpath, e.strerror or str(e))
                    continue
                if self.excluder.excluded(cpath, cst):
                    continue
                is_dir = stat.S_ISDIR(cst.st_mode)
                present.add(name)
                o = children_old.get(name)
                if is_dir:
                    subdirs.append((cpath, cst, o))
                else:
                    self._leaf(cpath, cst, o)
            for name, o in children_old.items():
                if name not in present:
                    self._delete(join(dpath, name), o)
            stack.extend(reversed(subdirs))
            self._drain(64)

    def _delete(self, path: bytes, old: dict) -> None:
        """Drop ``path`` (and, for a directory, everything the parent had below it)."""
        if self.parent_tree is None:
            return
        if old.get("t") == "d":
            for p, _e in self.parent_tree.walk(path):
                self.changes.append((self.keyer.key(p), p, None))
        else:
            self.changes.append((self.keyer.key(path), path, None))

    def _meta_entry(self, path: bytes, st: os.stat_result, old: dict | None = None) -> dict:
        """The entry for ``path`` without content; ``old`` is the parent snapshot's entry.

        When ``old`` has the same type, inode, mtime and ctime, its xattrs and symlink
        target are taken instead of asked for again: setting or removing an xattr
        updates ctime, and a symlink's target cannot change without a new inode.
        """
        e = entry_from_stat(st)
        if (
            old is not None
            and old.get("ct") == e["ct"]
            and old.get("mt") == e["mt"]
            and old.get("i") == e["i"]
            and old.get("t") == e["t"]
        ):
            for k in ("l", "x"):
                if k in old:
                    e[k] = old[k]
            return e
        if e["t"] == "l":
            e["l"] = os.readlink(path)
        try:
            names = os.listxattr(path, follow_symlinks=False)
        except OSError:
            names = []
        if names:
            x = {}
            for n in sorted(names):
                try:
                    x[n.encode("utf-8", "surrogateescape")] = os.getxattr(path, n, follow_symlinks=False)
                except OSError:
                    continue
            if x:
                e["x"] = x
        return e

    def _record(self, path: bytes, entry: dict, old: dict | None) -> None:
        if old is None or entry != old:
            self.changes.append((self.keyer.key(path), path, encode_entry(entry)))

    def _leaf(self, path: bytes, st: os.stat_result, old: dict | None) -> None:
        if old is not None and old.get("t") == "d":
            # a directory became a file, symlink, ...: drop what the parent had below it
            self._delete(path, old)
            old = None
        try:
            e = self._meta_entry(path, st, old)
        except (OSError, ValueError) as err:
            self._error(path, getattr(err, "strerror", None) or str(err))
            return
        if e["t"] != "f":
            with self.stats.lock:
                self.stats.others += 1
            self._record(path, e, old)
            return
        with self.stats.lock:
            self.stats.bytes_total += st.st_size
        if (
            old is not None
            and old.get("t") == "f"
            and not self.opts.force
            and old.get("s") == e["s"]
            and old.get("mt") == e["mt"]
            and old.get("ct") == e["ct"]
            and old.get("i") == e["i"]
            and ("c" in old or "cb" in old)
        ):
            for k in ("c", "cb"):
                if k in old:
                    e[k] = old[k]
            with self.stats.lock:
                self.stats.files_unchanged += 1
            self.reporter.file_done(_disp(path), st.st_size, "unchanged")
            self.reporter.bytes_done(st.st_size)
            self._record(path, e, old)
            return
        if st.st_size <= SMALL_FILE:
            # Small files cost more in thread hand-offs than in work: do them here.
            self._finish_file(path, old, self._read_file(path, st, e))
            return
        fut = self._files_pool.submit(self._read_file, path, st, e)
        self._pending.append((path, old, fut))
        self._drain(256)

    def _finish_file(self, path: bytes, old: dict | None, e: dict | None) -> None:
        if e is None:
            return
        with self.stats.lock:
            if old is None:
                self.stats.files_new += 1
            else:
                self.stats.files_changed += 1
        self._record(path, e, old)

    def _drain(self, keep: int) -> None:
        """Collect finished file jobs, waiting while more than ``keep`` are in flight."""
        while self._pending and (len(self._pending) > keep or self._pending[0][2].done()):
            path, old, fut = self._pending.popleft()
            self._finish_file(path, old, fut.result())

    # -- reading file content --------------------------------------------------------------
    def _segments(self, fd: int, size: int, st: os.stat_result) -> Iterator[tuple[int, int]]:
        """(offset, length) of data regions; holes between them are not read."""
        if size == 0:
            return
        if st.st_blocks * 512 >= size:
            yield 0, size
            return
        pos = 0
        while pos < size:
            try:
                data = os.lseek(fd, pos, SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole remains
                    return
                yield pos, size - pos
                return
            if data >= size:
                return
            hole = os.lseek(fd, data, SEEK_HOLE)
            hole = min(hole, size)
            yield data, hole - data
            pos = hole

    def _read_file(self, path: bytes, st: os.stat_result, e: dict) -> dict | None:
        # O_NONBLOCK: a file swapped for a fifo since lstat must not block open() (the
        # fstat below then skips it); it changes nothing for reads of regular files.
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK
        try:
            fd = os.open(path, flags | getattr(os, "O_NOATIME", 0))
        except PermissionError:
            try:
                fd = os.open(path, flags)
            except OSError as err:
                self._error(path, f"cannot read: {err.strerror}")
                return None
        except OSError as err:
            self._error(path, f"cannot read: {err.strerror}")
            return None
        try:
            fst = os.fstat(fd)
            if not stat.S_ISREG(fst.st_mode):
                self._error(path, "changed type while being read, skipped")
                return None
            items: list = []
            pos = 0
            nread = 0
            shrank = False
            if 0 < st.st_size < self.chunker.min_size and fst.st_blocks * 512 >= st.st_size:
                segments = iter(())  # one chunk: read it here, no hand-off to the blob pool
                data = _read_upto(fd, st.st_size)
                if data:
                    items.append(self._store_chunk(data))
                    self.reporter.bytes_done(len(data))
                nread = pos = len(data)
                shrank = len(data) < st.st_size
            else:
                segments = self._segments(fd, st.st_size, fst)
            for off, length in segments:
                if off > pos:
                    items.append(off - pos)  # a hole
                os.lseek(fd, off, os.SEEK_SET)
                remaining = [length]

                def readinto(view: memoryview, _r=remaining) -> int:
                    # os.readv fills the chunker's buffer in the kernel, GIL released
                    if _r[0] <= 0:
                        return 0
                    n = os.readv(fd, [view[: _r[0]]])
                    _r[0] = 0 if not n else _r[0] - n
                    return n

                got = 0
                futs: deque[Future] = deque()
                for chunk in self.chunker.chunks(readinto=readinto):
                    got += len(chunk)
                    self.reporter.bytes_done(len(chunk))
                    # the view stays valid (the chunker never reuses a buffer): no copy
                    futs.append(self._blob_pool.submit(self._store_chunk, chunk))
                    while len(futs) > 4:
                        items.append(futs.popleft().result())
                while futs:
                    items.append(futs.popleft().result())
                nread += got
                pos = off + got
                if got < length:
                    shrank = True
                    break
            if not shrank and pos < st.st_size:
                items.append(st.st_size - pos)  # trailing hole
            after = os.fstat(fd)
        except OSError as err:
            self._error(path, f"read error: {err.strerror}")
            return None
        finally:
            os.close(fd)
        if (after.st_size, after.st_mtime_ns, after.st_ctime_ns) != (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
            with self.stats.lock:
                self.stats.changed.append(_disp(path))
            self.reporter.error(_disp(path), "file changed while being read")
        stored = sum(i if isinstance(i, int) else 0 for i in items) + nread
        e["s"] = stored
        set_content(e, items, lambda data: self._add_meta(data))
        with self.stats.lock:
            self.stats.files_read += 1
            self.stats.bytes_read += nread
        self.reporter.file_done(_disp(path), stored, "new")
        return e

    def _store_chunk(self, chunk: bytes | memoryview) -> bytes:
        if self.dry:
            return self.repo.sealer.blob_id(chunk)
        return self.repo.add_blob(T_DATA_BLOB, chunk, level=self.opts.compression)[0]

    def _add_meta(self, data: bytes) -> bytes:
        if self.dry:
            return self.repo.sealer.blob_id(data)
        return self.repo.add_blob(T_META_BLOB, data, level=self.opts.compression)[0]

    def _backup_stdin(self, path: bytes, stream: BinaryIO) -> None:
        now = time.time_ns()
        root = {"t": "d", "m": 0o755, "u": os.getuid(), "g": os.getgid(), "mt": now, "ct": now}
        self._record(b"/", root, self._parent_entry(b"/"))
        items = []
        total = 0
        read = getattr(stream, "read1", stream.read)
        for chunk in self.chunker.chunks(read):
            total += len(chunk)
            self.reporter.bytes_done(len(chunk))
            items.append(self._store_chunk(bytes(chunk)))
        e = {"t": "f", "m": 0o644, "u": os.getuid(), "g": os.getgid(), "s": total, "mt": now, "ct": now}
        set_content(e, items, self._add_meta)
        with self.stats.lock:
            self.stats.files_new += 1
            self.stats.files_read += 1
            self.stats.bytes_read += total
            self.stats.bytes_total += total
        old = self._parent_entry(path)
        for name, o in self._parent_children(b"/").items():
            if join(b"/", name) != path:
                self._delete(join(b"/", name), o)
        self._record(path, e, old)


def _read_upto(fd: int, n: int) -> bytes:
    parts = []
    while n > 0:
        b = os.read(fd, n)
        if not b:
            break
        parts.append(b)
        n -= len(b)
    return b"".join(parts)


def default_reporter() -> NullBackupReporter:
    return NullBackupReporter()


__all__ = ["BackupManager", "BackupOptions", "BackupResult", "BackupReporter", "NullBackupReporter", "field"]
