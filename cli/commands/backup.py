"""bk backup"""

from __future__ import annotations

import contextlib
import dataclasses
import sys
from typing import Optional

import typer

from backupkit_cli import exit_codes
from backupkit_cli.context import State
from backupkit_cli.fmt import count, human_bytes, parse_time
from backupkit_cli.patterns import EXCLUDE_FILE, IEXCLUDE, IEXCLUDE_FILE


def command(
    ctx: typer.Context,
    paths: list[str] = typer.Argument(None, help="Files and directories to back up, - for stdin, or with --stdin-from-command the command and its arguments (after --)."),
    tag: list[str] = typer.Option([], "--tag", help="Tag the snapshot (repeatable; a,b for several)."),
    host: Optional[str] = typer.Option(None, "--host", help="Host name to record (default: this host)."),
    exclude: list[str] = typer.Option([], "--exclude", "-e", metavar="PATTERN", help="Exclude paths matching a restic pattern: 'cache' or 'a/b' match at any depth, '/a/b' only from the root; *, ?, [..], ** and !negation (repeatable)."),
    iexclude: list[str] = IEXCLUDE,
    exclude_file: list[str] = EXCLUDE_FILE,
    iexclude_file: list[str] = IEXCLUDE_FILE,
    exclude_ignorefile: list[str] = typer.Option([], "--exclude-ignorefile", metavar="NAME", help="Honour per-directory ignore files of this name with gitignore rules, e.g. .gitignore or .bkignore (repeatable)."),
    exclude_if_present: list[str] = typer.Option([], "--exclude-if-present", metavar="NAME[:HEADER]", help="Leave out the content of directories holding a file NAME (starting with HEADER), except NAME itself."),
    exclude_caches: bool = typer.Option(False, "--exclude-caches", help="Leave out the content of directories tagged with a valid CACHEDIR.TAG (bford.info/cachedir)."),
    exclude_larger_than: Optional[str] = typer.Option(None, "--exclude-larger-than", metavar="SIZE", help="Leave out files larger than SIZE (e.g. 500K, 50M, 2G, 1.5GiB)."),
    files_from: list[str] = typer.Option([], "--files-from", metavar="FILE", help="Back up the paths listed in FILE: one glob pattern a line, # comments (- = stdin; repeatable)."),
    files_from_verbatim: list[str] = typer.Option([], "--files-from-verbatim", metavar="FILE", help="Back up the paths listed in FILE, one a line, taken literally."),
    files_from_raw: list[str] = typer.Option([], "--files-from-raw", metavar="FILE", help="Back up the paths listed in FILE, each ended by a NUL byte (find -print0)."),
    one_file_system: bool = typer.Option(False, "--one-file-system", "-x", help="Do not cross file system boundaries."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Do everything but write to the repository."),
    stdin: bool = typer.Option(False, "--stdin", help="Back up standard input (same as the path -)."),
    stdin_from_command: bool = typer.Option(False, "--stdin-from-command", help="Run the command given after -- and back up its output; if the command fails, no snapshot is saved."),
    stdin_filename: str = typer.Option("stdin", "--stdin-filename", help="File name for data read from stdin."),
    skip_if_unchanged: bool = typer.Option(False, "--skip-if-unchanged", help="Save no snapshot when nothing changed since the parent snapshot."),
    compression: str = typer.Option("auto", "--compression", metavar="auto|off|max|LEVEL", help="zstd level for this run's data: auto (the repository's), off, max (19) or 1-19."),
    time: Optional[str] = typer.Option(None, "--time", help="Snapshot time instead of now (ISO 8601)."),
    parent: Optional[str] = typer.Option(None, "--parent", help="Snapshot to compare with (default: latest with same host and paths)."),
    force: bool = typer.Option(False, "--force", help="Read every file, ignoring the parent snapshot."),
    ignore_inode: bool = typer.Option(False, "--ignore-inode", help="A changed inode number alone does not make a file read again."),
    ignore_ctime: bool = typer.Option(False, "--ignore-ctime", help="A changed ctime alone does not make a file read again."),
    read_concurrency: int = typer.Option(2, "--read-concurrency", help="Files read at once."),
) -> int:
    from backupkit.dirscan import warm

    # the sources' trees read into the kernel's caches while the rest starts (imports,
    # the key's KDF, the index); the backup stops it when its walk begins, or at the end
    warming = warm([] if stdin or stdin_from_command or paths == ["-"] else (paths or []), one_file_system)
    ctx.call_on_close(warming.close)
    from backupkit.errors import BadArgument
    from backupkit.excluder import Excluder
    from backupkit.managers.backup import BackupManager, BackupOptions
    from backupkit.sources import CommandOutput, collect_sources
    from backupkit.units import parse_size
    from backupkit_cli.progress import BackupProgress

    from backupkit_cli.tuning import quick_gil_handoff, tune_malloc

    tune_malloc()
    quick_gil_handoff()
    st: State = ctx.obj
    paths = paths or []
    if stdin_from_command:
        if stdin or "-" in paths[:1]:
            raise BadArgument("--stdin-from-command and stdin (-, --stdin) exclude each other")
        command_argv, paths = list(paths), []
    use_stdin = stdin or paths == ["-"]
    if use_stdin and [p for p in paths if p != "-"]:
        raise BadArgument("- (stdin) cannot be combined with other paths")
    stdin_users = [o for o, v in (("--files-from", files_from), ("--files-from-verbatim", files_from_verbatim), ("--files-from-raw", files_from_raw)) if "-" in v]
    if (use_stdin or stdin_from_command) and (files_from or files_from_verbatim or files_from_raw):
        raise BadArgument("--files-from* and a stream to back up (stdin, --stdin-from-command) exclude each other")
    if len(stdin_users) > 1:
        raise BadArgument(f"{' and '.join(stdin_users)} cannot both read standard input")
    listed = collect_sources(files_from, files_from_verbatim, files_from_raw, sys.stdin.buffer)
    for w in listed.warnings:
        st.console.warn(w)
    if not use_stdin and not stdin_from_command:
        paths = [*listed.paths, *paths]
        if not paths and (files_from or files_from_verbatim or files_from_raw):
            raise BadArgument("nothing to back up: the --files-from lists name no existing path")
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
        exclude_caches=exclude_caches,
        exclude_larger_than=parse_size(exclude_larger_than, "--exclude-larger-than") if exclude_larger_than is not None else None,
        one_file_system=one_file_system,
        dry_run=dry_run,
        stdin=sys.stdin.buffer if use_stdin else None,
        stdin_filename=stdin_filename,
        time=parse_time(time) if time else None,
        parent=parent,
        force=force,
        ignore_inode=ignore_inode,
        ignore_ctime=ignore_ctime,
        compression=parse_compression(compression),
        skip_if_unchanged=skip_if_unchanged,
        read_concurrency=max(1, read_concurrency),
        scan_totals=st.console.interactive or st.json,  # totals feed the bar and the status lines
    )
    Excluder(opts)  # malformed patterns and unreadable pattern files: exit 2 before any work
    # A dry run writes nothing, not even a lock: it only reads the index and the parent.
    with st.unlocked_repo() if dry_run else st.locked_repo(exclusive=False, operation="backup") as repo:
        with contextlib.ExitStack() as stack:
            if stdin_from_command:
                opts = dataclasses.replace(opts, stdin=stack.enter_context(CommandOutput(command_argv)))
            progress = stack.enter_context(BackupProgress(st.console))
            res = BackupManager(repo, progress).run(opts, warming)
    if st.json:
        files = res.files_new + res.files_changed + res.files_unchanged
        st.console.json(
            {
                "message_type": "summary",
                # restic's names first (a GUI written for restic reads these), then bk's own
                "files_unmodified": res.files_unchanged,
                "data_added": res.bytes_added,
                "total_files_processed": files,
                "total_bytes_processed": res.bytes_total,
                "total_duration": round(res.seconds, 3),
                **res.to_json(),
            }
        )
    else:
        c = st.console
        c.info(
            f"files: {res.files_new} new, {res.files_changed} changed, {res.files_unchanged} unchanged; "
            f"{count(res.dirs, 'dir')}; {human_bytes(res.bytes_total)} total, {human_bytes(res.bytes_read)} read, "
            f"{human_bytes(res.bytes_added)} added in {res.seconds:.1f}s"
        )
        if res.snapshot:
            c.success(f"snapshot {res.snapshot.short_id} saved")
        elif res.skipped:
            c.info(f"nothing changed since snapshot {(res.parent or '')[:8]}: no new snapshot (--skip-if-unchanged)")
        else:
            c.info("dry run: nothing was written")
        if res.errors:
            c.warn(f"{count(len(res.errors), 'source')} could not be read; the snapshot is incomplete")
    return exit_codes.PARTIAL if res.errors else exit_codes.OK


def parse_compression(text: str) -> int | None:
    """``auto`` -> None (the repository's level), ``off`` -> 0, ``max`` -> 19, or 0-19."""
    from backupkit.errors import BadArgument
    from backupkit.managers.backup import MAX_COMPRESSION

    t = text.strip().lower()
    named = {"auto": None, "off": 0, "max": MAX_COMPRESSION}
    if t in named:
        return named[t]
    if t.isdigit() and 0 <= int(t) <= MAX_COMPRESSION:
        return int(t)
    raise BadArgument(f"invalid --compression {text!r}: use auto, off, max or a level 0-{MAX_COMPRESSION}")
