"""The backup's walk: the sources' paths compared with the parent snapshot, as trie changes.

The walking thread lists the sources directory by directory (names sorted; each
directory listed and lstat'ed in one C call, most by a thread that reads ahead of the
walk: ``backupkit/dirscan.py``) and compares each path's lstat with the parent
snapshot's wire map of it (``backup_parent.py``: one directory at a time, by key prefix,
each entry decoded when the walk reaches it): a path whose metadata matches (and, for a
file, whose blobs the index still holds: checked for all such files of a directory at
once) costs its lstat and that compare, no ``Entry`` is built and no change recorded; a
file keeps its content list and is not opened. Other files go to the reader pool
(``backup_reads.py``), where the run's ``ContentWriter``
(``backupkit/objects/writer.py``) reads them. Entries that differ from the parent become
trie changes in a ``ChangeLog`` (``backup_changes.py``); paths the parent had and the
walk did not find become deletions. What to do with the changes is the run's business
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
from dataclasses import dataclass
from typing import Any, BinaryIO

from backupkit.dirscan import entries, listing, read_ahead, scan
from backupkit.entry import Keyer, display_path, join, parent_of
from backupkit.excluder import Excluder
from backupkit.managers.backup_changes import ChangeLog
from backupkit.managers.backup_parent import ParentView, content_matcher, decode, file_unchanged, inline_content, unchanged, wire
from backupkit.managers.backup_reads import FileReads
from backupkit.objects.entry import TYPE_OF_MODE, Entry, entry_from_stat
from backupkit.objects.smallfiles import read_xattrs
from backupkit.objects.writer import ContentWriter
from backupkit.repo.repository import Repository
from backupkit.tree import SnapshotTree
from backupkit.tuning import Tuning


@dataclass(frozen=True)
class BackupError:
    path: str
    message: str


class WalkStats:
    """The run's counters and its reporter (``BackupReporter``), updated from the walking
    and the reader threads: what is counted is reported here too."""

    def __init__(self, reporter: Any) -> None:
        self.reporter = reporter
        self.lock = threading.Lock()
        self.files_new = self.files_changed = self.files_unchanged = 0
        self.dirs = self.others = self.files_read = 0
        self.bytes_total = self.bytes_read = 0
        self.errors: list[BackupError] = []
        self.changed: list[str] = []

    def error(self, path: bytes, message: str) -> None:
        """``path`` is left out of the snapshot (unreadable, vanished, ...)."""
        with self.lock:
            self.errors.append(BackupError(display_path(path), message))
        self.reporter.error(display_path(path), message)

    def add(self, name: str, n: int = 1) -> None:
        """Add ``n`` to counter ``name`` (``dirs``, ``others``, ``bytes_total`` ...)."""
        with self.lock:
            setattr(self, name, getattr(self, name) + n)

    def unchanged_file(self, path: bytes, size: int) -> None:
        """A file whose parent's content list is reused: its bytes count as done."""
        self.unchanged_files([(path, size)])

    def unchanged_files(self, files: list[tuple[bytes, int]]) -> None:
        """``unchanged_file`` of each (path, size), counted and reported at once."""
        total = sum(size for _p, size in files)
        batch = getattr(self.reporter, "unchanged_done", None)
        if batch is not None:
            batch(files)
        else:
            done = self.reporter.file_done
            for path, size in files:
                done(display_path(path), size, "unchanged")
        with self.lock:
            self.bytes_total += total
            self.files_unchanged += len(files)
        self.reporter.bytes_done(total)

    def changed_while_read(self, path: bytes) -> None:
        with self.lock:
            self.changed.append(display_path(path))
        self.reporter.error(display_path(path), "file changed while being read")

    def read_done(self, files: list[tuple[bytes, int, int]]) -> None:
        """Files read by the reader pool: (path, size its entry says, bytes read) each."""
        with self.lock:
            self.files_read += len(files)
            self.bytes_read += sum(n for _p, _s, n in files)
        done = self.reporter.file_done
        for path, size, _n in files:
            done(display_path(path), size, "new")

    def stored(self, new: int, changed: int) -> None:
        """Files read are in the snapshot: ``new`` ones (the parent had none), ``changed`` ones."""
        with self.lock:
            self.files_new += new
            self.files_changed += changed


#: matching files held (with their lstat and the parent's map) for one index lookup: a
#: bound for large directories (`/usr/share/man/man1` holds 18k files)
_SAME_BATCH = 512


