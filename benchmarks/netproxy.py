"""Delay for the SFTP and REST benchmarks: a TCP pipe with latency, a REST request
classifier for the counting HTTP proxy, and a counter of sftp-server's request log.

Vocabulary:
    delay (TCP): every chunk of bytes the *client* sends (one ``recv`` of up to 64 KiB:
        what its TCP segments delivered so far) is forwarded to the server ``delay``
        seconds after it arrived. Chunks keep their order and wait in parallel (a pipe
        with latency, not a throttle: up to ``WINDOW`` bytes per connection are in
        flight); the server's bytes to the client are not delayed. So every exchange in
        which the client waits for an answer (an SSH key exchange step, an SFTP request,
        a channel window update the server waits for) costs ``delay`` more: a link
        whose round trip is ``delay`` longer. TCP's own ACKs are not delayed (they end
        at the proxy), as with a large enough socket buffer on a real link.
    delay (HTTP): the counting proxy of the S3 benchmark (``s3proxy.CountingProxy``):
        one sleep of ``delay`` per HTTP request, after the request was read in full and
        before it goes to the server (with ``rest_classify`` for restic's REST paths).
    SFTP requests: OpenSSH's ``sftp-server -l DEBUG1`` logs one line per answer it
        sends (``sent status``, ``sent handle``, ``sent data`` ...) and one per request
        (``open``, ``read``, ``write``, ``close``, ``rename``, ``remove`` ...);
        ``count_sftp_log`` counts them. Both tools talk to the same sftp-server, so the
        counts are the same kind of number.

Everything binds to 127.0.0.1; every loop ends on EOF, a socket error or ``stop()``.
"""

from __future__ import annotations

import queue
import re
import socket
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import unquote, urlsplit

LOOPBACK = "127.0.0.1"
CHUNK = 64 * 1024
#: Chunks in flight per connection and direction (256 x 64 KiB = 16 MiB): the pipe's window.
WINDOW_CHUNKS = 256
_REST_TYPES = ("data", "keys", "index", "snapshots", "locks")


def rest_classify(method: str, path: str, headers: Any, bucket: str = "", depth: int = 1) -> tuple[str, str]:
    """(kind, area) of one restic REST request: ``/<repo path: depth segments>/<type>/<name>``.

    Kinds: ``GET``, ``GET_RANGE``, ``HEAD``, ``POST`` (an object written), ``DELETE``,
    ``LIST`` (``GET <type>/``), ``CREATE`` (``POST ?create=true``), ``OTHER``; area: the
    type (``config`` for the config file, ``(repo)`` for the repository itself).
    """
    parts = urlsplit(path)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    rest = segments[depth:]
    if method == "POST" and "create=true" in parts.query:
        return "CREATE", "(repo)"
    if not rest:
        return "OTHER", "(repo)"
    area = rest[0] if rest[0] in _REST_TYPES or rest[0] == "config" else "(other)"
    if method == "GET" and len(rest) == 1 and rest[0] in _REST_TYPES:
        return "LIST", area
    if method == "GET":
        return ("GET_RANGE" if headers.get("Range") else "GET"), area
    if method in ("HEAD", "POST", "DELETE"):
        return method, area
    return "OTHER", area


class TcpDelayProxy:
    """Forwards TCP connections to ``upstream``, delaying the client's bytes by ``delay``.

    Args:
        upstream_host, upstream_port: the server.
        delay: seconds added to every chunk from the client (may be changed between
            measurements; a chunk takes the value when it arrives).
        port: where to listen on 127.0.0.1 (0: any free port).
    """

    def __init__(self, upstream_host: str, upstream_port: int, delay: float = 0.0, port: int = 0) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = delay
        self._lock = threading.Lock()
        self.connections = 0
        self.bytes_up = 0
        self.bytes_down = 0
        self.delayed_chunks = 0
        self._stop = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((LOOPBACK, port))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, daemon=True, name="tcp-delay-proxy")

    def start(self) -> TcpDelayProxy:
        self._thread.start()
        return self

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return {"connections": self.connections, "bytes_up": self.bytes_up, "bytes_down": self.bytes_down,
                    "delayed_chunks": self.delayed_chunks}

    def _add(self, field: str, n: int) -> None:
        with self._lock:
            setattr(self, field, getattr(self, field) + n)

    def _accept_loop(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return  # the listener was closed
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            client.settimeout(None)
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
                self._sockets.update((client, server))
            done = threading.Barrier(2, action=lambda c=client, s=server: self._close(c, s))
            threading.Thread(target=self._pump_delayed, args=(client, server, done), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, "bytes_down", done), daemon=True).start()

    def _close(self, *socks: socket.socket) -> None:
        for s in socks:
            try:
                s.close()
            except OSError:
                pass
            with self._lock:
                self._sockets.discard(s)

    @staticmethod
    def _half_close(s: socket.socket) -> None:
        try:
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def _pump(self, src: socket.socket, dst: socket.socket, field: str, done: threading.Barrier) -> None:
        """Copy ``src`` to ``dst`` as it comes (the server's direction)."""
        try:
            while data := src.recv(CHUNK):
                dst.sendall(data)
                self._add(field, len(data))
        except OSError:
            pass
        self._half_close(dst)
        done.wait()

    def _pump_delayed(self, src: socket.socket, dst: socket.socket, done: threading.Barrier) -> None:
        """Copy ``src`` to ``dst``, each chunk ``delay`` after it arrived (the client's direction)."""
        pending: queue.Queue[tuple[float, bytes] | None] = queue.Queue(maxsize=WINDOW_CHUNKS)
        writer = threading.Thread(target=self._write_due, args=(pending, dst), daemon=True)
        writer.start()
        try:
            while data := src.recv(CHUNK):
                delay = self.delay
                if delay > 0:
                    self._add("delayed_chunks", 1)
                pending.put((time.monotonic() + delay, data))  # blocks when the window is full
                self._add("bytes_up", len(data))
        except OSError:
            pass
        pending.put(None)
        writer.join()
        done.wait()

    def _write_due(self, pending: queue.Queue[tuple[float, bytes] | None], dst: socket.socket) -> None:
        broken = False
        while (item := pending.get()) is not None:
            if broken:
                continue  # drain, so the reader never blocks on a full window
            due, data = item
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                dst.sendall(data)
            except OSError:
                broken = True
        self._half_close(dst)

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            socks = list(self._sockets)
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._close(s)


_SFTP_PREFIX_RE = re.compile(r"^debug\d: request \d+: ")
#: First words of sftp-server's request lines that name a request (DEBUG1 and INFO lines).
SFTP_REQUESTS = {
    "open", "close", "read", "write", "stat", "lstat", "fstat", "setstat", "fsetstat", "opendir", "readdir",
    "closedir", "remove", "mkdir", "rmdir", "realpath", "rename", "posix-rename", "readlink", "symlink",
    "fsync", "statvfs", "fstatvfs", "hardlink", "limits", "expand-path", "copy-data", "users-groups-by-id",
}


def count_sftp_log(text: str) -> dict[str, Any]:
    """Requests in a stretch of ``sftp-server -e -l DEBUG1`` output: the answers it sent
    (``requests``), and the requests by kind where a line names them."""
    kinds: Counter[str] = Counter()
    answers = 0
    for line in text.splitlines():
        body = _SFTP_PREFIX_RE.sub("", line)
        if body.startswith("sent "):
            answers += 1
            continue
        word = body.split(" ", 1)[0]
        if word.startswith("debug"):
            continue
        if word in SFTP_REQUESTS:
            kinds[word] += 1
    return {"requests": answers, "by_kind": dict(sorted(kinds.items()))}
