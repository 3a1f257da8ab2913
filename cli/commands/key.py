"""bk key list/add/remove/passwd"""

from __future__ import annotations

import typer

from backupkit_cli.context import State, kdf_params

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)


def _new_password(st: State, new_password_file: str | None) -> bytes:
    from pathlib import Path

    from backupkit.errors import BadArgument, UsageError

    if new_password_file:
        try:
            return st.check_new_password(Path(new_password_file).read_bytes().rstrip(b"\r\n"))
        except OSError as e:
            raise UsageError(f"cannot read {new_password_file}: {e.strerror}") from None
    import getpass
    import sys

    if st.insecure_no_password:
        return b""
    if not sys.stdin.isatty():
        raise BadArgument("give the new password with --new-password-file")
    pw = getpass.getpass("new password: ").encode()
    if getpass.getpass("repeat new password: ").encode() != pw:
        raise UsageError("passwords do not match")
    return st.check_new_password(pw)


@app.command(
    "list",
    help="List key files. A damaged key file is named on stderr (the others are listed) and the exit code is 1.",
)
def list_keys(ctx: typer.Context) -> int:
    from datetime import datetime, timezone

    from backupkit.repo.keymanager import KeyManager
    from backupkit_cli import exit_codes

    st: State = ctx.obj
    repo = st.open_repo()
    listing = KeyManager(repo).list()
    infos = listing.keys
    if st.json:
        st.console.json(
            [
                {"id": k.id, "current": k.id == repo.key_id, "host": k.host, "user": k.user, "created": datetime.fromtimestamp(k.created, timezone.utc).isoformat()}
                for k in infos
            ]
            + [{"id": i, "current": i == repo.key_id, "damaged": why} for i, why in listing.damaged]
        )
    else:
        for k in infos:
            mark = "*" if k.id == repo.key_id else " "
            created = datetime.fromtimestamp(k.created).strftime("%Y-%m-%d %H:%M:%S")
            st.console.data(f"{mark} {k.id[:10]}  {k.user}@{k.host}  {created}")  # data() escapes names
        for i, why in listing.damaged:
            st.console.warn(f"{why.replace(i, i[:10])}; remove it with bk key remove {i[:10]}")
    return exit_codes.FATAL if listing.damaged else exit_codes.OK


NEW_PASSWORD_FILE = typer.Option(None, "--new-password-file")
KEY_HOST = typer.Option(None, "--host", help="The host name the new key is listed with (default: this machine's).")
KEY_USER = typer.Option(None, "--user", help="The user name the new key is listed with (default: yours).")


def _with_new_password(ctx: typer.Context, new_password_file: str | None, operation: str, change) -> str:
    """Ask for the new password, then run ``change(KeyManager, password, kdf)`` under the
    exclusive lock; returns the new key's id."""
    from backupkit.repo.keymanager import KeyManager

    st: State = ctx.obj
    password = _new_password(st, new_password_file)
    with st.locked_repo(exclusive=True, operation=operation) as repo:
        return change(KeyManager(repo), password, kdf_params())


@app.command("add", help="Add a key file with a new password.")
def add(ctx: typer.Context, new_password_file: str = NEW_PASSWORD_FILE, host: str = KEY_HOST, user: str = KEY_USER) -> None:
    st: State = ctx.obj
    key_id = _with_new_password(ctx, new_password_file, "key add", lambda km, pw, kdf: km.add(pw, kdf, host, user))
    st.console.json({"id": key_id}) if st.json else st.console.success(f"added key {key_id[:10]}")


@app.command("remove", help="Remove a key file (not the one in use).")
def remove(ctx: typer.Context, key_id: str = typer.Argument(..., help="Key id or unique prefix.")) -> None:
    from backupkit.repo.keymanager import KeyManager

    st: State = ctx.obj
    with st.locked_repo(exclusive=True, operation="key remove") as repo:
        removed = KeyManager(repo).remove(key_id)
    st.console.json({"removed": removed}) if st.json else st.console.success(f"removed key {removed[:10]}")


@app.command("passwd", help="Change the password of the key in use.")
def passwd(ctx: typer.Context, new_password_file: str = NEW_PASSWORD_FILE, host: str = KEY_HOST, user: str = KEY_USER) -> None:
    st: State = ctx.obj
    new_id = _with_new_password(ctx, new_password_file, "key passwd", lambda km, pw, kdf: km.passwd(pw, kdf, host, user))
    st.console.json({"id": new_id}) if st.json else st.console.success(f"password changed (new key {new_id[:10]})")
