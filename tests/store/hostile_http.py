"""A hostile HTTP server on loopback for the rest: and s3: stores: every answer is
8 MiB sent chunked, so there is no Content-Length to check before reading."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from tests.conftest_s3 import LOOPBACK

BODY = 8 << 20


@contextmanager
def chunked_server() -> Iterator[tuple[str, list[int]]]:
    """(base URL ending in /, bytes sent per answer). GET of a path holding ``/keys/``
    answers 500 (an error with a huge message), any other GET 200."""
    sent: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def do_GET(self):
            self.send_response(500 if "/keys/" in self.path else 200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            n = 0
            try:
                piece = bytes(64 * 1024)
                while n < BODY:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                    n += len(piece)
                self.wfile.write(b"0\r\n\r\n")
            except OSError:
                pass  # the client hung up: what the tests want
            sent.append(n)

    server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://{LOOPBACK}:{server.server_address[1]}/", sent
    finally:
        server.shutdown()
        server.server_close()
