"""The S3 benchmark proxy's own checks (no speed): ``pytest -o addopts= benchmarks/test_s3proxy.py``.

Classification of S3 requests, and a round trip through the proxy to a tiny local HTTP
server: bodies both ways, counting, the delay, keep-alive.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import time

from benchmarks.s3proxy import CountingProxy, classify


def test_classify_s3_requests() -> None:
    h: dict[str, str] = {}
    b = "bucket"
    assert classify("GET", "/bucket/repo/data/ab/abcd", h, b, 1) == ("GET", "data")
    assert classify("GET", "/bucket/repo/data/ab/abcd", {"Range": "bytes=0-9"}, b, 1) == ("GET_RANGE", "data")
    assert classify("HEAD", "/bucket/repo/locks/x", h, b, 1) == ("HEAD", "locks")
    assert classify("PUT", "/bucket/repo/config", h, b, 1) == ("PUT", "config")
    assert classify("PUT", "/bucket/repo/data/x?partNumber=2&uploadId=u", h, b, 1) == ("PART", "data")
    assert classify("POST", "/bucket/repo/data/x?uploads", h, b, 1) == ("MPU_INIT", "data")
    assert classify("POST", "/bucket/repo/data/x?uploadId=u", h, b, 1) == ("MPU_COMPLETE", "data")
    assert classify("DELETE", "/bucket/repo/data/x?uploadId=u", h, b, 1) == ("MPU_ABORT", "data")
    assert classify("DELETE", "/bucket/repo/snapshots/x", h, b, 1) == ("DELETE", "snapshots")
    assert classify("GET", "/bucket?list-type=2&prefix=repo%2Fsnapshots%2F", h, b, 1) == ("LIST", "snapshots")
    assert classify("GET", "/bucket/?list-type=2&prefix=repo/", h, b, 1) == ("LIST", "(all)")
    assert classify("GET", "/bucket/?location=", h, b, 1) == ("BUCKET", "(bucket)")
    assert classify("HEAD", "/bucket", h, b, 1) == ("BUCKET", "(bucket)")
    assert classify("POST", "/bucket?delete", h, b, 1) == ("DELETE_MULTI", "(bucket)")
    assert classify("PUT", "/bucket/repo/.bk-probe-12ab", h, b, 1) == ("PUT", "probe")


class _Echo(http.server.BaseHTTPRequestHandler):
    """Answers GET with 100 kB, PUT with the length of what it got, HEAD with headers only."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:
        self._send(200 if "missing" not in self.path else 404, b"x" * 100_000)

    def do_HEAD(self) -> None:
        self._send(200, b"x" * 5)

    def do_PUT(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        self._send(200, str(len(self.rfile.read(n))).encode())


def test_proxy_forwards_counts_and_delays() -> None:
    upstream = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    proxy = CountingProxy("127.0.0.1", upstream.server_address[1], bucket="b", delay=0.05).start()
    try:
        port = int(proxy.endpoint.rsplit(":", 1)[1])
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        before = proxy.snapshot()
        t0 = time.perf_counter()
        conn.request("GET", "/b/repo/data/ab/cd")
        r = conn.getresponse()
        assert r.status == 200 and len(r.read()) == 100_000
        assert time.perf_counter() - t0 >= 0.05
        proxy.delay = 0.0
        conn.request("PUT", "/b/repo/index/ef", body=b"y" * 12345)
        r = conn.getresponse()
        assert r.read() == b"12345"
        conn.request("HEAD", "/b/repo/locks/1")
        r = conn.getresponse()
        assert r.status == 200 and r.read() == b"" and r.getheader("Content-Length") == "5"
        conn.request("GET", "/b/repo/keys/missing")
        r = conn.getresponse()
        assert r.status == 404
        r.read()
        used = proxy.since(before)
        assert used["requests"] == 4
        assert used["by_kind"] == {"GET": 2, "HEAD": 1, "PUT": 1}
        assert used["by_area"] == {"GET data": 1, "GET keys": 1, "HEAD locks": 1, "PUT index": 1}
        assert used["by_status"] == {"GET 404": 1}
        assert used["bytes_up"] == 12345
        assert used["bytes_down"] == 200_000 + len(b"12345")
        assert used["connections"] == 1  # kept alive
        assert used["delayed_seconds"] == 0.05
    finally:
        proxy.stop()
        upstream.shutdown()
        upstream.server_close()
