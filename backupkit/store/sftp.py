"""SftpObjectStore: objects as files on an SSH server, over SFTP (paramiko).

Vocabulary: a *session* is one SSH connection with its SFTP channel; the store keeps a
pool of up to ``connections`` sessions, opened on demand, so parallel uploads run on
parallel connections (paramiko encrypts each connection in its own thread).

Locations (restic's forms, parsed in ``sftp_url``): ``sftp:user@host:/srv/repo``,
``sftp:alias:/srv/repo`` (an ``~/.ssh/config`` Host), ``sftp:host:repo`` (relative to the
login directory) and ``sftp://user@host:port/srv/repo``. ``~/.ssh/config`` decides HostName, Port, User,
IdentityFile, StrictHostKeyChecking and UserKnownHostsFile; keys come from the SSH agent
and the key files. A host whose key is not in known_hosts is refused unless
``accept_new_host_key`` (``-o sftp.accept-new-host-key=true``) or the config's
``StrictHostKeyChecking accept-new``/``no`` says otherwise; a changed key is always
refused.

The layout is the local store's (``root/<name>``). Writes go to ``.tmp-*`` in the target
directory, are fsynced (``fsync@openssh.com``) and renamed over the name
(``posix-rename@openssh.com``). ``put_if_absent`` renames with plain SFTP RENAME, which
OpenSSH's sftp-server does with link(2): it fails when the name is taken, so the create
is atomic and the object is never seen half written.

Beside this module: ``sshconn`` (the SSH connections and their pool), ``sftp_files``
(writing, listing and sweeping files on one SFTP channel), ``sftp_handles`` (range reads
keep the file open and ask for as much per request as the server allows), ``sftp_url``
(locations and ``-o sftp.*`` options).
"""

from __future__ import annotations

import errno
import stat as stat_module
import time
from collections.abc import Iterator
from typing import Any

import paramiko

from backupkit.errors import BadArgument, ObjectNotFound, StoreError, StoreUnavailable
from backupkit.store.base import Backend, ObjectInfo, ObjectSource, ObjectStore, check_name, split_prefix, too_large
from backupkit.store.retry import Backoff, RequestStats
from backupkit.store.sftp_files import list_objects, map_os_error, remove_quietly, sweep_temp, write_temp
from backupkit.store.sftp_handles import Changes, Handles, close_quietly, open_file
from backupkit.store.sftp_url import FORMS, OPTIONS, parse_location
from backupkit.store.sshconn import TRANSIENT, Pool, Session, Target

_PIECE = 1024 * 1024


