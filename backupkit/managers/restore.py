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
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from backupkit.archive import FORMATS, TarWriter, open_archive
from backupkit.entry import display_path, name_of, parent_of
from backupkit.errors import BadArgument, PathNotFound, RestoreError, UsageError
from backupkit.filters import select_entries
from backupkit.objects.entry import Entry
from backupkit.managers.restore_files import apply_meta, make_special, mkdir_at, remove_at, verify_at, write_parts
from backupkit.objects.reader import ContentReader, Parts
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot
from backupkit.tree import SnapshotTree, normalize
from backupkit.tuning import DEFAULT_TUNING, Tuning

_ZERO = bytes(1024 * 1024)
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
            "dry_run": self.dry_run,
            "seconds": round(self.seconds, 3),
        }


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


@dataclass
class _Run:
    """The state of one restore."""

    opts: RestoreOptions
    reporter: RestoreReporter
    reader: ContentReader
    owners: bool = False
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

    def temp_name(self) -> bytes:
        self.temp_count += 1
        return self.temp_prefix + str(self.temp_count).encode()

    def problem(self, path: bytes, why: str) -> None:
        with self.lock:
            self.errors.append((display_path(path), why))
        self.reporter.error(display_path(path), why)

    def walk_error(self, path: bytes, err: Exception, subtree: bool) -> None:
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
        t0 = time.monotonic()
        with ContentReader(self.repo, opts.connections, self.tuning) as reader:
            run = _Run(opts, self.reporter, reader)
            if opts.format:
                self._archive(run, snap)
            else:
                self._to_dir(run, snap)
        return run.result(time.monotonic() - t0)

    # -- the entries -----------------------------------------------------------------------
    def _entries(self, run: _Run, snap: Snapshot) -> Iterator[tuple[bytes, Entry]]:
        """Entries to restore, parents first, that ``--include``/``--exclude`` keep."""
        walk = self._walk(run, snap)
        return select_entries(walk, run.opts.select) if run.opts.select is not None else walk

    def _walk(self, run: _Run, snap: Snapshot) -> Iterator[tuple[bytes, Entry]]:
        """Entries of the snapshot, parents first: the ancestors of the path, then its
        subtree, walked past damage (each loss reported to ``run``)."""
        base = normalize(run.opts.path)
        tree = SnapshotTree(self.repo, snap.root)
        try:
            top = tree.get(base)
        except Exception as err:  # noqa: BLE001 - its subtree may still be readable
            run.problem(base, f"cannot read its entry, restored as a plain directory: {err}")
            top = _PLAIN_DIR
        if top is None:
            raise PathNotFound(f"{display_path(base)} is not in snapshot {snap.short_id}")
        anc = []
        p = parent_of(base)
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
        for p, e in tree.walk(base, on_error=run.walk_error, top=top):
            if p == b"/" and base != b"/":
                continue
            parent = parent_of(p)
            if last_child.get(parent) == p:
                run.problem(p, "name appears twice in the snapshot, skipped")
                continue
            last_child[parent] = p
            yield p, e

    def _wants(self, run: _Run, links: bool):
        """Which files get their content read ahead: not in a dry run, not unsafe ones,
        and with ``links`` not a second name of a hardlinked file."""
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

    # -- to a directory --------------------------------------------------------------------
    def _to_dir(self, run: _Run, snap: Snapshot) -> None:
        opts = run.opts
        target = os.path.abspath(opts.target)  # type: ignore[arg-type]
        if os.path.lexists(target) and not os.path.isdir(target):
            raise RestoreError(f"target {target} exists and is not a directory")
        run.owners = (os.geteuid() == 0) if opts.owners is None else opts.owners
        # the snapshot's "/" entry is applied to the target only if this restore makes it:
        # never chmod/chown a directory that was there (the user's home, "/")
        created = not os.path.lexists(target)
        if not opts.dry_run:
            os.makedirs(target, exist_ok=True)
        root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY) if not opts.dry_run else -1
        dir_fds: dict[bytes, int] = {b"": root_fd}
        dirs_meta: list[tuple[bytes, Entry]] = []
        links: dict[tuple[int, int], bytes] = {}
        try:
            for path, e, parts in run.reader.files(self._entries(run, snap), self._wants(run, links=True)):
                if not safe_path(path):
                    run.problem(path, "unsafe path in snapshot, refused")
                    continue
                rel = path.lstrip(b"/")
                if not rel:
                    if created:
                        dirs_meta.append((b"", e))
                    continue
                parent_rel, name = rel.rpartition(b"/")[0], name_of(path)
                pfd = dir_fds.get(parent_rel)
                if pfd is None:
                    run.problem(path, "parent directory was not restored, skipped")
                    continue
                if opts.dry_run:
                    run.count(e)
                    if e.is_dir:
                        dir_fds[rel] = -1
                    continue
                try:
                    if e.is_dir:
                        dir_fds[rel] = mkdir_at(pfd, name)
                        dirs_meta.append((rel, e))
                        run.count(e)
                    elif e.is_file:
                        key = e.hardlink_key
                        if key is not None and key in links:
                            remove_at(pfd, name)
                            os.link(links[key], name, src_dir_fd=root_fd, dst_dir_fd=pfd, follow_symlinks=False)
                            run.count(e, 0)
                            continue
                        if self._write_file(run, pfd, name, path, e, parts if parts is not None else run.reader.parts(e)):
                            if key is not None:
                                links[key] = rel  # later names of this file link to it
                    else:
                        self._special(run, pfd, name, path, e)
                except OSError as err:
                    if err.errno in _DISK_FULL:
                        raise _disk_full(path, err) from None
                    run.problem(path, f"cannot restore: {err.strerror or err}")
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
        make_special(pfd, name, e)
        self._apply_meta(run, None, (pfd, name), e)
        run.count(e)

    def _apply_meta(self, run: _Run, fd: int | None, at: tuple[int, bytes] | None, e: Entry) -> None:
        apply_meta(fd, at, e, run.owners, lambda msg: self.reporter.error("", msg))

    # -- archives --------------------------------------------------------------------------
    def _archive(self, run: _Run, snap: Snapshot) -> None:
        opts = run.opts
        with open_archive(opts.format, opts.output) as w:  # type: ignore[arg-type]
            tar = isinstance(w, TarWriter)
            entries = self._archive_entries(run, snap)
            for (path, rel), e, parts in run.reader.files(entries, self._wants(run, links=tar)):
                if opts.dry_run:
                    run.count(e)
                    continue
                content = None
                if e.is_file and not (tar and w.is_link(e)):  # type: ignore[union-attr]
                    content = self._content_stream(run, path, e, parts if parts is not None else run.reader.parts(e))
                w.add(rel, e, content)
                run.count(e)
                if e.is_file:
                    self.reporter.file_done(display_path(path), e.size or 0)

    def _archive_entries(self, run: _Run, snap: Snapshot) -> Iterator[tuple[tuple[bytes, bytes], Entry]]:
        # As for a directory restore, an entry goes out only below a directory that went
        # out (and, by ``_entries``, a name goes out once): an extractor would write a
        # member "s/x" through an earlier member "s" that is a symlink.
        dirs = {b"/"}
        for path, e in self._entries(run, snap):
            if path == b"/":
                continue
            if not safe_path(path):
                run.problem(path, "unsafe path in snapshot, refused")
                continue
            parent = parent_of(path)
            if parent not in dirs:
                run.problem(path, "parent is not a directory in the archive, skipped")
                continue
            if e.is_dir:
                dirs.add(path)
            yield (path, path.lstrip(b"/")), e

    def _content_stream(self, run: _Run, path: bytes, e: Entry, parts: Parts) -> Iterator[bytes]:
        """Exactly the entry's size in bytes: what can be read, zeros for the rest (the
        member's size is written before its content, so a loss cannot shorten it)."""
        size = e.size or 0
        done = 0
        try:
            for part in parts:
                if isinstance(part, int):
                    n = min(part, size - done)
                    while n > 0:
                        k = min(n, len(_ZERO))
                        yield _ZERO[:k]
                        n -= k
                        done += k
                else:
                    part = part[: size - done]
                    self.reporter.bytes_done(len(part))
                    done += len(part)
                    yield part
        except Exception as err:  # noqa: BLE001 - named, and the archive stays well-formed
            run.problem(path, f"content unreadable from byte {done}, zeros in the archive: {err}")
        else:
            if done != size:
                run.problem(path, f"content is {done} bytes, the snapshot says {size}; zeros in the archive")
        while done < size:
            k = min(size - done, len(_ZERO))
            yield _ZERO[:k]
            done += k




__all__ = ["FORMATS", "RestoreManager", "RestoreOptions", "RestoreReporter", "RestoreResult", "NullRestoreReporter", "safe_path"]
