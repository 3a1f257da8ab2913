"""The ASGI application of ``bk serve``: restic's REST protocol (v1 and v2) on a directory.

Vocabulary: the *data directory* holds every repository; a *repository path* is the
URL's folders before the first type segment (``/alice/laptop/keys/...`` is repository
``alice/laptop``); a *type* is ``config``, ``data``, ``keys``, ``index``, ``snapshots``
or ``locks``. On disk a repository is restic's layout: ``config``, ``<type>/<name>``
and ``data/<first 2 chars>/<name>``, so restic's rest-server can serve it too.

Writes stream the request body to a temp file (``.tmp-*``, never listed) in the target
directory, fsync it, rename it into place and fsync the directory: an object is whole or
absent, never partial, and no body is ever held in memory. Reads stream 1 MiB at a time
and honour one ``Range`` (what restic and bk send).

Modes (rest-server's): ``append_only`` refuses DELETE except of locks and refuses
overwriting an existing object except locks and bk's ``catalog`` (a cache of the
snapshot list that bk rewrites; the snapshot objects stay the truth, see
docs/backends.md); ``private_repos`` lets a user reach only repositories under
``/<user>/``; with an ``Htpasswd`` every request needs HTTP basic auth.

Answers: 200 (206 for ranges), 400 bad request, 401 no or wrong credentials, 403
refused (append-only, private repository, config exists), 404, 405, 416 bad range, 500,
507 no space left. bk extensions (ignored by restic): v2 listings carry ``mtime``, and
HEAD/GET and POST answers ``X-Bk-Mtime``, and GET/HEAD answers (listings too) say
``X-Bk-Conditional-Create: if-none-match`` (POST honours ``If-None-Match: *``) and
``X-Bk-Conditional-Replace: if-match`` (POST honours ``If-Match: *``: 412 when absent).

This module holds the protocol (routing, modes, the answers per method); beside it
``http.py`` (ASGI types, error answers, ranges, the access log) and ``files.py``
(folders, durable writes, OS errors as answers).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import email.utils
import json
import logging
import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote

from backupkit.serve.htpasswd import Htpasswd
from backupkit.serve.files import finish, fsync_dir, make_dirs, os_error
from backupkit.serve.http import Receive, Scope, Send, _HTTPError, log_line, parse_range, send_simple

TYPES = ("data", "keys", "index", "snapshots", "locks")
V1 = "application/vnd.x.restic.rest.v1"
V2 = "application/vnd.x.restic.rest.v2"
#: How many folders a repository path may have (rest-server allows 2).
MAX_REPO_DEPTH = 4
CHUNK = 1024 * 1024
TEMP_PREFIX = ".tmp-"
#: The default bound on one object (bk's and restic's packs are at most 128 MiB).
DEFAULT_MAX_OBJECT_BYTES = 1 << 30
#: Sent with every GET/HEAD answer: this server refuses a POST with If-None-Match: * over
#: an existing name (412), so clients need not probe (see store/rest.py).
CONDITIONAL_CREATE_HEADER = (b"x-bk-conditional-create", b"if-none-match")
#: Sent with the same answers: POST honours If-Match: * (412 when the object is absent, so
#: a lock refresh cannot recreate a removed lock) and its 200 carries X-Bk-Mtime.
CONDITIONAL_REPLACE_HEADER = (b"x-bk-conditional-replace", b"if-match")
#: Objects an append-only server lets clients overwrite: (type, name).
APPEND_ONLY_REWRITABLE = {("index", "~catalog")}
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_~-][A-Za-z0-9._~-]*$")

log = logging.getLogger("backupkit.serve")


@dataclass
class ServerOptions:
    """What ``bk serve`` was told.

    Attributes:
        path: the data directory.
        append_only: refuse deleting and overwriting (locks excepted).
        private_repos: a user reaches only ``/<user>/...``.
        htpasswd: the users, or None for ``--no-auth``.
        access_log: called with one combined-log-format line per request, or None.
        fsync: fsync files and directories on write (tests of throw-away data turn it off).
        max_object_bytes: the largest object a client may write (413 beyond it, checked
            against Content-Length up front and while a chunked body streams in).
    """

    path: str
    append_only: bool = False
    private_repos: bool = False
    htpasswd: Htpasswd | None = None
    access_log: Callable[[str], None] | None = None
    fsync: bool = True
    max_object_bytes: int = DEFAULT_MAX_OBJECT_BYTES
    counters: dict[str, int] = field(default_factory=dict)


@dataclass
class _Request:
    method: str
    repo: list[str]
    type_: str  # "" for the repository root, "config" for the config file
    name: str  # "" for a listing
    user: str
    query: dict[str, list[str]]
    headers: dict[str, str]


class RestApp:
    """The ASGI callable."""

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self.root = os.path.abspath(options.path)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return  # lifespan is off; nothing else is served
        started = time.time()
        status, sent, user = 500, 0, "-"
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        try:
            user = await self._authenticate(headers)
            request = self._parse(scope, headers, user)
            status, sent = await self._dispatch(request, receive, send)
        except _HTTPError as exc:
            status = exc.status
            sent = await send_simple(send, exc.status, exc.message.encode() + b"\n", exc.headers)
        except Exception:  # noqa: BLE001 - one failed request must not stop the server
            log.exception("internal error serving %s %s", scope.get("method"), scope.get("path"))
            status = 500
            sent = await send_simple(send, 500, b"Internal Server Error\n")
        if self.options.access_log is not None:
            self.options.access_log(log_line(scope, headers, user, status, sent, started))

    # -- request parsing ----------------------------------------------------------------------

    async def _authenticate(self, headers: dict[str, str]) -> str:
        users = self.options.htpasswd
        if users is None:
            return "-"
        challenge = [(b"www-authenticate", b'Basic realm="restic"')]
        auth = headers.get("authorization", "")
        scheme, _, token = auth.partition(" ")
        if scheme.lower() != "basic":
            raise _HTTPError(401, headers=challenge)
        try:
            user, _, password = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise _HTTPError(401, headers=challenge) from None
        if not await asyncio.to_thread(users.check, user, password):
            raise _HTTPError(401, headers=challenge)
        return user

    def _parse(self, scope: Scope, headers: dict[str, str], user: str) -> _Request:
        raw = scope.get("raw_path") or scope["path"].encode()
        path = unquote(raw.decode("latin-1"))
        if "\0" in path or not path.startswith("/"):
            raise _HTTPError(400)
        trailing = path.endswith("/")
        segments = [s for s in path.split("/") if s]
        for s in segments:
            if not _SEGMENT_RE.match(s):
                raise _HTTPError(404)
        repo: list[str] = []
        while segments and segments[0] not in TYPES and segments[0] != "config":
            repo.append(segments.pop(0))
        if len(repo) > MAX_REPO_DEPTH:
            raise _HTTPError(404)
        if self.options.private_repos and self.options.htpasswd is not None:
            if not repo or repo[0] != user:
                raise _HTTPError(403, "private repository: use /<your user name>/")
        type_, name = "", ""
        if segments:
            type_ = segments.pop(0)
            if type_ == "config":
                if segments or trailing:
                    raise _HTTPError(404)
                name = "config"
            elif segments:
                name = segments.pop(0)
                if segments or trailing:
                    raise _HTTPError(404)
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return _Request(scope["method"], repo, type_, name, user, query, headers)

    def _repo_dir(self, req: _Request) -> str:
        return os.path.join(self.root, *req.repo)

    def _object_path(self, req: _Request) -> str:
        base = self._repo_dir(req)
        if req.type_ == "config":
            return os.path.join(base, "config")
        if req.type_ == "data":
            return os.path.join(base, "data", req.name[:2], req.name)
        return os.path.join(base, req.type_, req.name)

    # -- dispatch ---------------------------------------------------------------------------

    async def _dispatch(self, req: _Request, receive: Receive, send: Send) -> tuple[int, int]:
        m = req.method
        if not req.type_:
            if m == "POST":
                return await self._create_repo(req, send)
            raise _HTTPError(405, headers=[(b"allow", b"POST")])
        if not req.name:
            if m == "GET":
                return await self._list(req, send)
            raise _HTTPError(405, headers=[(b"allow", b"GET")])
        if m in ("GET", "HEAD"):
            return await self._get(req, send, head=m == "HEAD")
        if m == "POST":
            return await self._save(req, receive, send)
        if m == "DELETE":
            return await self._delete(req, send)
        raise _HTTPError(405, headers=[(b"allow", b"HEAD, GET, POST, DELETE")])

    async def _create_repo(self, req: _Request, send: Send) -> tuple[int, int]:
        if req.query.get("create") != ["true"]:
            raise _HTTPError(400, "use POST /<repository>/?create=true")
        base = self._repo_dir(req)

        def make() -> None:
            os.makedirs(base, 0o700, exist_ok=True)
            for t in TYPES:
                os.makedirs(os.path.join(base, t), 0o700, exist_ok=True)
            for i in range(256):
                os.makedirs(os.path.join(base, "data", f"{i:02x}"), 0o700, exist_ok=True)

        try:
            await asyncio.to_thread(make)
        except OSError as exc:
            raise os_error(exc) from None
        log.info("created repository %s", base)
        return 200, await send_simple(send, 200, b"")

    async def _list(self, req: _Request, send: Send) -> tuple[int, int]:
        base = os.path.join(self._repo_dir(req), req.type_)
        v2 = req.headers.get("accept") == V2

        def scan() -> list[dict[str, Any]]:
            dirs = [base]
            if req.type_ == "data":
                try:
                    dirs = [e.path for e in os.scandir(base) if e.is_dir(follow_symlinks=False) and not e.name.startswith(".")]
                except FileNotFoundError:
                    dirs = []
            out = []
            for d in dirs:
                try:
                    entries = list(os.scandir(d))
                except FileNotFoundError:
                    continue
                for e in entries:
                    if e.name.startswith(".") or not e.is_file(follow_symlinks=False):
                        continue
                    try:
                        st = e.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    out.append({"name": e.name, "size": st.st_size, "mtime": st.st_mtime})
            return out

        if not await asyncio.to_thread(os.path.isdir, base):
            raise _HTTPError(404)
        try:
            items = await asyncio.to_thread(scan)
        except OSError as exc:
            raise os_error(exc) from None
        body = json.dumps(items if v2 else [i["name"] for i in items], separators=(",", ":")).encode()
        ctype = V2 if v2 else V1
        return 200, await send_simple(send, 200, body, [(b"content-type", ctype.encode()), CONDITIONAL_CREATE_HEADER, CONDITIONAL_REPLACE_HEADER])

    async def _get(self, req: _Request, send: Send, head: bool) -> tuple[int, int]:
        path = self._object_path(req)
        try:
            f = await asyncio.to_thread(open, path, "rb")
        except OSError as exc:
            raise os_error(exc) from None
        try:
            st = os.fstat(f.fileno())
            size = st.st_size
            start, end = 0, size  # [start, end)
            status = 200
            headers = [
                (b"accept-ranges", b"bytes"),
                (b"last-modified", email.utils.formatdate(st.st_mtime, usegmt=True).encode()),
                (b"x-bk-mtime", repr(st.st_mtime).encode()),
                (b"content-type", b"application/octet-stream"),
                CONDITIONAL_CREATE_HEADER,
                CONDITIONAL_REPLACE_HEADER,
            ]
            wanted = req.headers.get("range")
            if wanted and not head:
                start, end = parse_range(wanted, size)
                status = 206
                headers.append((b"content-range", f"bytes {start}-{end - 1}/{size}".encode()))
            headers.append((b"content-length", str(end - start).encode()))
            await send({"type": "http.response.start", "status": status, "headers": headers})
            if head:
                await send({"type": "http.response.body", "body": b""})
                return status, 0
            pos, sent = start, 0
            while pos < end:
                chunk = await asyncio.to_thread(os.pread, f.fileno(), min(CHUNK, end - pos), pos)
                if not chunk:
                    break  # the file shrank: the client sees a short body and retries
                pos += len(chunk)
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": pos < end})
            if pos < end:
                await send({"type": "http.response.body", "body": b""})
            return status, sent
        finally:
            f.close()

    def _refuse_in_append_only(self, req: _Request, what: str) -> None:
        if not self.options.append_only or req.type_ == "locks":
            return
        if what == "overwrite" and (req.type_, req.name) in APPEND_ONLY_REWRITABLE:
            return
        verb = "deleting" if what == "delete" else "overwriting"
        target = "the config" if req.type_ == "config" else f"{req.type_}/{req.name}"
        raise _HTTPError(403, f"append-only server: {verb} {target} is not allowed")

    async def _save(self, req: _Request, receive: Receive, send: Send) -> tuple[int, int]:
        path = self._object_path(req)
        exists = await asyncio.to_thread(os.path.lexists, path)
        if exists:
            self._refuse_in_append_only(req, "overwrite")
            if req.headers.get("if-none-match") == "*":
                raise _HTTPError(412, "the object exists")
        elif req.headers.get("if-match") == "*":
            raise _HTTPError(412, "the object does not exist")
        length = req.headers.get("content-length")
        chunked = "chunked" in req.headers.get("transfer-encoding", "").lower()
        if length is None and not chunked:
            raise _HTTPError(411)
        limit = self.options.max_object_bytes
        if length is not None and not length.isdigit():
            raise _HTTPError(400, "bad Content-Length")
        if length is not None and int(length) > limit:
            raise _HTTPError(413, f"objects are limited to {limit} bytes")
        directory = os.path.dirname(path)
        tmp = os.path.join(directory, f"{TEMP_PREFIX}{req.name}-{secrets.token_hex(6)}")
        try:
            await asyncio.to_thread(make_dirs, directory, os.path.join(self._repo_dir(req)))
            f = await asyncio.to_thread(open, tmp, "xb")
        except OSError as exc:
            raise os_error(exc) from None
        published = False
        try:
            received = 0
            try:
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        raise _HTTPError(400, "the client went away mid-upload")
                    body = message.get("body", b"")
                    if body:
                        received += len(body)
                        if received > limit:  # a chunked body without end: stop before the disk fills
                            raise _HTTPError(413, f"objects are limited to {limit} bytes")
                        f.write(body)  # to the page cache: microseconds a chunk
                    if not message.get("more_body", False):
                        break
                if length is not None and received != int(length):
                    raise _HTTPError(400, f"got {received} of {length} bytes")
                await asyncio.to_thread(finish, f, self.options.fsync)
            finally:
                f.close()
            if req.headers.get("if-none-match") == "*":
                # Conditional create (a bk extension): link fails if the name was taken.
                try:
                    await asyncio.to_thread(os.link, tmp, path)
                except FileExistsError:
                    raise _HTTPError(412, "the object exists") from None
            else:
                if self.options.append_only and req.type_ != "locks" and (req.type_, req.name) not in APPEND_ONLY_REWRITABLE:
                    try:
                        await asyncio.to_thread(os.link, tmp, path)  # never replace, even racing
                    except FileExistsError:
                        raise _HTTPError(403, "append-only server: the object exists") from None
                else:
                    # If-Match: * (a lock refresh) was checked above; an unlink racing
                    # this replace is undone by it, as with a stat before a plain write.
                    await asyncio.to_thread(os.replace, tmp, path)
            published = True
            if self.options.fsync:
                await asyncio.to_thread(fsync_dir, directory)
        except OSError as exc:
            raise os_error(exc) from None
        finally:
            if not published or os.path.lexists(tmp):
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
        try:
            mtime = await asyncio.to_thread(lambda: os.stat(path).st_mtime)
        except OSError:
            return 200, await send_simple(send, 200, b"")  # replaced or removed meanwhile
        return 200, await send_simple(send, 200, b"", [(b"x-bk-mtime", repr(mtime).encode())])

    async def _delete(self, req: _Request, send: Send) -> tuple[int, int]:
        self._refuse_in_append_only(req, "delete")
        path = self._object_path(req)
        try:
            await asyncio.to_thread(os.unlink, path)
        except FileNotFoundError:
            pass  # deleting is idempotent (a retried DELETE must not fail), as in rest-server
        except OSError as exc:
            raise os_error(exc) from None
        return 200, await send_simple(send, 200, b"")