class SftpObjectStore(ObjectStore):
    """An ObjectStore in a directory on an SSH server.

    Args:
        host: the host or ``~/.ssh/config`` alias.
        path: the repository directory (relative paths start at the login directory).
        user, port: override the config (default: config, else the local user and 22).
        connections: the most SSH connections used at once.
        ssh_config: the OpenSSH client config file (default ``~/.ssh/config``).
        known_hosts: the known_hosts file (default: the config's UserKnownHostsFile, else
            ``~/.ssh/known_hosts``).
        identity_file: a private key file (added to the config's IdentityFile list).
        accept_new_host_key: trust and remember a host key not in known_hosts.
        retries: attempts per operation in all (a broken connection is reopened).
        backoff: the first backoff bound in seconds.
        timeout: connect and banner timeout in seconds.
        fsync: ask the server to fsync each written file.
    """

    request_bytes = 512 * 1024

    def __init__(
        self,
        host: str,
        path: str,
        *,
        user: str | None = None,
        port: int | None = None,
        connections: int = 4,
        ssh_config: str | None = None,
        known_hosts: str | None = None,
        identity_file: str | None = None,
        accept_new_host_key: bool = False,
        retries: int = 4,
        backoff: float = 0.2,
        timeout: float = 15.0,
        fsync: bool = True,
    ) -> None:
        if not host or not path:
            raise BadArgument("use sftp:user@host:/path, sftp:alias:/path or sftp://user@host:port/path")
        if connections < 1 or retries < 1:
            raise BadArgument("connections and retries must be at least 1")
        self.target = Target.resolve(
            host, user=user, port=port, ssh_config=ssh_config, known_hosts=known_hosts,
            identity_file=identity_file, accept_new_host_key=accept_new_host_key, timeout=timeout,
        )
        self.hostname, self.port, self.user = self.target.hostname, self.target.port, self.target.user
        self.root = path.rstrip("/") or "/"
        self._fsync = fsync
        self._backoff = Backoff(attempts=retries, base=backoff, cap=max(backoff, 5.0))
        self._stats = RequestStats()
        shown_port = f":{self.port}" if self.port != 22 else ""
        if self.root.startswith("/"):
            self.location = f"sftp://{self.user}@{self.hostname}{shown_port}{self.root}"
        else:
            self.location = f"sftp:{self.user}@{self.hostname}:{self.root}"
        self._pool = Pool(self.target, connections, self.location)
        self._changes = Changes()

    def _run(self, kind: str, what: str, fn: Any, *, with_session: bool = False) -> Any:
        """Run ``fn(sftp)`` (``fn(session)`` with ``with_session``) on a pooled session;
        reconnect and retry on broken connections.

        ``OSError`` with an errno from the server maps to the StoreError tree."""
        for attempt in range(self._backoff.attempts):
            self._stats.add(kind)
            session = self._pool.checkout()
            try:
                result = fn(session if with_session else session.sftp)
            except TRANSIENT as exc:
                broke = f"{type(exc).__name__}: {exc}"
            except OSError as exc:
                if exc.errno is not None or not session.broken():
                    self._pool.give_back(session)
                    raise map_os_error(exc, what) from None
                broke = str(exc)
            except StoreError:
                self._pool.give_back(session)
                raise
            except BaseException:
                self._pool.discard(session)
                raise
            else:
                self._pool.give_back(session)
                return result
            # the connection broke: a new session, after a backoff
            self._pool.discard(session)
            if attempt + 1 >= self._backoff.attempts:
                raise StoreUnavailable(f"{what}: the connection broke ({broke})") from None
            self._stats.add("retries")
            self._backoff.wait(attempt)
        raise AssertionError("unreachable")

    # -- helpers --------------------------------------------------------------------------------

    def _path(self, name: str) -> str:
        check_name(name)
        return f"{self.root}/{name}"

    def _write_temp(self, sftp: paramiko.SFTPClient, path: str, data: bytes | ObjectSource) -> str:
        return write_temp(sftp, path, data, self._fsync, self.hostname)

    # -- the contract -----------------------------------------------------------------------------

    def get(self, name: str, max_size: int | None = None) -> bytes:
        path = self._path(name)

        def read(session: Session) -> bytes:
            f, size = open_file(session, path)
            self._stats.add("file_opens")
            with f:
                too_large(name, size, max_size)  # from the stat, before reading anything
                f.prefetch(size)
                # Pieces of 1 MiB: paramiko's read of a whole large file at once is ~25x
                # slower (3.7 vs 100 MB/s on loopback).
                data = b"".join(iter(lambda: f.read(_PIECE), b""))
            if len(data) != size:
                raise EOFError(f"read {len(data)} of {size} bytes")
            return data

        data = self._run("GET", f"reading {name}", read, with_session=True)
        self._stats.add("bytes_down", len(data))
        return data

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        path = self._path(name)
        if offset < 0 or length < 0:
            raise StoreError(f"invalid range {offset}+{length} of {name}")
        what = f"reading {name}"

        def read(session: Session) -> bytes:
            handles = Handles.of(session)
            entry = handles.take(path, self._changes)
            if entry is None:
                # The change count before the open: a write or delete of the name that
                # ends after it makes the handle out of date.
                seen = self._changes.seen()
                f, size = open_file(session, path)
                self._stats.add("file_opens")
                entry = (f, size, seen, time.monotonic())
            f, size = entry[0], entry[1]
            if offset + length > size:
                handles.keep(path, entry)
                raise StoreError(f"{what}: range {offset}+{length} is past the end ({size} bytes)")
            data = b""
            if length:
                pieces = [(o, min(_PIECE, offset + length - o)) for o in range(offset, offset + length, _PIECE)]
                try:
                    data = b"".join(f.readv(pieces))
                except BaseException:
                    close_quietly(f)  # never reuse a handle in an unknown state
                    raise
            handles.keep(path, entry)
            return data

        data = self._run("GET_RANGE", what, read, with_session=True)
        if len(data) != length:
            raise StoreError(f"{what}: short read, {len(data)} of {length} bytes at {offset}")
        self._stats.add("bytes_down", len(data))
        return data

    def put(self, name: str, data: bytes) -> None:
        self._put(name, data)

    def put_source(self, name: str, source: ObjectSource) -> None:
        """``put`` streamed from the source's file, 1 MiB at a time."""
        self._put(name, source)

    def _put(self, name: str, data: bytes | ObjectSource) -> None:
        path = self._path(name)

        def write(sftp: paramiko.SFTPClient) -> None:
            tmp = self._write_temp(sftp, path, data)
            try:
                sftp.posix_rename(tmp, path)
            except BaseException:
                remove_quietly(sftp, tmp)
                raise

        try:
            self._run("PUT", f"writing {name}", write)
        finally:
            self._changes.changed(path)
        self._stats.add("bytes_up", data.size if isinstance(data, ObjectSource) else len(data))

    def put_if_absent(self, name: str, data: bytes) -> bool:
        path = self._path(name)

        def create(sftp: paramiko.SFTPClient) -> bool:
            tmp = self._write_temp(sftp, path, data)
            try:
                sftp.rename(tmp, path)  # link(2) on the server: fails if the name is taken
                return True
            except OSError:
                remove_quietly(sftp, tmp)
                try:
                    sftp.stat(path)
                except FileNotFoundError:
                    raise  # the rename failed for another reason
                return False

        try:
            created = self._run("PUT", f"creating {name}", create)
        finally:
            self._changes.changed(path)
        if created:
            self._stats.add("bytes_up", len(data))
        return bool(created)

    def delete(self, name: str) -> None:
        path = self._path(name)

        def remove(sftp: paramiko.SFTPClient) -> None:
            if stat_module.S_ISDIR(sftp.lstat(path).st_mode or 0):
                raise FileNotFoundError(errno.ENOENT, "a directory")
            sftp.remove(path)

        try:
            self._run("DELETE", f"deleting {name}", remove)
        finally:
            self._changes.changed(path)

    def stat(self, name: str) -> ObjectInfo:
        path = self._path(name)
        st = self._run("HEAD", f"stat {name}", lambda sftp: sftp.stat(path))
        if not stat_module.S_ISREG(st.st_mode or 0):
            raise ObjectNotFound(f"stat {name}: not found")
        return ObjectInfo(name, st.st_size or 0, float(st.st_mtime or 0))

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        dir_part, partial = split_prefix(prefix)
        start = f"{self.root}/{dir_part}" if dir_part else self.root
        rel0 = dir_part + "/" if dir_part else ""
        found = self._run("LIST", f"listing {prefix or '(everything)'}", lambda sftp: list_objects(sftp, start, rel0, partial))
        yield from found

    def remove_abandoned(self, older_than: float) -> int:
        cutoff = time.time() - older_than
        return int(self._run("LIST", "removing abandoned temp files", lambda sftp: sweep_temp(sftp, self.root, cutoff)))

    def stats(self) -> dict[str, int]:
        return self._stats.snapshot()

    def close(self) -> None:
        self._pool.close()  # closing a session closes its handles on the server


def open_sftp(location: str, **options: Any) -> SftpObjectStore:
    """Open an ``sftp:`` location (the part after ``sftp:``)."""
    return SftpObjectStore(**{**parse_location(location), **options})


BACKEND = Backend(name="sftp", open=open_sftp, forms=FORMS, connections=4, options=OPTIONS)
