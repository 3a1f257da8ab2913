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
cannot be read is named, and never left under its real name: it is written under a
temporary name and renamed when complete. The result counts every problem
(``RestoreResult.incomplete``). A full disk stops the restore at once (RestoreError).

Directory metadata (mode, owner, times, xattrs) is applied after their content, deepest
first, so restoring children does not disturb a directory's mtime.

Entries are written one at a time, in order, by the calling thread; file contents come
from a ``ContentReader``, which reads the blobs of the files ahead meanwhile.
"""

from __future__ import annotations

import errno
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from backupkit.archive import FORMATS
from backupkit.entry import display_path, join, name_of, parent_of
from backupkit.errors import BadArgument, PathNotFound, RestoreError, UsageError
from backupkit.filters import select_entries
from backupkit.objects.entry import Entry
from backupkit.managers.restore_archive import write_archive
from backupkit.managers.restore_files import (
    MetaPolicy, apply_meta, lstat_at, make_special, mkdir_at, open_dir_at, remove_at, remove_tree_at, verify_at, write_parts,
)
from backupkit.managers.restore_overwrite import (
    DEFAULT_OVERWRITE, SKIP, UNCHANGED, OpenDirs, check_overwrite, file_action, signature, special_action,
)
from backupkit.managers.restore_totals import Totals
from backupkit.objects.reader import ContentReader, Parts
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot
from backupkit.tree import SnapshotTree, normalize
from backupkit.tuning import DEFAULT_TUNING, Tuning

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
#: stands in for an ancestor directory whose entry cannot be read
_PLAIN_DIR = Entry(type="d", mode=0o755)


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
    #: owners by id only (no name lookup)
    numeric_owner: bool = False
    #: keep set-user-id/set-group-id bits (only ever kept when owners are restored)
    setuid: bool = True


@dataclass(frozen=True)
class RestoreResult:
    files: int
    dirs: int
    others: int
    bytes: int
    #: (path, message) of every entry not restored (or restored incompletely) and of
    #: every directory whose contents could not be read
    errors: tuple[tuple[str, str], ...]
    verified: int
    verify_failures: tuple[str, ...]
    seconds: float
    dry_run: bool
    #: directories whose contents could not be read (a damaged tree node): their
    #: subtrees are missing from the restore
    unreadable: tuple[str, ...] = ()
    #: entries already as the snapshot has them (only their metadata refreshed)
    unchanged: int = 0
    unchanged_bytes: int = 0
    #: entries left as they were (``--overwrite if-newer|never``, ``--no-special``)
    skipped: int = 0
    skipped_bytes: int = 0
    #: paths removed from the target (``--delete``; in a dry run: that would be)
    deleted: int = 0

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


class NullRestoreReporter:
    def start(self, files: int, size: int) -> None: ...
    def file_done(self, path: str, size: int) -> None: ...
    def file_skipped(self, path: str, size: int) -> None: ...
    def bytes_done(self, n: int) -> None: ...
    def deleted(self, path: str) -> None: ...
    def error(self, path: str, message: str) -> None: ...


def safe_path(path: bytes) -> bool:
    """True if ``path`` is absolute, normalized and free of ``.``, ``..`` and NUL."""
    if not path.startswith(b"/") or b"\x00" in path:
        return False
    if path == b"/":
        return True
    parts = path[1:].split(b"/")
    return all(p and p not in (b".", b"..") for p in parts)


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
    #: the target existed before: look at what is there before writing
    check_existing: bool = False
    #: ``rel -> (signature, action)`` decided while reading ahead (``--overwrite always``
    #: hashes a file once)
    predicted: dict = field(default_factory=dict)
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
            self.files, self.dirs, self.others, self.bytes, tuple(self.errors), self.verified,
            tuple(self.verify_failures), seconds, self.opts.dry_run, tuple(self.unreadable),
            self.unchanged, self.unchanged_bytes, self.skipped, self.skipped_bytes, self.deleted,
        )


def _disk_full(path: bytes, err: OSError) -> RestoreError:
    return RestoreError(f"{err.strerror or 'no space left on device'} while restoring {display_path(path)}: restore stopped")


class RestoreManager:
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

    def _wants(self, run: _Run, links: bool, root_fd: int = -1):
        """Which files get their content read ahead: not in a dry run, not unsafe ones,
        with ``links`` not a second name of a hardlinked file, and not one that is
        already in the target as the snapshot has it (or that --overwrite leaves)."""
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
            if run.check_existing and root_fd >= 0:
                rel = run.rel_of(path)
                try:
                    st = os.stat(rel, dir_fd=root_fd, follow_symlinks=False)
                except OSError:
                    return True
                action = file_action(run.opts.overwrite, e, st, lambda: self._same(run, root_fd, rel, e))
                run.predicted[rel] = (signature(st), action)
                return action not in (SKIP, UNCHANGED)
            return True

        return wants

    def _same(self, run: _Run, pfd: int, name: bytes, e: Entry) -> bool:
        """True if the file at ``name`` holds the snapshot's content (read and hashed)."""
        r = run.reader
        try:
            return verify_at(pfd, name, e.size or 0, r.content_list(e), r.blob_size, self.repo.sealer.blob_id)
        except Exception:  # noqa: BLE001 - a content list that cannot be read: rewrite (and fail there)
            return False

    def _file_action(self, run: _Run, pfd: int, name: bytes, rel: bytes, e: Entry) -> str:
        st = lstat_at(pfd, name)
        pred = run.predicted.pop(rel, None)
        if st is not None and pred is not None and pred[0] == signature(st):
            return pred[1]
        return file_action(run.opts.overwrite, e, st, lambda: self._same(run, pfd, name, e))

    # -- to a directory --------------------------------------------------------------------
    def _to_dir(self, run: _Run, snap: Snapshot, tree: SnapshotTree) -> None:
        opts = run.opts
        target = os.path.abspath(opts.target)  # type: ignore[arg-type]
        if os.path.lexists(target) and not os.path.isdir(target):
            raise RestoreError(f"target {target} exists and is not a directory")
        owners = (os.geteuid() == 0) if opts.owners is None else opts.owners
        run.policy = MetaPolicy(owners=owners, by_name=not opts.numeric_owner, setuid=opts.setuid)
        run.strip = not opts.keep_path and normalize(opts.path) != b"/"
        # the snapshot's "/" entry is applied to the target only if this restore makes it:
        # never chmod/chown a directory that was there (the user's home, "/")
        created = not os.path.lexists(target)
        run.check_existing = not created
        if not opts.dry_run:
            os.makedirs(target, exist_ok=True)
            root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        else:  # a dry run looks at what is there, read-only
            root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY) if not created else -1
        self._target = os.fsencode(target)
        dir_fds: dict[bytes, int] = {b"": root_fd}
        dirs_meta: list[tuple[bytes, Entry]] = []
        links: dict[tuple[int, int], bytes] = {}
        open_dirs = OpenDirs()
        try:
            entries = self._entries(run, snap, tree, ancestors=not run.strip)
            for path, e, parts in run.reader.files(entries, self._wants(run, True, root_fd)):
                if not safe_path(path):
                    run.problem(path, "unsafe path in snapshot, refused")
                    continue
                rel = run.rel_of(path)
                if opts.delete:
                    for d in open_dirs.leave_for(rel):
                        self._clear(run, dir_fds, *d)
                if not rel:
                    if created:
                        dirs_meta.append((b"", e))
                    if opts.delete and run.top_is_dir:
                        open_dirs.enter(b"", path)
                    continue
                parent_rel, name = rel.rpartition(b"/")[0], name_of(path)
                pfd = dir_fds.get(parent_rel)
                if pfd is None:
                    run.problem(path, "parent directory was not restored, skipped")
                    continue
                if opts.no_special and e.type in ("c", "b", "p", "s"):
                    run.left_alone(path, e, SKIP)
                    continue
                try:
                    if e.is_dir:
                        self._dir(run, dir_fds, pfd, name, rel, path, e, open_dirs)
                        if dir_fds[rel] >= 0 and not opts.dry_run:
                            dirs_meta.append((rel, e))
                    elif e.is_file:
                        self._file(run, links, root_fd, pfd, name, rel, path, e, parts)
                    else:
                        self._special(run, pfd, name, path, e)
                except OSError as err:
                    if err.errno in _DISK_FULL:
                        raise _disk_full(path, err) from None
                    run.problem(path, f"cannot restore: {err.strerror or err}")
            if opts.delete:
                for d in open_dirs.leave_all():
                    self._clear(run, dir_fds, *d)
            for rel, e in sorted(dirs_meta, key=lambda x: -x[0].count(b"/") - (1 if x[0] else 0)):
                if opts.dry_run:
                    continue
                try:
                    self._apply_meta(run, dir_fds[rel], None, e)
                except OSError as err:
                    run.problem(b"/" + rel, f"cannot set metadata: {err.strerror}")
        finally:
            for fd in dir_fds.values():
                if fd >= 0:
                    os.close(fd)

    def _dir(self, run: _Run, dir_fds: dict, pfd: int, name: bytes, rel: bytes, path: bytes, e: Entry, open_dirs: OpenDirs) -> None:
        # a file or symlink where the snapshot has a directory is refused by mkdir_at (not
        # replaced, unlike restic: a symlink to another disk is how many trees are built)
        if run.opts.dry_run:
            dir_fds[rel] = open_dir_at(pfd, name)
        else:
            dir_fds[rel] = mkdir_at(pfd, name)
        run.count(e)
        if run.opts.delete and dir_fds[rel] >= 0:
            open_dirs.enter(rel, path)

    def _file(self, run: _Run, links: dict, root_fd: int, pfd: int, name: bytes, rel: bytes, path: bytes, e: Entry, parts) -> None:
        dry = run.opts.dry_run
        key = e.hardlink_key
        if key is not None and key in links:  # a later name of a hardlinked file
            st = lstat_at(pfd, name)
            if st is not None:
                first = lstat_at(root_fd, links[key]) if root_fd >= 0 else None
                if first is not None and (first.st_dev, first.st_ino) == (st.st_dev, st.st_ino):
                    run.left_alone(path, e.replace(size=0), UNCHANGED)
                    return
                mode = run.opts.overwrite
                if mode == "never" or (mode == "if-newer" and (e.mtime or 0) <= st.st_mtime_ns):
                    run.left_alone(path, e.replace(size=0), SKIP)
                    return
            if not dry:
                remove_at(pfd, name)
                os.link(links[key], name, src_dir_fd=root_fd, dst_dir_fd=pfd, follow_symlinks=False)
            run.count(e, 0)
            return
        action = self._file_action(run, pfd, name, rel, e)
        if action in (SKIP, UNCHANGED):
            if action == UNCHANGED and not dry:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=pfd)
                try:
                    self._apply_meta(run, fd, None, e)
                finally:
                    os.close(fd)
            run.left_alone(path, e, action)
            if key is not None:
                links[key] = rel
            return
        if dry:
            run.count(e)
            if key is not None:
                links[key] = rel
            return
        if self._write_file(run, pfd, name, path, e, parts if parts is not None else run.reader.parts(e)):
            if key is not None:
                links[key] = rel  # later names of this file link to it

    def _clear(self, run: _Run, dir_fds: dict, rel: bytes, path: bytes) -> None:
        """--delete: remove what directory ``rel`` holds that the snapshot's ``path`` does
        not (and --include/--exclude would restore), children first."""
        names = run.expected.pop(path, set())
        fd = dir_fds.get(rel, -1)
        if fd < 0 or path in run.no_delete:
            return
        where = self._target + (b"/" + rel if rel else b"")
        select = run.opts.select
        for name in sorted(os.listdir(fd)):
            bname = os.fsencode(name)
            if bname in names or bname.startswith(run.temp_prefix):
                continue
            child = join(path, bname)
            if select is not None:
                st = lstat_at(fd, bname)
                if st is None or not select(child, Entry(type="d" if stat.S_ISDIR(st.st_mode) else "f"))[0]:
                    continue
            try:
                remove_tree_at(fd, bname, where + b"/" + bname, self._removed(run), run.opts.dry_run)
            except OSError as err:
                run.problem(child, f"cannot delete: {err.strerror or err}")

    def _removed(self, run: _Run):
        def removed(p: bytes) -> None:
            with run.lock:
                run.deleted += 1
            self.reporter.deleted(display_path(p))

        return removed

    def _write_file(self, run: _Run, pfd: int, name: bytes, path: bytes, e: Entry, parts: Parts) -> bool:
        """Write one file under a temporary name, rename it when complete; False (and
        the temporary file removed) when it could not be restored."""
        tmp = run.temp_name()
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=pfd)
        except OSError as err:
            if err.errno in _DISK_FULL:
                raise _disk_full(path, err) from None
            run.problem(path, f"cannot create: {err.strerror}")
            return False
        done = False
        try:
            size = e.size or 0
            written = write_parts(fd, parts, run.opts.sparse, self.reporter.bytes_done)
            if written != size:
                raise RestoreError(f"content is {written} bytes, the snapshot says {size}")
            self._apply_meta(run, fd, None, e)
            os.rename(tmp, name, src_dir_fd=pfd, dst_dir_fd=pfd)  # EISDIR: a directory is in the way
            done = True
        except OSError as err:
            if err.errno in _DISK_FULL:
                raise _disk_full(path, err) from None
            run.problem(path, f"not restored: {err.strerror or err}")
        except Exception as err:  # noqa: BLE001 - a damaged blob must not stop the other files
            run.problem(path, f"not restored: {err}")
        finally:
            os.close(fd)
            if not done:
                try:
                    os.unlink(tmp, dir_fd=pfd)
                except OSError:
                    pass
        if not done:
            return False
        run.count(e, written)
        self.reporter.file_done(display_path(path), written)
        if run.opts.verify:
            self._verify(run, pfd, name, path, e)
        return True

    def _verify(self, run: _Run, pfd: int, name: bytes, path: bytes, e: Entry) -> None:
        r = run.reader
        ok = verify_at(pfd, name, e.size or 0, r.content_list(e), r.blob_size, self.repo.sealer.blob_id)
        with run.lock:
            if ok:
                run.verified += 1
            else:
                run.verify_failures.append(display_path(path))
        if not ok:
            self.reporter.error(display_path(path), "verification failed: content differs from the snapshot")

    def _special(self, run: _Run, pfd: int, name: bytes, path: bytes, e: Entry) -> None:
        if e.type == "s":
            run.count(e)
            return  # sockets are recorded, not recreated (like restic)
        if e.type in ("c", "b") and os.geteuid() != 0:
            run.problem(path, "device nodes need root, skipped")
            return
        st = lstat_at(pfd, name)
        action = special_action(run.opts.overwrite, e, st, lambda: os.readlink(name, dir_fd=pfd))
        if action in (SKIP, UNCHANGED):
            if action == UNCHANGED and not run.opts.dry_run:
                self._apply_meta(run, None, (pfd, name), e)
            run.left_alone(path, e, action)
            return
        if not run.opts.dry_run:
            make_special(pfd, name, e)
            self._apply_meta(run, None, (pfd, name), e)
        run.count(e)

    def _apply_meta(self, run: _Run, fd: int | None, at: tuple[int, bytes] | None, e: Entry) -> None:
        apply_meta(fd, at, e, run.policy, lambda msg: self.reporter.error("", msg))



__all__ = ["FORMATS", "RestoreManager", "RestoreOptions", "RestoreReporter", "RestoreResult", "NullRestoreReporter", "safe_path"]
