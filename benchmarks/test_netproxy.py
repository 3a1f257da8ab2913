"""The SFTP/REST benchmark's delay and counting (no speed asserted, only that the delay is
there): ``pytest -o addopts= benchmarks/test_netproxy.py``.

A TCP echo server behind ``TcpDelayProxy``: bytes arrive intact both ways, a round trip
takes at least the delay, pipelined chunks do not queue behind each other's delay, and a
half-close passes through. The REST classifier on restic's paths, and the counting HTTP
proxy with it in front of a tiny HTTP server. The sftp-server log counter.
"""

from __future__ import annotations

import http.client
import http.server
import os
import socket
import threading
import time

from benchmarks.netproxy import LOOPBACK, TcpDelayProxy, count_sftp_log, rest_classify
from benchmarks.s3proxy import CountingProxy

DELAY = 0.15


class _EchoServer:
    """Echoes every byte back until the client half-closes, then closes (bounded by a timeout)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind((LOOPBACK, 0))
        self.sock.listen(8)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        conn.settimeout(10)
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    def close(self) -> None:
        self.sock.close()


def _round_trip(sock: socket.socket, payload: bytes) -> tuple[bytes, float]:
    t = time.perf_counter()
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        assert chunk, "connection closed early"
        got += chunk
    return got, time.perf_counter() - t


def test_tcp_proxy_delays_the_clients_bytes_and_keeps_them_intact() -> None:
    echo = _EchoServer()
    proxy = TcpDelayProxy(LOOPBACK, echo.port, delay=0.0).start()
    try:
        with socket.create_connection((LOOPBACK, proxy.port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            payload = os.urandom(3 * 1024 * 1024)
            got, _ = _round_trip(s, payload)
            assert got == payload
            _, undelayed = _round_trip(s, b"ping")
            proxy.delay = DELAY
            got, delayed = _round_trip(s, b"ping")
            assert got == b"ping" and delayed >= DELAY, delayed
            # Ten small writes in a row: each waits DELAY from its own arrival, not behind
            # the others (latency, not a throttle).
            t = time.perf_counter()
            for i in range(10):
                s.sendall(b"x%d" % i)
                time.sleep(0.005)
            got = b""
            while len(got) < sum(len(b"x%d" % i) for i in range(10)):
                got += s.recv(65536)
            elapsed = time.perf_counter() - t
            assert got == b"".join(b"x%d" % i for i in range(10))
            assert DELAY <= elapsed < 10 * DELAY, elapsed
            s.shutdown(socket.SHUT_WR)  # the half-close reaches the server, which closes
            s.settimeout(10)
            assert s.recv(10) == b""
        counts = proxy.snapshot()
        assert counts["connections"] == 1 and counts["delayed_chunks"] >= 11
        assert counts["bytes_up"] == counts["bytes_down"] == len(payload) + 8 + len(got)
        print(f"round trip without delay {undelayed * 1000:.1f} ms, with {DELAY * 1000:.0f} ms: {delayed * 1000:.1f} ms")
    finally:
        proxy.stop()
        echo.close()


def test_rest_classify() -> None:
    h: dict[str, str] = {}
    assert rest_classify("POST", "/repo/?create=true", h) == ("CREATE", "(repo)")
    assert rest_classify("GET", "/repo/data/", h) == ("LIST", "data")
    assert rest_classify("GET", "/repo/data/abcd", h) == ("GET", "data")
    assert rest_classify("GET", "/repo/data/abcd", {"Range": "bytes=0-9"}) == ("GET_RANGE", "data")
    assert rest_classify("HEAD", "/repo/config", h) == ("HEAD", "config")
    assert rest_classify("POST", "/repo/locks/ab", h) == ("POST", "locks")
    assert rest_classify("DELETE", "/repo/locks/ab", h) == ("DELETE", "locks")
    assert rest_classify("GET", "/a/b/keys/", h, depth=2) == ("LIST", "keys")


class _Small(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(n) if n else b"listing"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_HEAD = do_DELETE = _answer


def test_counting_proxy_with_the_rest_classifier_counts_and_delays() -> None:
    server = http.server.ThreadingHTTPServer((LOOPBACK, 0), _Small)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    proxy = CountingProxy(LOOPBACK, server.server_address[1], bucket="", depth=1, delay=DELAY,
                          classifier=rest_classify).start()
    try:
        before = proxy.snapshot()
        conn = http.client.HTTPConnection(LOOPBACK, int(proxy.endpoint.rsplit(":", 1)[1]), timeout=10)
        t = time.perf_counter()
        for method, path, body in (("POST", "/r/data/ab", b"x" * 1000), ("GET", "/r/data/", None),
                                   ("HEAD", "/r/config", None)):
            conn.request(method, path, body=body)
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200
        elapsed = time.perf_counter() - t
        conn.close()
        used = proxy.since(before)
        assert used["by_kind"] == {"POST": 1, "LIST": 1, "HEAD": 1}, used
        assert used["bytes_up"] == 1000 and used["connections"] == 1
        assert elapsed >= 3 * DELAY, elapsed
    finally:
        proxy.stop()
        server.shutdown()
        server.server_close()


def test_count_sftp_log() -> None:
    text = "\n".join([
        'session opened for local user root from [127.0.0.1]',
        'received client version 3',
        'debug1: request 1: limits',
        'open "/r/x" flags WRITE,CREATE,TRUNCATE mode 0644',
        'debug1: request 4: sent handle handle 0',
        'debug1: request 6: write "/r/x" (handle 0) off 0 len 3',
        'sent status Success',
        'close "/r/x" bytes read 0 written 3',
        'sent status Success',
        'debug1: request 9: read "/r/x" (handle 0) off 0 len 261120',
        'debug1: request 9: sent data len 3',
        'debug1: read eof',
    ])
    assert count_sftp_log(text) == {"requests": 4, "by_kind": {"close": 1, "limits": 1, "open": 1, "read": 1,
                                                               "write": 1}}
