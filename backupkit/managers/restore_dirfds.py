"""The directory descriptors of a restore to a directory.

Every directory is created and opened relative to its parent's descriptor (never through
a symlink). A descriptor is needed while the walk is inside its directory (its entries
are created through it) and while a file of it is still being written (the file is
renamed to its real name, or its later hard-link names are made, through it). Keeping
every one to the end ran out of descriptors on a tree with more directories than
RLIMIT_NOFILE allows (`/usr` has over 14,000), so a directory's descriptor is closed as
soon as the walk has left it and no pending file holds it; the directories' metadata,
set at the end, reopens each one component by component (``O_NOFOLLOW``), from the
descriptors of the last one reopened that are its ancestors too (``open_for_meta``: the
directories come deepest first, siblings together, so most of a path is open already;
opening every path from the target took a `/usr` restore ~90k `openat`s, one per
component, and the mixed benchmark set, restored under its absolute path, 13 per file's
directory).

The walk is depth first: a directory is left when an entry outside it comes.
"""

from __future__ import annotations

import os
from collections import Counter

from backupkit.managers.restore_overwrite import OpenDirs

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
#: most descriptors ``open_for_meta`` keeps open (a path's components, from the target)
META_CHAIN = 64


class DirFds:
    """Descriptors by directory (relative path, b"" for the target itself)."""

    def __init__(self, root_fd: int) -> None:
        self.root_fd = root_fd
        self._fds: dict[bytes, int] = {b"": root_fd}
        self._inside = OpenDirs()  # the directories the walk is in
        self._refs: Counter[int] = Counter()  # descriptor -> pending files that use it
        self._left: set[int] = set()  # descriptors of left directories still held
        #: (name, descriptor) of each component of the directory ``open_for_meta`` opened
        #: last, from the target down (at most META_CHAIN of them)
        self._chain: list[tuple[bytes, int]] = []

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
        caller must close it: the open one, or reopened one component at a time, never
        through a symlink (OSError when that fails), from the deepest of the last reopened
        directory's components that ``rel`` shares (kept open here up to META_CHAIN deep:
        the caller closes only what lies deeper)."""
        fd = self._fds.get(rel)
        if fd is not None and fd >= 0:
            return fd, False
        parts = rel.split(b"/")
        chain = self._chain
        keep, most = 0, min(len(chain), len(parts))
        while keep < most and chain[keep][0] == parts[keep]:
            keep += 1
        while len(chain) > keep:
            os.close(chain.pop()[1])
        cur, owned = (chain[-1][1] if chain else self.root_fd), False
        try:
            for part in parts[keep:]:
                nxt = os.open(part, _DIR_FLAGS, dir_fd=cur)
                if owned:
                    os.close(cur)
                elif len(chain) < META_CHAIN:
                    chain.append((part, nxt))
                else:
                    owned = True
                cur = nxt
        except OSError:
            if owned:
                os.close(cur)
            raise
        return cur, owned

    def close_all(self) -> None:
        for _name, fd in self._chain:
            os.close(fd)
        self._chain.clear()
        for fd in {*self._fds.values(), *self._left, *self._refs}:
            if fd >= 0:
                os.close(fd)
        self._fds.clear()
        self._left.clear()
        self._refs.clear()
        self._inside.leave_all()


__all__ = ["DirFds"]
