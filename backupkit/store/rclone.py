"""rclone: stores: every rclone remote (B2, GCS, Azure, Drive, ...) through ``rclone serve restic``.

``rclone:remote:path`` starts ``rclone serve restic`` for ``remote:path`` as a child
process and talks restic's REST protocol to it (``RestObjectStore``), so rclone's
configuration (``rclone config``, ``RCLONE_CONFIG_*`` variables) decides where the
objects go.

restic runs ``rclone serve restic --stdio`` and speaks HTTP/2 over the child's pipes.
That mode is HTTP/2 only (h2c), which no field-proven synchronous Python client speaks
over pipes; instead the child listens on a free loopback port (``127.0.0.1:0``) with a
random user name and password made for this run, so no other local user can use it, and
the REST store keeps its pool of parallel HTTP/1.1 connections. The child is stopped
when the store is closed (and at exit).
"""

from __future__ import annotations

import atexit
import collections
import re
import secrets
import shutil
import subprocess
import threading
from typing import Any

from backupkit.errors import BadArgument, StoreUnavailable, UsageError
from backupkit.store.base import Backend, BackendOption, parse_seconds
from backupkit.store.rest import HTTP_OPTIONS, RestObjectStore

_SERVING_RE = re.compile(r"Serving restic REST API on (https?://\S+)")
#: How long rclone may take to start serving (it may have to log in to a remote).
DEFAULT_START_TIMEOUT = 60.0


class RcloneObjectStore(RestObjectStore):
    """A RestObjectStore on an ``rclone serve restic`` child process.

    Args:
        remote: the rclone remote and path, ``remote:path`` (or a local path).
        program: the rclone executable.
        args: extra arguments for ``rclone serve restic`` (split on spaces), e.g.
            ``--transfers 8`` or ``-v``.
        start_timeout: seconds to wait for rclone to start serving.
        **options: RestObjectStore options (connections, retries, timeouts).
    """

    def __init__(
        self,
        remote: str,
        *,
        program: str = "rclone",
        args: str = "",
        start_timeout: float = DEFAULT_START_TIMEOUT,
        **options: Any,
    ) -> None:
        if not remote:
            raise BadArgument("use rclone:remote:path (a remote from rclone config, and a path in it)")
        exe = shutil.which(program)
        if exe is None:
            raise UsageError(f"rclone: repositories need the rclone program ({program!r} is not on PATH)")
        user, password = "bk", secrets.token_urlsafe(24)
        command = [
            exe, "serve", "restic", "--addr", "127.0.0.1:0", "--user", user, "--pass", password,
            *args.split(), remote,
        ]
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches bk, which then stops rclone itself
        )
        self._log: collections.deque[str] = collections.deque(maxlen=20)
        found: list[str] = []
        ready = threading.Event()
        self._reader = threading.Thread(target=self._drain, args=(found, ready), daemon=True)
        self._reader.start()
        atexit.register(self._stop)
        if not ready.wait(start_timeout) or not found:
            tail = " | ".join(list(self._log)[-3:]) or "no output"
            self._stop()
            raise StoreUnavailable(f"rclone serve restic {remote} did not start: {tail}")
        super().__init__(
            found[0], username=user, password=password, scheme_name="rclone",
            location=f"rclone:{remote}", **options,
        )

    def _drain(self, found: list[str], ready: threading.Event) -> None:
        """Read rclone's stderr: find the address it serves on, keep the last lines."""
        assert self._process.stderr is not None
        for raw in self._process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self._log.append(line)
            if not found:
                match = _SERVING_RE.search(line)
                if match:
                    found.append(match.group(1))
                    ready.set()
        ready.set()  # rclone exited

    def _stop(self) -> None:
        process = self._process
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        atexit.unregister(self._stop)

    def _request(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super()._request(*args, **kwargs)
        except StoreUnavailable as exc:
            if self._process.poll() is not None:
                tail = " | ".join(list(self._log)[-2:])
                raise StoreUnavailable(f"{exc}; rclone exited with {self._process.returncode}: {tail}") from None
            raise

    def close(self) -> None:
        super().close()
        self._stop()


def open_rclone(location: str, **options: Any) -> RcloneObjectStore:
    """Open an ``rclone:`` location (the part after ``rclone:``: ``remote:path``)."""
    return RcloneObjectStore(location, **options)


BACKEND = Backend(
    name="rclone",
    open=open_rclone,
    forms=("rclone:remote:path",),
    connections=8,
    options=(
        BackendOption("program", str, "the rclone executable (default rclone)"),
        BackendOption("args", str, "extra arguments for rclone serve restic, e.g. '--transfers 8 -v'"),
        BackendOption("start_timeout", parse_seconds, "seconds to wait for rclone to start serving (default 60)"),
        *HTTP_OPTIONS,
    ),
)
