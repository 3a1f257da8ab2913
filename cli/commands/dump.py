"""bk dump"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from backupkit_cli import exit_codes
from backupkit_cli.select import HOSTS, PATHS, TAGS, select_snapshot
from backupkit_cli.context import State


def command(
    ctx: typer.Context,
    snapshot: str = typer.Argument(..., help="Snapshot: latest, an id or a unique prefix."),
    path: str = typer.Argument(..., help="File (written as is) or directory (written as an archive) inside the snapshot."),
    archive: str = typer.Option("tar", "--archive", "-a", help="Archive format for a directory: tar or zip."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Write to this file instead of stdout."),
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    snap_path: list[str] = PATHS,
) -> int:
    from backupkit.errors import BadArgument, UsageError
    from backupkit.managers.dump import DumpManager, DumpOptions

    st: State = ctx.obj
    if st.json and not target:
        raise BadArgument("--json needs --target FILE: stdout carries the dump")
    with st.locked_repo(exclusive=False, operation="dump", read_only=True) as repo:
        snap = select_snapshot(st, repo, snapshot, host, tag, snap_path)
        mgr = DumpManager(repo)
        opts = DumpOptions(path=path, archive=archive, connections=max(4, st.store_connections()))
        if target:
            with open(target, "wb") as out:
                res = mgr.dump(snap, opts, out)
        else:
            if sys.stdout.isatty() and mgr.kind_of(snap, path) == "dir":
                raise UsageError("refusing to write an archive to a terminal; redirect stdout or use --target")
            res = mgr.dump(snap, opts, sys.stdout.buffer)
            sys.stdout.buffer.flush()
    if st.json:
        st.console.json({"snapshot": snap.id, **res.to_json()})
    if res.incomplete:
        for p, m in res.errors[:20]:
            st.console.error(f"{p}: {m}")
        st.console.error(f"dump incomplete: {len(res.errors)} problem(s)")
        return exit_codes.FATAL
    return exit_codes.OK
