"""Object stores: where a repository keeps its objects.

``open_store(url)`` picks the backend from the URL's scheme. A backend is one module with
an ``open_url(location, **options)`` function plus one line in ``_BACKENDS``; modules
are imported only when their scheme is used, so boto3 is loaded only for ``s3:``.

    /srv/backup, ./repo, file:/srv/backup    LocalObjectStore
    memory:                                  MemoryObjectStore (a new, empty one)
    s3:https://host[:port]/bucket[/prefix]   S3ObjectStore on an S3-compatible server
    s3:http://127.0.0.1:9000/bucket          (plain HTTP, for local servers)
    s3:bucket[/prefix]                       S3ObjectStore on AWS
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from backupkit.errors import BadArgument, UsageError
from backupkit.store.base import ObjectInfo, ObjectStore, check_name
from backupkit.store.local import LocalObjectStore
from backupkit.store.memory import MemoryObjectStore

__all__ = [
    "LocalObjectStore",
    "MemoryObjectStore",
    "ObjectInfo",
    "ObjectStore",
    "S3ObjectStore",
    "check_name",
    "open_store",
]

#: scheme -> module providing ``open_url(location, **options) -> ObjectStore``.
_BACKENDS: dict[str, str] = {
    "file": "backupkit.store.local",
    "memory": "backupkit.store",
    "s3": "backupkit.store.s3",
}
# Only these count as schemes; anything else (``backup:2024``) is a local path, as in restic.
_SCHEME_RE = re.compile(r"^([a-z][a-z0-9+.-]*):(.*)$", re.DOTALL)


def open_store(url: str, **options: Any) -> ObjectStore:
    """Open the object store a repository URL names.

    Args:
        url: a path, ``file:/path``, ``memory:``, ``s3:https://host[:port]/bucket[/prefix]``
            (also ``s3:http://``) or ``s3:bucket[/prefix]`` for AWS.
        **options: keyword arguments for the backend's class, e.g. ``connections=16``
            for S3 or ``fsync=False`` for a local directory.

    Raises:
        UsageError: the URL is malformed, names an unknown option, or needs a missing
            optional dependency (boto3 for ``s3:``).
    """
    if not url:
        raise BadArgument("no repository given (use --repo or BK_REPOSITORY)")
    match = _SCHEME_RE.match(url)
    if match is None or match.group(1) not in _BACKENDS:
        scheme, location = "file", url
    else:
        scheme, location = match.group(1), match.group(2)
    try:
        module = importlib.import_module(_BACKENDS[scheme])
    except ModuleNotFoundError as exc:
        if scheme == "s3" and exc.name and exc.name.split(".")[0] in ("boto3", "botocore"):
            raise UsageError("the S3 backend needs boto3: pip install 'backupkit[s3]'") from None
        raise
    try:
        store: ObjectStore = module.open_url(location, **options)
    except TypeError as exc:
        if "keyword argument" not in str(exc):
            raise
        raise BadArgument(f"bad option for a {scheme}: repository: {exc}") from None
    return store


def open_url(location: str, **options: Any) -> MemoryObjectStore:
    """The ``memory:`` backend: a new, empty MemoryObjectStore (``location`` unused)."""
    return MemoryObjectStore(**options)


def __getattr__(name: str) -> Any:
    # S3ObjectStore is imported lazily: importing boto3 costs a third of a second.
    if name == "S3ObjectStore":
        from backupkit.store.s3 import S3ObjectStore

        return S3ObjectStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
