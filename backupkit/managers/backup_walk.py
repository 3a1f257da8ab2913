"""The backup's walk: the sources' paths compared with the parent snapshot, as trie changes.

The walking thread lists the sources directory by directory (names sorted) and compares
each path's lstat with the parent snapshot's entry for it, fetched one directory at a
time by key prefix (``SnapshotTree.raw_children``) and kept as its wire map: a path whose
metadata matches (and, for a file, whose blobs the index still holds) costs its lstat and
that compare, no ``Entry`` is built and no change recorded; a file keeps its content list
and is not opened. Other files are read by the run's ``ContentWriter``
(``backupkit/objects/writer.py``) on a pool of reader threads: small ones in batches
(``Tuning.small_files_per_job``), larger ones one job each (at most
``Tuning.files_in_flight`` queued). Entries that differ from the parent become trie
changes in a ``ChangeLog`` (``backup_changes.py``); paths the parent had and the walk did
not find become deletions. What to do with the changes is the run's business
(``backupkit/managers/backup.py``).

Unreadable files are reported and left out. Files whose size, mtime or ctime change
while being read are reported as changed (their entry keeps the pre-read times, so the
next backup reads them again); a file that shrank is stored with what could be read.
All file system calls go through ``fs`` (the ``os`` module unless a test stands in).
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

import msgpack
from msgpack import unpackb

from backupkit.crypto import T_META_BLOB
from backupkit.entry import Keyer, join, name_of, parent_of
from backupkit.errors import BlobNotFound, FileReadError, FormatError, IntegrityError
from backupkit.excluder import Excluder
from backupkit.managers.backup_changes import ChangeLog
from backupkit.objects.content import content_list
from backupkit.objects.entry import TYPE_OF_MODE, WIRE_KEY, Entry, entry_from_stat, group_name, user_name
from backupkit.objects.writer import ContentWriter
from backupkit.repo.repository import Repository
from backupkit.tree import SnapshotTree
from backupkit.tuning import Tuning

_WIRE_KEYS = frozenset(WIRE_KEY.values())


@dataclass(frozen=True)
class BackupError:
    path: str
    message: str


class _ParentUnreadable(Exception):
    """The parent snapshot's tree cannot be read (a lost or damaged node): the backup
    starts again without a parent."""


def disp(path: bytes) -> str:
    return path.decode("utf-8", "backslashreplace")


class WalkStats:
    """The walk's counters (updated from the walking and the reader threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.files_new = self.files_changed = self.files_unchanged = 0
        self.dirs = self.others = self.files_read = 0
        self.bytes_total = self.bytes_read = 0
        self.errors: list[BackupError] = []
        self.changed: list[str] = []


