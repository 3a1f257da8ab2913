"""The directory descriptors of a restore to a directory.

Every directory is created and opened relative to its parent's descriptor (never through
a symlink). A descriptor is needed while the walk is inside its directory (its entries
are created through it) and while a file of it is still being written (the file is
renamed to its real name, or its later hard-link names are made, through it). Keeping
every one to the end ran out of descriptors on a tree with more directories than
RLIMIT_NOFILE allows (`/usr` has over 14,000), so a directory's descriptor is closed as
soon as the walk has left it and no pending file holds it; the directories' metadata,
set at the end, reopens each one component by component (``O_NOFOLLOW``).

The walk is depth first: a directory is left when an entry outside it comes.
"""

from __future__ import annotations

import os
from collections import Counter

from backupkit.managers.restore_overwrite import OpenDirs


class DirFds:
    """Descriptors by directory (relative path, b"" for the target itself)."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._fds: dict[bytes, int] = {b"": root_fd}
        self._inside = OpenDirs()  # the directories the walk is in
        self._refs: Counter[int] = Counter()  # descriptor -> pending files that use it
        self._left: set[int] = set()  # descriptors of left directories still held

    def get(self, rel: bytes, default: int | None = None) -> int | None:
        return self._fds.get(rel, default)

    def __getitem__(self, rel: bytes) -> int:
        return self._fds[rel]

    def opened(self, rel: bytes, fd: int) -> None:
        """Directory ``rel`` was created (or found) as ``fd`` by the walk, which is now in it."""
        self._fds[rel] = fd
        self._inside.enter(rel, b"")

    def leave_for(self, rel: bytes) -> None:
        """The walk reached the entry ``rel``: close the directories it is not inside of
        (those no pending file holds; the others when their last file is done)."""
        for left, _path in self._inside.leave_for(rel):
            fd = self._fds.pop(left, -1)
            if fd < 0:
                continue
            if self._refs[fd]:
                self._left.add(fd)
            else:
                os.close(fd)

    def hold(self, fd: int) -> None:
        """A pending file (or a later name of one) will use ``fd`` when it completes."""
        if fd >= 0:
            self._refs[fd] += 1

    def release(self, fd: int) -> None:
        if fd < 0:
            return
        self._refs[fd] -= 1
        if self._refs[fd] <= 0:
            del self._refs[fd]
            if fd in self._left:
                self._left.discard(fd)
                os.close(fd)

    def open_for_meta(self, rel: bytes) -> tuple[int, bool]:
        """A descriptor of directory ``rel`` for setting its metadata, and whether the
        caller must close it: the open one, or reopened from the target one component at
        a time, never through a symlink (OSError when that fails)."""
        fd = self._fds.get(rel)
        if fd is not None and fd >= 0:
            return fd, False
        cur = self.root_fd
        try:
            for part in rel.split(b"/"):
                nxt = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=cur)
                if cur != self.root_fd:
                    os.close(cur)
                cur = nxt
        except OSError:
            if cur != self.root_fd:
                os.close(cur)
            raise
        return cur, True

    def close_all(self) -> None:
        for fd in {*self._fds.values(), *self._left, *self._refs}:
            if fd >= 0:
                os.close(fd)
        self._fds.clear()
        self._left.clear()
        self._refs.clear()
        self._inside.leave_all()


__all__ = ["DirFds"]
