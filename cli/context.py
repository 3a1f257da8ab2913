"""Global options, password resolution and opening the repository for a command."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from backupkit_cli.console import Console


def data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("backupkit"))


def default_repo() -> str:
    return str(data_dir() / "repo")


def default_password_file() -> Path:
    return data_dir() / "password"


@dataclass
class State:
    """What the global options say; every command receives it through the typer context."""

    repo: str | None = None
    password_file: str | None = None
    password_command: str | None = None
    json: bool = False
    quiet: bool = False
    verbose: int = 0
    cache_dir: str | None = None
    no_cache: bool = False
    connections: int | None = None
    console: Console = field(default_factory=Console)

    def repo_url(self) -> str:
        return self.repo or os.environ.get("BK_REPOSITORY") or default_repo()

    def uses_default_repo(self) -> bool:
        return not (self.repo or os.environ.get("BK_REPOSITORY"))

    def password(self, confirm: bool = False, create_default: bool = False) -> bytes:
        from backupkit.errors import UsageError

        pf = self.password_file or None
        pc = self.password_command or None
        if not pf and not pc:
            if "BK_PASSWORD" in os.environ:
                return os.environ["BK_PASSWORD"].encode()
            pf = os.environ.get("BK_PASSWORD_FILE")
            pc = os.environ.get("BK_PASSWORD_COMMAND") if not pf else None
        if pf:
            try:
                return Path(pf).read_bytes().rstrip(b"\r\n")
            except OSError as e:
                raise UsageError(f"cannot read password file {pf}: {e.strerror}") from None
        if pc:
            r = subprocess.run(pc, shell=True, capture_output=True)
            if r.returncode != 0:
                raise UsageError(f"password command failed with exit code {r.returncode}")
            return r.stdout.rstrip(b"\r\n")
        if self.uses_default_repo():
            dpf = default_password_file()
            if dpf.exists():
                return dpf.read_bytes().rstrip(b"\r\n")
            if create_default:
                import secrets

                dpf.parent.mkdir(parents=True, exist_ok=True)
                pw = secrets.token_urlsafe(32).encode()
                fd = os.open(dpf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(pw + b"\n")
                self.console.info(f"generated a password for the default repository in {dpf}")
                return pw
        if sys.stdin.isatty():
            import getpass

            pw = getpass.getpass("repository password: ").encode()
            if confirm and getpass.getpass("repeat password: ").encode() != pw:
                raise UsageError("passwords do not match")
            return pw
        raise UsageError("no password given: use --password-file, --password-command or BK_PASSWORD")

    def store_connections(self) -> int:
        if self.connections:
            return self.connections
        return 8 if self.repo_url().startswith("s3:") else 2

    def cache_root(self):
        if self.no_cache:
            return False
        return Path(self.cache_dir) if self.cache_dir else None

    def open_store(self):
        from backupkit.store import open_store

        url = self.repo_url()
        opts = {"connections": self.store_connections()} if url.startswith("s3:") else {}
        return open_store(url, **opts)

    def open_repo(self):
        from backupkit.repo.repository import Repository

        store = self.open_store()
        return Repository.open(store, self.password(), cache_root=self.cache_root(), connections=self.store_connections())


def kdf_params():
    """Argon2id parameters for new key files (cheap ones only for the test suite)."""
    from backupkit.repo.keys import INSECURE_TEST_KDF, KdfParams

    return INSECURE_TEST_KDF if os.environ.get("BK_TEST_INSECURE_KDF") == "1" else KdfParams()
