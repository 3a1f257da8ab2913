"""A counting, delaying HTTP proxy in front of an S3 server, for the S3 benchmark.

Vocabulary:
    delay: a fixed sleep per request, after the request has been read in full and before
        it is forwarded: a store one round trip of ``delay`` away. Requests on different
        connections wait in parallel, as they would on a real network.
    kind: what an S3 request does, from its method, query and headers: ``GET``,
        ``GET_RANGE`` (a Range header), ``HEAD``, ``PUT``, ``PART`` (a multipart part),
        ``MPU_INIT``, ``MPU_COMPLETE``, ``MPU_ABORT``, ``LIST`` (ListObjects v1 or v2),
        ``DELETE``, ``DELETE_MULTI`` (POST ?delete), ``BUCKET`` (bucket-level requests
        such as HEAD bucket or ?location), ``OTHER``.
    area: the first path segment of the object key below the repository prefix
        (``data``, ``index``, ``snapshots``, ``locks``, ``keys``, ``config``, ...); for a
        listing, that of its ``prefix`` parameter. Which part of the repository layout a
        request touched; restic's layout has the same top-level names as bk's.
    bytes up / down: request and response body bytes (what the client uploads and
        downloads), headers not counted.
    connections: client TCP connections accepted; a client that reuses its pool opens
        about as many as it runs requests in parallel.
    proxy CPU: the handler threads' own CPU time (``time.thread_time``) per request, so
        the proxy's cost can be told apart from the tools' and the server's.

Counting at the proxy makes bk's and restic's figures comparable: every HTTP request
either tool sends is classified the same way, retries included.

Path-style addressing only (``http://127.0.0.1:PORT/bucket/key``), which is what bk and
restic use for an IP-address endpoint. The proxy passes every header through (SigV4
signs the Host header, which stays the proxy's), strips hop-by-hop headers and
``Expect`` (it answers 100-continue itself), and keeps one upstream connection per
client connection. Bound to 127.0.0.1 only.

Usage (from Python)::

    proxy = CountingProxy("127.0.0.1", 8333, bucket="bk-test", delay=0.020).start()
    before = proxy.snapshot()
    ...                                  # point the tool at proxy.endpoint
    used = proxy.since(before)           # {"requests": ..., "by_kind": {...}, ...}
    proxy.stop()
"""

from __future__ import annotations

import http.client
import http.server
import socket
import socketserver
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LOOPBACK = "127.0.0.1"
_CHUNK = 1 << 20
_HOP_BY_HOP = {
    "connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "expect",
}


def classify(method: str, path: str, headers: Any, bucket: str, depth: int) -> tuple[str, str]:
    """(kind, area) of one S3 request; see the module docstring.

    Args:
        method: the HTTP method.
        path: the request target (path and query).
        headers: the request headers (a mapping with case-insensitive ``get``).
        bucket: the bucket name (the first path segment).
        depth: how many key segments form the repository prefix (skipped for ``area``).
    """
    parts = urlsplit(path)
    query = parse_qs(parts.query, keep_blank_values=True)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    key = segments[1:] if segments and segments[0] == bucket else segments
    if not key:  # bucket level
        if method == "GET" and ("list-type" in query or "prefix" in query or "delimiter" in query
                                or "continuation-token" in query or "marker" in query):
            prefix = [s for s in query.get("prefix", [""])[0].split("/")]
            area = prefix[depth] if len(prefix) > depth and prefix[depth] else "(all)"
            return "LIST", area
        if method == "GET" and not query:
            return "LIST", "(all)"
        if method == "POST" and "delete" in query:
            return "DELETE_MULTI", "(bucket)"
        return "BUCKET", "(bucket)"
    area = key[depth] if len(key) > depth else "(prefix)"
    if area.startswith(".bk-probe-"):
        area = "probe"
    if method == "GET":
        return ("GET_RANGE" if headers.get("Range") else "GET"), area
    if method == "HEAD":
        return "HEAD", area
    if method == "PUT":
        if "partNumber" in query:
            return "PART", area
        return "PUT", area
    if method == "POST":
        if "uploads" in query:
            return "MPU_INIT", area
        if "uploadId" in query:
            return "MPU_COMPLETE", area
        return "OTHER", area
    if method == "DELETE":
        return ("MPU_ABORT" if "uploadId" in query else "DELETE"), area
    return "OTHER", area


