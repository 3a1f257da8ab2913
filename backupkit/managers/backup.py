"""Backup: the run - check the options, find the parent, walk, write the snapshot.

A run (``_Run``) resolves the sources, finds the parent snapshot (same host and paths,
or ``--parent``), and hands the walk to ``BackupWalk`` (``backup_walk.py``: the sources
compared with the parent through ``backup_parent.py``, new content read on the reader
pool of ``backup_reads.py`` through a ``ContentWriter``, the result a list of trie
changes). At the end it flushes packs and index, applies the changes to the
parent's trie, writes the snapshot, then the catalog. A parent whose tree turns out
unreadable makes the run start again without one (as ``--force``). An interrupt keeps
what was uploaded (every complete pack is indexed) and writes no snapshot.

Unreadable files are reported and left out; the snapshot is still written. One run's
state lives in a ``_Run``; the manager holds only what outlives it.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import signal
import socket
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Protocol

import backupkit
from backupkit.errors import BackupInterrupted, BadArgument, BlobNotFound, FormatError, IntegrityError, PathNotFound, SavedWork, StoreError
from backupkit.entry import display_path
from backupkit.dirscan import Warming
from backupkit.managers.backup_parent import _ParentUnreadable, unreadable
from backupkit.managers.backup_walk import BackupError, BackupWalk, WalkStats
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot, list_snapshots, resolve_ref, save_snapshot, time_ns_of
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
    #: a file whose size and mtime match the parent's keeps its content even when its
    #: inode number (``ignore_inode``) or its ctime (``ignore_ctime``) changed: for file
    #: systems whose inode numbers or ctimes do not last (FUSE, some network mounts), as
    #: restic's options; its other metadata is still taken fresh
    ignore_inode: bool = False
    ignore_ctime: bool = False
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
    # optional: unchanged_done(files) (see NullBackupReporter); without it, file_done
    # is called for each unchanged file


class NullBackupReporter:
    def scan_total(self, files: int, size: int, done: bool) -> None: ...
    def file_done(self, path: str, size: int, status: str) -> None: ...
    def bytes_done(self, n: int) -> None: ...
    def error(self, path: str, message: str) -> None: ...

    def unchanged_done(self, files: list[tuple[bytes, int]]) -> None:
        """Files reused from the parent, (path as bytes, size) each, many at a time (an
        unchanged backup reports every file: a reporter that counts them need not make
        a display path of each). By default ``file_done(path, size, "unchanged")`` of
        each, where a subclass shows files one by one."""
        if type(self).file_done is not NullBackupReporter.file_done:
            for path, size in files:
                self.file_done(display_path(path), size, "unchanged")


class BackupManager:
    """Runs backups against an open repository."""

    def __init__(
        self, repo: Repository, reporter: BackupReporter | None = None, tuning: Tuning = DEFAULT_TUNING, fs: Any = os
    ) -> None:
        self.repo = repo
        self.reporter = reporter or NullBackupReporter()
        self.tuning = tuning
        self.fs = fs

    def run(self, opts: BackupOptions, warming: Warming | None = None) -> BackupResult:
        """Back up; BackupInterrupted (after indexing the packs completed) on an interrupt.
        ``warming``: ``dirscan.warm`` of the sources, started before the repository was
        opened; it is stopped when the walk begins."""
        try:
            return _Run(self, opts, warming).run()
        except _ParentUnreadable as e:
            # never build on a damaged tree: start again without a parent (as --force)
            self.reporter.error("(parent snapshot)", f"{e}; reading every file again without a parent")
            return _Run(self, dataclasses.replace(opts, force=True, parent=None)).run()


class _Run:
    """One backup: everything that lives from the start of ``run`` to its result."""

    def __init__(self, mgr: BackupManager, opts: BackupOptions, warming: Warming | None = None) -> None:
        self.warming = warming
        self.repo = mgr.repo
        self.reporter = mgr.reporter
        self.tuning = mgr.tuning
        self.fs = mgr.fs
        self.opts = opts
        self.dry = opts.dry_run
        self.stats = WalkStats(self.reporter)

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
                raise PathNotFound(f"{display_path(missing[0])}: no such file or directory")
            for m in missing:
                self.stats.error(m, "no such file or directory")
            sources = [s for s in sources if s not in missing]
        if not self.dry:
            try:
                self.repo.mark_missing_packs()  # their blobs are written again, never referenced
            except StoreError as e:  # a listing that fails: the backup goes on without the check
                self.reporter.error("(repository)", f"cannot list the packs ({e}); lost packs are not looked for")
        parent = self._find_parent(host, sources)
        parent_tree = SnapshotTree(self.repo, parent.root, make_hamt(self.repo, self.tuning.parent_node_cache, self.tuning.parent_node_plain)) if parent else None
        walk = BackupWalk(self.repo, self.tuning, self.fs, opts, parent_tree, self.stats)
        done = False
        if self.warming is not None:
            self.warming.close()  # the walk's own read-ahead takes over from here
        try:
            if opts.stdin is not None:
                walk.backup_stdin(sources[0], opts.stdin)
            else:
                if opts.scan_totals:
                    walk.start_scan(sources)
                walk.walk_sources(sources)
            walk.finish()
            done = True
        finally:
            walk.close(done)
        snap = None
        st = self.stats
        if not self.dry:
            self.repo.flush()
            hamt = make_hamt(self.repo)
            base = parent.root if parent else hamt.empty()
            try:
                root = hamt.update_by_slot(base, walk.changes.slot, walk.changes.count)
            except (BlobNotFound, IntegrityError, FormatError) as e:
                raise unreadable(e) from None
            finally:
                walk.changes.close()
            self.repo.flush()
            self.repo.check_lock()  # raises if our lock was lost: publish nothing then
        walk.changes.close()  # (a dry run's changes are not applied)
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
                "time": time_ns_of(opts.time) if opts.time else time.time_ns(),
                "host": host,
                "user": getpass.getuser(),
                "paths": sources,
                "source": {
                    "type": "stdin" if opts.stdin is not None else "local",
                    "account": getpass.getuser(),
                    "path": display_path(sources[0]) if opts.stdin is not None else "",
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


__all__ = ["BackupError", "BackupManager", "BackupOptions", "BackupResult", "BackupReporter", "NullBackupReporter"]
