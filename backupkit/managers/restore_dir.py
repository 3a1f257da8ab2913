"""Restore into a directory: the writing side of ``managers/restore.py``.

Entries come parents first; each is written relative to its parent's directory
descriptor (``restore_files``), so nothing is written through a symlink. What is already
in the target is looked at first (``restore_overwrite``): a file as the snapshot has it
is not rewritten (its metadata is refreshed), ``--overwrite`` decides for the others,
and ``--delete`` clears each restored directory of what the snapshot's lacks when the
stream leaves it. A file with nothing at its place is written under its real name
(created with ``O_EXCL``: a restore that is killed leaves it partial, and the next one
rewrites it); one that replaces what is there is written under a temporary name and
renamed over it when complete. Either is created with its final mode when that is safe
(``restore_mode``: then no chmod when it is complete), else 0600.
Directory metadata is applied last, deepest first, so restoring children does not
disturb a directory's mtime.
"""

from __future__ import annotations

import errno
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from backupkit.entry import display_path, join, name_of
from backupkit.errors import RestoreError
from backupkit.managers.restore_files import (
    MetaPolicy, apply_meta, lstat_at, xattr_filter, make_special, mkdir_at, open_dir_at, remove_at, remove_tree_at, safe_path,
    verify_at,
)
from backupkit.managers.restore_overwrite import NEW, SKIP, UNCHANGED, OpenDirs, file_action, special_action
from backupkit.managers.restore_dirfds import DirFds
from backupkit.managers.restore_mode import CreateModes
from backupkit.managers.restore_write import PendingFile, file_window
from backupkit.objects.entry import Entry
from backupkit.tree import SnapshotTree, normalize

if TYPE_CHECKING:
    from backupkit.managers.restore import _Run
    from backupkit.snapshot import Snapshot

_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def _empty(dir_fd: int) -> bool:
    with os.scandir(dir_fd) as it:
        return next(it, None) is None


def _disk_full(path: bytes, err: OSError) -> RestoreError:
    return RestoreError(f"{err.strerror or 'no space left on device'} while restoring {display_path(path)}: restore stopped")


def _precreate_all(files: list[PendingFile]) -> None:
    for f in files:
        f.precreate()


