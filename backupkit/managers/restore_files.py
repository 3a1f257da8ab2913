"""Writing snapshot entries into a local directory, safely: the file system side of a
restore (``managers/restore.py`` decides what to write; this writes it).

Every call works relative to a directory descriptor (``pfd``) with ``O_NOFOLLOW`` or
``follow_symlinks=False``, so nothing is written through a symlink. Regular files are
filled by the restore's read pool (``restore_write``); ``all_zero`` decides which blobs
become holes when ``sparse``.
"""

from __future__ import annotations

import errno
import fnmatch
import grp
import os
import pwd
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

from backupkit.objects.entry import Entry

SEEK_DATA = getattr(os, "SEEK_DATA", 3)
_ZERO = bytes(1024 * 1024)


def mkdir_at(pfd: int, name: bytes) -> int:
    """Create directory ``name`` (if missing) and open it; refuses a symlink in its place."""
    try:
        os.mkdir(name, 0o700, dir_fd=pfd)
    except FileExistsError:
        pass
    # O_NOFOLLOW: an existing symlink in place of the directory is refused (ELOOP)
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            raise OSError(err.errno, "a non-directory (or symlink) is in the way") from None
        raise


def remove_at(pfd: int, name: bytes) -> None:
    """Remove whatever non-directory is at ``name``; EISDIR for a directory."""
    try:
        st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise OSError(errno.EISDIR, "a directory is in the way")
    os.unlink(name, dir_fd=pfd)


def safe_path(path: bytes) -> bool:
    """True if ``path`` is absolute, normalized and free of ``.``, ``..`` and NUL."""
    if not path.startswith(b"/") or b"\x00" in path:
        return False
    if path == b"/":
        return True
    # no empty, "." or ".." part (the part-by-part loop it replaces: tests/managers/
    # test_restore_hostile.py): substring tests, no list of parts for every entry
    return not (b"//" in path or b"/./" in path or b"/../" in path or path.endswith((b"/", b"/.", b"/..")))


def lstat_at(pfd: int, name: bytes) -> os.stat_result | None:
    """What is at ``name`` (not following a symlink), or None."""
    if pfd < 0:
        return None
    try:
        return os.stat(name, dir_fd=pfd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def open_dir_at(pfd: int, name: bytes) -> int:
    """An existing directory ``name`` opened read-only (never through a symlink), or -1."""
    if pfd < 0:
        return -1
    try:
        return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
    except OSError:
        return -1


def remove_tree_at(pfd: int, name: bytes, path: bytes, on_removed: Callable[[bytes], None], dry_run: bool) -> None:
    """Remove ``name`` and, for a directory, everything below it; ``on_removed(path)``
    for each, children first. Never follows a symlink: a symlink is removed itself, and a
    directory is entered with ``O_NOFOLLOW`` relative to its parent's descriptor (no
    recursion: any depth)."""
    st = lstat_at(pfd, name)
    if st is None:
        return
    if not stat.S_ISDIR(st.st_mode):
        if not dry_run:
            os.unlink(name, dir_fd=pfd)
        on_removed(path)
        return
    fd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=pfd)
    stack = [(fd, pfd, name, path, iter(sorted(os.listdir(fd))))]  # (fd, parent fd, name, path, names)
    try:
        while stack:
            fd, parent, nm, p, names = stack[-1]
            child = next(names, None)
            if child is None:
                stack.pop()
                os.close(fd)
                if not dry_run:
                    os.rmdir(nm, dir_fd=parent)
                on_removed(p)
                continue
            c = os.fsencode(child)
            cst = lstat_at(fd, c)
            if cst is None:
                continue
            if stat.S_ISDIR(cst.st_mode):
                cfd = os.open(c, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=fd)
                stack.append((cfd, fd, c, p + b"/" + c, iter(sorted(os.listdir(cfd)))))
            else:
                if not dry_run:
                    os.unlink(c, dir_fd=fd)
                on_removed(p + b"/" + c)
    finally:
        for frame in stack:
            os.close(frame[0])


def make_special(pfd: int, name: bytes, e: Entry) -> None:
    """Create a symlink, fifo or device node for ``e`` at ``name`` (replacing a file)."""
    remove_at(pfd, name)
    mode = e.mode if e.mode is not None else 0o600
    if e.type == "l":
        os.symlink(e.target or b"", name, dir_fd=pfd)
    elif e.type == "p":
        os.mkfifo(name, mode, dir_fd=pfd)
    else:
        os.mknod(name, (stat.S_IFCHR if e.type == "c" else stat.S_IFBLK) | mode, e.rdev or 0, dir_fd=pfd)


def xattr_filter(include: Sequence[str], exclude: Sequence[str]) -> Callable[[bytes], bool] | None:
    """restic's ``--include-xattr`` / ``--exclude-xattr``: which extended attributes a
    restore sets, by name pattern (``fnmatch``: ``user.*``); with includes only the names
    one matches, then less those an exclude matches. None: every one (the default)."""
    if not include and not exclude:
        return None
    inc = [os.fsencode(p) for p in include]
    exc = [os.fsencode(p) for p in exclude]

    def wanted(name: bytes) -> bool:
        if inc and not any(fnmatch.fnmatchcase(name, p) for p in inc):
            return False
        return not any(fnmatch.fnmatchcase(name, p) for p in exc)

    return wanted


