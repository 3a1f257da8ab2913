"""The mode a restore creates each new regular file with: its final one when the file
would end with it anyway, so no ``fchmod`` is needed when it is complete (one system
call a file: 20k for a 20k-file restore, 122k for `/usr`); else 0600, and the final mode
is set when the file is complete (``restore_files.apply_meta``), as for every file the
restore leaves alone or only refreshes.

A file is created with its final mode only when all of these hold:

- the mode has no bit outside 0755: no set-uid, set-gid or sticky bit (a partial file
  must never be one, and root's chown, which comes after the creation, clears set-id
  bits), and no group or other write (a partial file must never be writable by others);
- the entry has no extended attributes: a user other than root cannot set them on a file
  without write permission, and an ACL among them would change the mode;
- the umask takes none of its bits away. It is read once per restore from
  /proc/self/status (Linux 4.7+), never with ``os.umask`` (which sets it to read it:
  process-wide, a race with any thread creating a file); unreadable: no file is;
- the directory has no default ACL (where one is, it decides the new file's mode bits
  instead of the umask) and is on a local file system whose creation mode is the one
  asked for less the umask (``_PLAIN_FS``; on NFS, CIFS or FUSE the server may apply its
  own mask at creation, as a Samba share's ``create mask`` or sshfs's sftp server's
  umask do, where a chmod sets the mode as given). In a target the restore found empty
  every directory is made by it, so the target's own answer holds for all of them; in
  any other each directory is asked once.

The owner does not matter: a file created without owner write (0444) still gives the
descriptor it was created with write access (permissions are checked only when an
existing file is opened), so ``ftruncate`` and ``pwrite`` work, for any user.
"""

from __future__ import annotations

import errno
import os
from functools import lru_cache

from backupkit.managers.restore_files import MetaPolicy
from backupkit.objects.entry import Entry

#: the mode bits a file may be created with (partial, its final mode already)
PLAIN_BITS = 0o755
#: file systems (statfs ``f_type``) that create a file with the mode asked for less the
#: umask, or what the directory's default ACL allows: ext2/3/4, xfs, btrfs, tmpfs, f2fs,
#: zfs, bcachefs, overlayfs
_PLAIN_FS = frozenset({0xEF53, 0x58465342, 0x9123683E, 0x01021994, 0xF2F52010, 0x2FC12FC1, 0xCA451A4E, 0x794C7630})
_ACL_DEFAULT = "system.posix_acl_default"
_NO_XATTR = (errno.ENODATA, errno.EOPNOTSUPP, errno.ENOTSUP)


def process_umask(status: str = "/proc/self/status") -> int | None:
    """The process's umask, from the ``Umask:`` line of ``status``; None when it cannot be
    read (no /proc, a kernel before 4.7)."""
    try:
        with open(status, "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line[6:].strip(), 8)
    except (OSError, ValueError):
        pass
    return None


@lru_cache(maxsize=1)
def _libc():
    import ctypes

    return ctypes.CDLL(None, use_errno=True)


def _fs_type(fd: int) -> int | None:
    """The statfs ``f_type`` of the file system ``fd`` is on, or None. It is the first
    field of ``struct statfs``, a C long on Linux (on s390x an int: no value we know is
    read there, so no file is created with its final mode)."""
    try:
        import ctypes

        buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on 64-bit Linux
        if _libc().fstatfs(fd, buf) != 0:
            return None
        return ctypes.c_ulong.from_buffer(buf).value & 0xFFFFFFFF
    except (OSError, AttributeError):
        return None


def creates_as_asked(dir_fd: int) -> bool:
    """True if a file created in directory ``dir_fd`` gets the mode it is created with
    less the umask: the directory is on a file system of ``_PLAIN_FS`` and has no
    default ACL (or one that cannot be read: False)."""
    if _fs_type(dir_fd) not in _PLAIN_FS:
        return False
    try:
        os.getxattr(dir_fd, _ACL_DEFAULT)
    except OSError as err:
        return err.errno in _NO_XATTR
    return False


class CreateModes:
    """The creation modes of one restore into a directory (its walking thread only)."""

    def __init__(self, root_fd: int, fresh: bool, policy: MetaPolicy) -> None:
        self.policy = policy
        self.umask = process_umask()
        #: a target found empty: every directory is the restore's, as the target is
        self._all = (self.umask is not None and creates_as_asked(root_fd)) if fresh else None
        self._dirs: dict[bytes, bool] = {}  # any other: each directory's answer

    def final(self, e: Entry, dir_fd: int, dir_rel: bytes) -> int | None:
        """The mode to create ``e``'s file with in directory ``dir_rel`` (open as
        ``dir_fd``) when it is its final one (no chmod when complete); None: 0600, and
        the mode set when the file is complete."""
        if self.umask is None or e.xattrs:
            return None
        mode = self.policy.mode(e)
        if mode & ~PLAIN_BITS or mode & self.umask:
            return None
        return mode if self._plain_dir(dir_fd, dir_rel) else None

    def _plain_dir(self, dir_fd: int, dir_rel: bytes) -> bool:
        if self._all is not None:
            return self._all
        plain = self._dirs.get(dir_rel)
        if plain is None:
            plain = self._dirs[dir_rel] = creates_as_asked(dir_fd)
        return plain


__all__ = ["CreateModes", "PLAIN_BITS", "creates_as_asked", "process_umask"]
