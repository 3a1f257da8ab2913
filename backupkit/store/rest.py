"""RestObjectStore: objects on a server speaking restic's REST protocol (v2).

Vocabulary: the *base URL* is the repository's URL on the server
(``http://host:8000/user/repo/``); an object lives at ``<base>/<type>/<name>`` or
``<base>/config`` (see ``restnames`` for how bk names map onto restic's types).

The protocol: ``POST <base>/?create=true`` creates a repository, ``GET``/``HEAD``/
``POST``/``DELETE <base>/<type>/<name>`` read, stat, write and delete one object,
``GET <base>/<type>/`` with ``Accept: application/vnd.x.restic.rest.v2`` lists a type as
``[{"name": ..., "size": ...}]``. Servers: ``bk serve`` and ``rclone serve restic``.
restic's rest-server cannot hold bk repositories: it accepts only 64-hex names and
checks that a name is the SHA-256 of the content, which bk's names are not.

What the protocol lacks, and what we do instead:

* no conditional create in the protocol: writes that must not replace carry
  ``If-None-Match: *``, which ``bk serve`` honours (412 when the name is taken) and other
  servers ignore (rclone) or might refuse. ``bk serve`` says so in every GET/HEAD answer
  (``X-Bk-Conditional-Create``), so the first read tells; for other servers
  ``probe_conditional_writes`` finds out (a probe object under ``locks/``, written
  twice). Until one of them said yes,
  ``atomic_put_if_absent`` is False and ``put_if_absent`` asks with HEAD first (the lock
  protocol then re-checks after creating);
* no modification times in listings: servers that send ``mtime`` (``bk serve``) are
  believed; otherwise lock objects are stat-ed (``Last-Modified``), and an object whose
  server tells no time at all (rclone) is as old as the answer's ``Date``: new, so a
  live lock is never taken for stale (a dead one then needs ``bk unlock``, unless its
  holder ran on this host);
* DELETE of a missing object succeeds on most servers: ``delete`` asks with HEAD first;
* rest-server refuses to overwrite any object (403) and every server refuses in
  append-only mode: ``put`` over an existing object then raises StorePermissionError.

Transport: one urllib3 connection pool (``rest_http.py``: keep-alive, TLS, retries of
connection failures and 429/5xx); a body cut short mid-download is retried here. What
the answers mean (statuses, times, listings) is in ``rest_answers.py``. Every error
leaves as a StoreError subclass.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import urllib3

from backupkit.errors import (
    BadArgument,
    ObjectNotFound,
    StoreError,
    StoreUnavailable,
)
from backupkit.store import restnames
from backupkit.store.base import (
    BACKOFF_OPTION,
    Backend,
    BackendOption,
    ObjectInfo,
    ObjectSource,
    ObjectStore,
    iter_pieces,
    parse_bool,
    retries_option,
    socket_timeout_options,
    split_prefix,
    too_large,
)
from backupkit.store.rest_answers import mtime_of, parse_listing, status_error
from backupkit.store.rest_http import RestHttp, read_body

V2 = "application/vnd.x.restic.rest.v2"
#: bk serve's capability answer (on GET/HEAD): POST honours If-None-Match: *.
CONDITIONAL_CREATE = "X-Bk-Conditional-Create"
#: bk serve's capability answer (on GET/HEAD): POST honours If-Match: * and tells X-Bk-Mtime.
CONDITIONAL_REPLACE = "X-Bk-Conditional-Replace"
#: The most of an error answer's body bk reads (its message is shown, not parsed).
_ERROR_BODY_MAX = 64 * 1024


class RestObjectStore(ObjectStore):
    """An ObjectStore on a restic REST server.

    Args:
        url: the repository's base URL, ``http(s)://[user:pass@]host[:port][/path/]``.
        username, password: HTTP basic auth (default: from the URL).
        connections: the connection pool size.
        retries: attempts per request in all (connection errors, 429/5xx, cut bodies).
        backoff: the first backoff bound in seconds.
        connect_timeout, read_timeout: socket timeouts in seconds.
        cacert: a CA bundle (PEM) to verify the server's certificate with.
        insecure_tls: do not verify the server's certificate at all.
        scheme_name: the location's scheme in messages (``rest``; ``rclone`` reuses us).
    """

    #: Remote servers: one request's latency is worth about a MiB of transfer.
    request_bytes = 1024 * 1024
    atomic_put_if_absent = False

    def __init__(
        self,
        url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        connections: int = 8,
        retries: int = 6,
        backoff: float = 0.2,
        connect_timeout: float = 10.0,
        read_timeout: float = 120.0,
        cacert: str | None = None,
        insecure_tls: bool = False,
        scheme_name: str = "rest",
        location: str | None = None,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BadArgument(f"{scheme_name}: needs an http:// or https:// URL with a host, not {url!r}")
        if parts.query or parts.fragment:
            raise BadArgument(f"unexpected query or fragment in {scheme_name}:{url}")
        if retries < 1 or connections < 1:
            raise BadArgument("retries and connections must be at least 1")
        user = username if username is not None else (unquote(parts.username) if parts.username else None)
        secret = password if password is not None else (unquote(parts.password) if parts.password else None)
        host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        self._path = "/" + parts.path.strip("/")
        if self._path != "/":
            self._path += "/"
        shown_user = f"{user}@" if user else ""
        self.location = location or f"{scheme_name}:{parts.scheme}://{shown_user}{netloc}{self._path}"
        self._http = RestHttp(
            f"{parts.scheme}://{netloc}", (user, secret or "") if user is not None else None, connections=connections,
            retries=retries, backoff=backoff, connect_timeout=connect_timeout, read_timeout=read_timeout,
            cacert=cacert, insecure_tls=insecure_tls,
        )
        self._backoff = self._http.backoff
        self._stats = self._http.stats
        self._initialized = False
        self._probe_lock = threading.Lock()
        #: False once a server answered If-None-Match with 400/501: not sent again.
        self._send_if_none_match = True
        self._probed = False
        #: True once the server said it honours If-Match: * (bk serve): a lock refresh is
        #: then one conditional POST.
        self._conditional_replace = False

    # -- plumbing ---------------------------------------------------------------------------

    def _url(self, type_: str, name: str = "") -> str:
        if not type_:
            return self._path + quote(name)
        return f"{self._path}{type_}/{quote(name)}"

    def _request(
        self, kind: str, method: str, path: str, what: str, *, body: Any = None,
        headers: dict[str, str] | None = None, stream: bool = False,
    ) -> urllib3.BaseHTTPResponse:
        """Send one request (``RestHttp.request``) and note what the server says it can do."""
        response = self._http.request(kind, method, path, what, body=body, headers=headers, stream=stream)
        if not self._probed and response.headers.get(CONDITIONAL_CREATE) == "if-none-match":
            # bk serve says it honours If-None-Match: as good as a probe, and free.
            self.atomic_put_if_absent = True
            self._probed = True
        if not self._conditional_replace and response.headers.get(CONDITIONAL_REPLACE) == "if-match":
            self._conditional_replace = True
        return response

    def _download(self, name: str, offset: int | None = None, length: int = 0, max_size: int | None = None) -> bytes:
        type_, sname = restnames.encode(name)
        what = f"reading {name}"
        headers = {}
        kind = "GET"
        if offset is not None:
            headers["Range"] = f"bytes={offset}-{offset + length - 1}"
            kind = "GET_RANGE"
        for attempt in range(self._backoff.attempts):
            response = self._request(kind, "GET", self._url(type_, sname), what, headers=headers, stream=True)
            if response.status not in (200, 206):
                body = read_body(response, what, _ERROR_BODY_MAX) if response.status != 404 else b""
                if response.status == 416:
                    raise StoreError(f"{what}: range {offset}+{length} is past the end of the object")
                raise status_error(response.status, what, body)
            declared = response.headers.get("Content-Length")
            if offset is None and max_size is not None and declared is not None and declared.isdigit() and int(declared) > max_size:
                response.release_conn()  # refused before reading the body (issue 10.2)
                too_large(name, int(declared), max_size)
            try:
                data = read_body(response, what, max_size if offset is None else offset + length)
            except StoreUnavailable:
                if attempt + 1 >= self._backoff.attempts:
                    raise
                self._stats.add("retries")
                self._backoff.wait(attempt)
                continue
            self._stats.add("bytes_down", len(data))
            if offset is None:
                too_large(name, len(data), max_size)
                return data
            if response.status == 200:  # the server ignored the range: cut it out ourselves
                if offset + length > len(data):
                    raise StoreError(f"{what}: range {offset}+{length} is past the end ({len(data)} bytes)")
                return data[offset : offset + length]
            if len(data) != length:
                raise StoreError(f"{what}: range {offset}+{length} is past the end of the object")
            return data
        raise AssertionError("unreachable")

    # -- the contract --------------------------------------------------------------------------

    def get(self, name: str, max_size: int | None = None) -> bytes:
        return self._download(name, max_size=max_size)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        restnames.encode(name)
        if offset < 0 or length < 0:
            raise StoreError(f"invalid range {offset}+{length} of {name}")
        if length == 0:  # HTTP has no empty range: check the offset against the size
            size = self.stat(name).size
            if offset > size:
                raise StoreError(f"reading {name}: offset {offset} is past the end ({size} bytes)")
            return b""
        return self._download(name, offset, length)

    def create(self) -> None:
        """``POST <base>/?create=true``: make the repository's directories on the server."""
        what = f"creating the repository at {self.location}"
        response = self._request("PUT", "POST", self._path + "?create=true", what)
        if response.status != 200:
            raise status_error(response.status, what, response.data)
        self._initialized = True

    def put(self, name: str, data: bytes) -> None:
        self._post(name, data, conditional=False)

    def put_source(self, name: str, source: ObjectSource) -> None:
        """``put`` streamed from the source's file (urllib3 seeks back on a retry).

        The source is read through once before the request: a body cut short by a read
        error is stored truncated by some servers (``rclone serve restic`` keeps what
        arrived, as after a broken connection), so a source that cannot be read must
        fail before the first byte is sent. The pass reads the page cache (a pack was
        just written); S3 makes the same pass for Content-MD5."""
        try:
            with source.reader() as body:
                for _piece in iter_pieces(body):
                    pass
        except OSError as exc:
            raise StoreError(f"writing {name}: reading its source: {exc.strerror or exc}") from None
        with source.reader() as body:
            self._post(name, body, conditional=False, size=source.size)

    def _post(self, name: str, data: Any, *, conditional: bool, size: int | None = None) -> bool:
        """POST ``data``: bytes, or (with ``size``) a seekable reader at its start."""
        type_, sname = restnames.encode(name)
        if type_ in ("", "keys") and not self._initialized:
            # init writes a key, then the config: have the server create the repository
            # first (idempotent; rest-server needs it, the others do no harm).
            self.create()
        what = f"writing {name}"
        body = data if size is not None or isinstance(data, bytes) else bytes(data)
        headers = {"Content-Type": "application/octet-stream"}
        if size is not None:
            headers["Content-Length"] = str(size)
        conditional = conditional and self._send_if_none_match
        if conditional:
            headers["If-None-Match"] = "*"
        response = self._request("PUT", "POST", self._url(type_, sname), what, body=body, headers=headers)
        if conditional and response.status == 412:
            # On a retry the name may be taken by our own first attempt.
            return bool(response.retries and response.retries.history) and self.holds(name, body)
        if response.status != 200:
            raise status_error(response.status, what, response.data)
        self._stats.add("bytes_up", len(body) if size is None else size)
        return True

    def rewrite_existing(self, name: str, data: bytes) -> float:
        """A lock refresh. On ``bk serve``: one POST with ``If-Match: *`` (412: the object
        is gone) whose answer tells the new ``X-Bk-Mtime``. Elsewhere: HEAD (the contract's
        "gone" check; the protocol has no conditional replace), then POST, and the store
        time from that answer (``X-Bk-Mtime``, ``Last-Modified`` or the server's ``Date``,
        which a write answer carries: the same clock as the object times rclone tells);
        a third request (HEAD) only for an answer without any of them."""
        type_, sname = restnames.encode(name)
        what = f"writing {name}"
        headers = {"Content-Type": "application/octet-stream"}
        if self._conditional_replace:
            headers["If-Match"] = "*"
        else:
            self.stat(name)
        body = bytes(data) if not isinstance(data, bytes) else data
        response = self._request("PUT", "POST", self._url(type_, sname), what, body=body, headers=headers)
        if response.status == 412 and self._conditional_replace:
            raise ObjectNotFound(f"{what}: not found (removed)")
        if response.status != 200:
            raise status_error(response.status, what, response.data)
        self._stats.add("bytes_up", len(body))
        if not any(response.headers.get(h) for h in ("X-Bk-Mtime", "Last-Modified", "Date")):
            return float(self.stat(name).mtime)
        return mtime_of(response.headers)

    def put_if_absent(self, name: str, data: bytes) -> bool:
        if self.atomic_put_if_absent:  # the server honours If-None-Match (probed)
            return self._post(name, data, conditional=True)
        # Not known to be atomic: check, then write (see the module doc). The POST still
        # carries If-None-Match, so a server that honours it refuses a racing second writer.
        if self.exists(name):
            return False
        return self._post(name, data, conditional=True)

    def probe_conditional_writes(self) -> bool:
        """Find out whether the server honours ``If-None-Match: *`` on POST; set and return
        ``atomic_put_if_absent``.

        Writes ``locks/~bk-probe-<random>`` (a name no bk or restic client reads as a lock;
        append-only servers allow writing and deleting locks) twice with the header: a
        server that honours it refuses the second write with 412 (``bk serve``), one that
        ignores it accepts it (rclone serve restic), one that rejects the header (400,
        501) is not sent it again. The probe is deleted. 3 requests; asked once per store.
        """
        with self._probe_lock:
            if self._probed:
                return self.atomic_put_if_absent
            sname = f"~bk-probe-{secrets.token_hex(8)}"
            name = f"locks/{sname}"
            what = f"probing conditional writes on {self.location}"
            url = self._url("locks", sname)
            headers = {"Content-Type": "application/octet-stream", "If-None-Match": "*"}
            supported = False
            try:
                for attempt in range(2):
                    response = self._request("PUT", "POST", url, what, body=b"probe", headers=headers)
                    if attempt == 1 and response.status == 412:
                        supported = True
                    elif response.status in (400, 501):
                        self._send_if_none_match = False
                        break
                    elif response.status != 200:
                        raise status_error(response.status, f"writing {name} ({what})", response.data)
            finally:
                try:
                    self._request("DELETE", "DELETE", url, what)
                except StoreError:
                    pass  # a left-over probe is ignored by every listing
            self.atomic_put_if_absent = supported
            self._probed = True
            return supported

    def delete(self, name: str) -> None:
        self.stat(name)  # servers answer 200 for a missing object; the contract wants an error
        type_, sname = restnames.encode(name)
        what = f"deleting {name}"
        response = self._request("DELETE", "DELETE", self._url(type_, sname), what)
        if response.status not in (200, 204):
            raise status_error(response.status, what, response.data)

    def stat(self, name: str) -> ObjectInfo:
        type_, sname = restnames.encode(name)
        what = f"stat {name}"
        response = self._request("HEAD", "HEAD", self._url(type_, sname), what)
        if response.status != 200:
            raise status_error(response.status, what)
        size = response.headers.get("Content-Length")
        if size is None or not size.isdigit():
            raise StoreError(f"{what}: the server sent no Content-Length")
        return ObjectInfo(name, int(size), mtime_of(response.headers))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        split_prefix(prefix)  # ValueError for a prefix no name can start with
        config, types = restnames.types_for_prefix(prefix)
        if config:
            try:
                yield self.stat("config")
            except ObjectNotFound:
                pass
        for type_ in types:
            for info in self._list_type(type_):
                if info.name.startswith(prefix):
                    if info.mtime is None and info.name.startswith("locks/"):
                        try:
                            info = self.stat(info.name)
                        except ObjectNotFound:
                            continue  # deleted while we listed
                    yield info

    def _list_type(self, type_: str) -> list[ObjectInfo]:
        what = f"listing {type_}/ in {self.location}"
        response = self._request("LIST", "GET", f"{self._path}{type_}/", what, headers={"Accept": V2})
        if response.status == 404:
            return []  # the type's directory does not exist yet (rclone creates them lazily)
        if response.status != 200:
            raise status_error(response.status, what, response.data)
        return parse_listing(type_, response.data, response.headers.get("Date"), what)

    def stats(self) -> dict[str, int]:
        """Requests per kind, bytes and retries (see RequestStats)."""
        return self._stats.snapshot()

    def close(self) -> None:
        self._http.close()


def open_rest(location: str, **options: Any) -> RestObjectStore:
    """Open a ``rest:`` location (the part after ``rest:``)."""
    if not location.startswith(("http://", "https://")):
        raise BadArgument(f"use rest:http://host:port/path or rest:https://user:pass@host/path, not rest:{location}")
    return RestObjectStore(location, **options)


#: The options ``rest:`` and ``rclone:`` share (``-o rest.retries=3``).
HTTP_OPTIONS = (retries_option(6), BACKOFF_OPTION, *socket_timeout_options(read_seconds=120))

BACKEND = Backend(
    name="rest",
    open=open_rest,
    forms=("rest:http://host:port/path/", "rest:https://user:pass@host[:port]/path/"),
    connections=8,
    options=(
        *HTTP_OPTIONS,
        BackendOption("cacert", str, "a PEM CA bundle to verify the server's certificate with"),
        BackendOption("insecure_tls", parse_bool, "do not verify the server's certificate (default false)"),
    ),
)