class Counts:
    """Thread-safe request counters; ``snapshot()`` copies them, ``diff`` subtracts two."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self.active = 0  # requests being handled (counted when they are done)
        self.by_kind: Counter[str] = Counter()
        self.by_area: Counter[str] = Counter()  # "KIND area"
        self.by_status: Counter[str] = Counter()  # non-2xx answers, "KIND status"
        self.bytes_up = 0
        self.bytes_down = 0
        self.delayed_seconds = 0.0
        self.connections = 0  # client connections accepted (churn shows here)
        self.cpu_seconds = 0.0  # the proxy's own CPU time (its handler threads)

    def connected(self) -> None:
        with self._lock:
            self.connections += 1

    def begin(self) -> None:
        with self._lock:
            self.active += 1

    def end(self) -> None:
        with self._lock:
            self.active -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until no request is being handled: a client may have read its last answer
        before the handler counted it."""
        with self._lock:
            self._idle.wait_for(lambda: self.active == 0, timeout)

    def add(self, kind: str, area: str, status: int, up: int, down: int, delayed: float, cpu: float) -> None:
        with self._lock:
            self.cpu_seconds += cpu
            self.by_kind[kind] += 1
            self.by_area[f"{kind} {area}"] += 1
            if not 200 <= status < 300:
                self.by_status[f"{kind} {status}"] += 1
            self.bytes_up += up
            self.bytes_down += down
            self.delayed_seconds += delayed

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "requests": sum(self.by_kind.values()),
                "by_kind": dict(self.by_kind),
                "by_area": dict(self.by_area),
                "by_status": dict(self.by_status),
                "bytes_up": self.bytes_up,
                "bytes_down": self.bytes_down,
                "delayed_seconds": round(self.delayed_seconds, 3),
                "connections": self.connections,
                "proxy_cpu_seconds": round(self.cpu_seconds, 3),
            }

    @staticmethod
    def diff(after: dict[str, Any], before: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in after.items():
            if isinstance(v, dict):
                d = {kk: vv - before.get(k, {}).get(kk, 0) for kk, vv in v.items()}
                out[k] = {kk: vv for kk, vv in sorted(d.items()) if vv}
            else:
                out[k] = round(v - before.get(k, 0), 3) if isinstance(v, float) else v - before.get(k, 0)
        return out


class _NoDelayConnection(http.client.HTTPConnection):
    """An upstream connection without Nagle's algorithm (headers and body are separate writes)."""

    def connect(self) -> None:
        super().connect()
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class CountingProxy:
    """Forwards HTTP/1.1 requests to ``upstream_host:upstream_port``, delayed and counted.

    Args:
        upstream_host, upstream_port: the S3 server.
        bucket: the bucket requests address (for classification only).
        delay: seconds to wait per request (may be changed between measurements).
        depth: key segments of the repository prefix (for ``area``).
        port: where to listen on 127.0.0.1 (0: any free port).
        classifier: ``(method, path, headers, bucket, depth) -> (kind, area)``; default
            ``classify`` (S3). ``benchmarks/netproxy.py`` has one for restic's REST protocol.
    """

    def __init__(self, upstream_host: str, upstream_port: int, bucket: str, delay: float = 0.0,
                 depth: int = 1, port: int = 0, classifier: Any = None) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.classifier = classifier or classify
        self.bucket = bucket
        self.delay = delay
        self.depth = depth
        self.port = port
        self.counts = Counts()
        self._server: socketserver.ThreadingTCPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def snapshot(self) -> dict[str, Any]:
        return self.counts.snapshot()

    def since(self, before: dict[str, Any]) -> dict[str, Any]:
        """What was counted since ``before`` (a ``snapshot()``), once in-flight requests are done."""
        self.counts.wait_idle()
        return Counts.diff(self.counts.snapshot(), before)

    def start(self) -> CountingProxy:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 600  # an idle client connection is closed after this long
            upstream_conn: _NoDelayConnection | None = None

            def setup(self) -> None:
                super().setup()
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                proxy.counts.connected()

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                n = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(n) if n else b""

            def _send_upstream(self, body: bytes) -> http.client.HTTPResponse:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                if body or self.command in ("PUT", "POST"):
                    headers["Content-Length"] = str(len(body))
                for attempt in (0, 1):
                    if self.upstream_conn is None:
                        self.upstream_conn = _NoDelayConnection(*proxy.upstream, timeout=300)
                    try:
                        self.upstream_conn.request(self.command, self.path, body=body, headers=headers)
                        return self.upstream_conn.getresponse()
                    except (ConnectionError, http.client.RemoteDisconnected, http.client.BadStatusLine):
                        # a kept-alive upstream connection the server had closed: reconnect once
                        self.upstream_conn.close()
                        self.upstream_conn = None
                        if attempt:
                            raise
                raise AssertionError("unreachable")

            def _handle(self) -> None:
                proxy.counts.begin()
                try:
                    self._forward()
                finally:
                    proxy.counts.end()

            def _forward(self) -> None:
                cpu0 = time.thread_time()
                body = self._body()
                kind, area = proxy.classifier(self.command, self.path, self.headers, proxy.bucket, proxy.depth)
                delay = proxy.delay
                if delay > 0:
                    time.sleep(delay)
                try:
                    resp = self._send_upstream(body)
                except OSError as exc:
                    msg = f"upstream: {exc}".encode()
                    self.send_response(502)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    proxy.counts.add(kind, area, 502, len(body), 0, delay, time.thread_time() - cpu0)
                    return
                length = resp.getheader("Content-Length")
                data: bytes | None = None
                if self.command != "HEAD" and length is None:  # chunked or until-close: buffer it
                    data = resp.read()
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() in _HOP_BY_HOP or (k.lower() == "content-length" and data is not None):
                        continue
                    self.send_header(k, v)
                if data is not None:
                    self.send_header("Content-Length", str(len(data)))
                if resp.will_close:
                    self.send_header("Connection", "close")
                    self.close_connection = True
                self.end_headers()
                down = 0
                if self.command == "HEAD":
                    resp.read()
                elif data is not None:
                    self.wfile.write(data)
                    down = len(data)
                else:
                    while chunk := resp.read(_CHUNK):
                        self.wfile.write(chunk)
                        down += len(chunk)
                self.wfile.flush()
                if resp.will_close and self.upstream_conn is not None:
                    self.upstream_conn.close()
                    self.upstream_conn = None
                proxy.counts.add(kind, area, resp.status, len(body), down, delay, time.thread_time() - cpu0)

            def finish(self) -> None:
                try:
                    super().finish()
                finally:
                    if self.upstream_conn is not None:
                        self.upstream_conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 64

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hangs up mid-answer is not the proxy's problem

        self._server = Server((LOOPBACK, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        daemon=True, name="s3proxy")
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
