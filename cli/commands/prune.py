"""bk prune"""

from __future__ import annotations

from typing import Optional

import typer

from backupkit_cli import exit_codes
from backupkit_cli.context import State
from backupkit_cli.fmt import count, human_bytes
from backupkit_cli.progress import PhaseProgress


def render_plan(st: State, plan) -> None:
    """The plan as a table (not used with --json)."""
    from rich.table import Table

    s = plan.stats
    table = Table(box=None, show_header=False)
    table.add_column(style="bold")
    table.add_column(justify="right")
    table.add_column(justify="right")
    rows = [
        ("snapshots", f"{s.snapshots}", ""),
        ("packs in the index", f"{s.packs}", ""),
        ("used blobs", f"{s.blobs_used}", human_bytes(s.bytes_used)),
        ("unused blobs", f"{s.blobs_unused}", human_bytes(s.bytes_unused)),
        ("packs to delete (nothing used)", f"{s.packs_delete}", human_bytes(s.bytes_delete)),
        ("packs to repack", f"{s.packs_repack}", human_bytes(s.bytes_repack)),
        ("  of which still used (rewritten)", "", human_bytes(s.bytes_repack_live)),
        ("packs no index names (garbage)", f"{s.packs_unindexed}", human_bytes(s.bytes_unindexed)),
        ("indexed packs already gone", f"{s.packs_missing}", ""),
        ("index objects, compacted to one", f"{s.index_objects}", ""),
        ("unused left after prune", "", human_bytes(s.bytes_unused_after)),
        ("space freed (estimate)", "", human_bytes(s.bytes_freed)),
    ]
    for r in rows:
        table.add_row(*r)
    st.console.table(table)
    if st.verbose:
        from backupkit.repo.pack import pack_name

        for label, packs in (("delete", plan.delete), ("repack", plan.repack)):
            for p in packs:
                st.console.info(f"{label} {pack_name(p.kind, p.id)}")
        for n in plan.unindexed:
            st.console.info(f"delete {n} (unindexed)")


def repack_rules(max_repack_size: str | None, repack_small: bool, repack_cacheable_only: bool):
    """restic's repacking options as ``RepackRules`` (parsed before the lock is taken: a
    typo fails at once)."""
    from backupkit.managers.prune import RepackRules
    from backupkit.units import parse_size

    max_bytes = None if max_repack_size is None else parse_size(max_repack_size, "--max-repack-size")
    return RepackRules(max_bytes=max_bytes, small=repack_small, cacheable_only=repack_cacheable_only)


def run_prune(st: State, repo, max_unused: str, dry_run: bool, rules=None) -> tuple[int, dict]:
    """Plan and (unless dry_run) execute a prune inside an exclusive lock already held.

    Renders text unless --json; returns the exit code and the JSON document (printed
    by the caller, so ``forget --prune --json`` prints one document).
    """
    from backupkit.managers.prune import DamagedRepository, PruneManager, parse_max_unused

    limit = parse_max_unused(max_unused)
    with PhaseProgress(st.console) as progress:
        mgr = PruneManager(repo, progress)
        try:
            plan = mgr.plan(limit, rules)
        except DamagedRepository as e:
            st.console.error(str(e))
            for line in [] if st.json else e.details[: 50 if st.verbose else 10]:  # --json: in the document
                st.console.line(f"  {line}")
            return exit_codes.FATAL, {"error": str(e), "damaged_snapshots": list(e.snapshots), "details": list(e.details)}
        if dry_run or plan.nothing_to_do:
            abandoned = 0 if dry_run else mgr.execute(plan).abandoned_removed  # only temp files
            if not st.json and (dry_run or not st.quiet):
                render_plan(st, plan)
                st.console.info("dry run: nothing was changed" if dry_run else "nothing to prune")
            if abandoned and not st.json:
                st.console.info(f"removed {abandoned} partial writes of killed processes")
            doc = {"dry_run": dry_run, "plan": plan.to_json()}
            if not dry_run:
                doc["abandoned_removed"] = abandoned
            return exit_codes.OK, doc
        if not st.json and not st.quiet:
            render_plan(st, plan)
        res = mgr.execute(plan)
    if not st.json:
        st.console.success(
            f"wrote {count(res.packs_written, 'pack')} ({human_bytes(res.bytes_written)}) and 1 index object, "
            f"deleted {count(res.index_deleted, 'index object')} and {count(res.packs_deleted, 'pack')} ({human_bytes(res.bytes_deleted)}) "
            f"in {res.seconds:.1f}s"
            + (f"; removed {res.abandoned_removed} partial writes of killed processes" if res.abandoned_removed else "")
        )
    return exit_codes.OK, res.to_json()


def command(
    ctx: typer.Context,
    max_unused: str = typer.Option("5%", "--max-unused", help="Unused space to tolerate in kept packs: a share of the used data (5%), a size (100M) or 'unlimited'."),
    max_repack_size: Optional[str] = typer.Option(None, "--max-repack-size", metavar="SIZE", help="Repack packs of at most this many bytes in all (500M, 2G): the rest waits for a later prune."),
    repack_small: bool = typer.Option(False, "--repack-small", help="Also join small packs (below 80% of the pack size) into full ones, when there are ten or more."),
    repack_cacheable_only: bool = typer.Option(False, "--repack-cacheable-only", help="Repack metadata packs only (data packs keep their unused space)."),
    dry_run: bool = typer.Option(False, "--dry-run", "-n", help="Show the plan (packs to delete and repack, bytes freed) and change nothing."),
) -> int:
    from backupkit_cli.tuning import tune_malloc

    tune_malloc()
    st: State = ctx.obj
    rules = repack_rules(max_repack_size, repack_small, repack_cacheable_only)
    with st.locked_repo(exclusive=True, operation="prune") as repo:
        code, doc = run_prune(st, repo, max_unused, dry_run, rules)
    if st.json:
        st.console.json(doc)
    return code
