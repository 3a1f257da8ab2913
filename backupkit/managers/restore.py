"""Restore: a snapshot (or a subtree of it) to a directory, or as a ZIP/TAR stream.

Safety: every entry's path is checked before use (absolute, normalized, no ``.``/``..``
component, no NUL); unsafe entries are refused and reported. Directories are created and
entered with ``O_DIRECTORY | O_NOFOLLOW`` and every file is made relative to its parent's
directory descriptor, so nothing is ever written through a symlink, inside or outside the
target (borg CVE-2026-62268; restic security #1445). Hardlinks are made only to regular
files restored in this run.

Nothing lost goes unnamed: the snapshot is walked past damage (``SnapshotTree.walk`` with
``on_error``), so a damaged tree node costs the directories whose listing it holds, each
named, and the walk goes on; a malformed entry is named and skipped; a file whose content
cannot be read is named, and never left partial under its real name: it is created
there only where nothing was, and removed when a blob of it fails; what was there is
replaced only through a temporary name, once complete (``restore_write``). A restore
that is killed leaves its partial files (``restore_write``). The result counts every
problem (``RestoreResult.incomplete``). A full disk stops the restore at once (RestoreError).

Into a directory (``restore_dir``): what is already there is looked at first
(``restore_overwrite``: ``--overwrite``, ``--delete``); directory metadata is applied
after their content, deepest first. Restoring a folder (``path``) puts its contents
straight into the target, as restic does (``keep_path``: at its full path below it). As
an archive: ``restore_archive``. The progress totals: ``restore_totals``.

Into a directory, entries are created in order by the calling thread and file contents
are planned per pack (``objects/packplan.py``): each pack's wanted blobs are read once
and written with ``pwrite`` by the read pool; a file gets its metadata and its real name
when its blobs are written (``restore_dir``). An archive is written in order, its
contents read ahead by a ``ContentReader``.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Protocol

from backupkit.reporters import silent
from backupkit.archive import FORMATS
from backupkit.entry import display_path, name_of, parent_of
from backupkit.errors import BadArgument, PathNotFound, UsageError
from backupkit.filters import select_entries
from backupkit.managers.base import ContentReading
from backupkit.managers.restore_archive import write_archive
from backupkit.managers.restore_dir import DirRestorer
from backupkit.managers.restore_files import MetaPolicy, safe_path
from backupkit.managers.restore_overwrite import DEFAULT_OVERWRITE, UNCHANGED, check_overwrite
from backupkit.managers.restore_totals import Totals
from backupkit.objects.entry import Entry
from backupkit.objects.reader import ContentReader
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot
from backupkit.tree import SnapshotTree, normalize
from backupkit.tuning import DEFAULT_TUNING, Tuning

#: stands in for an ancestor directory whose entry cannot be read
_PLAIN_DIR = Entry(type="d", mode=0o755)


@dataclass(frozen=True)
class RestoreOptions(ContentReading):
    path: str = "/"
    target: str | None = None
    format: str | None = None  # zip, tar, tar.zst (streamed to ``output``)
    output: BinaryIO | None = None
    dry_run: bool = False
    verify: bool = False
    owners: bool | None = None  # None: restore owners when running as root
    sparse: bool = True
    #: --include/--exclude: (path, entry) -> (restore it, look below it); None = everything
    select: Callable[[bytes, Entry], tuple[bool, bool]] | None = None
    #: what to do with files already in the target (``restore_overwrite``)
    overwrite: str = DEFAULT_OVERWRITE
    #: remove what restored directories hold that the snapshot does not
    delete: bool = False
    #: restoring a folder (``path``): False puts its contents straight into the target
    #: (as restic); True writes it at its full path below the target (bk's old layout)
    keep_path: bool = False
    #: skip device nodes, fifos and sockets
    no_special: bool = False
    #: owners by the recorded user and group names where this machine knows them (restic's
    #: --ownership-by-name); default: by the recorded ids (restic, GNU tar --numeric-owner)
    owner_by_name: bool = False
    #: keep set-user-id/set-group-id bits (only ever kept when owners are restored)
    setuid: bool = True
    #: restic's --include-xattr / --exclude-xattr: name patterns of the extended
    #: attributes to set (or, in a TAR stream, to write); none: all (restore_files.xattr_filter)
    include_xattrs: tuple[str, ...] = ()
    exclude_xattrs: tuple[str, ...] = ()


@dataclass(frozen=True)
class RestoreResult:
    """What ``bk restore`` wrote, and every entry it could not restore whole."""

    #: entries restored by type (``others``: symlinks, devices, fifos, sockets) and the
    #: file bytes written
    files: int
    dirs: int
    others: int
    bytes: int
    #: (path, message) of every entry not restored (or restored incompletely) and of
    #: every directory whose contents could not be read
    errors: tuple[tuple[str, str], ...]
    #: files read back and compared with the snapshot (``--verify``), and the paths that
    #: differed
    verified: int
    verify_failures: tuple[str, ...]
    seconds: float
    dry_run: bool
    #: entries already as the snapshot has them (only their metadata refreshed)
    unchanged: int = 0
    unchanged_bytes: int = 0
    #: entries left as they were (``--overwrite if-newer|never``, ``--no-special``)
    skipped: int = 0
    skipped_bytes: int = 0
    #: paths removed from the target (``--delete``; in a dry run: that would be)
    deleted: int = 0
    #: directories whose contents could not be read (a damaged tree node): their
    #: subtrees are missing from the restore
    unreadable: tuple[str, ...] = ()

    @property
    def problems(self) -> int:
        return len(self.errors) + len(self.verify_failures)

    @property
    def incomplete(self) -> bool:
        return self.problems > 0

    def to_json(self) -> dict:
        return {
            "files": self.files,
            "dirs": self.dirs,
            "others": self.others,
            "bytes": self.bytes,
            "errors": [{"path": p, "message": m} for p, m in self.errors],
            "unreadable": list(self.unreadable),
            "verified": self.verified,
            "verify_failures": list(self.verify_failures),
            "unchanged": self.unchanged,
            "unchanged_bytes": self.unchanged_bytes,
            "skipped": self.skipped,
            "skipped_bytes": self.skipped_bytes,
            "deleted": self.deleted,
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
        }


class RestoreReporter(Protocol):
    #: the regular files and their bytes the restore goes through (once, when known)
    def start(self, files: int, size: int) -> None: ...
    def file_done(self, path: str, size: int) -> None: ...
    #: a file not written: already as in the snapshot, or left by --overwrite
    def file_skipped(self, path: str, size: int) -> None: ...
    def bytes_done(self, n: int) -> None: ...
    #: a path removed by --delete (in a dry run: that would be)
    def deleted(self, path: str) -> None: ...
    def error(self, path: str, message: str) -> None: ...


NullRestoreReporter = silent(RestoreReporter)


@dataclass
class _Run:
    """The state of one restore."""

    opts: RestoreOptions
    reporter: RestoreReporter
    reader: ContentReader
    errors: list[tuple[str, str]] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    files: int = 0
    dirs: int = 0
    others: int = 0
    bytes: int = 0
    verified: int = 0
    verify_failures: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    #: names of files being written: ``.bk-restore-<random>-<n>`` (one random per run)
    temp_prefix: bytes = field(default_factory=lambda: b".bk-restore-" + os.urandom(6).hex().encode() + b"-")
    temp_count: int = 0
    policy: MetaPolicy = field(default_factory=MetaPolicy)
    #: the folder restored, whether it is a directory, and whether its path is stripped
    base: bytes = b"/"
    top_is_dir: bool = True
    strip: bool = False
    #: the target directory (bytes), and whether it held nothing when the restore began
    #: (created by it, or given empty: then nothing in it needs to be looked at before
    #: writing)
    target: bytes = b""
    fresh: bool = False
    #: (uid, gid) of a file this restore creates, when known (a fresh target of the
    #: running group that is not set-group-id): its owner is not set again when the
    #: snapshot's is the same
    new_owner: tuple[int, int] | None = None
    #: to a directory: the mode each new file is created with (``restore_mode``)
    modes: Any = None
    #: to a directory: the pack reads planned, the files being written (not yet under
    #: their real names), and those of them with later hardlinked names, by inode
    plan: Any = None
    creator: Any = None  # the pool creating files ahead of their first write
    to_create: list = field(default_factory=list)  # files for its next batch
    pending: set = field(default_factory=set)
    linking: dict = field(default_factory=dict)
    dir_fds: Any = None  # restore_dirfds.DirFds: the directories' descriptors
    #: --delete: the snapshot's names in each directory, and directories not to clear
    expected: dict = field(default_factory=dict)
    no_delete: set = field(default_factory=set)
    unchanged: int = 0
    unchanged_bytes: int = 0
    skipped: int = 0
    skipped_bytes: int = 0
    deleted: int = 0

    def rel_of(self, path: bytes) -> bytes:
        """Where ``path`` goes, relative to the target."""
        if not self.strip:
            return path[1:]
        if path == self.base:
            return b"" if self.top_is_dir else name_of(path)
        return path[len(self.base) + 1 :]

    def left_alone(self, path: bytes, e: Entry, action: str) -> None:
        """An entry not written: ``UNCHANGED`` (already right) or ``SKIP`` (left as it was)."""
        size = (e.size or 0) if e.is_file else 0
        with self.lock:
            if action == UNCHANGED:
                self.unchanged += 1
                self.unchanged_bytes += size
            else:
                self.skipped += 1
                self.skipped_bytes += size
        if e.is_file:
            self.reporter.file_skipped(display_path(path), size)

    def temp_name(self) -> bytes:
        self.temp_count += 1
        return self.temp_prefix + str(self.temp_count).encode()

    def problem(self, path: bytes, why: str) -> None:
        with self.lock:
            self.errors.append((display_path(path), why))
        self.reporter.error(display_path(path), why)

    def walk_error(self, path: bytes, err: Exception, subtree: bool) -> None:
        # --delete never clears a directory whose listing is incomplete
        self.no_delete.add(path)
        self.no_delete.add(parent_of(path))
        if subtree:
            self.unreadable.append(display_path(path))
            self.problem(path, f"cannot read the directory's contents, nothing below it restored: {err}")
        else:
            self.problem(path, f"skipped: {err}")

    def count(self, e: Entry, size: int | None = None) -> None:
        with self.lock:
            if e.type == "f":
                self.files += 1
                self.bytes += (e.size or 0) if size is None else size
            elif e.type == "d":
                self.dirs += 1
            else:
                self.others += 1

    def result(self, seconds: float) -> RestoreResult:
        return RestoreResult(
            files=self.files, dirs=self.dirs, others=self.others, bytes=self.bytes, errors=tuple(self.errors),
            verified=self.verified, verify_failures=tuple(self.verify_failures), seconds=seconds,
            dry_run=self.opts.dry_run, unchanged=self.unchanged, unchanged_bytes=self.unchanged_bytes,
            skipped=self.skipped, skipped_bytes=self.skipped_bytes, deleted=self.deleted,
            unreadable=tuple(self.unreadable),
        )


class RestoreManager(DirRestorer):
    def __init__(self, repo: Repository, reporter: RestoreReporter | None = None, tuning: Tuning = DEFAULT_TUNING) -> None:
        self.repo = repo
        self.reporter = reporter or NullRestoreReporter()
        self.tuning = tuning

    def restore(self, snap: Snapshot, opts: RestoreOptions) -> RestoreResult:
        if opts.format:
            if opts.format not in FORMATS:
                raise BadArgument(f"unknown format {opts.format!r}: use one of {', '.join(FORMATS)}")
            if opts.output is None:
                raise UsageError("no output stream for the archive")
        elif not opts.target:
            raise BadArgument("give --target DIR, or --format zip|tar|tar.zst to stream an archive")
        check_overwrite(opts.overwrite)
        t0 = time.monotonic()
        tree = SnapshotTree(self.repo, snap.root)
        with ContentReader(self.repo, opts.connections, self.tuning) as reader:
            run = _Run(opts, self.reporter, reader)
            with Totals(tree, snap, normalize(opts.path), opts.select, self.reporter):
                if opts.format:
                    write_archive(self, run, snap, tree)
                else:
                    self._to_dir(run, snap, tree)
        return run.result(time.monotonic() - t0)

    # -- the entries -----------------------------------------------------------------------
    def _entries(self, run: _Run, snap: Snapshot, tree: SnapshotTree, ancestors: bool) -> Iterator[tuple[bytes, Entry]]:
        """Entries to restore, parents first, that ``--include``/``--exclude`` keep."""
        walk = self._walk(run, snap, tree, ancestors)
        return select_entries(walk, run.opts.select) if run.opts.select is not None else walk

    def _walk(self, run: _Run, snap: Snapshot, tree: SnapshotTree, ancestors: bool) -> Iterator[tuple[bytes, Entry]]:
        """Entries of the snapshot, parents first: the ancestors of the path (with
        ``ancestors``), then its subtree, walked past damage (each loss reported to
        ``run``). With ``--delete``, the names of each directory are noted in ``run``."""
        base = normalize(run.opts.path)
        run.base = base
        try:
            top = tree.get(base)
        except Exception as err:  # noqa: BLE001 - its subtree may still be readable
            run.problem(base, f"cannot read its entry, restored as a plain directory: {err}")
            top = _PLAIN_DIR
        if top is None:
            raise PathNotFound(f"{display_path(base)} is not in snapshot {snap.short_id}")
        run.top_is_dir = top.is_dir
        anc = []
        p = parent_of(base) if ancestors else b""
        while p:
            try:
                e = tree.get(p)
            except Exception as err:  # noqa: BLE001
                run.problem(p, f"cannot read its entry, restored as a plain directory: {err}")
                e = _PLAIN_DIR
            if e is not None:
                anc.append((p, e))
            p = parent_of(p)
        yield from reversed(anc)
        # A name goes out once. Only a forged snapshot holds a path twice; a second entry
        # would replace the first after a hard link was made to it ("b" -> "a", then "a"
        # a symlink: a tar extractor writes through it). Children come sorted by name, so
        # a repeat follows its first appearance among its siblings: the last name per
        # directory is all that must be remembered.
        last_child: dict[bytes, bytes] = {}
        expected = run.expected if run.opts.delete else None
        for p, e in tree.walk(base, on_error=run.walk_error, top=top):
            if p == b"/" and base != b"/":
                continue
            parent = parent_of(p)
            if expected is not None and p != base:
                expected.setdefault(parent, set()).add(name_of(p))
            if last_child.get(parent) == p:
                run.problem(p, "name appears twice in the snapshot, skipped")
                continue
            last_child[parent] = p
            yield p, e

    def _wants(self, run: _Run, links: bool):
        """Which files of an archive get their content read ahead: not in a dry run, not
        unsafe ones, and with ``links`` not a second name of a hardlinked file."""
        seen: set[tuple[int, int]] = set()

        def wants(key, e: Entry) -> bool:
            path = key[0] if isinstance(key, tuple) else key
            if run.opts.dry_run or not safe_path(path):
                return False
            hk = e.hardlink_key if links else None
            if hk is not None:
                if hk in seen:
                    return False
                seen.add(hk)
            return True

        return wants


__all__ = ["FORMATS", "RestoreManager", "RestoreOptions", "RestoreReporter", "RestoreResult", "NullRestoreReporter", "safe_path"]
