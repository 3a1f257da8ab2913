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


# -- sshd ---------------------------------------------------------------------------------------


def sshd_binary() -> str | None:
    for candidate in ("/usr/sbin/sshd", shutil.which("sshd")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


@dataclass
class SshServer:
    """OpenSSH's sshd on loopback, and an ssh client configuration that reaches it."""

    process: subprocess.Popen[bytes]
    port: int
    user: str
    home: Path  # holds .ssh/config, the user key and known_hosts
    host_key_line: str  # "127.0.0.1 ssh-ed25519 AAAA..." as known_hosts has it
    log: Path

    @property
    def ssh_config(self) -> Path:
        return self.home / ".ssh" / "config"

    @property
    def known_hosts(self) -> Path:
        return self.home / ".ssh" / "known_hosts"

    def trust_host(self) -> None:
        self.known_hosts.write_text(f"[{LOOPBACK}]:{self.port} {self.host_key_line}\n")

    def options(self, **extra: Any) -> dict[str, Any]:
        """SftpObjectStore options using this server's client configuration."""
        return {"ssh_config": str(self.ssh_config), "known_hosts": str(self.known_hosts),
                "retries": 2, "backoff": 0.02, "timeout": 10.0, **extra}

    def store(self, path: Path, **extra: Any):
        from backupkit.store.sftp import SftpObjectStore

        return SftpObjectStore("bktest", str(path), **self.options(**extra))

    def stop(self) -> None:
        stop_process(self.process)


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bk-test", "-f", str(path)], check=True,
                   stdin=subprocess.DEVNULL, capture_output=True)


def start_sshd(root: Path, sftp_subsystem: str = "internal-sftp") -> SshServer:
    """Start sshd -D (no daemon) on a free loopback port with generated keys in ``root``.

    ``sftp_subsystem``: sshd's ``Subsystem sftp`` command (the benchmarks run the external
    ``sftp-server`` with its request log)."""
    import getpass

    exe = sshd_binary()
    if exe is None or shutil.which("ssh-keygen") is None:
        pytest.skip("OpenSSH's sshd is not installed (scripts/setup.sh --test installs it): sftp tests NOT run")
    root.mkdir(parents=True, exist_ok=True)
    os.chmod(root, 0o755)
    user = getpass.getuser()
    home = root / "home"
    (home / ".ssh").mkdir(parents=True)
    os.chmod(home / ".ssh", 0o700)
    _keygen(root / "host_key")
    _keygen(home / ".ssh" / "id_test")
    (root / "authorized_keys").write_text((home / ".ssh" / "id_test.pub").read_text())
    port = free_ports(1)[0]
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
    config = root / "sshd_config"
    config.write_text(
        "\n".join([
            f"Port {port}", f"ListenAddress {LOOPBACK}", f"HostKey {root / 'host_key'}",
            f"PidFile {root / 'sshd.pid'}", f"AuthorizedKeysFile {root / 'authorized_keys'}",
            "StrictModes no", "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "UsePAM no", "PermitRootLogin prohibit-password",
            f"Subsystem sftp {sftp_subsystem}", "LogLevel ERROR", "MaxStartups 50:30:100", "MaxSessions 50", "",
        ])
    )
    (home / ".ssh" / "config").write_text(
        f"Host bktest\n  HostName {LOOPBACK}\n  Port {port}\n  User {user}\n"
        f"  IdentityFile {home / '.ssh' / 'id_test'}\n  UserKnownHostsFile {home / '.ssh' / 'known_hosts'}\n"
    )
    host_pub = (root / "host_key.pub").read_text().split()
    log = root / "sshd.log"
    with open(log, "wb") as out:
        process = subprocess.Popen([exe, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + READY_TIMEOUT
    import socket

    while True:
        if process.poll() is not None:
            raise RuntimeError(f"sshd exited with {process.returncode}:\n{log.read_text(errors='replace')}")
        try:
            with socket.create_connection((LOOPBACK, port), timeout=1) as s:
                if s.recv(4).startswith(b"SSH-"):
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            stop_process(process)
            raise RuntimeError(f"sshd did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.05)
    server = SshServer(process, port, user, home, f"{host_pub[0]} {host_pub[1]}", log)
    server.trust_host()
    return server


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SshServer]:
    """sshd on loopback for the session (skips loudly without OpenSSH)."""
    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    try:
        yield server
    finally:
        server.stop()
