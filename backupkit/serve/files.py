"""Files of ``bk serve``: making repository folders, durable writes, OS errors as answers.

A write is *finished* when its data is flushed (and fsynced, unless the server was told
not to); a directory is fsynced after a rename into it. ``os_error`` maps an OSError to
the answer a client sees (404, 507 no space, 500). ``app.py`` holds the protocol.
"""

from __future__ import annotations

import errno
import logging
import os
from typing import Any

from backupkit.serve.http import _HTTPError

log = logging.getLogger("backupkit.serve")


def make_dirs(directory: str, repo_dir: str) -> None:
    if not os.path.isdir(repo_dir):
        raise _HTTPError(404, "no repository here (create it with POST /<path>/?create=true)")
    os.makedirs(directory, 0o700, exist_ok=True)


def finish(f: Any, fsync: bool) -> None:
    f.flush()
    if fsync:
        os.fsync(f.fileno())


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
    finally:
        os.close(fd)


def os_error(exc: OSError) -> _HTTPError:
    if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EISDIR):
        return _HTTPError(404)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return _HTTPError(507, "no space left on the server")
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        log.error("permission denied: %s", exc)
        return _HTTPError(500, "the server cannot access its files")
    log.error("I/O error: %s", exc)
    return _HTTPError(500)
