"""Servers for the remote backends' tests: ``bk serve``, ``rclone serve restic``, sshd.

Fixtures (re-exported by ``tests/conftest.py``):

``bk_server`` (session)
    ``bk serve --no-auth`` (the real CLI, a child process) on a free loopback port over a
    temp data directory. ``.url(repo)`` gives a ``rest:`` URL, ``.store(repo)`` a
    RestObjectStore on a new repository.
``start_bk_server``
    A factory: ``start_bk_server(path, *flags)`` starts another ``bk serve`` (append-only,
    htpasswd, TLS ...); every one is stopped at the end of the test.
``rclone_server`` (session)
    ``rclone serve restic`` (an independent implementation of the protocol) on a free
    loopback port over a temp directory. Skips loudly without the ``rclone`` program.

Every server is a child process killed at teardown; nothing here mocks a client.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest_s3 import LOOPBACK, free_ports

READY_TIMEOUT = 30.0
_BK_READY_RE = re.compile(r"serving repositories under .* on (https?)://[^:]+:(\d+)/")
#: Store options that keep tests fast.
TEST_REST_OPTIONS: dict[str, Any] = {"retries": 3, "backoff": 0.02, "connect_timeout": 5.0, "read_timeout": 30.0}


def wait_for_line(process: subprocess.Popen[bytes], log: Path, pattern: re.Pattern[str], what: str) -> re.Match[str]:
    """Poll ``log`` until a line matches ``pattern`` (bounded); raise with the log if not."""
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace") if log.exists() else ""
        match = pattern.search(text)
        if match:
            return match
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with {process.returncode}:\n{text[-2000:]}")
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not start in {READY_TIMEOUT:.0f}s:\n{log.read_text(errors='replace')[-2000:]}")


def stop_process(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(sig)
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


@dataclass
class RestServer:
    """A running REST server child process."""

    process: subprocess.Popen[bytes]
    port: int
    path: Path
    log: Path
    scheme: str = "http"
    user: str = ""
    password: str = ""
    kind: str = "bk serve"
    extra: dict[str, Any] = field(default_factory=dict)

    def base(self, repo: str = "", *, user: str | None = None, password: str | None = None) -> str:
        user = self.user if user is None else user
        password = self.password if password is None else password
        creds = f"{user}:{password}@" if user else ""
        return f"{self.scheme}://{creds}{LOOPBACK}:{self.port}/" + (f"{repo}/" if repo else "")

    def url(self, repo: str = "", **creds: str) -> str:
        """A ``rest:`` repository URL for ``repo``."""
        return "rest:" + self.base(repo, **creds)

    def store(self, repo: str | None = None, **options: Any):
        """A RestObjectStore on a new repository (created on the server)."""
        from backupkit.store.rest import RestObjectStore

        repo = repo or "t-" + uuid.uuid4().hex[:12]
        store = RestObjectStore(self.base(repo), **{**TEST_REST_OPTIONS, **options})
        store.create()
        return store

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop_process(self.process, sig)


def start_bk_serve(path: Path, *flags: str, log_dir: Path | None = None, env: dict[str, str] | None = None) -> RestServer:
    """Start ``bk serve --path PATH --listen 127.0.0.1:0 FLAGS`` and wait until it serves."""
    log_dir = log_dir or path.parent
    log = log_dir / f"bk-serve-{uuid.uuid4().hex[:6]}.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "backupkit_cli", "serve", "--path", str(path), "--listen", f"{LOOPBACK}:0", *flags],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {}), "COLUMNS": "400"},
        )
    try:
        match = wait_for_line(process, log, _BK_READY_RE, "bk serve")
    except BaseException:
        stop_process(process)
        raise
    return RestServer(process, int(match.group(2)), path, log, scheme=match.group(1))


@pytest.fixture(scope="session")
def bk_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    """``bk serve --no-auth`` for the session (see the module docstring)."""
    root = tmp_path_factory.mktemp("bk-serve")
    server = start_bk_serve(root / "data", "--no-auth")
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def start_bk_server(tmp_path: Path) -> Iterator[Any]:
    """A factory of ``bk serve`` processes, all stopped after the test."""
    started: list[RestServer] = []

    def start(path: Path, *flags: str, **kwargs: Any) -> RestServer:
        server = start_bk_serve(path, *flags, log_dir=tmp_path, **kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def rclone_binary() -> str | None:
    return shutil.which("rclone")


_RCLONE_READY_RE = re.compile(r"Serving restic REST API on http://[^:]+:(\d+)/")


@pytest.fixture(scope="session")
def rclone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RestServer]:
    """``rclone serve restic`` on loopback over a temp directory (skips without rclone)."""
    exe = rclone_binary()
    if exe is None:
        pytest.skip("rclone is not installed (scripts/setup.sh --test installs it): rclone tests NOT run")
    root = tmp_path_factory.mktemp("rclone-serve")
    log = root / "rclone.log"
    port = free_ports(1)[0]
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [exe, "serve", "restic", "--addr", f"{LOOPBACK}:{port}", str(root / "data")],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        wait_for_line(process, log, _RCLONE_READY_RE, "rclone serve restic")
    except BaseException:
        stop_process(process)
        raise
    server = RestServer(process, port, root / "data", log, kind="rclone serve restic")
    try:
        yield server
    finally:
        server.stop()
