"""bk forget"""

from __future__ import annotations

import inspect
from typing import Optional

import typer

from backupkit.policy_keep import COUNT_FIELDS, WITHIN_FIELDS
from backupkit_cli import exit_codes
from backupkit_cli.context import State
from backupkit_cli.fmt import count, display_name, local_time
from backupkit_cli.select import HOSTS, PATHS, TAGS, selection


def _count(name: str):
    return typer.Option(None, f"--keep-{name}", metavar="N", help=f"Keep the newest snapshot of each of the N newest {name} periods ('unlimited': all)." if name != "last" else "Keep the N newest snapshots ('unlimited': all).")


def _within(name: str):
    period = name.removeprefix("within").lstrip("_")
    what = f"the newest snapshot of each {period} period" if period else "every snapshot"
    return typer.Option(None, f"--keep-{name.replace('_', '-')}", metavar="DURATION", help=f"Keep {what} within DURATION (1y2m3d4h) of the newest snapshot.")


def _keep_options(command):
    """Declare an option ``--keep-<field>`` for each count and duration field of
    ``KeepPolicy`` (its tables ``COUNT_FIELDS`` and ``WITHIN_FIELDS``) as parameters of
    ``command`` before ``keep_tag``; typer passes their values in ``**keep``, keyed by
    parameter name (``keep_within_daily``)."""
    options = {name: _count(name) for name in COUNT_FIELDS} | {name: _within(name) for name in WITHIN_FIELDS}
    keep = [inspect.Parameter(f"keep_{name}", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=opt, annotation=Optional[str]) for name, opt in options.items()]
    sig = inspect.signature(command)
    params = [p for p in sig.parameters.values() if p.kind is not p.VAR_KEYWORD]
    at = next(i for i, p in enumerate(params) if p.name == "keep_tag")
    command.__signature__ = sig.replace(parameters=[*params[:at], *keep, *params[at:]])
    return command


@_keep_options
def command(
    ctx: typer.Context,
    snapshots: list[str] = typer.Argument(None, help="Snapshots to remove (ids or prefixes); with --keep-* rules, the policy decides among them."),
    keep_tag: list[str] = typer.Option([], "--keep-tag", metavar="TAGS", help="Keep snapshots with all these tags (a,b; repeat for either)."),
    group_by: str = typer.Option("host,paths", "--group-by", help="Apply the policy per group of host, paths and/or tags ('' for one group)."),
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    path: list[str] = PATHS,
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Show what would be removed; change nothing."),
    prune: bool = typer.Option(False, "--prune", help="Run prune afterwards (in the same exclusive lock)."),
    max_unused: str = typer.Option("5%", "--max-unused", help="With --prune: see bk prune --max-unused."),
    max_repack_size: Optional[str] = typer.Option(None, "--max-repack-size", metavar="SIZE", help="With --prune: see bk prune --max-repack-size."),
    repack_small: bool = typer.Option(False, "--repack-small", help="With --prune: see bk prune --repack-small."),
    repack_cacheable_only: bool = typer.Option(False, "--repack-cacheable-only", help="With --prune: see bk prune --repack-cacheable-only."),
    **keep: Optional[str],
) -> int:
    from backupkit.managers.forget import ForgetManager, ForgetOptions
    from backupkit.policy import KeepPolicy, parse_duration, parse_group_by, parse_keep_count

    st: State = ctx.obj

    def count(v: Optional[str]) -> int:
        return parse_keep_count(v) if v is not None else 0

    def dur(v: Optional[str]):
        return parse_duration(v) if v is not None else None

    given = {name.removeprefix("keep_"): value for name, value in keep.items()}
    policy = KeepPolicy(
        **{name: count(given[name]) for name in COUNT_FIELDS}, **{name: dur(given[name]) for name in WITHIN_FIELDS},
        tags=tuple(keep_tag),
    )
    opts = ForgetOptions(
        policy=policy, group_by=parse_group_by(group_by), dry_run=dry_run, **selection(snapshots, host, tag, path),
    )
    from backupkit_cli.commands.prune import repack_rules

    rules = repack_rules(max_repack_size, repack_small, repack_cacheable_only)
    with st.locked_repo(exclusive=True, operation="forget" + (" --prune" if prune else "")) as repo:
        mgr = ForgetManager(repo)
        res = mgr.run(opts)
        if not st.json and not st.quiet:
            _render(st, res)
        code, doc = exit_codes.OK, res.to_json()
        if prune:
            from backupkit_cli.commands.prune import run_prune

            code, doc["prune"] = run_prune(st, repo, max_unused, dry_run, rules)
    if st.json:
        st.console.json(doc)
    return code


def _render(st: State, res) -> None:
    from rich.table import Table
    from rich.text import Text

    for g in res.groups:
        title = f"snapshots of {g.key}" if g.key is not None else "snapshots given"
        st.console.out.print(Text(display_name(title), style="bold") + Text(f"  ({res.policy})"))
        if g.kept:
            t = Table(box=None, header_style="bold", title=f"keep {count(len(g.kept), 'snapshot')}", title_justify="left")
            for col in ("ID", "Time", "Host", "Tags", "Paths", "Reasons"):
                t.add_column(col)
            for k in g.kept:
                s = k.snapshot
                t.add_row(*map(Text, (s.short_id, local_time(s.time), display_name(s.host), display_name(",".join(s.tags)), _paths(s), "\n".join(k.reasons))))
            st.console.table(t)
        if g.removed:
            t = Table(box=None, header_style="bold", title=f"remove {count(len(g.removed), 'snapshot')}", title_justify="left")
            for col in ("ID", "Time", "Host", "Tags", "Paths"):
                t.add_column(col)
            for s in g.removed:
                t.add_row(*map(Text, (s.short_id, local_time(s.time), display_name(s.host), display_name(",".join(s.tags)), _paths(s))))
            st.console.table(t)
    n = len(res.removed)
    if res.dry_run:
        st.console.info(f"dry run: would remove {count(n, 'snapshot')}")
    else:
        st.console.success(f"removed {count(n, 'snapshot')}")


def _paths(s) -> str:
    return "\n".join(display_name(p) for p in s.paths)
