"""bk restore"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from backupkit_cli import exit_codes
from backupkit_cli.context import State
from backupkit_cli.fmt import human_bytes


def command(
    ctx: typer.Context,
    snapshot: str = typer.Argument(..., help="Snapshot: latest, an id or a unique prefix."),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Directory to restore into."),
    path: str = typer.Option("/", "--path", help="Restore only this file or directory of the snapshot."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="Stream an archive to stdout: zip, tar or tar.zst."),
    verify: bool = typer.Option(False, "--verify", help="Re-read restored files and compare with the snapshot."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Show what would be restored."),
    host: list[str] = typer.Option([], "--host", help="With latest: only snapshots of this host."),
    tag: list[str] = typer.Option([], "--tag", help="With latest: only snapshots with these tags."),
) -> int:
    from backupkit.errors import BadArgument, UsageError
    from backupkit.managers.restore import RestoreManager, RestoreOptions
    from backupkit.snapshot import find_snapshot
    from backupkit_cli.progress import RestoreProgress

    from backupkit_cli.tuning import tune_malloc

    tune_malloc()
    st: State = ctx.obj
    if target and fmt:
        raise BadArgument("--target and --format exclude each other")
    if not target and not fmt:
        if sys.stdout.isatty():
            raise BadArgument("give --target DIR, or redirect stdout to stream a ZIP (bk restore latest > out.zip)")
        fmt = "zip"
    if fmt and not dry_run and sys.stdout.isatty():
        raise UsageError("refusing to write an archive to a terminal; redirect stdout to a file")
    with st.locked_repo(exclusive=False, operation="restore") as repo:
        snap = find_snapshot(repo, snapshot, host, tag)
        out = sys.stdout.buffer if fmt else None
        opts = RestoreOptions(
            path=path, target=target, format=fmt, output=out, dry_run=dry_run, verify=verify, connections=max(4, st.store_connections())
        )
        with RestoreProgress(st.console) as progress:
            res = RestoreManager(repo, progress).restore(snap, opts)
    if st.json and not fmt:
        st.console.json({"snapshot": snap.id, **res.to_json()})
    else:
        verb = "would restore" if dry_run else "restored"
        st.console.info(
            f"{verb} {res.files} files, {res.dirs} dirs, {res.others} others, {human_bytes(res.bytes)} "
            f"from snapshot {snap.short_id} in {res.seconds:.1f}s"
        )
        if verify:
            st.console.info(f"verified {res.verified} files, {len(res.verify_failures)} differ")
    if res.incomplete:
        lost = f", {len(res.unreadable)} of them directories whose contents could not be read" if res.unreadable else ""
        st.console.error(f"restore incomplete: {res.problems} problem(s){lost}")
        return exit_codes.FATAL
    return exit_codes.OK
