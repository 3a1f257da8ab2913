"""What a REST server's answers mean: HTTP statuses as StoreErrors, times, listings.

``status_error`` maps an unexpected status onto the store error types (404 not found,
401/403 permission, 507 no space, 408/429/5xx unavailable); ``transport_error`` does the
same for a connection that failed; ``mtime_of`` reads an object's time from the answer's
headers; ``parse_listing`` reads a type's listing (protocol v2). ``rest.py`` holds the
store, ``rest_http.py`` its connection pool.
"""

from __future__ import annotations

import email.utils
import json
import time
from typing import Any

from backupkit.errors import ObjectNotFound, StoreError, StorePermissionError, StoreUnavailable
from backupkit.store import restnames
from backupkit.store.base import ObjectInfo

#: Statuses retried (with backoff) before they become StoreUnavailable.
RETRY_STATUS = (408, 429, 500, 502, 503, 504)


def status_error(status: int, what: str, body: bytes = b"") -> StoreError:
    """The StoreError for an unexpected HTTP status."""
    detail = body[:200].decode("utf-8", "replace").strip().splitlines()
    text = f"HTTP {status}" + (f" ({detail[0]})" if detail and detail[0] else "")
    if status == 404:
        return ObjectNotFound(f"{what}: not found")
    if status == 401:
        return StorePermissionError(f"{what}: the server wants a valid user and password ({text})")
    if status == 403:
        if detail and "append-only" in detail[0]:
            return StorePermissionError(
                f"{what}: refused by the server ({detail[0]}); forget, prune and key "
                "changes need a server (or user) without --append-only"
            )
        return StorePermissionError(
            f"{what}: the server refused ({text}; append-only servers refuse deleting and "
            "overwriting, rest-server refuses every overwrite)"
        )
    if status == 507:
        return StoreError(f"{what}: the server has no space left ({text})")
    if status in RETRY_STATUS:
        return StoreUnavailable(f"{what}: the server is unavailable ({text})")
    return StoreError(f"{what}: {text}")


def transport_error(exc: BaseException, what: str) -> StoreError:
    reason = getattr(exc, "reason", None) or exc
    return StoreUnavailable(f"{what}: connection failed ({type(reason).__name__}: {reason})")


def mtime_of(headers: Any) -> float:
    """The object's modification time: ``X-Bk-Mtime``, else ``Last-Modified``, else the
    answer's ``Date`` (rclone sends neither: an object of unknown age counts as new,
    so a live lock is never taken for a stale one)."""
    precise = headers.get("X-Bk-Mtime")
    if precise:
        try:
            return float(precise)
        except ValueError:
            pass
    for header in ("Last-Modified", "Date"):
        text = headers.get(header)
        if text:
            try:
                return email.utils.parsedate_to_datetime(text).timestamp()
            except (TypeError, ValueError):
                pass
    return time.time()


def parse_listing(type_: str, data: bytes, date: str | None, what: str) -> list[ObjectInfo]:
    """The bk objects in the v2 listing ``data`` of ``type_`` (``[{"name", "size"[,
    "mtime"]}, ...]``; ``date``: the answer's Date header). An object without ``mtime``
    is as old as ``date``, but a lock's time is left None for the caller to stat."""
    try:
        entries = json.loads(data)
    except ValueError:
        raise StoreError(f"{what}: the server's listing is not JSON (is it a restic REST server?)") from None
    if not isinstance(entries, list):
        raise StoreError(f"{what}: the server's listing is not a list")
    fallback = mtime_of({"Date": date})
    out = []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise StoreError(f"{what}: the server sent a listing in the v1 format (no sizes)")
        name = restnames.decode(type_, entry["name"])
        if name is None:
            continue  # not one of ours (a restic object, a stray file)
        mtime = entry.get("mtime")
        if isinstance(mtime, (int, float)):
            out.append(ObjectInfo(name, int(entry.get("size", 0)), float(mtime)))
        elif name.startswith("locks/"):
            out.append(ObjectInfo(name, int(entry.get("size", 0)), None))  # type: ignore[arg-type]
        else:
            out.append(ObjectInfo(name, int(entry.get("size", 0)), fallback))
    return out