class BackupWalk:
    """One run's walk: owns the reader pool and the ``ContentWriter``; collects the trie
    changes in ``changes`` and the counters in ``stats`` (which reports them).
    ``parent_tree``: the parent snapshot's tree (None: no parent). ``close(done)`` stops it."""

    def __init__(
        self, repo: Repository, tuning: Tuning, fs: Any, opts: Any, parent_tree: SnapshotTree | None, stats: WalkStats
    ) -> None:
        self.tuning = tuning
        self.fs = fs
        self.opts = opts
        self.stats = stats
        self.reporter = stats.reporter
        self.parent = ParentView(parent_tree, repo, opts.dry_run)
        self.keyer = Keyer(repo.sealer.keyed_hash)
        #: the trie changes (out of memory: see backup_changes.py)
        self.changes = ChangeLog()
        self.excluder = Excluder(opts)
        self.writer = ContentWriter(repo, tuning, opts.dry_run, self.reporter.bytes_done, fs, opts.compression)
        self.reads = FileReads(self.writer, opts.read_concurrency, stats, self._change, self.changes.add)
        #: set when the run ends (interrupted or not): the totals scan stops too
        self.stopped = threading.Event()

    def finish(self) -> None:
        """Wait for every file still being read."""
        self.reads.drain(0)

    def close(self, done: bool) -> None:
        """Stop: reads in progress stop at their next chunk unless the walk is ``done``."""
        self.stopped.set()
        if not done:
            self.writer.cancel()
        self.reads.close(cancel=not done)
        self.writer.close()
        if not done:
            self.changes.close()

    def start_scan(self, sources: list[bytes]) -> None:
        """Count the files to back up on a thread of its own (the reporter's totals)."""
        threading.Thread(target=self._scan, args=(sources,), daemon=True).start()

    # -- scanning for progress totals -------------------------------------------------------
    def _scan(self, sources: list[bytes]) -> None:
        fs = self.fs
        excluded = self.excluder.excluded
        files = size = 0
        last = time.monotonic()
        try:
            for src in sources:
                try:
                    st = fs.lstat(src)
                except OSError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    files += 1
                    size += st.st_size
                stack = [src] if stat.S_ISDIR(st.st_mode) else []
                while stack and not self.stopped.is_set():
                    d = stack.pop()
                    try:
                        names, stats = scan(fs, d)  # one call (the GIL let go) a directory
                    except OSError:
                        continue
                    pre = d if d == b"/" else d + b"/"
                    for name, cst in zip(names, stats):
                        if isinstance(cst, OSError):
                            continue
                        p = pre + name
                        if excluded(p, cst):
                            continue  # totals of what the walk will back up (tag files aside)
                        if stat.S_ISDIR(cst.st_mode):
                            stack.append(p)
                        elif stat.S_ISREG(cst.st_mode):
                            files += 1
                            size += cst.st_size
                    if time.monotonic() - last > 0.5:
                        self.reporter.scan_total(files, size, False)
                        last = time.monotonic()
        finally:
            self.reporter.scan_total(files, size, True)

    # -- walking ---------------------------------------------------------------------------
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
                self.stats.error(a, e.strerror or str(e))
                continue
            old_a = self.parent.entry(a)
            self._record(a, self._meta_entry(a, st, old_a), old_a)
        # Deletions among ancestors' children: children the parent snapshot had under an
        # ancestor that are neither ancestors nor sources now.
        keep = ancestors | set(sources)
        for a in sorted(ancestors):
            for name, old in self.parent.children(a).items():
                p = join(a, name)
                if p not in keep:
                    self._delete(p, old)
        for src in sources:
            try:
                st = self.fs.lstat(src)
            except OSError as e:
                self.stats.error(src, e.strerror or str(e))
                continue
            if self.excluder.source_excluded(src, st):
                old_src = self.parent.wire_map(src)
                if old_src is not None:
                    self._delete(src, old_src)
                continue
            self._visit(src, st, self.parent.wire_map(src), st.st_dev)

    def _visit(self, path: bytes, st: os.stat_result, old: dict | None, root_dev: int) -> None:
        """Back up one path found by the walk (``old``: the parent's wire map of it);
        directories recursively (iteratively)."""
        if not stat.S_ISDIR(st.st_mode):
            self._leaf(path, st, old)
            return
        t = self.tuning
        dev = root_dev if self.opts.one_file_system else -1
        ahead = read_ahead(self.fs, path, t.walk_read_ahead, t.walk_read_ahead_age, dev, t.walk_read_ahead_threads)
        try:
            self._walk_tree(path, st, old, root_dev, ahead)
        finally:
            ahead.close()

    def _walk_tree(self, path: bytes, st: os.stat_result, old: dict | None, root_dev: int, ahead: Any) -> None:
        fs = self.fs
        excluded = self.excluder.excluded if self.excluder.active else None
        parent = self.parent
        match = content_matcher()
        # every regular file of a directory matched at once in C, from its listing
        # (Matcher.directory), where no exclusion needs each name on its way
        whole = match is not None and not self.excluder.active and not self.excluder.tags
        S_ISDIR, S_ISREG = stat.S_ISDIR, stat.S_ISREG
        # a directory's parent map, or its encoded entry (decoded when the walk gets there)
        stack: list[tuple[bytes, os.stat_result, dict | bytes | None]] = [(path, st, old)]
        while stack:
            dpath, dst, dm = stack.pop()
            if type(dm) is bytes:
                dm = wire(dpath, dm)
            if dm is None or not unchanged(dm, dst, "d"):
                dold = decode(dpath, dm)
                self._record(dpath, self._meta_entry(dpath, dst, dold), dold)
            self.stats.add("dirs")
            pre = dpath if dpath == b"/" else dpath + b"/"
            if self.opts.one_file_system and dst.st_dev != root_dev:
                self._delete_all(pre, parent.raw_children(dpath))
                continue
            try:
                got = listing(fs, dpath, ahead)
            except OSError as e:
                self.stats.error(dpath, f"cannot list directory: {e.strerror}")
                got = None
            # name -> the parent's encoded entry; what the walk does not find stays here
            olds = parent.raw_children(dpath)
            if got is None:
                # keep nothing we cannot see; the error is reported
                self._delete_all(pre, olds)
                continue
            if whole and olds and type(got) is not tuple:
                # the files that match the parent's entries leave ``olds`` here; the loop
                # below sees the other entries only
                rest: list[int] = []
                at: int | None = 0
                while at is not None:  # a window of matched files at a time
                    matched, more, at = match.directory(got, olds, pre, at, _SAME_BATCH)
                    rest += more
                    if matched:
                        self._reuse(matched, lambda places: entries(got, places)[1])
                names, lstats = entries(got, rest)
            else:
                names, lstats = entries(got)
            kept = self.excluder.children(dpath, names)
            if kept is names:
                found = zip(names, lstats)
            else:
                by_name = dict(zip(names, lstats))
                found = ((n, by_name[n]) for n in kept)
            subdirs = []
            #: files whose metadata match the parent's (``_reuse``'s tuples, the lstat
            #: last), reused once their blobs are checked in the index, all at once
            same: list[tuple[bytes, int, list, bytes, os.stat_result]] = []
            for name, cst in found:
                cpath = pre + name
                if isinstance(cst, OSError):
                    self.stats.error(cpath, cst.strerror or str(cst))
                    continue
                if excluded is not None and excluded(cpath, cst):
                    continue
                raw = olds.pop(name, None)
                mode = cst.st_mode
                if S_ISDIR(mode):
                    subdirs.append((cpath, cst, raw))
                    continue
                if raw is None or not S_ISREG(mode):
                    self._leaf(cpath, cst, wire(cpath, raw) if raw is not None else None)
                    continue
                # a regular file the parent had: the C matcher settles the common case
                # (unchanged) without unpacking the entry; whatever it does not, Python does
                c = match(raw, cst) if match is not None else None
                if c is None:
                    m = wire(cpath, raw)
                    c = inline_content(m)
                    if c is None or not file_unchanged(m, cst):
                        self._leaf(cpath, cst, m)
                        continue
                same.append((cpath, cst.st_size, c, raw, cst))
                if len(same) >= _SAME_BATCH:
                    self._reuse(same, list)
                    same = []
            if same:
                self._reuse(same, list)
            if olds:
                self._delete_all(pre, olds)
            stack.extend(reversed(subdirs))
            self.reads.drain(self.tuning.files_in_flight_after_dir)

    def _reuse(self, files: list[tuple[bytes, int, list, bytes, Any]], lstats) -> None:
        """Files whose metadata match the parent's: (path, size, the parent's content
        list, its encoded entry, a key to its lstat). Unchanged when every blob of theirs
        is in the index (one lookup for all); else each is looked at on its own, with
        ``lstats(keys)`` giving their lstats (the keys are ``os.stat_result``s for the
        walk's loop, places in the listing for ``Matcher.directory``'s windows)."""
        if self.parent.all_items_indexed([f[2] for f in files]):
            self.stats.unchanged_files([(f[0], f[1]) for f in files])
            return
        for (p, _size, _c, raw, _key), st in zip(files, lstats([f[4] for f in files])):
            self._leaf(p, st, wire(p, raw))

    def _delete_all(self, pre: bytes, olds: dict[bytes, bytes]) -> None:
        """``_delete`` each of the parent's children ``olds`` (name -> encoded entry) of
        the directory ``pre`` (its path with a trailing slash)."""
        for name, raw in olds.items():
            self._delete(pre + name, wire(pre + name, raw))

    def _delete(self, path: bytes, old: dict) -> None:
        """Drop ``path`` (``old``: the parent's wire map of it), and for a directory
        everything the parent had below it."""
        for p in self.parent.dropped(path, old):
            self.changes.add(self.keyer.key(p), p, None)

    def _meta_entry(self, path: bytes, st: os.stat_result, old: Entry | None = None) -> Entry:
        """The entry for ``path`` without content; ``old`` is the parent snapshot's entry.

        When ``old`` has the same type, inode, mtime and ctime, its xattrs and symlink
        target are taken instead of asked for again: setting or removing an xattr
        updates ctime, and a symlink's target cannot change without a new inode.
        """
        e, ask = self._meta_entry_later(path, st, old)
        return e.replace(xattrs=read_xattrs(self.fs, path)) if ask else e

    def _meta_entry_later(self, path: bytes, st: os.stat_result, old: Entry | None) -> tuple[Entry, bool]:
        """``_meta_entry`` and whether its xattrs are still to be asked for (``read_xattrs``):
        a file the reader pool reads gets them there, off the walking thread."""
        t = TYPE_OF_MODE.get(stat.S_IFMT(st.st_mode))
        if (
            old is not None
            and old.ctime == st.st_ctime_ns
            and old.mtime == st.st_mtime_ns
            and old.inode == st.st_ino
            and old.type == t
        ):
            return entry_from_stat(st, target=old.target, xattrs=old.xattrs), False
        target = self.fs.readlink(path) if t == "l" else None
        return entry_from_stat(st, target=target), True

    def _record(self, path: bytes, entry: Entry, old: Entry | None) -> None:
        change = self._change(path, entry, old)
        if change is not None:
            self.changes.add(change[0], path, change[1])

    def _change(self, path: bytes, entry: Entry, old: Entry | None) -> tuple[bytes, bytes] | None:
        """(trie key, encoded entry) of ``path`` when ``entry`` differs from ``old``, else
        None; thread-safe (the reader pool makes those of the files it reads)."""
        if old is None or entry != old:
            return self.keyer.key(path), entry.encode()
        return None

    def _leaf(self, path: bytes, st: os.stat_result, m: dict | None) -> None:
        old = None
        if m is not None:
            t = TYPE_OF_MODE.get(stat.S_IFMT(st.st_mode))
            if unchanged(m, st, t):
                if t != "f":
                    self.stats.add("others")
                    return
                if self.parent.items_indexed(inline_content(m)):
                    self.stats.unchanged_file(path, st.st_size)
                    return
            old = decode(path, m)
        if old is not None and old.is_dir:
            # a directory became a file, symlink, ...: drop what the parent had below it
            self._delete(path, m)
            old = None
        try:
            e, ask_xattrs = self._meta_entry_later(path, st, old)
            if ask_xattrs and not e.is_file:
                e = e.replace(xattrs=read_xattrs(self.fs, path))
        except (OSError, ValueError) as err:
            self.stats.error(path, getattr(err, "strerror", None) or str(err))
            return
        if not e.is_file:
            self.stats.add("others")
            self._record(path, e, old)
            return
        # (a file whose xattrs are still to be asked for never matches old below: its
        # inode, mtime or ctime differ, so the reader pool reads it and asks for them)
        if (
            old is not None
            and old.is_file
            and not self.opts.force
            and old.size == e.size
            and old.mtime == e.mtime
            and (old.ctime == e.ctime or self.opts.ignore_ctime)
            and (old.inode == e.inode or self.opts.ignore_inode)
            and old.has_content
            and self.parent.content_indexed(old)
        ):
            self.stats.unchanged_file(path, st.st_size)
            self._record(path, e.replace(content=old.content, content_blobs=old.content_blobs), old)
            return
        self.stats.add("bytes_total", st.st_size)
        self.reads.add(path, old, st, e, ask_xattrs)

    def backup_stdin(self, path: bytes, stream: BinaryIO) -> None:
        now = time.time_ns()
        root = Entry(type="d", mode=0o755, uid=os.getuid(), gid=os.getgid(), mtime=now, ctime=now)
        self._record(b"/", root, self.parent.entry(b"/"))
        items, total = self.writer.read_stream(stream)
        e = Entry(type="f", mode=0o644, uid=os.getuid(), gid=os.getgid(), size=total, mtime=now, ctime=now)
        e = self.writer.with_content(e, items)
        with self.stats.lock:
            self.stats.files_new += 1
            self.stats.files_read += 1
            self.stats.bytes_read += total
            self.stats.bytes_total += total
        old = self.parent.entry(path)
        for name, o in self.parent.children(b"/").items():
            if join(b"/", name) != path:
                self._delete(join(b"/", name), o)
        self._record(path, e, old)


__all__ = ["BackupError", "BackupWalk", "WalkStats"]
