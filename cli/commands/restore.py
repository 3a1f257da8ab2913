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
    include: list[str] = typer.Option([], "--include", "-i", metavar="PATTERN", help="Restore only paths matching a restic pattern (as backup --exclude: relative patterns match at any depth; repeatable)."),
    exclude: list[str] = typer.Option([], "--exclude", "-e", metavar="PATTERN", help="Restore all but paths matching a restic pattern (repeatable)."),
    iinclude: list[str] = typer.Option([], "--iinclude", metavar="PATTERN", help="Like --include, ignoring case."),
    iexclude: list[str] = typer.Option([], "--iexclude", metavar="PATTERN", help="Like --exclude, ignoring case."),
    include_file: list[str] = typer.Option([], "--include-file", metavar="FILE", help="Read include patterns from a file (as --exclude-file)."),
    exclude_file: list[str] = typer.Option([], "--exclude-file", metavar="FILE", help="Read exclude patterns from a file: one a line, # comments, $VAR expanded."),
    iinclude_file: list[str] = typer.Option([], "--iinclude-file", metavar="FILE", help="Like --include-file, ignoring case."),
    iexclude_file: list[str] = typer.Option([], "--iexclude-file", metavar="FILE", help="Like --exclude-file, ignoring case."),
) -> int:
    from backupkit.errors import BadArgument, UsageError
    from backupkit.filters import RestoreSelection
    from backupkit.managers.restore import RestoreManager, RestoreOptions
    from backupkit.snapshot import find_snapshot
    from backupkit_cli.progress import RestoreProgress

    from backupkit_cli.tuning import tune_malloc

    tune_malloc()
    st: State = ctx.obj
    if target and fmt:
        raise BadArgument("--target and --format exclude each other")
    select = RestoreSelection.build(
        include, exclude, iinclude, iexclude, include_file, exclude_file, iinclude_file, iexclude_file
    )
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
            path=path, target=target, format=fmt, output=out, dry_run=dry_run, verify=verify,
            connections=max(4, st.store_connections()), select=select,
        )
        with RestoreProgress(st.console) as progress:
            res = RestoreManager(repo, progress).restore(snap, opts)
    summary = {
        "snapshot": snap.id,
        "files": res.files,
        "dirs": res.dirs,
        "others": res.others,
        "bytes": res.bytes,
        "errors": [{"path": p, "message": m} for p, m in res.errors],
        "verified": res.verified,
        "verify_failures": list(res.verify_failures),
        "dry_run": res.dry_run,
        "seconds": round(res.seconds, 3),
    }
    if st.json and not fmt:
        st.console.json(summary)
    else:
        verb = "would restore" if dry_run else "restored"
        st.console.info(
            f"{verb} {res.files} files, {res.dirs} dirs, {res.others} others, {human_bytes(res.bytes)} "
            f"from snapshot {snap.short_id} in {res.seconds:.1f}s"
        )
        if verify:
            st.console.info(f"verified {res.verified} files, {len(res.verify_failures)} differ")
    if res.errors or res.verify_failures:
        st.console.error(f"{len(res.errors) + len(res.verify_failures)} problem(s) during restore")
        return exit_codes.FATAL
    return exit_codes.OK
