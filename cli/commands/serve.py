"""bk serve"""

from __future__ import annotations

import os
from typing import Optional

import typer

from backupkit_cli.context import State


def command(
    ctx: typer.Context,
    path: str = typer.Option(..., "--path", help="Data directory: each repository is a folder below it (created on init)."),
    listen: str = typer.Option(":8000", "--listen", metavar="HOST:PORT", help="Address to listen on (:8000 = every interface; 127.0.0.1:0 = a free loopback port)."),
    no_auth: bool = typer.Option(False, "--no-auth", help="Serve without HTTP basic auth."),
    htpasswd_file: Optional[str] = typer.Option(None, "--htpasswd-file", help="Users and bcrypt passwords (htpasswd -B) [default: DIR/.htpasswd]."),
    append_only: bool = typer.Option(False, "--append-only", help="Refuse deleting and overwriting (locks excepted): clients can back up but not destroy history."),
    private_repos: bool = typer.Option(False, "--private-repos", help="A user can only reach repositories under /<user>/."),
    tls: bool = typer.Option(False, "--tls", help="Serve HTTPS."),
    tls_cert: Optional[str] = typer.Option(None, "--tls-cert", help="TLS certificate (PEM) [default: DIR/public_key]."),
    tls_key: Optional[str] = typer.Option(None, "--tls-key", help="TLS private key (PEM) [default: DIR/private_key]."),
    log: Optional[str] = typer.Option(None, "--log", metavar="FILE", help="Write one line per request (combined log format) to FILE, or - for stdout."),
    max_object_size: str = typer.Option("1GiB", "--max-object-size", metavar="SIZE", help="Refuse (413) objects larger than SIZE, e.g. 512M (packs are at most 128 MiB)."),
) -> None:
    """Serve repositories over restic's REST protocol (restic and bk can both use it).

    Clients use rest:http://[user:pass@]HOST:PORT/REPO/. Options follow restic's
    rest-server. Runs until interrupted (Ctrl-C or SIGTERM).
    """
    import socket

    from backupkit.errors import BadArgument, UsageError
    from backupkit.serve import Htpasswd, ServerOptions, make_server, open_access_log, parse_listen
    from backupkit.units import parse_size

    st: State = ctx.obj
    root = os.path.abspath(path)
    host, port = parse_listen(listen)
    users = None
    if not no_auth:
        htpasswd_file = htpasswd_file or os.path.join(root, ".htpasswd")
        try:
            users = Htpasswd(htpasswd_file)
        except OSError as exc:
            raise UsageError(
                f"cannot read {htpasswd_file} ({exc.strerror}): create it with htpasswd -B, or serve with --no-auth"
            ) from None
        if users.skipped:
            st.console.warn(f"{htpasswd_file}: ignoring users {', '.join(users.skipped)} (only bcrypt and {{SHA}} entries are supported)")
    elif private_repos:
        raise BadArgument("--private-repos needs users: drop --no-auth")
    if not tls and (tls_cert or tls_key):
        raise BadArgument("--tls-cert and --tls-key need --tls")
    if tls:
        tls_cert = tls_cert or os.path.join(root, "public_key")
        tls_key = tls_key or os.path.join(root, "private_key")
    try:
        os.makedirs(root, 0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {root}: {exc.strerror}") from None
    options = ServerOptions(
        path=root,
        append_only=append_only,
        private_repos=private_repos,
        htpasswd=users,
        access_log=open_access_log(log),
        max_object_bytes=parse_size(max_object_size, "--max-object-size"),
    )
    server = make_server(options, host, port, tls_cert=tls_cert if tls else None, tls_key=tls_key if tls else None)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted sockets inherit it: a response's head and body go out as separate writes,
    # and Nagle would hold the body until the client's delayed ACK (40 ms a request).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise UsageError(f"cannot listen on {listen}: {exc.strerror}") from None
    sock.listen(128)
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    modes = [m for m, on in (("append-only", append_only), ("private repositories", private_repos), ("no authentication", no_auth)) if on]
    st.console.info(
        f"serving repositories under {root} on {'https' if tls else 'http'}://{shown}:{bound}/"
        + (f" ({', '.join(modes)})" if modes else "")
    )
    server.run(sockets=[sock])
