"""Files being written by a directory restore: created under their real name when
nothing was there, else under a temporary name; filled by the read pool with ``pwrite``
(``objects/packplan.py`` calls ``write`` and ``fail``), and handed back to
``restore_dir`` to be completed (metadata, and the rename of a temporary name) or
removed.

A file is created ahead of its first write on a pool of its own (``precreate``, handed
over ``Tuning.restore_create_batch`` files at a time; creating a file costs 1-3 ms on a
cold or busy disk: done in parallel, not one after another on the walking thread, nor
serially by the worker writing a pack's blobs), or by
the first write if that comes first, with ``O_EXCL`` (never over anything, never through
a symlink); a file without blobs is created when it is completed. A hole in its content
list, or an all-zero blob when ``sparse``, is simply never written: the file is given
its full size (``ftruncate``) when it is completed, only if its last bytes were not
written (``complete``; one system call a file less than sizing each at creation). It is
created with its final mode when ``restore_mode`` finds that safe (a mode within 0755,
no xattrs, nothing the umask or a default ACL would take away: no chmod when it is
complete), else 0600 (its mode set when complete). Nothing here renames: a temporary
name is replaced by the real one only in ``DirRestorer._finish``, once every blob is
written.

A file written under its real name (restic's way: no rename per file) is partial there
until it is complete; if the restore is killed, it stays so. It does not have the
snapshot's mtime (set last, after every blob) and may be shorter than the snapshot's
size, so a re-run with ``--overwrite if-changed`` (the default) or ``always`` rewrites
it; ``if-newer`` and ``never`` leave it as it is (docs/design.md, "Restore"). Its mode
is 0600 or already its final one, which is then never set-uid, set-gid or sticky and
never writable by group or others.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable

from backupkit.managers.restore_files import all_zero
from backupkit.objects.entry import Entry
from backupkit.tuning import Tuning


class PendingFile:
    """One file being written as ``tmp`` in directory ``pfd`` (its real name ``name``, or
    a temporary name); ``fd`` is -1 until it is created (by ``write`` or ``create``).
    ``mode``: the final mode it is created with (``restore_mode``), or None: created 0600,
    its mode set when it is complete."""

    __slots__ = ("fd", "pfd", "tmp", "name", "rel", "path", "entry", "mode", "size", "sparse", "on_bytes", "error", "links",
                 "remaining", "end", "_lock", "_ended")

    def __init__(self, pfd: int, tmp: bytes, name: bytes, rel: bytes, path: bytes, entry: Entry,
                 sparse: bool, on_bytes: Callable[[int], None], mode: int | None = None) -> None:
        self.fd = -1
        self.pfd, self.tmp, self.name, self.rel, self.path = pfd, tmp, name, rel, path
        self.entry = entry
        self.mode = mode
        self.size = entry.size or 0
        self.sparse = sparse
        self.on_bytes = on_bytes
        self.error: BaseException | None = None
        #: later names of this hardlinked file, linked once it has its real name
        self.links: list[tuple] = []
        self.remaining = 0  # kept by the plan (``objects/packplan.py``)
        #: the end of the furthest bytes written (threads may race on it: it may come out
        #: lower than the truth, never higher, which costs only a needless ``ftruncate``)
        self.end = 0
        self._lock = threading.Lock()
        self._ended = False  # closed or discarded: a late ``precreate`` must not create it again

    def create(self) -> int:
        """The file's descriptor, creating the file first if nobody has."""
        if self.fd < 0:
            with self._lock:
                if self.fd < 0:
                    self.fd = create_pending(self.pfd, self.tmp, self.mode)
        return self.fd

    def precreate(self) -> None:
        """Create the file ahead of its first write (on the restore's create pool)."""
        with self._lock:
            if self._ended or self.error is not None or self.fd >= 0:
                return
            try:
                self.fd = create_pending(self.pfd, self.tmp, self.mode)
            except OSError as err:
                self.fail(err)

    def write(self, offset: int, data: bytes) -> None:
        if self.error is not None:
            return
        fd = self.create()
        n = len(data)
        if not (self.sparse and n >= 4096 and all_zero(data)):
            mv = memoryview(data)
            while mv:
                k = os.pwrite(fd, mv, offset)
                mv = mv[k:]
                offset += k
            if offset > self.end:
                self.end = offset
        self.on_bytes(n)

    def complete(self) -> int:
        """The file's descriptor once every blob is written, at its full size: extended
        (``ftruncate``) only when its last bytes were a hole or skipped zeros."""
        fd = self.create()
        if self.end < self.size:
            os.ftruncate(fd, self.size)
        return fd

    def fail(self, err: BaseException) -> None:
        if self.error is None:
            self.error = err

    def close(self) -> None:
        with self._lock:
            self._ended = True
            if self.fd >= 0:
                os.close(self.fd)
                self.fd = -1

    def discard(self) -> None:
        """Close and remove the file (if this restore created it: ``O_EXCL``)."""
        with self._lock:
            self._ended = True
            if self.fd < 0:
                return
            try:
                os.close(self.fd)
            except OSError:
                pass
            self.fd = -1
            try:
                os.unlink(self.tmp, dir_fd=self.pfd)
            except OSError:
                pass


def create_pending(pfd: int, tmp: bytes, mode: int | None = None) -> int:
    """Create ``tmp`` in ``pfd`` (never through a symlink, never an existing file), empty,
    with ``mode`` (None: 0600); its descriptor, writable whatever the mode (0444
    included: permissions apply only to opening a file that exists)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    return os.open(tmp, flags, 0o600 if mode is None else mode, dir_fd=pfd)


def file_window(tuning: Tuning) -> int:
    """Files the restore's plan may hold open at once, within RLIMIT_NOFILE (the CLI
    raises it to the hard limit): 512 descriptors are left for the rest, and each pending
    file may hold two (its own, and its directory's until it is done: ``restore_dirfds``)."""
    files = tuning.restore_open_files
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    except (ImportError, OSError, ValueError):
        return min(files, 128)
    if soft == getattr(resource, "RLIM_INFINITY", -1) or soft <= 0:
        return files
    return max(16, min(files, (soft - 512) // 2))


__all__ = ["PendingFile", "create_pending", "file_window"]
