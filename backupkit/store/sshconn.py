"""SSH connections for the sftp: store: what ``~/.ssh/config`` says, host keys, and a
pool of connections.

Vocabulary: a *target* is where and how to connect (host name, port, user, key files,
known_hosts, host-key policy) after ``~/.ssh/config`` was applied; a *session* is one SSH
connection with its SFTP channel; the *pool* hands sessions to threads, opening up to
``size`` of them on demand (paramiko encrypts each connection in its own thread, so
parallel uploads use parallel connections).
"""

from __future__ import annotations

import getpass
import os
import queue
import threading
from dataclasses import dataclass, field

import paramiko

from backupkit.errors import BadArgument, StoreError, StorePermissionError, StoreUnavailable

#: A broken connection (reconnect and retry). A plain OSError without errno from paramiko
#: ("Socket is closed") counts too when the connection is no longer active.
TRANSIENT = (paramiko.SSHException, EOFError, ConnectionError, TimeoutError)
_DEFAULT_KEYS = ("id_ed25519", "id_ecdsa", "id_rsa")


@dataclass
class Target:
    """Where to connect, with ``~/.ssh/config`` applied (see ``Target.resolve``)."""

    hostname: str
    port: int
    user: str
    keys: list[str] = field(default_factory=list)
    known_hosts: str = "~/.ssh/known_hosts"
    accept_new: bool = False
    timeout: float = 15.0

    @classmethod
    def resolve(
        cls, host: str, *, user: str | None = None, port: int | None = None, ssh_config: str | None = None,
        known_hosts: str | None = None, identity_file: str | None = None, accept_new_host_key: bool = False,
        timeout: float = 15.0,
    ) -> Target:
        """Apply HostName, Port, User, IdentityFile, StrictHostKeyChecking and
        UserKnownHostsFile of ``ssh_config`` (default ``~/.ssh/config``); arguments win."""
        config = paramiko.SSHConfig()
        config_path = os.path.expanduser(ssh_config or "~/.ssh/config")
        if os.path.isfile(config_path):
            try:
                config = paramiko.SSHConfig.from_path(config_path)
            except (OSError, paramiko.SSHException) as exc:
                raise BadArgument(f"cannot read {config_path}: {exc}") from None
        entry = config.lookup(host)
        keys = [os.path.expanduser(p) for p in entry.get("identityfile", [])]
        if identity_file:
            keys.insert(0, os.path.expanduser(identity_file))
        strict = str(entry.get("stricthostkeychecking", "yes")).lower()
        files = entry.get("userknownhostsfile")
        first_known = files.split()[0] if isinstance(files, str) and files else None
        return cls(
            hostname=entry.get("hostname", host),
            port=port or int(entry.get("port", 22)),
            user=user or entry.get("user") or getpass.getuser(),
            keys=keys,
            known_hosts=os.path.expanduser(known_hosts or first_known or "~/.ssh/known_hosts"),
            accept_new=accept_new_host_key or strict in ("no", "off", "accept-new"),
            timeout=timeout,
        )


class Session:
    """One SSH connection and its SFTP channel."""

    def __init__(self, client: paramiko.SSHClient, sftp: paramiko.SFTPClient) -> None:
        self.client, self.sftp = client, sftp

    def broken(self) -> bool:
        transport = self.client.get_transport()
        return transport is None or not transport.is_active()

    def close(self) -> None:
        for thing in (self.sftp, self.client):
            try:
                thing.close()
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass


def connect(target: Target, where: str) -> Session:
    """Open a session; errors leave as StoreError subclasses naming ``where``."""
    client = paramiko.SSHClient()
    try:
        if os.path.isfile(target.known_hosts):
            client.load_host_keys(target.known_hosts)
    except (OSError, paramiko.SSHException) as exc:
        raise StoreError(f"cannot read {target.known_hosts}: {exc}") from None
    client.set_missing_host_key_policy(_AcceptAndSave(target.known_hosts) if target.accept_new else _Refuse())
    keys = [k for k in target.keys if os.path.isfile(k)]
    if not keys:
        keys = [p for p in (os.path.expanduser(f"~/.ssh/{n}") for n in _DEFAULT_KEYS) if os.path.isfile(p)]
    what = f"connecting to {where}"
    try:
        client.connect(
            target.hostname, port=target.port, username=target.user, key_filename=keys or None,
            allow_agent=True, look_for_keys=False, timeout=target.timeout,
            banner_timeout=target.timeout, auth_timeout=target.timeout,
        )
        sftp = client.open_sftp()
    except _HostKeyRefused as exc:
        client.close()
        raise StorePermissionError(str(exc)) from None
    except paramiko.BadHostKeyException as exc:
        client.close()
        raise StorePermissionError(
            f"{what}: the host key of {target.hostname} CHANGED (expected {exc.expected_key.get_name()} "
            f"{exc.expected_key.get_fingerprint().hex()}): refusing to connect; fix {target.known_hosts} "
            "if the change is legitimate"
        ) from None
    except paramiko.AuthenticationException as exc:
        client.close()
        raise StorePermissionError(f"{what}: authentication failed as {target.user} ({exc})") from None
    except (*TRANSIENT, OSError) as exc:
        client.close()
        raise StoreUnavailable(f"{what}: {type(exc).__name__}: {exc}") from None
    return Session(client, sftp)


class Pool:
    """Up to ``size`` sessions to ``target``, opened on demand, reused last-in first-out."""

    def __init__(self, target: Target, size: int, where: str) -> None:
        self.target, self.size, self.where = target, size, where
        self._idle: queue.LifoQueue[Session] = queue.LifoQueue()
        self.opened = 0
        self._lock = threading.Lock()

    def checkout(self) -> Session:
        try:
            return self._idle.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            can_open = self.opened < self.size
            if can_open:
                self.opened += 1
        if not can_open:
            return self._idle.get()
        try:
            return connect(self.target, self.where)
        except BaseException:
            with self._lock:
                self.opened -= 1
            raise

    def give_back(self, session: Session) -> None:
        self._idle.put(session)

    def discard(self, session: Session) -> None:
        session.close()
        with self._lock:
            self.opened -= 1

    def close(self) -> None:
        while True:
            try:
                session = self._idle.get_nowait()
            except queue.Empty:
                return
            self.discard(session)


class _HostKeyRefused(paramiko.SSHException):
    pass


class _Refuse(paramiko.MissingHostKeyPolicy):
    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise _HostKeyRefused(
            f"the host key of {hostname} ({key.get_name()} {key.get_fingerprint().hex()}) is not in "
            "known_hosts: connect once with ssh to check and add it, or pass -o sftp.accept-new-host-key=true"
        )


class _AcceptAndSave(paramiko.MissingHostKeyPolicy):
    def __init__(self, path: str) -> None:
        self.path = path

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        try:
            os.makedirs(os.path.dirname(self.path) or ".", 0o700, exist_ok=True)
            with open(self.path, "a", encoding="ascii") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        except OSError:
            pass  # trusted for this run; remembering it is a convenience
