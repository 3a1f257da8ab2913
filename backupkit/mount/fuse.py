"""The FUSE adapter: serves a MountFS at a mount point through mfusepy (libfuse 3).

Imported only by ``bk mount`` (mfusepy loads libfuse when imported). ``serve`` runs in
the foreground until the file system is unmounted (``fusermount3 -u``, ``umount``) or the
process gets SIGINT, SIGTERM or SIGHUP: libfuse's own handlers end its loop and unmount,
and ``serve`` returns normally.
"""

from __future__ import annotations

import errno
import os
import stat
import threading

from backupkit.errors import MountError
from backupkit.mount.fs import MountFS, fs_error


#: What every mount asks libfuse for. Snapshots never change, so the kernel may keep
#: what it read: pages (``kernel_cache``), attributes and names (``attr_timeout``,
#: ``entry_timeout``, seconds). A name found missing is asked again after a second
#: (``negative_timeout``): MountFS reads the snapshot list again now and then, so the
#: name of a snapshot made since can appear.
MOUNT_OPTIONS = {
    "foreground": True,  # ``serve`` returns when the file system is unmounted
    "ro": True,
    "fsname": "backupkit",
    "subtype": "backupkit",
    "default_permissions": True,  # the kernel checks the stored modes and owners
    "use_ino": True,  # the stored inode numbers: hardlinks stay recognisable
    "readdir_ino": True,
    "kernel_cache": True,
    "attr_timeout": 60,
    "entry_timeout": 60,
    "negative_timeout": 1,
}


def check_mountpoint(mountpoint: str) -> str:
    """The mount point as an absolute path; MountError if it cannot be mounted on."""
    path = os.path.abspath(mountpoint)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MountError(f"mount point {mountpoint} does not exist") from None
    except OSError as e:
        raise MountError(f"mount point {mountpoint}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise MountError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(path):
        raise MountError(f"mount point {mountpoint} is busy: something is mounted there already")
    try:
        if os.listdir(path):
            raise MountError(f"mount point {mountpoint} is not empty")
    except OSError as e:
        raise MountError(f"mount point {mountpoint}: {e.strerror}") from None
    return path


def load_fuse():
    """The mfusepy module; MountError if it or libfuse 3 is not installed."""
    try:
        import mfusepy
    except ImportError:
        raise MountError("mount needs the Python package mfusepy (pip install mfusepy)") from None
    except (OSError, RuntimeError) as e:  # mfusepy raises these when libfuse is missing
        raise MountError(f"mount needs libfuse 3 (apt-get install fuse3): {e}") from None
    if not os.path.exists("/dev/fuse"):
        raise MountError("mount needs FUSE: /dev/fuse does not exist (is the fuse kernel module loaded?)")
    return mfusepy


def serve(fs: MountFS, mountpoint: str, allow_other: bool = False, debug: bool = False) -> None:
    """Mount ``fs`` read-only at ``mountpoint`` and serve it until it is unmounted."""
    mfusepy = load_fuse()
    path = check_mountpoint(mountpoint)
    served = threading.Event()
    ops = _operations(mfusepy, fs, on_init=served.set)
    options = dict(MOUNT_OPTIONS)
    if allow_other:
        options["allow_other"] = True
    if debug:
        options["debug"] = True
    try:
        mfusepy.FUSE(ops, path, **options)
    except RuntimeError as e:
        if not _ended_by_signal(e, served.is_set(), path):
            raise MountError(f"cannot mount at {mountpoint} (libfuse returned {e}; is it busy, or is FUSE unavailable?)") from None


#: What fuse_main returns when its loop ended with an error.
_LOOP_ERROR = 8


def _ended_by_signal(e: RuntimeError, served: bool, path: str) -> bool:
    """Whether fuse_main's failure is the end asked for by SIGINT, SIGTERM or SIGHUP.

    Since libfuse 3.13 the signal handler records the signal's number as the session's
    error, so a loop stopped by Ctrl-C returns 8 ("error in the event loop") where older
    versions returned 0. The file system was served (libfuse called ``init``) and libfuse
    unmounted it on the way out: that is the normal end. A mount that failed never got
    to ``init``.
    """
    return served and e.args[:1] == (_LOOP_ERROR,) and not os.path.ismount(path)


def _operations(mfusepy, fs: MountFS, on_init=lambda: None):
    """An mfusepy Operations object whose methods call ``fs``; ``on_init`` runs once
    libfuse has mounted the file system and starts serving it."""

    class Ops(mfusepy.Operations):
        use_ns = True

        def init(self, path):
            on_init()

        def getattr(self, path, fh=None):
            return fs.getattr(path)

        def readdir(self, path, fh):
            return [".", ".."] + [(name, attrs, 0) for name, attrs in fs.readdir(path)]

        def readlink(self, path):
            return fs.readlink(path)

        def open(self, path, flags):
            return fs.open(path, flags)

        def read(self, path, size, offset, fh):
            return fs.read(path, size, offset, fh)

        def release(self, path, fh):
            fs.release(fh)
            return 0

        def getxattr(self, path, name, position=0):
            return fs.getxattr(path, name)

        def listxattr(self, path):
            return fs.listxattr(path)

        def statfs(self, path):
            return fs.statfs()

        def access(self, path, amode):
            if amode & os.W_OK:
                raise fs_error(errno.EROFS)
            return 0

    return Ops()


__all__ = ["check_mountpoint", "load_fuse", "serve"]
