"""The sftp: store's work on one SFTP channel (``sftp.py`` holds the store).

The layout is the local store's: object ``name`` is the file ``root/<name>``. A write
goes to a ``.tmp-*`` file in the target directory (``write_temp``; the directory and its
parents are made on demand, ``make_dir``), fsynced with ``fsync@openssh.com`` when the
server has it; the store then renames it over the name. ``walk_files`` walks the tree
for the listing (``list_objects``) and for the sweep of abandoned temp files
(``sweep_temp``). ``map_os_error`` turns an ``OSError`` the server answered into the
StoreError tree.
"""

from __future__ import annotations

import errno
import re
import secrets
import stat as stat_module
from collections.abc import Callable, Iterator

import paramiko

from backupkit.errors import ObjectNotFound, StoreError, StorePermissionError
from backupkit.store.base import ObjectInfo, ObjectSource, iter_pieces
from backupkit.store.sshconn import TRANSIENT

TEMP_PREFIX = ".tmp-"
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def make_dir(sftp: paramiko.SFTPClient, directory: str, host: str) -> None:
    """Create ``directory`` and any missing parents: one mkdir when the parent exists
    (the usual case: a new ``data/`` shard), walking up only as far as needed."""
    try:
        sftp.mkdir(directory, 0o700)
        return
    except FileNotFoundError:
        parent = directory.rsplit("/", 1)[0] if "/" in directory.strip("/") else ""
        if not parent or parent == directory:
            raise StorePermissionError(f"cannot create {directory} on {host}") from None
        make_dir(sftp, parent, host)
    except OSError:
        pass  # it exists (sftp-server answers a plain failure), or we may not create it
    else:
        return
    try:
        sftp.mkdir(directory, 0o700)
        return
    except OSError:
        pass  # created meanwhile by another writer, or refused: the stat tells
    try:
        if not stat_module.S_ISDIR(sftp.stat(directory).st_mode or 0):
            raise StoreError(f"{directory} on {host} is not a directory") from None
    except FileNotFoundError:
        raise StorePermissionError(f"cannot create {directory} on {host}") from None


def write_temp(sftp: paramiko.SFTPClient, path: str, data: bytes | ObjectSource, fsync: bool, host: str) -> str:
    """Write ``data`` (bytes, or an ObjectSource read 1 MiB at a time) to a new temp file
    beside ``path``; return the temp file's path."""
    directory = path.rsplit("/", 1)[0]
    tmp = f"{directory}/{TEMP_PREFIX}{secrets.token_hex(8)}"
    try:
        # Open first: the folder usually exists, and checking it costs round trips.
        try:
            f = sftp.open(tmp, "wb")
        except FileNotFoundError:
            make_dir(sftp, directory, host)
            f = sftp.open(tmp, "wb")
        with f:
            f.set_pipelined(True)
            if isinstance(data, ObjectSource):
                with data.reader() as r:
                    for piece in iter_pieces(r):
                        f.write(piece)
            elif data:
                f.write(data)
            if fsync:
                _fsync(sftp, f)
    except BaseException:
        remove_quietly(sftp, tmp)
        raise
    return tmp


def _fsync(sftp: paramiko.SFTPClient, f: paramiko.SFTPFile) -> None:
    """``fsync@openssh.com`` on an open file (skipped if the server lacks it)."""
    try:
        sftp._request(paramiko.sftp.CMD_EXTENDED, "fsync@openssh.com", f.handle)  # type: ignore[attr-defined]
    except OSError as exc:
        if "unsupported" not in str(exc).lower() and "operation" not in str(exc).lower():
            raise


def remove_quietly(sftp: paramiko.SFTPClient, path: str) -> None:
    try:
        sftp.remove(path)
    except (OSError, *TRANSIENT):
        pass


def walk_files(
    sftp: paramiko.SFTPClient, top: str, rel: str = "", first: str = "", skip: Callable[[str], bool] = lambda n: False
) -> Iterator[tuple[str, str, paramiko.SFTPAttributes]]:
    """(directory, path relative to ``top`` after ``rel``, attributes) of every entry
    below ``top`` that is not a directory. Names for which ``skip`` is true are passed
    over, directories included, and so are names in ``top`` itself that do not start
    with ``first``; a directory that vanishes meanwhile is left out."""
    stack = [(top, rel, first)]
    while stack:
        directory, below, must_start = stack.pop()
        try:
            entries = sftp.listdir_attr(directory)
        except FileNotFoundError:
            continue
        for e in entries:
            n = e.filename
            if not n.startswith(must_start) or n in (".", "..") or skip(n):
                continue
            if stat_module.S_ISDIR(e.st_mode or 0):
                stack.append((f"{directory}/{n}", f"{below}{n}/", ""))
            else:
                yield directory, below + n, e


def _not_an_object(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) or not _SEGMENT_RE.match(name)


def list_objects(sftp: paramiko.SFTPClient, top: str, rel: str, first: str) -> list[ObjectInfo]:
    """The objects below ``top`` (names relative to the root: ``rel`` + the path below
    ``top``) whose path below ``top`` starts with ``first``; temp files and names bk
    never writes are left out."""
    return [
        ObjectInfo(name, e.st_size or 0, float(e.st_mtime or 0))
        for _d, name, e in walk_files(sftp, top, rel, first, _not_an_object)
        if stat_module.S_ISREG(e.st_mode or 0)
    ]


def sweep_temp(sftp: paramiko.SFTPClient, root: str, cutoff: float) -> int:
    """Remove the temp files below ``root`` last modified before ``cutoff``; how many."""
    removed = 0
    for d, _rel, e in walk_files(sftp, root):
        if e.filename.startswith(TEMP_PREFIX) and (e.st_mtime or 0) < cutoff:
            remove_quietly(sftp, f"{d}/{e.filename}")
            removed += 1
    return removed


def map_os_error(exc: OSError, what: str) -> StoreError:
    if isinstance(exc, StoreError):
        return exc
    code = exc.errno
    if code in (errno.ENOENT, errno.ENOTDIR) or isinstance(exc, FileNotFoundError):
        return ObjectNotFound(f"{what}: not found")
    if code in (errno.EACCES, errno.EPERM) or isinstance(exc, PermissionError):
        return StorePermissionError(f"{what}: permission denied")
    text = str(exc) or type(exc).__name__
    if "no space" in text.lower() or "quota" in text.lower():
        return StoreError(f"{what}: no space left on the server ({text})")
    return StoreError(f"{what}: {text}")


__all__ = [
    "TEMP_PREFIX", "list_objects", "make_dir", "map_os_error", "remove_quietly", "sweep_temp", "walk_files", "write_temp",
]