class DirRestorer:
    """The directory side of ``RestoreManager`` (which has ``repo`` and ``reporter``)."""

    def _same(self, run: _Run, pfd: int, name: bytes, e: Entry) -> bool:
        """True if the file at ``name`` holds the snapshot's content (read and hashed)."""
        r = run.reader
        try:
            return verify_at(pfd, name, e.size or 0, r.content_list(e), r.blob_size, self.repo.sealer.blob_id)
        except Exception:  # noqa: BLE001 - a content list that cannot be read: rewrite (and fail there)
            return False

    def _file_action(self, run: _Run, pfd: int, name: bytes, e: Entry) -> str:
        st = None if run.fresh else lstat_at(pfd, name)  # a target this restore made holds nothing else
        return file_action(run.opts.overwrite, e, st, lambda: self._same(run, pfd, name, e))

    # -- to a directory --------------------------------------------------------------------
    def _to_dir(self, run: _Run, snap: Snapshot, tree: SnapshotTree) -> None:
        opts = run.opts
        target = os.path.abspath(opts.target)  # type: ignore[arg-type]
        if os.path.lexists(target) and not os.path.isdir(target):
            raise RestoreError(f"target {target} exists and is not a directory")
        owners = (os.geteuid() == 0) if opts.owners is None else opts.owners
        run.policy = MetaPolicy(
            owners=owners, by_name=opts.owner_by_name, setuid=opts.setuid,
            xattrs=xattr_filter(opts.include_xattrs, opts.exclude_xattrs),
        )
        run.strip = not opts.keep_path and normalize(opts.path) != b"/"
        # the snapshot's "/" entry is applied to the target only if this restore makes it:
        # never chmod/chown a directory that was there (the user's home, "/")
        created = not os.path.lexists(target)
        if not opts.dry_run:
            os.makedirs(target, exist_ok=True)
            root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY)
        else:  # a dry run looks at what is there, read-only
            root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY) if not created else -1
        run.target = os.fsencode(target)
        # fresh: the target holds nothing (made now, or an empty directory given), so what
        # is at an entry's place need not be looked at
        run.fresh = not opts.dry_run and (created or _empty(root_fd))
        st = os.fstat(root_fd) if run.fresh else None
        if st is not None and not st.st_mode & stat.S_ISGID and st.st_gid == os.getegid():
            # every directory in it is made by this restore (mode 0700 until the end), in
            # one of the running group's that is not set-group-id: a file created in one is
            # the running user's and group's, whether the file system gives new files the
            # creator's group or the directory's (mount option grpid)
            run.new_owner = (os.geteuid(), os.getegid())
        if not opts.dry_run:
            run.modes = CreateModes(root_fd, run.fresh, run.policy)
        dir_fds = run.dir_fds = DirFds(root_fd)
        dirs_meta: list[tuple[bytes, Entry]] = []
        links: dict[tuple[int, int], bytes] = {}
        open_dirs = OpenDirs()
        run.plan = run.reader.plan(file_window(self.tuning))
        run.creator = ThreadPoolExecutor(max_workers=max(1, self.tuning.restore_create_threads), thread_name_prefix="bk-create")
        try:
            for path, e in self._entries(run, snap, tree, ancestors=not run.strip):
                if not safe_path(path):
                    run.problem(path, "unsafe path in snapshot, refused")
                    continue
                rel = run.rel_of(path)
                if opts.delete:
                    for d in open_dirs.leave_for(rel):
                        self._clear(run, dir_fds, *d)
                dir_fds.leave_for(rel)
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
                        self._file(run, links, root_fd, pfd, name, rel, path, e)
                    else:
                        self._special(run, pfd, name, path, e)
                except OSError as err:
                    if err.errno in _DISK_FULL:
                        raise _disk_full(path, err) from None
                    run.problem(path, f"cannot restore: {err.strerror or err}")
                self._finish_all(run, links, root_fd, run.plan.done())
            self._create_ahead(run)
            for batch in run.plan.finish():
                self._finish_all(run, links, root_fd, batch)
            if opts.delete:
                for d in open_dirs.leave_all():
                    self._clear(run, dir_fds, *d)
            for rel, e in sorted(dirs_meta, key=lambda x: -x[0].count(b"/") - (1 if x[0] else 0)):
                if opts.dry_run:
                    continue
                try:
                    fd, reopened = dir_fds.open_for_meta(rel)
                    try:
                        self._apply_meta(run, fd, None, e)
                    finally:
                        if reopened:
                            os.close(fd)
                except OSError as err:
                    run.problem(b"/" + rel, f"cannot set metadata: {err.strerror}")
        finally:
            run.plan.abort()
            run.creator.shutdown(wait=True, cancel_futures=True)
            for f in run.pending:
                f.discard()
            run.pending.clear()
            dir_fds.close_all()

    def _dir(self, run: _Run, dir_fds: DirFds, pfd: int, name: bytes, rel: bytes, path: bytes, e: Entry, open_dirs: OpenDirs) -> None:
        # a file or symlink where the snapshot has a directory is refused by mkdir_at (not
        # replaced, unlike restic: a symlink to another disk is how many trees are built)
        dir_fds.opened(rel, open_dir_at(pfd, name) if run.opts.dry_run else mkdir_at(pfd, name))
        run.count(e)
        if run.opts.delete and dir_fds[rel] >= 0:
            open_dirs.enter(rel, path)

    def _file(self, run: _Run, links: dict, root_fd: int, pfd: int, name: bytes, rel: bytes, path: bytes, e: Entry) -> None:
        dry = run.opts.dry_run
        key = e.hardlink_key
        first = run.linking.get(key) if key is not None else None
        if first is not None:  # its first name is still being written: linked after it
            first.links.append((pfd, name, rel, path, e))
            run.dir_fds.hold(pfd)
            return
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
            self.reporter.file_done(display_path(path), 0)
            return
        action = self._file_action(run, pfd, name, e)
        if action in (SKIP, UNCHANGED):
            if action == UNCHANGED and not dry:
                fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=pfd)
                try:
                    self._apply_meta(run, fd, None, e)
                finally:
                    os.close(fd)
                if run.opts.verify and run.opts.overwrite != "always":  # taken on size and mtime: check it
                    self._verify(run, pfd, name, path, e)
            run.left_alone(path, e, action)
            if key is not None:
                links[key] = rel
            return
        if dry:
            run.count(e)
            self.reporter.file_done(display_path(path), e.size or 0)
            if key is not None:
                links[key] = rel
            return
        self._start_file(run, pfd, name, rel, path, e, in_place=action == NEW)

    def _clear(self, run: _Run, dir_fds: DirFds, rel: bytes, path: bytes) -> None:
        """--delete: remove what directory ``rel`` holds that the snapshot's ``path`` does
        not (and --include/--exclude would restore), children first."""
        names = run.expected.pop(path, set())
        fd = dir_fds.get(rel, -1)
        if fd < 0 or path in run.no_delete:
            return
        base = run.base
        if not (base == b"/" or path == base or path.startswith(base + b"/")):
            return  # an ancestor of the restored folder (its old layout): not the snapshot's listing
        where = run.target + (b"/" + rel if rel else b"")
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

    def _start_file(self, run: _Run, pfd: int, name: bytes, rel: bytes, path: bytes, e: Entry, in_place: bool) -> None:
        """Plan the file's content (created and written by the pools; completed by
        ``_finish``): under its real name when nothing is there (``in_place``, created
        with ``O_EXCL``), else under a temporary name renamed over what is there when
        complete. A content list that cannot be read is named and nothing is created;
        one that does not add up to the file's size fails the file."""
        size = e.size or 0
        try:
            items = run.reader.content_list(e)
        except Exception as err:  # noqa: BLE001 - a damaged content blob costs this file only
            run.problem(path, f"not restored: {err}")
            return
        mode = run.modes.final(e, pfd, rel.rpartition(b"/")[0])
        f = PendingFile(pfd, name if in_place else run.temp_name(), name, rel, path, e, run.opts.sparse, self.reporter.bytes_done, mode)
        run.pending.add(f)
        run.dir_fds.hold(pfd)
        if size:
            run.to_create.append(f)
            if len(run.to_create) >= self.tuning.restore_create_batch:
                self._create_ahead(run)
        if e.hardlink_key is not None:
            run.linking[e.hardlink_key] = f
        have = run.plan.add(f, items)
        if have is not None and have != size:
            f.fail(RestoreError(f"content is {have} bytes, the snapshot says {size}"))

    def _create_ahead(self, run: _Run) -> None:
        """Hand the files waiting for it to the create pool, as one task."""
        if run.to_create:
            run.creator.submit(_precreate_all, run.to_create)
            run.to_create = []

    def _finish_all(self, run: _Run, links: dict, root_fd: int, files: list[PendingFile]) -> None:
        for f in files:
            run.pending.discard(f)
            if f.entry.hardlink_key is not None:
                run.linking.pop(f.entry.hardlink_key, None)
            ok = self._finish(run, f)
            if ok and f.entry.hardlink_key is not None:
                links[f.entry.hardlink_key] = f.rel  # later names of this file link to it
            run.dir_fds.release(f.pfd)
            for pfd, name, rel, path, e in f.links:
                try:
                    if ok:
                        self._file(run, links, root_fd, pfd, name, rel, path, e)
                    else:
                        run.problem(path, f"not restored: its first name {display_path(f.path)} was not restored")
                except OSError as err:
                    if err.errno in _DISK_FULL:
                        raise _disk_full(path, err) from None
                    run.problem(path, f"cannot restore: {err.strerror or err}")
                finally:
                    run.dir_fds.release(pfd)

    def _finish(self, run: _Run, f: PendingFile) -> bool:
        """Complete a written file: metadata, then its real name (unless written under
        it); False (and the file this restore created removed) when it could not be
        restored."""
        e, path = f.entry, f.path
        done = False
        try:
            if f.error is not None:
                raise f.error
            apply_meta(f.complete(), None, e, run.policy, self._meta_error, run.new_owner, mode_set=f.mode is not None)
            if f.tmp != f.name:
                os.rename(f.tmp, f.name, src_dir_fd=f.pfd, dst_dir_fd=f.pfd)  # EISDIR: a directory is in the way
            done = True
        except OSError as err:
            if err.errno in _DISK_FULL:
                raise _disk_full(path, err) from None
            run.problem(path, f"not restored: {err.strerror or err}")
        except Exception as err:  # noqa: BLE001 - a damaged blob must not stop the other files
            run.problem(path, f"not restored: {err}")
        finally:
            if done:
                f.close()
            else:
                f.discard()
        if not done:
            return False
        written = e.size or 0
        run.count(e, written)
        self.reporter.file_done(display_path(path), written)
        if run.opts.verify:
            self._verify(run, f.pfd, f.name, path, e)
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
        apply_meta(fd, at, e, run.policy, self._meta_error)

    def _meta_error(self, msg: str) -> None:
        self.reporter.error("", msg)
