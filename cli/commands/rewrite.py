"""bk rewrite"""

from __future__ import annotations

from typing import Optional

import typer

from backupkit_cli.select import HOSTS, PATHS, TAGS, selection
from backupkit_cli.context import State
from backupkit_cli.patterns import EXCLUDE_FILE, IEXCLUDE, IEXCLUDE_FILE
from backupkit_cli.fmt import human_bytes


def command(
    ctx: typer.Context,
    snapshots: list[str] = typer.Argument(None, help="Snapshots to rewrite (latest, ids or prefixes); default: every snapshot the filters select."),
    exclude: list[str] = typer.Option([], "--exclude", "-e", metavar="PATTERN", help="Remove paths matching this restic pattern (repeatable)."),
    iexclude: list[str] = IEXCLUDE,
    exclude_file: list[str] = EXCLUDE_FILE,
    iexclude_file: list[str] = IEXCLUDE_FILE,
    forget: bool = typer.Option(False, "--forget", help="Replace the snapshots (remove the originals) instead of adding new ones tagged 'rewrite'."),
    new_host: Optional[str] = typer.Option(None, "--new-host", help="Give the rewritten snapshots this host name."),
    new_time: Optional[str] = typer.Option(None, "--new-time", help="Give the rewritten snapshots this time (ISO 8601)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Say what would be removed; change nothing."),
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    path: list[str] = PATHS,
) -> None:
    from backupkit.managers.rewrite import RewriteManager, RewriteOptions
    from backupkit.filters import read_pattern_file

    st: State = ctx.obj
    excludes = list(exclude) + [p for f in exclude_file for p in read_pattern_file(f)]
    iexcludes = list(iexclude) + [p for f in iexclude_file for p in read_pattern_file(f, "--iexclude-file")]
    from backupkit_cli.fmt import parse_time

    opts = RewriteOptions(
        excludes=tuple(excludes), iexcludes=tuple(iexcludes), forget=forget, dry_run=dry_run,
        new_host=new_host, new_time=parse_time(new_time) if new_time else None,
        **selection(snapshots, host, tag, path),
    )
    # as restic: removing the originals needs the exclusive lock, adding snapshots does not
    with st.locked_repo(exclusive=forget and not dry_run, operation="rewrite") as repo:
        res = RewriteManager(repo).run(opts)
    if st.json:
        st.console.json(res.to_json())
        return
    for c in res.changed:
        verb = "would remove" if res.dry_run else "removed"
        relabeled = ""
        if new_host is not None and new_host != c.old.host:
            relabeled += f", host {c.old.host} -> {new_host}"
        if new_time is not None:
            relabeled += f", time -> {opts.new_time.isoformat()}"
        st.console.info(f"snapshot {c.old.short_id}: {verb} {len(c.removed)} entries ({human_bytes(c.removed_bytes)}){relabeled}"
                        + (f" -> {c.new.short_id}" if c.new is not None else ""))
        if res.dry_run or st.verbose:
            for m in c.removed:
                st.console.data(m.path.decode("utf-8", "backslashreplace"))
    for s in res.unchanged:
        st.console.info(f"snapshot {s.short_id}: nothing to {'change' if new_host or new_time else 'remove'}")
    n = len(res.changed)
    if res.dry_run:
        st.console.info(f"dry run: would rewrite {n} snapshot(s)")
    else:
        st.console.success(f"rewrote {n} snapshot(s)" + (", originals removed" if res.forget else ""))
