"""``bk serve``: a restic REST server for one or many repositories under a directory.

``run_server`` builds the ASGI app (``app.RestApp``) and runs it with uvicorn (its C
HTTP parser ``httptools`` when installed, else h11). uvicorn is imported here, never by
the rest of bk, so only ``bk serve`` pays for it.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
from collections.abc import Callable
from typing import Any

from backupkit.errors import BadArgument, UsageError
from backupkit.serve.app import RestApp, ServerOptions
from backupkit.serve.htpasswd import Htpasswd

__all__ = ["RestApp", "ServerOptions", "Htpasswd", "parse_listen", "make_server", "open_access_log"]


def parse_listen(text: str) -> tuple[str, int]:
    """(host, port) from ``HOST:PORT``, ``:PORT`` (every interface) or ``[::1]:PORT``."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise BadArgument(f"--listen {text!r}: use HOST:PORT, e.g. 127.0.0.1:8000 or :8000")
    host = host.strip("[]") or "0.0.0.0"
    return host, int(port)


def open_access_log(target: str | None) -> Callable[[str], None] | None:
    """A writer of request log lines: ``-`` for stdout, a file name (appended), or None."""
    if not target:
        return None
    if target == "-":
        import sys

        def to_stdout(line: str) -> None:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

        return to_stdout
    try:
        f = open(target, "a", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the server
    except OSError as exc:
        raise UsageError(f"cannot open the log file {target}: {exc.strerror}") from None

    def to_file(line: str) -> None:
        f.write(line + "\n")

    return to_file


def make_server(
    options: ServerOptions,
    host: str,
    port: int,
    *,
    tls_cert: str | None = None,
    tls_key: str | None = None,
    sock: socket.socket | None = None,
) -> Any:
    """A ``uvicorn.Server`` for ``options`` (call ``.run()``; ``.should_exit = True`` stops it)."""
    import uvicorn

    try:
        import httptools  # noqa: F401

        http = "httptools"
    except ImportError:
        http = "h11"
    if bool(tls_cert) != bool(tls_key):
        raise BadArgument("--tls needs both --tls-cert and --tls-key")
    for path in (tls_cert, tls_key):
        if path and not os.path.isfile(path):
            raise UsageError(f"cannot read {path}")
    config = uvicorn.Config(
        RestApp(options),
        host=host,
        port=port,
        http=http,
        lifespan="off",
        log_level="warning",
        access_log=False,
        server_header=False,
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        ssl_version=ssl.PROTOCOL_TLS_SERVER,
        timeout_keep_alive=60,
        timeout_graceful_shutdown=5,
    )
    logging.getLogger("uvicorn.error").setLevel(logging.WARNING)
    return uvicorn.Server(config)
