"""bk backup"""

from __future__ import annotations

import dataclasses
import sys
from typing import Optional

import typer

from backupkit_cli import exit_codes
from backupkit_cli.context import State
from backupkit_cli.fmt import human_bytes, parse_time


def command(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(None, help="Files and directories to back up, or - for stdin."),
    tag: list[str] = typer.Option([], "--tag", help="Tag the snapshot (repeatable; a,b for several)."),
    host: Optional[str] = typer.Option(None, "--host", help="Host name to record (default: this host)."),
    exclude: list[str] = typer.Option([], "--exclude", "-e", metavar="PATTERN", help="Exclude paths matching a restic pattern: 'cache' or 'a/b' match at any depth, '/a/b' only from the root; *, ?, [..], ** and !negation (repeatable)."),
    iexclude: list[str] = typer.Option([], "--iexclude", metavar="PATTERN", help="Like --exclude, ignoring case."),
    exclude_file: list[str] = typer.Option([], "--exclude-file", metavar="FILE", help="Read exclude patterns from a file: one a line, # comments, $VAR expanded (repeatable)."),
    iexclude_file: list[str] = typer.Option([], "--iexclude-file", metavar="FILE", help="Like --exclude-file, ignoring case."),
    exclude_ignorefile: list[str] = typer.Option([], "--exclude-ignorefile", metavar="NAME", help="Honour per-directory ignore files of this name with gitignore rules, e.g. .gitignore or .bkignore (repeatable)."),
    exclude_if_present: list[str] = typer.Option([], "--exclude-if-present", metavar="NAME[:HEADER]", help="Leave out the content of directories holding a file NAME (starting with HEADER), except NAME itself."),
    one_file_system: bool = typer.Option(False, "--one-file-system", "-x", help="Do not cross file system boundaries."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Do everything but write to the repository."),
    stdin_filename: str = typer.Option("stdin", "--stdin-filename", help="File name for data read from stdin."),
    time: Optional[str] = typer.Option(None, "--time", help="Snapshot time instead of now (ISO 8601)."),
    parent: Optional[str] = typer.Option(None, "--parent", help="Snapshot to compare with (default: latest with same host and paths)."),
    force: bool = typer.Option(False, "--force", help="Read every file, ignoring the parent snapshot."),
    read_concurrency: int = typer.Option(2, "--read-concurrency", help="Files read at once."),
) -> int:
    from backupkit.errors import BadArgument
    from backupkit.managers.backup import BackupManager, BackupOptions
    from backupkit_cli.progress import BackupProgress

    from backupkit_cli.tuning import tune_malloc

    tune_malloc()
    st: State = ctx.obj
    paths = paths or []
    use_stdin = paths == ["-"]
    if "-" in paths and not use_stdin:
        raise BadArgument("- (stdin) cannot be combined with other paths")
    tags = tuple(t for v in tag for t in v.split(",") if t)
    opts = BackupOptions(
        paths=tuple(paths) if not use_stdin else (),
        tags=tags,
        host=host,
        excludes=tuple(exclude),
        iexcludes=tuple(iexclude),
        exclude_files=tuple(exclude_file),
        iexclude_files=tuple(iexclude_file),
        exclude_ignorefiles=tuple(exclude_ignorefile),
        exclude_if_present=tuple(exclude_if_present),
        one_file_system=one_file_system,
        dry_run=dry_run,
        stdin=sys.stdin.buffer if use_stdin else None,
        stdin_filename=stdin_filename,
        time=parse_time(time) if time else None,
        parent=parent,
        force=force,
        read_concurrency=max(1, read_concurrency),
        scan_totals=st.console.interactive,  # totals feed the progress bar only
    )
    with st.locked_repo(exclusive=False, operation="backup") as repo:
        opts = dataclasses.replace(opts, lock_check=st.lock.check)  # re-verified before the snapshot
        with BackupProgress(st.console) as progress:
            res = BackupManager(repo, progress).run(opts)
    if st.json:
        st.console.json(
            {
                "snapshot_id": res.snapshot.id if res.snapshot else None,
                "parent": res.parent,
                "dry_run": res.dry_run,
                "files_new": res.files_new,
                "files_changed": res.files_changed,
                "files_unchanged": res.files_unchanged,
                "dirs": res.dirs,
                "files_read": res.files_read,
                "bytes_total": res.bytes_total,
                "bytes_read": res.bytes_read,
                "bytes_added": res.bytes_added,
                "blobs_added": res.blobs_added,
                "errors": [{"path": e.path, "message": e.message} for e in res.errors],
                "changed_during_read": list(res.changed_during_read),
                "seconds": round(res.seconds, 3),
            }
        )
    else:
        c = st.console
        c.info(
            f"files: {res.files_new} new, {res.files_changed} changed, {res.files_unchanged} unchanged; "
            f"{res.dirs} dirs; {human_bytes(res.bytes_total)} total, {human_bytes(res.bytes_read)} read, "
            f"{human_bytes(res.bytes_added)} added in {res.seconds:.1f}s"
        )
        if res.snapshot:
            c.success(f"snapshot {res.snapshot.short_id} saved")
        else:
            c.info("dry run: nothing was written")
        if res.errors:
            c.warn(f"{len(res.errors)} source(s) could not be read; the snapshot is incomplete")
    return exit_codes.PARTIAL if res.errors else exit_codes.OK
