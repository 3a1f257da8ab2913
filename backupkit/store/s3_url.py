"""Where an S3 store is and how a user configures it: ``s3:`` locations and ``-o s3.*`` options.

``parse_url`` splits the part of a location after ``s3:`` into S3ObjectStore
arguments (bucket, key prefix, endpoint), ``FORMS`` lists the forms it takes for help
and messages; ``OPTIONS`` are the S3ObjectStore options a
user may give as text (``bk -o s3.retries=3``). ``s3.py`` registers both as its backend.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from backupkit.errors import BadArgument
from backupkit.store.base import BACKOFF_OPTION, BackendOption, parse_bool, parse_count, parse_size, retries_option, socket_timeout_options


FORMS = ("s3:https://host[:port]/bucket[/prefix]", "s3:http://host[:port]/bucket[/prefix]", "s3:bucket[/prefix]")


def parse_url(location: str) -> dict[str, Any]:
    """Split the part of an ``s3:`` URL after ``s3:`` into S3ObjectStore arguments.

    Forms: ``https://host[:port]/bucket[/prefix]`` and ``http://...`` (an S3-compatible
    server, path-style), ``bucket[/prefix]`` (AWS; region from the environment), and
    restic's ``s3.amazonaws.com/bucket[/prefix]``.
    """
    endpoint: str | None = None
    path = location
    if location.startswith(("http://", "https://")):
        parts = urlsplit(location)
        if parts.username or parts.password:
            raise BadArgument("put S3 credentials in the environment, not in the URL")
        if not parts.hostname:
            raise BadArgument(f"no host in s3:{location}")
        endpoint = f"{parts.scheme}://{parts.netloc}"
        path = parts.path
        if parts.query or parts.fragment:
            raise BadArgument(f"unexpected query or fragment in s3:{location}")
    elif location.startswith("//"):
        raise BadArgument(
            "use s3:bucket/prefix for AWS or s3:https://host[:port]/bucket/prefix, not s3://"
        )
    else:
        first, _, rest = location.partition("/")
        if first.endswith("amazonaws.com"):
            endpoint, path = f"https://{first}", rest
    bucket, _, prefix = path.strip("/").partition("/")
    if not bucket:
        raise BadArgument(f"no bucket in s3:{location}")
    return {"bucket": bucket, "prefix": prefix, "endpoint_url": endpoint}


def _verify(text: str) -> bool | str:
    """TLS verification: yes/no, else the path of a CA bundle."""
    try:
        return parse_bool(text)
    except ValueError:
        return text


def _retry_mode(text: str) -> str:
    if text not in ("standard", "adaptive"):
        raise ValueError(f"use standard or adaptive, not {text!r}")
    return text


#: ``connections`` is left out: ``--connections`` sets it. docs/s3.md has the table with the defaults.
OPTIONS = (
    BackendOption("region", str, "signing region (default: the environment or profile, else us-east-1)"),
    BackendOption("profile", str, "a profile from ~/.aws/config"),
    retries_option(10),
    BackendOption("retry_mode", _retry_mode, "botocore retry mode: standard (default) or adaptive"),
    BACKOFF_OPTION,
    *socket_timeout_options(read_seconds=60),
    BackendOption("multipart_threshold", parse_size, "larger objects are uploaded in parts (default 32MiB)"),
    BackendOption("part_size", parse_size, "multipart part size, at least 5MiB (default 16MiB)"),
    BackendOption("list_page_size", parse_count, "keys per listing request, at most 1000 (default 1000)"),
    BackendOption("verify", _verify, "TLS verification: true (default), false, or a CA bundle path"),
)
