"""bk restore"""

from __future__ import annotations

import sys
from typing import Optional

import typer

from backupkit_cli import exit_codes
from backupkit_cli.context import State
from backupkit_cli.fmt import count, human_bytes
from backupkit_cli.patterns import EXCLUDE_FILE, IEXCLUDE, IEXCLUDE_FILE
from backupkit_cli.select import HOSTS, TAGS


def command(
    ctx: typer.Context,
    snapshot: str = typer.Argument(
        ..., help="Snapshot: latest, an id or a unique prefix; REF:PATH restores only that file or folder (latest:/home/u/dir)."
    ),
    target: Optional[str] = typer.Option(None, "--target", "-t", help="Directory to restore into."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="Stream an archive to stdout: zip, tar or tar.zst."),
    verify: bool = typer.Option(False, "--verify", help="Re-read restored files and compare with the snapshot."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Show what would be restored."),
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    path: list[str] = typer.Option(
        [], "--path", help="latest among snapshots that include this path (as restic); with a snapshot id: restore only this file or folder (bk's older spelling of ID:PATH)."
    ),
    include: list[str] = typer.Option([], "--include", "-i", metavar="PATTERN", help="Restore only paths matching a restic pattern (as backup --exclude: relative patterns match at any depth; repeatable)."),
    exclude: list[str] = typer.Option([], "--exclude", "-e", metavar="PATTERN", help="Restore all but paths matching a restic pattern (repeatable)."),
    iinclude: list[str] = typer.Option([], "--iinclude", metavar="PATTERN", help="Like --include, ignoring case."),
    iexclude: list[str] = IEXCLUDE,
    include_file: list[str] = typer.Option([], "--include-file", metavar="FILE", help="Read include patterns from a file (as --exclude-file)."),
    exclude_file: list[str] = EXCLUDE_FILE,
    iinclude_file: list[str] = typer.Option([], "--iinclude-file", metavar="FILE", help="Like --include-file, ignoring case."),
    iexclude_file: list[str] = IEXCLUDE_FILE,
    overwrite: str = typer.Option(
        "if-changed", "--overwrite", metavar="MODE",
        help="Files already in the target: always (compare contents, rewrite what differs), if-changed (default: "
        "same size and mtime = unchanged), if-newer (only if the snapshot's is newer), never.",
    ),
    delete: bool = typer.Option(False, "--delete", help="Delete files in the target that the snapshot (or the restored folder) does not have; with --dry-run, list them."),
    no_owner: bool = typer.Option(False, "--no-owner", help="Files belong to the user running bk (root's default: the snapshot's owners); drops setuid/setgid bits."),
    by_name: bool = typer.Option(False, "--ownership-by-name", help="Owners by the recorded user and group names where this machine knows them (default: by uid/gid)."),
    numeric_owner: bool = typer.Option(False, "--numeric-owner", help="Owners by the recorded uid/gid only, no name lookup (the default; GNU tar's spelling)."),
    no_special: bool = typer.Option(False, "--no-special", help="Skip device nodes, fifos and sockets."),
    no_setuid: bool = typer.Option(False, "--no-setuid", help="Drop setuid/setgid bits (kept by default when owners are restored, as root)."),
    include_xattr: list[str] = typer.Option([], "--include-xattr", metavar="PATTERN", help="Set only the extended attributes whose names match (user.*; repeatable)."),
    exclude_xattr: list[str] = typer.Option([], "--exclude-xattr", metavar="PATTERN", help="Do not set the extended attributes whose names match (repeatable)."),
) -> int:
    from backupkit.errors import BadArgument, SnapshotNotFound, UsageError
    from backupkit.filters import RestoreSelection, below_folder
    from backupkit.managers.restore import RestoreManager, RestoreOptions
    from backupkit.managers.restore_overwrite import check_overwrite
    from backupkit_cli.select import select_snapshot, split_ref
    from backupkit_cli.progress import RestoreProgress

    from backupkit_cli.tuning import READ_TRIM, limit_arenas, raise_open_files, tune_malloc

    tune_malloc(trim_threshold=READ_TRIM)  # pack spans and blobs: reuse, not fault in again
    raise_open_files()
    limit_arenas()
    st: State = ctx.obj
    if target and fmt:
        raise BadArgument("--target and --format exclude each other")
    check_overwrite(overwrite)
    if by_name and numeric_owner:
        raise BadArgument("--ownership-by-name and --numeric-owner exclude each other")
    if delete and not target:
        raise BadArgument("--delete needs --target")
    select = RestoreSelection.build(
        include, exclude, iinclude, iexclude, include_file, exclude_file, iinclude_file, iexclude_file
    )
    if not target and not fmt:
        if sys.stdout.isatty():
            raise BadArgument("give --target DIR, or redirect stdout to stream a ZIP (bk restore latest > out.zip)")
        fmt = "zip"
    if fmt and not dry_run and sys.stdout.isatty():
        raise UsageError("refusing to write an archive to a terminal; redirect stdout to a file")
    ref, sub = split_ref(snapshot)
    if path and ref != "latest":
        # bk's older spelling: `restore ID --path P` restored the folder P of snapshot ID;
        # for an id the snapshot filter means nothing, so the old meaning stays.
        if sub is not None or len(path) > 1:
            raise BadArgument(f"give one folder to restore: {ref}:{path[0]}")
        sub, path = path[0], []
        keep_path = True  # and its old layout: the folder at its full path below the target
    else:
        keep_path = False
    with st.locked_repo(exclusive=False, operation="restore", read_only=True) as repo:
        try:
            snap = select_snapshot(st, repo, ref, host, tag, path)
        except SnapshotNotFound:
            if path and not (host or tag):
                raise SnapshotNotFound(
                    f"no snapshot includes the path {path[0]} (--path chooses snapshots, as in restic); "
                    f"to restore a file or folder of a snapshot, write {ref}:{path[0]}"
                ) from None
            raise
        out = sys.stdout.buffer if fmt else None
        if select is not None and sub is not None and not keep_path:
            from backupkit.tree import normalize

            # restic matches the patterns of a SNAPSHOT:FOLDER restore below the folder
            select = below_folder(select, normalize(sub))
        opts = RestoreOptions(
            path=sub or "/", target=target, format=fmt, output=out, dry_run=dry_run, verify=verify,
            connections=max(4, st.store_connections()), select=select, overwrite=overwrite, delete=delete,
            keep_path=keep_path, owners=False if no_owner else None, owner_by_name=by_name,
            no_special=no_special, setuid=not no_setuid,
            include_xattrs=tuple(include_xattr), exclude_xattrs=tuple(exclude_xattr),
        )
        with RestoreProgress(st.console, stdout_free=not fmt, dry_run=dry_run) as progress:
            res = RestoreManager(repo, progress).restore(snap, opts)
    restored = res.files + res.dirs + res.others
    left = res.unchanged + res.skipped
    summary = {
        "message_type": "summary",
        # restic's names first (restic counts every entry), then bk's own
        "total_files": restored + left,
        "files_restored": restored,
        "files_skipped": left,
        "files_deleted": res.deleted,
        "total_bytes": res.bytes + res.unchanged_bytes + res.skipped_bytes,
        "bytes_restored": res.bytes,
        "bytes_skipped": res.unchanged_bytes + res.skipped_bytes,
        "seconds_elapsed": int(res.seconds),
        "snapshot": snap.id,
        **res.to_json(),
    }
    if st.json and not fmt:
        st.console.json(summary)
    else:
        verb = "would restore" if dry_run else "restored"
        st.console.info(
            f"{verb} {count(res.files, 'file')}, {count(res.dirs, 'dir')}, {count(res.others, 'other')}, {human_bytes(res.bytes)} "
            f"from snapshot {snap.short_id} in {res.seconds:.1f}s"
        )
        if left or res.deleted:
            parts = []
            if res.unchanged:
                parts.append(f"{res.unchanged} unchanged ({human_bytes(res.unchanged_bytes)})")
            if res.skipped:
                parts.append(f"{res.skipped} left as they were ({human_bytes(res.skipped_bytes)})")
            if res.deleted:
                parts.append(f"{res.deleted} {'would be ' if dry_run else ''}deleted")
            st.console.info("; ".join(parts))
        if verify:
            st.console.info(f"verified {count(res.verified, 'file')}, {len(res.verify_failures)} differ")
    if res.incomplete:
        lost = f", {len(res.unreadable)} of them directories whose contents could not be read" if res.unreadable else ""
        st.console.error(f"restore incomplete: {count(res.problems, 'problem')}{lost}")
        return exit_codes.FATAL
    return exit_codes.OK