@dataclass(frozen=True)
class MetaPolicy:
    """Whose files a restore makes and which mode bits it keeps.

    ``owners``: chown to the snapshot's owner (root's default); ``by_name``: the owner's
    and group's names as this machine knows them, falling back to the recorded ids
    (restic's ``--ownership-by-name``, GNU tar's default); else the recorded ids (restic's
    default, GNU tar's ``--numeric-owner``: right for a system restore from a rescue
    system, whose user names map to other ids); ``setuid``: keep
    the set-user-id and set-group-id bits of files. Without ``owners`` those bits are
    always dropped (a set-uid-root program restored by a user would run as that user, a
    surprise GNU tar avoids the same way).
    """

    owners: bool = False
    by_name: bool = False
    setuid: bool = True
    #: which extended attributes to set (``xattr_filter``); None: all
    xattrs: Callable[[bytes], bool] | None = None

    def ids(self, e: Entry) -> tuple[int, int]:
        uid = e.uid if e.uid is not None else -1
        gid = e.gid if e.gid is not None else -1
        if self.by_name:
            uid, gid = _named_id("user", e.user, uid), _named_id("group", e.group, gid)
        return uid, gid

    def mode(self, e: Entry) -> int:
        mode = e.mode if e.mode is not None else 0o644
        if e.type != "d" and not (self.owners and self.setuid):
            mode &= ~(stat.S_ISUID | stat.S_ISGID)
        return mode


@lru_cache(maxsize=2048)
def _id_by_name(db: str, name: str) -> int | None:
    """The id this machine gives user (``db`` "user") or group ``name``, or None."""
    try:
        return pwd.getpwnam(name).pw_uid if db == "user" else grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def _named_id(db: str, name: str | None, recorded: int) -> int:
    found = _id_by_name(db, name) if name else None
    return recorded if found is None else found


def apply_meta(
    fd: int | None, at: tuple[int, bytes] | None, e: Entry, policy: MetaPolicy, on_error: Callable[[str], None],
    owner: tuple[int, int] | None = None, mode_set: bool = False,
) -> None:
    """Owner, xattrs, mode and times; on an fd, or on (dir_fd, name) without following.
    ``owner``: the (uid, gid) the file is known to have (one this restore created); no
    ``chown`` when the snapshot's are the same. ``mode_set``: the file was created with
    its final mode (``restore_mode``: no set-id bit a chown could clear, no xattrs), so
    it is not set again."""
    if fd is not None:
        kw: dict = {}
        target: int | bytes = fd
    else:
        assert at is not None
        target = at[1]
        kw = {"dir_fd": at[0], "follow_symlinks": False}
    if policy.owners and not (owner is not None and _same_owner(policy.ids(e), owner)):
        try:
            os.chown(target, *policy.ids(e), **kw)
        except OSError:
            pass
    if e.xattrs and fd is not None:
        for k, v in e.xattrs:
            if policy.xattrs is not None and not policy.xattrs(k):
                continue
            try:
                os.setxattr(fd, k, v)
            except OSError as err:
                on_error(f"xattr {k!r}: {err.strerror}")
    if e.type != "l" and not mode_set:
        mode = policy.mode(e)
        if fd is not None:
            os.chmod(fd, mode)
        else:
            os.chmod(target, mode, dir_fd=at[0])  # type: ignore[index]
    mt = e.mtime or 0
    os.utime(target, ns=(mt, mt), **kw)


def _same_owner(ids: tuple[int, int], owner: tuple[int, int]) -> bool:
    return all(want in (-1, have) for want, have in zip(ids, owner))


def verify_at(
    pfd: int, name: bytes, size: int, items: Iterable[bytes | int], blob_size: Callable[[bytes], int], blob_id: Callable[[bytes], bytes]
) -> bool:
    """True if the file at ``name`` is ``size`` bytes and holds exactly ``items`` (blob
    ids are re-hashed from what is read; holes must read as zeros)."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW, dir_fd=pfd)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_size != size:
            return False
        for item in items:
            if isinstance(item, int):
                if not _zeros_ahead(fd, item):
                    return False
                continue
            want = blob_size(bytes(item)) or -1
            b = os.read(fd, want) if want > 0 else b""
            while want > 0 and len(b) < want:
                more = os.read(fd, want - len(b))
                if not more:
                    break
                b += more
            if blob_id(b) != bytes(item):
                return False
        return not os.read(fd, 1)
    finally:
        os.close(fd)


def all_zero(data: bytes) -> bool:
    """True if every byte is zero; most data is rejected by its first or last byte
    without a scan (``bytes.count`` of every blob cost a sixth of restore's GIL time),
    the rest by a compare that stops at the first byte that is not zero (``_ZERO[:n]``
    copied n bytes first: 4% of a `/usr` restore's GIL time)."""
    if data[0] or data[-1]:
        return False
    n = len(data)
    if n <= len(_ZERO):
        return _ZERO.startswith(data)
    view, step = memoryview(data), len(_ZERO)
    return all(_ZERO.startswith(view[i : i + step]) for i in range(0, n, step))


def _zeros_ahead(fd: int, n: int) -> bool:
    """True if the next ``n`` bytes at fd's offset are zeros; leaves the offset after them.

    Holes are skipped with SEEK_DATA, so verifying a sparse file reads only its data.
    """
    pos = os.lseek(fd, 0, os.SEEK_CUR)
    end = pos + n
    while pos < end:
        try:
            pos = os.lseek(fd, pos, SEEK_DATA)
        except OSError as err:
            if err.errno != errno.ENXIO:  # no SEEK_DATA here: read everything
                os.lseek(fd, pos, os.SEEK_SET)
            else:  # only a hole up to the end of the file
                pos = end
        if pos >= end:
            break
        b = os.read(fd, min(end - pos, len(_ZERO)))
        if not b or b != _ZERO[: len(b)]:
            return False
        pos += len(b)
    os.lseek(fd, end, os.SEEK_SET)
    return True