class BackupWalk:
    """One run's walk: owns the reader pool and the ``ContentWriter``; collects the trie
    changes in ``changes`` and the counters in ``stats``. ``close(done)`` stops it."""

    def __init__(
        self,
        repo: Repository,
        reporter: Any,
        tuning: Tuning,
        fs: Any,
        opts: Any,
        parent_tree: SnapshotTree | None,
        stats: WalkStats,
    ) -> None:
        self.repo = repo
        self.reporter = reporter
        self.tuning = tuning
        self.fs = fs
        self.opts = opts
        self.dry = opts.dry_run
        self.parent_tree = parent_tree
        self.stats = stats
        self.keyer = Keyer(repo.sealer.keyed_hash)
        #: the trie changes (out of memory: see backup_changes.py)
        self.changes = ChangeLog()
        self.excluder = Excluder(opts)
        self.writer = ContentWriter(repo, tuning, self.dry, reporter.bytes_done, fs, opts.compression)
        self.files_pool = ThreadPoolExecutor(max_workers=max(1, opts.read_concurrency), thread_name_prefix="bk-read")
        #: files being read: (path, parent's entry, entry, future), or for a batch of
        #: small files (b"", None, [(path, parent's entry, lstat, entry), ...], future)
        self.pending: deque[tuple[bytes, Entry | None, Any, Future]] = deque()
        self._small: list[tuple[bytes, Entry | None, os.stat_result, Entry]] = []
        #: set when the run ends (interrupted or not): the totals scan stops too
        self.stopped = threading.Event()

    def finish(self) -> None:
        """Wait for every file still being read."""
        self._drain(0)

    def close(self, done: bool) -> None:
        """Stop: reads in progress stop at their next chunk unless the walk is ``done``."""
        self.stopped.set()
        if not done:
            self.writer.cancel()
        self.files_pool.shutdown(wait=True, cancel_futures=not done)
        self.writer.close()
        if not done:
            self.changes.close()

    def start_scan(self, sources: list[bytes]) -> None:
        """Count the files to back up on a thread of its own (the reporter's totals)."""
        threading.Thread(target=self._scan, args=(sources,), daemon=True).start()

    def error(self, path: bytes, message: str) -> None:
        with self.stats.lock:
            self.stats.errors.append(BackupError(disp(path), message))
        self.reporter.error(disp(path), message)

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
    def _parent_children(self, dirpath: bytes) -> dict[bytes, dict]:
        """name -> the parent snapshot's wire map of each child of ``dirpath`` (decoded
        to an ``Entry`` only when the path changed: see ``_decode``)."""
        if self.parent_tree is None:
            return {}
        try:
            out = {}
            for p, raw in self.parent_tree.raw_children(dirpath):
                m = unpackb(raw, strict_map_key=False)
                if type(m) is not dict:
                    raise FormatError(f"{disp(p)}: malformed file entry: not a map")
                out[name_of(p)] = m
            return out
        except (BlobNotFound, IntegrityError, FormatError) as e:
            raise _ParentUnreadable(f"the parent snapshot's tree cannot be read: {e}") from None
        except (ValueError, TypeError, msgpack.UnpackException) as e:
            raise _ParentUnreadable(f"the parent snapshot's tree cannot be read: {disp(dirpath)}: {e}") from None

    def _parent_map(self, path: bytes) -> dict | None:
        """The parent snapshot's wire map of ``path`` (None: it had none)."""
        try:
            e = self.parent_tree.get(path) if self.parent_tree is not None else None
        except (BlobNotFound, IntegrityError, FormatError) as err:
            raise _ParentUnreadable(f"the parent snapshot's tree cannot be read: {err}") from None
        return e.to_wire() if e is not None else None

    @staticmethod
    def _decode(path: bytes, m: dict | None) -> Entry | None:
        """The parent's entry from its wire map, validated."""
        if m is None:
            return None
        try:
            return Entry.from_wire(m, path)
        except FormatError as e:
            raise _ParentUnreadable(f"the parent snapshot's tree cannot be read: {e}") from None

    def walk_sources(self, sources: list[bytes]) -> None:
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
                self.error(a, e.strerror or str(e))
                continue
            old_a = self._decode(a, self._parent_map(a))
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
                self.error(src, e.strerror or str(e))
                continue
            if self.excluder.source_excluded(src, st):
                old_src = self._parent_map(src)
                if old_src is not None:
                    self._delete(src, old_src)
                continue
            self._visit(src, st, self._parent_map(src), st.st_dev)

    def _visit(self, path: bytes, st: os.stat_result, old: dict | None, root_dev: int) -> None:
        """Back up one path found by the walk (``old``: the parent's wire map of it);
        directories recursively (iteratively)."""
        if not stat.S_ISDIR(st.st_mode):
            self._leaf(path, st, old)
            return
        fs = self.fs
        stack: list[tuple[bytes, os.stat_result, dict | None]] = [(path, st, old)]
        while stack:
            dpath, dst, dm = stack.pop()
            if dm is None or not self._same(dm, dst, "d"):
                dold = self._decode(dpath, dm)
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
                self.error(dpath, f"cannot list directory: {e.strerror}")
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
                    self.error(cpath, e.strerror or str(e))
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

    def _delete(self, path: bytes, old: dict) -> None:
        """Drop ``path`` (``old``: the parent's wire map of it), and for a directory
        everything the parent had below it."""
        if self.parent_tree is None:
            return
        if old.get("t") == "d":
            try:
                for p, _e in self.parent_tree.walk(path):
                    self.changes.add(self.keyer.key(p), p, None)
            except (BlobNotFound, IntegrityError, FormatError) as e:
                raise _ParentUnreadable(f"the parent snapshot's tree cannot be read: {e}") from None
        else:
            self.changes.add(self.keyer.key(path), path, None)

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
            self.changes.add(self.keyer.key(path), path, entry.encode())

    def _same(self, m: dict, st: os.stat_result, t: str | None) -> bool:
        """Whether the parent's wire map ``m`` holds exactly the entry ``st`` gives (the
        xattrs and a symlink's target are kept when type, inode, mtime and ctime match:
        see ``_meta_entry``). No ``Entry`` is built: this is all an unchanged path costs
        besides its lstat. A map with a key the format does not know never matches (it
        is then decoded, and refused)."""
        uid = st.st_uid
        gid = st.st_gid
        return (
            m.get("mt") == st.st_mtime_ns
            and m.get("ct") == st.st_ctime_ns
            and m.get("i") == st.st_ino
            and m.get("t") == t
            and m.get("s") == (st.st_size if t == "f" else None)
            and m.get("m") == (st.st_mode & 0o7777)
            and m.get("u") == uid
            and m.get("g") == gid
            and m.get("dv") == st.st_dev
            and m.get("n") == st.st_nlink
            and m.get("rd") == (st.st_rdev if t == "c" or t == "b" else None)
            and m.get("un") == user_name(uid)
            and m.get("gn") == group_name(gid)
            and m.keys() <= _WIRE_KEYS
        )

    def _items_indexed(self, items: object) -> bool:
        """Whether an inline content list (a wire value) is well formed and every blob
        of it is in the index and not known to be damaged."""
        if type(items) is not list:
            return False
        ids = []
        for i in items:
            if type(i) is bytes:
                ids.append(i)
            elif type(i) is not int or i < 0:
                return False
        if self.dry:
            return True
        damaged = self.repo.damaged
        return self.repo.has_blobs(ids) and not (damaged and damaged.intersection(ids))

    def _leaf(self, path: bytes, st: os.stat_result, m: dict | None) -> None:
        old = None
        if m is not None:
            t = TYPE_OF_MODE.get(stat.S_IFMT(st.st_mode))
            if self._same(m, st, t):
                if t != "f":
                    with self.stats.lock:
                        self.stats.others += 1
                    return
                if "cb" not in m and self._items_indexed(m.get("c")):
                    size = st.st_size
                    with self.stats.lock:
                        self.stats.bytes_total += size
                        self.stats.files_unchanged += 1
                    self.reporter.file_done(disp(path), size, "unchanged")
                    self.reporter.bytes_done(size)
                    return
            old = self._decode(path, m)
        if old is not None and old.is_dir:
            # a directory became a file, symlink, ...: drop what the parent had below it
            self._delete(path, m)
            old = None
        try:
            e = self._meta_entry(path, st, old)
        except (OSError, ValueError) as err:
            self.error(path, getattr(err, "strerror", None) or str(err))
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
            self.reporter.file_done(disp(path), st.st_size, "unchanged")
            self.reporter.bytes_done(st.st_size)
            self._record(path, e, old)
            return
        if st.st_size <= self.tuning.small_file:
            # A hand-off per small file costs more than its read: they go in batches,
            # so that the walk's system calls and Python overlap the reads and sealing.
            self._small.append((path, old, st, e))
            if len(self._small) >= self.tuning.small_files_per_job:
                self._submit_small()
            return
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

    def _submit_small(self) -> None:
        """Hand the batch of small files to the reader threads as one job."""
        batch, self._small = self._small, []
        if batch:
            fut = self.files_pool.submit(self._read_small, batch)
            self.pending.append((b"", None, batch, fut))

    def _read_small(self, batch: list) -> list[Entry | None]:
        return [self._read_file(path, st, e) for path, _old, st, e in batch]

    def _drain(self, keep: int) -> None:
        """Collect finished file jobs, waiting while more than ``keep`` are in flight."""
        self._submit_small()
        while self.pending and (len(self.pending) > keep or self.pending[0][3].done()):
            path, old, e, fut = self.pending.popleft()
            if path:
                self._finish_file(path, old, fut.result())
            else:  # a batch of small files
                for (p, o, _st, _e), got in zip(e, fut.result()):
                    self._finish_file(p, o, got)

    # -- reading file content --------------------------------------------------------------
    def _read_file(self, path: bytes, st: os.stat_result, e: Entry) -> Entry | None:
        try:
            got = self.writer.read_file(path, st)
        except FileReadError as err:
            self.error(path, str(err))
            return None
        if got.changed:
            with self.stats.lock:
                self.stats.changed.append(disp(path))
            self.reporter.error(disp(path), "file changed while being read")
        e = self.writer.with_content(e.replace(size=got.size), got.items)
        with self.stats.lock:
            self.stats.files_read += 1
            self.stats.bytes_read += got.bytes_read
        self.reporter.file_done(disp(path), got.size, "new")
        return e

    def backup_stdin(self, path: bytes, stream: BinaryIO) -> None:
        now = time.time_ns()
        root = Entry(type="d", mode=0o755, uid=os.getuid(), gid=os.getgid(), mtime=now, ctime=now)
        self._record(b"/", root, self._decode(b"/", self._parent_map(b"/")))
        items, total = self.writer.read_stream(stream)
        e = Entry(type="f", mode=0o644, uid=os.getuid(), gid=os.getgid(), size=total, mtime=now, ctime=now)
        e = self.writer.with_content(e, items)
        with self.stats.lock:
            self.stats.files_new += 1
            self.stats.files_read += 1
            self.stats.bytes_read += total
            self.stats.bytes_total += total
        old = self._decode(path, self._parent_map(path))
        for name, o in self._parent_children(b"/").items():
            if join(b"/", name) != path:
                self._delete(join(b"/", name), o)
        self._record(path, e, old)


__all__ = ["BackupError", "BackupWalk", "WalkStats", "disp"]
