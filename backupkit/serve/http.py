"""HTTP plumbing of ``bk serve``: ASGI types, the error answer, ranges, plain answers, the access log.

Vocabulary: an *answer* is a status with a body; ``_HTTPError`` is raised anywhere in a
request to answer with its status (and headers) instead; a *range* is one ``Range:
bytes=...`` header resolved against an object's size. ``app.py`` holds the protocol.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


class _HTTPError(Exception):
    def __init__(self, status: int, message: str = "", headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message or _REASONS.get(status, "error")
        self.headers = headers or []


_REASONS = {
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 411: "Length Required", 412: "Precondition Failed", 413: "Content Too Large",
    416: "Range Not Satisfiable",
    500: "Internal Server Error", 507: "Insufficient Storage",
}


def parse_range(text: str, size: int) -> tuple[int, int]:
    """[start, end) of one ``bytes=a-b`` / ``bytes=a-`` / ``bytes=-n`` range in ``size``."""
    m = _RANGE_RE.match(text.strip())
    bad = _HTTPError(416, headers=[(b"content-range", f"bytes */{size}".encode())])
    if m is None or (not m.group(1) and not m.group(2)):
        raise bad
    if not m.group(1):  # the last n bytes
        n = int(m.group(2))
        if n == 0:
            raise bad
        return max(0, size - n), size
    start = int(m.group(1))
    end = int(m.group(2)) + 1 if m.group(2) else size
    if start >= size or end <= start:
        raise bad
    return start, min(end, size)


async def send_simple(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> int:
    all_headers = list(headers or [])
    if not any(k == b"content-type" for k, _ in all_headers):
        all_headers.append((b"content-type", b"text/plain; charset=utf-8"))
    all_headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": all_headers})
    await send({"type": "http.response.body", "body": body})
    return len(body)


def log_line(scope: Scope, headers: dict[str, str], user: str, status: int, sent: int, started: float) -> str:
    """One request in the combined log format (what rest-server's --log writes)."""
    client = scope.get("client") or ("-", 0)
    when = time.strftime("%d/%b/%Y:%H:%M:%S %z", time.localtime(started))
    target = scope.get("raw_path", b"").decode("latin-1") or scope.get("path", "")
    if scope.get("query_string"):
        target += "?" + scope["query_string"].decode("latin-1")
    line = f'{client[0]} - {user} [{when}] "{scope.get("method")} {target} HTTP/{scope.get("http_version", "1.1")}" {status} {sent}'
    return line + f' "{headers.get("referer", "-")}" "{headers.get("user-agent", "-")}"'
