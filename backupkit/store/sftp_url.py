"""Where an SFTP store is and how a user configures it: ``sftp:`` locations and ``-o sftp.*`` options.

``parse_location`` splits the part of a location after ``sftp:`` into SftpObjectStore
arguments (host or ``~/.ssh/config`` alias, user, port, path): restic's forms
``sftp:user@host:/srv/repo``, ``sftp:alias:/srv/repo``, ``sftp:host:repo`` (relative to
the login directory) and ``sftp://user@host:port/srv/repo`` (``FORMS``, for help and
messages). ``OPTIONS`` are the
SftpObjectStore options a user may give as text (``bk -o sftp.port=2222``). ``sftp.py``
registers both as its backend.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from backupkit.errors import BadArgument
from backupkit.store.base import BACKOFF_OPTION, BackendOption, parse_bool, parse_port, parse_seconds, retries_option


FORMS = ("sftp:user@host:/path", "sftp:alias:/path", "sftp://user@host:port/path")


def parse_location(location: str) -> dict[str, Any]:
    """SftpObjectStore arguments from the part after ``sftp:``."""
    if location.startswith("//"):
        parts = urlsplit("sftp:" + location)
        if not parts.hostname or not parts.path or parts.path == "/":
            raise BadArgument(f"use sftp://user@host[:port]/path, not sftp:{location}")
        out: dict[str, Any] = {"host": parts.hostname, "path": unquote(parts.path)}
        if parts.username:
            out["user"] = unquote(parts.username)
        if parts.port:
            out["port"] = parts.port
        return out
    target, sep, path = location.partition(":")
    if not sep or not target or not path:
        raise BadArgument(f"use sftp:user@host:/path or sftp:alias:/path, not sftp:{location}")
    user, at, host = target.rpartition("@")
    out = {"host": host, "path": path}
    if at:
        out["user"] = user
    return out


#: ``connections`` is left out: ``--connections`` sets it.
OPTIONS = (
    BackendOption("accept_new_host_key", parse_bool, "trust and remember a host key not in known_hosts (default false)"),
    BackendOption("ssh_config", str, "the OpenSSH client config (default ~/.ssh/config)"),
    BackendOption("known_hosts", str, "the known_hosts file (default: the config's, else ~/.ssh/known_hosts)"),
    BackendOption("identity_file", str, "a private key file, tried first"),
    BackendOption("port", parse_port, "the SSH port (default: the config's, else 22)"),
    retries_option(4, per="operation; a broken connection is reopened"),
    BACKOFF_OPTION,
    BackendOption("timeout", parse_seconds, "connect, banner and auth timeout in seconds (default 15)"),
)
