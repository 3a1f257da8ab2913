"""Object stores: where a repository keeps its objects, and the registry of backends.

A repository *location* is ``SCHEME:REST`` or a plain path::

    /srv/backup, ./repo, ./backup:2024        a local directory (a plain path)
    local:PATH, file:PATH, file:///PATH       a local directory, named explicitly
    s3:https://host[:port]/bucket[/prefix]    S3ObjectStore on an S3-compatible server
    s3:http://127.0.0.1:9000/bucket           (plain HTTP, for local servers)
    s3:bucket[/prefix]                        S3ObjectStore on AWS
    memory:                                   a new, empty MemoryObjectStore (Python API)
    rest:http(s)://[user:pass@]host[:port]/path/   RestObjectStore (restic's REST protocol)
    rclone:remote:path                        RcloneObjectStore (rclone serve restic)
    sftp:[user@]host:/path, sftp://user@host:port/path   SftpObjectStore

The scheme rule: a location that starts with a word (a letter, then letters, digits,
``+``, ``-`` or ``.``) followed by ``:`` names a scheme, and a scheme that is not
registered is an error (``sftp:host:/x`` must never become a folder called ``sftp:host:``).
Anything else is a local path, so a path whose first segment holds a colon is written
``./backup:2024`` or ``local:backup:2024``; ``/srv/a:b`` is a path as it is.

Adding a backend is one module and one line here. The module defines its
``ObjectStore`` subclass and ``BACKEND = Backend(...)`` (``store/base.py``): its name
(the prefix of its ``-o NAME.OPTION=VALUE`` options), its ``open(location, **options)``,
the location forms it accepts, its text options (name, parser, help) and its default
connections. The line maps each scheme to the module in ``SCHEMES``. Modules are
imported only when their scheme is used (botocore alone costs a fifth of a second).

    resolve(url)            -> (Backend, location after the scheme)
    open_store(url, **kw)   -> ObjectStore (keywords go to the backend's ``open``)
    open_location(url, option_texts, connections)
                            -> ObjectStore, for a command line (``-o`` texts, --connections)
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Iterable
from typing import Any

from backupkit.errors import BadArgument, UsageError
from backupkit.store.base import Backend, BackendOption, ObjectInfo, ObjectStore, check_name

__all__ = [
    "Backend",
    "BackendOption",
    "LocalObjectStore",
    "MemoryObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "S3ObjectStore",
    "SCHEMES",
    "check_name",
    "default_connections",
    "open_location",
    "open_store",
    "is_local_scheme",
    "resolve",
    "split_location",
    "supported_schemes",
]

#: scheme -> the module whose ``BACKEND`` serves it. One line per scheme.
SCHEMES: dict[str, str] = {
    "local": "backupkit.store.local",
    "file": "backupkit.store.local",
    "s3": "backupkit.store.s3",
    "memory": "backupkit.store.memory",
    "rest": "backupkit.store.rest",
    "rclone": "backupkit.store.rclone",
    "sftp": "backupkit.store.sftp",
}
#: The backend of a plain path (a location without a scheme).
_PLAIN_PATH = "local"
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):(.*)$", re.DOTALL)


def supported_schemes() -> str:
    """``local:, file:, s3:, memory:`` for messages."""
    return ", ".join(f"{scheme}:" for scheme in SCHEMES)


def split_location(url: str) -> tuple[str, str]:
    """(the scheme, the location without it) of a location, importing no backend: a
    plain path's scheme is ``local``. BadArgument as ``resolve``."""
    if not url:
        raise BadArgument("no repository given (use --repo or BK_REPOSITORY)")
    match = _SCHEME_RE.match(url)
    if match is None:
        scheme, location = _PLAIN_PATH, url
    else:
        scheme, location = match.group(1), match.group(2)
        if scheme not in SCHEMES:
            raise BadArgument(
                f"unknown repository scheme {scheme}: in {url!r} (supported: {supported_schemes()}; "
                f"a local path with a colon: ./{url} or local:{url})"
            )
    return scheme, location


def is_local_scheme(scheme: str) -> bool:
    """Whether ``scheme`` (from ``split_location``) names a directory on this machine."""
    return SCHEMES.get(scheme) == SCHEMES["local"]


def resolve(url: str) -> tuple[Backend, str]:
    """The backend a location names and the location without its scheme.

    Raises:
        BadArgument: the location is empty, or names a scheme that is not registered
            (the message lists the supported ones).
        UsageError: the backend's module needs a package that is not installed.
    """
    scheme, location = split_location(url)
    try:
        module = importlib.import_module(SCHEMES[scheme])
    except ModuleNotFoundError as exc:
        if exc.name and not exc.name.startswith("backupkit"):
            package = exc.name.split(".")[0]
            raise UsageError(f"the {scheme}: backend needs the Python package {package}: pip install {package}") from None
        raise
    backend: Backend = module.BACKEND
    return backend, location


def open_store(url: str, **options: Any) -> ObjectStore:
    """Open the object store a repository location names.

    Args:
        url: a location (see the module docstring).
        **options: keyword arguments for the backend's ``open``, e.g. ``connections=16``
            and ``retries=3`` for S3 or ``fsync=False`` for a local directory.

    Raises:
        BadArgument: the location is malformed, names an unknown scheme, or an option the
            backend does not know.
        UsageError: the backend needs a package that is not installed.
    """
    backend, location = resolve(url)
    try:
        return backend.open(location, **options)
    except TypeError as exc:
        if "keyword argument" not in str(exc):
            raise
        raise BadArgument(f"bad option for a {backend.name} repository: {exc}") from None


def open_location(url: str, option_texts: Iterable[str] = (), connections: int | None = None) -> ObjectStore:
    """Open a store as a command line asks: ``-o NAME.OPTION=VALUE`` texts and
    ``--connections`` (None: the backend's default). Errors as ``open_store``."""
    backend, _ = resolve(url)
    options = backend.parse_options(option_texts)
    return open_store(url, connections=connections or backend.connections, **options)


def default_connections(url: str) -> int:
    """Concurrent requests for the location's backend when the user does not say."""
    return resolve(url)[0].connections


#: Store classes re-exported here, imported on first use: ``bk --help`` reads ``SCHEMES``
#: without loading any backend, and importing botocore costs a fifth of a second.
_LAZY = {
    "LocalObjectStore": "backupkit.store.local",
    "MemoryObjectStore": "backupkit.store.memory",
    "S3ObjectStore": "backupkit.store.s3",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
