"""Backup: walk local paths (or read stdin), store new content, write a snapshot.

Pipeline: the caller's thread walks the sources directory by directory (names sorted)
and compares each entry with the parent snapshot's entry for the same path, fetched one
directory at a time by key prefix. A regular file whose size, mtime, ctime and inode
match the parent keeps the parent's content list and is not opened. Other files are read
by a ``ContentWriter`` (``backupkit/objects/writer.py``: chunking, sealing, packing),
small ones by the walking thread, larger ones on a pool of reader threads (at most
``Tuning.files_in_flight`` queued). Entries that differ from the parent become trie
changes; paths the parent had and the walk did not find become deletions. At the end:
flush packs and index, apply the changes to the parent's trie, write the snapshot, then
the catalog. One run's state lives in a ``_Run``; the manager holds only what outlives it.

Unreadable files are reported and left out; the snapshot is still written. Files whose
size, mtime or ctime change while being read are reported as changed (their entry keeps
the pre-read times, so the next backup reads them again); a file that shrank is stored
with what could be read. All file system calls go through ``fs`` (the ``os`` module
unless a test stands in for it).
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import signal
import socket
import stat
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Protocol

import backupkit
from backupkit.entry import Keyer, join, name_of, parent_of
from backupkit.crypto import T_META_BLOB
from backupkit.objects.content import content_list
from backupkit.objects.entry import TYPE_OF_MODE, Entry, entry_from_stat
from backupkit.objects.writer import ContentWriter
from backupkit.errors import (
    BackupInterrupted, BadArgument, BlobNotFound, FileReadError, FormatError, IntegrityError, PathNotFound, SavedWork, StoreError,
)
from backupkit.excluder import Excluder
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot, list_snapshots, resolve_ref, save_snapshot
from backupkit.tree import SnapshotTree, make_hamt
from backupkit.tuning import DEFAULT_TUNING, Tuning

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

    def to_json(self) -> dict:
        return {
            "snapshot_id": self.snapshot.id if self.snapshot else None,
            "parent": self.parent,
            "dry_run": self.dry_run,
            "skipped": self.skipped,
            "files_new": self.files_new,
            "files_changed": self.files_changed,
            "files_unchanged": self.files_unchanged,
            "dirs": self.dirs,
            "files_read": self.files_read,
            "bytes_total": self.bytes_total,
            "bytes_read": self.bytes_read,
            "bytes_added": self.bytes_added,
            "blobs_added": self.blobs_added,
            "errors": [{"path": e.path, "message": e.message} for e in self.errors],
            "changed_during_read": list(self.changed_during_read),
            "seconds": round(self.seconds, 3),
        }


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
    """Runs backups against an open repository."""

    def __init__(
        self, repo: Repository, reporter: BackupReporter | None = None, tuning: Tuning = DEFAULT_TUNING, fs: Any = os
    ) -> None:
        self.repo = repo
        self.reporter = reporter or NullBackupReporter()
        self.tuning = tuning
        self.fs = fs

    def run(self, opts: BackupOptions) -> BackupResult:
        """Back up; BackupInterrupted (after indexing the packs completed) on an interrupt."""
        try:
            return _Run(self, opts).run()
        except _ParentUnreadable as e:
            # never build on a damaged tree: start again without a parent (as --force)
            self.reporter.error("(parent snapshot)", f"{e}; reading every file again without a parent")
            return _Run(self, dataclasses.replace(opts, force=True, parent=None)).run()


class _ParentUnreadable(Exception):
    """The parent snapshot's tree cannot be read (a lost or damaged node): the backup
    starts again without a parent."""


class _Run:
    """One backup: everything that lives from the start of ``run`` to its result."""

    def __init__(self, mgr: BackupManager, opts: BackupOptions) -> None:
        self.repo = mgr.repo
        self.reporter = mgr.reporter
        self.tuning = mgr.tuning
        self.fs = mgr.fs
        self.opts = opts
        self.dry = opts.dry_run
        self.keyer = Keyer(self.repo.sealer.keyed_hash)
        self.stats = _Stats()
        self.changes: list[tuple[bytes, bytes, bytes | None]] = []
        self.parent_tree: SnapshotTree | None = None
        self.excluder: Excluder | None = None
        self.writer: ContentWriter | None = None
        self.files_pool: ThreadPoolExecutor | None = None
        self.pending: deque[tuple[bytes, Entry | None, Entry, Future]] = deque()
        #: set when the run ends (interrupted or not): the totals scan stops too
        self.stopped = threading.Event()

    # -- entry point -----------------------------------------------------------------------
    def run(self) -> BackupResult:
        stats0 = dict(self.repo.stats)
        try:
            return self._run()
        except KeyboardInterrupt as e:
            # Stopped (Ctrl-C, SIGTERM, SIGHUP): reading has stopped (``_run``'s finally);
            # keep what was uploaded by indexing every complete pack, write no snapshot.
            signum = getattr(e, "signum", signal.SIGINT)
            if isinstance(e, BackupInterrupted) or self.dry:
                raise
            saved = None
            try:
                self.repo.flush_complete()
                now = self.repo.stats
                saved = SavedWork(
                    packs=now["packs_indexed"] - stats0["packs_indexed"],
                    bytes=now["pack_bytes_indexed"] - stats0["pack_bytes_indexed"],
                    blobs=now["blobs_indexed"] - stats0["blobs_indexed"],
                )
            except Exception:  # noqa: BLE001 - the interrupt is the news; the repository stays valid
                pass
            raise BackupInterrupted(signum, saved) from e

    def _run(self) -> BackupResult:
        t0 = time.monotonic()
        opts = self.opts
        # the repository's counters run over its lifetime; report this run's share
        stats0 = dict(self.repo.stats)
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
            missing = [s for s in sources if not self.fs.path.lexists(s)]
            if len(missing) == len(sources):
                raise PathNotFound(f"{_disp(missing[0])}: no such file or directory")
            for m in missing:
                self._error(m, "no such file or directory")
            sources = [s for s in sources if s not in missing]
        if not self.dry:
            try:
                self.repo.mark_missing_packs()  # their blobs are written again, never referenced
            except StoreError as e:  # a listing that fails: the backup goes on without the check
                self.reporter.error("(repository)", f"cannot list the packs ({e}); lost packs are not looked for")
        parent = self._find_parent(host, sources)
        self.parent_tree = SnapshotTree(self.repo, parent.root) if parent else None
        self.excluder = Excluder(opts)
        self.writer = ContentWriter(self.repo, self.tuning, self.dry, self.reporter.bytes_done, self.fs, opts.compression)
        self.files_pool = ThreadPoolExecutor(max_workers=max(1, opts.read_concurrency), thread_name_prefix="bk-read")
        done = False
        try:
            if opts.stdin is not None:
                self._backup_stdin(sources[0], opts.stdin)
            else:
                if opts.scan_totals:
                    threading.Thread(target=self._scan, args=(sources,), daemon=True).start()
                self._walk_sources(sources)
            self._drain(0)
            done = True
        finally:
            self.stopped.set()
            if not done:
                self.writer.cancel()  # interrupted: reads in progress stop at their next chunk
            self.files_pool.shutdown(wait=True, cancel_futures=not done)
            self.writer.close()
        snap = None
        st = self.stats
        if not self.dry:
            self.repo.flush()
            hamt = make_hamt(self.repo)
            base = parent.root if parent else hamt.empty()
            try:
                root = hamt.update(base, self.changes)
            except (BlobNotFound, IntegrityError, FormatError) as e:
                raise _ParentUnreadable(f"the parent snapshot's tree cannot be read: {e}") from None
            self.repo.flush()
            self.repo.check_lock()  # raises if our lock was lost: publish nothing then
        skipped = bool(not self.dry and opts.skip_if_unchanged and parent is not None and root == parent.root)
        if not self.dry and not skipped:
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

    def _find_parent(self, host: str, sources: list[bytes]) -> Snapshot | None:
        opts = self.opts
        if opts.force:
            return None
        snaps = list_snapshots(self.repo, repair_catalog=not opts.dry_run)
        if opts.parent:
            return resolve_ref(snaps, opts.parent)
        same = [s for s in snaps if s.host == host and sorted(s.paths) == sorted(sources)]
        return max(same, key=lambda s: s.time_ns) if same else None

    def _error(self, path: bytes, message: str) -> None:
        with self.stats.lock:
            self.stats.errors.append(BackupError(_disp(path), message))
        self.reporter.error(_disp(path), message)

    # -- scanning for progress totals -------------------------------------------------------
    def _scan(self, sources: list[bytes]) -> None:
        fs = self.fs
        files = size = 0
        last = time.monotonic()
        try:
            for src in sources:
                stack = [src]
                while stack and not self.stopped.is_set():
                    p = stack.pop()
                    try:
                        st = fs.lstat(p)
                    except OSError:
                        continue
                    if p != src and self.excluder.excluded(p, st):
                        continue  # totals of what the walk will back up (tag files aside)
                    if stat.S_ISDIR(st.st_mode):
                        try:
                            stack.extend(os.path.join(p, n) for n in fs.listdir(p))
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
    def _parent_children(self, dirpath: bytes) -> dict[bytes, Entry]:
        if self.parent_tree is None:
            return {}
        try:
            return {name_of(p): e for p, e in self.parent_tree.children(dirpath)}
        except (BlobNotFound, IntegrityError, FormatError) as e:
            raise _ParentUnreadable(f"the parent snapshot's tree cannot be read: {e}") from None

    def _parent_entry(self, path: bytes) -> Entry | None:
        try:
            return self.parent_tree.get(path) if self.parent_tree is not None else None
        except (BlobNotFound, IntegrityError, FormatError) as e:
            raise _ParentUnreadable(f"the parent snapshot's tree cannot be read: {e}") from None

    def _walk_sources(self, sources: list[bytes]) -> None:
        ancestors: set[bytes] = set()
        for src in sources:
            p = parent_of(src)
            while p:
                ancestors.add(p)
                p = parent_of(p)
        for a in sorted(ancestors):
            try:
                st = self.fs.lstat(a)
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
                st = self.fs.lstat(src)
            except OSError as e:
                self._error(src, e.strerror or str(e))
                continue
            if self.excluder.source_excluded(src, st):
                old_src = self._parent_entry(src)
                if old_src is not None:
                    self._delete(src, old_src)
                continue
            self._visit(src, st, self._parent_entry(src), st.st_dev)

    def _visit(self, path: bytes, st: os.stat_result, old: Entry | None, root_dev: int) -> None:
        """Back up one path found by the walk; directories recursively (iteratively)."""
        if not stat.S_ISDIR(st.st_mode):
            self._leaf(path, st, old)
            return
        fs = self.fs
        assert self.excluder is not None
        stack: list[tuple[bytes, os.stat_result, Entry | None]] = [(path, st, old)]
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
                names = sorted(fs.listdir(dpath))
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
                    cst = fs.lstat(cpath)
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
            self._drain(self.tuning.files_in_flight_after_dir)

    def _delete(self, path: bytes, old: Entry) -> None:
        """Drop ``path`` (and, for a directory, everything the parent had below it)."""
        if self.parent_tree is None:
            return
        if old.is_dir:
            try:
                for p, _e in self.parent_tree.walk(path):
                    self.changes.append((self.keyer.key(p), p, None))
            except (BlobNotFound, IntegrityError, FormatError) as e:
                raise _ParentUnreadable(f"the parent snapshot's tree cannot be read: {e}") from None
        else:
            self.changes.append((self.keyer.key(path), path, None))

    def _meta_entry(self, path: bytes, st: os.stat_result, old: Entry | None = None) -> Entry:
        """The entry for ``path`` without content; ``old`` is the parent snapshot's entry.

        When ``old`` has the same type, inode, mtime and ctime, its xattrs and symlink
        target are taken instead of asked for again: setting or removing an xattr
        updates ctime, and a symlink's target cannot change without a new inode.
        """
        t = TYPE_OF_MODE.get(stat.S_IFMT(st.st_mode))
        if (
            old is not None
            and old.ctime == st.st_ctime_ns
            and old.mtime == st.st_mtime_ns
            and old.inode == st.st_ino
            and old.type == t
        ):
            return entry_from_stat(st, target=old.target, xattrs=old.xattrs)
        fs = self.fs
        target = fs.readlink(path) if t == "l" else None
        try:
            names = fs.listxattr(path, follow_symlinks=False)
        except OSError:
            names = []
        xattrs = []
        for n in sorted(names):
            try:
                xattrs.append((n.encode("utf-8", "surrogateescape"), fs.getxattr(path, n, follow_symlinks=False)))
            except OSError:
                continue
        return entry_from_stat(st, target=target, xattrs=tuple(xattrs) or None)

    def _record(self, path: bytes, entry: Entry, old: Entry | None) -> None:
        if old is None or entry != old:
            self.changes.append((self.keyer.key(path), path, entry.encode()))

    def _leaf(self, path: bytes, st: os.stat_result, old: Entry | None) -> None:
        if old is not None and old.is_dir:
            # a directory became a file, symlink, ...: drop what the parent had below it
            self._delete(path, old)
            old = None
        try:
            e = self._meta_entry(path, st, old)
        except (OSError, ValueError) as err:
            self._error(path, getattr(err, "strerror", None) or str(err))
            return
        if not e.is_file:
            with self.stats.lock:
                self.stats.others += 1
            self._record(path, e, old)
            return
        with self.stats.lock:
            self.stats.bytes_total += st.st_size
        if (
            old is not None
            and old.is_file
            and not self.opts.force
            and old.size == e.size
            and old.mtime == e.mtime
            and old.ctime == e.ctime
            and old.inode == e.inode
            and old.has_content
            and self._content_indexed(old)
        ):
            e = e.replace(content=old.content, content_blobs=old.content_blobs)
            with self.stats.lock:
                self.stats.files_unchanged += 1
            self.reporter.file_done(_disp(path), st.st_size, "unchanged")
            self.reporter.bytes_done(st.st_size)
            self._record(path, e, old)
            return
        if st.st_size <= self.tuning.small_file:
            # Small files cost more in thread hand-offs than in work: do them here.
            self._finish_file(path, old, self._read_file(path, st, e))
            return
        assert self.files_pool is not None
        fut = self.files_pool.submit(self._read_file, path, st, e)
        self.pending.append((path, old, e, fut))
        self._drain(self.tuning.files_in_flight)

    def _content_indexed(self, old: Entry) -> bool:
        """Whether every blob of the parent's entry is in the index and not known to be
        damaged, so the entry may be reused; else the file is read again (self-healing:
        a backup never references a blob the index does not hold)."""
        if self.dry:
            return True
        repo = self.repo
        has = repo.has_blob
        damaged = repo.damaged
        if old.content_blobs:
            for cb in old.content_blobs:
                if not has(cb) or cb in damaged:
                    return False
            try:
                items = content_list(old, lambda bid: repo.read_blob(bid, T_META_BLOB))
            except Exception:  # noqa: BLE001 - an unreadable content blob: read the file again
                return False
        else:
            items = old.content or ()
        return all(has(i) and i not in damaged for i in items if isinstance(i, bytes))

    def _finish_file(self, path: bytes, old: Entry | None, e: Entry | None) -> None:
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
        while self.pending and (len(self.pending) > keep or self.pending[0][3].done()):
            path, old, _e, fut = self.pending.popleft()
            self._finish_file(path, old, fut.result())

    # -- reading file content --------------------------------------------------------------
    def _read_file(self, path: bytes, st: os.stat_result, e: Entry) -> Entry | None:
        assert self.writer is not None
        try:
            got = self.writer.read_file(path, st)
        except FileReadError as err:
            self._error(path, str(err))
            return None
        if got.changed:
            with self.stats.lock:
                self.stats.changed.append(_disp(path))
            self.reporter.error(_disp(path), "file changed while being read")
        e = self.writer.with_content(e.replace(size=got.size), got.items)
        with self.stats.lock:
            self.stats.files_read += 1
            self.stats.bytes_read += got.bytes_read
        self.reporter.file_done(_disp(path), got.size, "new")
        return e

    def _backup_stdin(self, path: bytes, stream: BinaryIO) -> None:
        assert self.writer is not None
        now = time.time_ns()
        root = Entry(type="d", mode=0o755, uid=os.getuid(), gid=os.getgid(), mtime=now, ctime=now)
        self._record(b"/", root, self._parent_entry(b"/"))
        items, total = self.writer.read_stream(stream)
        e = Entry(type="f", mode=0o644, uid=os.getuid(), gid=os.getgid(), size=total, mtime=now, ctime=now)
        e = self.writer.with_content(e, items)
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


__all__ = ["BackupManager", "BackupOptions", "BackupResult", "BackupReporter", "NullBackupReporter"]
