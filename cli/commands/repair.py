"""bk repair index|snapshots|packs (restic's repair commands) and config (bk's own); docs/recovery.md says when."""

from __future__ import annotations

from typing import Optional

import typer

from backupkit_cli import exit_codes
from backupkit_cli.context import State
from backupkit_cli.fmt import human_bytes

app = typer.Typer(no_args_is_help=True, rich_markup_mode=None)

_DRY = typer.Option(False, "--dry-run", "-n", help="Show what would be done and change nothing.")


def _run(st: State, operation: str, manager_class, run):
    """``run(manager)`` for a repair manager made under the exclusive lock, with phase progress."""
    from backupkit_cli.progress import PhaseProgress

    with st.locked_repo(exclusive=True, operation=operation) as repo:
        with PhaseProgress(st.console) as progress:
            return run(manager_class(repo, progress))


def _finish(st: State, res, lines: list[str], dry_run: bool) -> int:
    if st.json:
        st.console.json(res.to_json())
        return exit_codes.OK
    for line in lines:
        st.console.info(line)
    if dry_run:
        st.console.info("dry run: nothing was changed")
    return exit_codes.OK


@app.command("index", help="Rebuild the index from the pack headers; supersede every old index object.")
def index(
    ctx: typer.Context,
    read_all_packs: bool = typer.Option(False, "--read-all-packs", help="Download every pack and verify every blob; leave out the damaged ones."),
    dry_run: bool = _DRY,
) -> int:
    from backupkit.managers.repair_index import RepairIndexManager, RepairIndexOptions

    st: State = ctx.obj
    opts = RepairIndexOptions(read_all_packs=read_all_packs)
    res = _run(st, "repair index", RepairIndexManager, lambda mgr: mgr.run(opts, dry_run=dry_run))
    p = res.plan
    lines = [f"read {p.packs_read} packs ({human_bytes(p.bytes_read)}): {len(p.packs)} indexed, {p.blobs} blobs (the old index had {p.blobs_before})"]
    lines += [f"damaged index object {n}: {why}" for n, why in sorted(p.damaged_index.items())]
    lines += [f"pack {n} was indexed but is gone" for n in p.gone]
    lines += [f"pack {n} was not indexed; now it is" for n in p.added] if st.verbose else ([f"{len(p.added)} packs were not indexed; now they are"] if p.added else [])
    for pr in p.problems:
        what = "kept the old index's entries" if pr.outcome == "salvaged" else "left out (nothing locates its blobs)"
        lines.append(f"pack {pr.name}: {pr.reason}; {what}")
    lines += [f"blob {b[:16]} in {n}: {why}; left out" for n, b, why in p.bad_blobs]
    if not dry_run:
        lines.append(f"wrote {len(res.index_written)} index object(s), deleted {res.index_deleted} old one(s)")
    if p.repair_packs:
        lines.append("next: bk repair packs " + " ".join(n.rsplit("/", 1)[1] for n in p.repair_packs))
    return _finish(st, res, lines, dry_run)


@app.command("packs", help="Salvage what still authenticates from damaged packs into new ones; remove the damaged packs.")
def packs(
    ctx: typer.Context,
    ids: list[str] = typer.Argument(..., help="Pack ids (as bk check names them), or unique prefixes of 8+ hex digits."),
    dry_run: bool = _DRY,
) -> int:
    from backupkit.managers.repair_packs import RepairPacksManager

    st: State = ctx.obj
    res = _run(st, "repair packs", RepairPacksManager, lambda mgr: mgr.run(ids, dry_run=dry_run))
    lines = []
    for p in res.plan.packs:
        head = f"; header: {p.header_problem}" if p.header_problem else ""
        lines.append(f"pack {p.name}: {len(p.salvage)} blobs salvaged, {len(p.lost)} lost{head}")
        for bid, why in sorted(p.lost.items()):
            lines.append(f"  lost blob {bid.hex()[:16]}: {why}")
    if not dry_run:
        lines.append(f"wrote {res.packs_written} pack(s) and 1 index object, removed {res.packs_deleted} damaged pack(s)")
    if res.plan.lost:
        lines.append("next: back up the same sources again (lost data still on disk is written again), then bk repair snapshots --forget")
    return _finish(st, res, lines, dry_run)


@app.command("snapshots", help="Rewrite snapshots that reference missing or damaged data (tag 'repaired').")
def snapshots(
    ctx: typer.Context,
    ids: Optional[list[str]] = typer.Argument(None, help="Snapshot ids (or prefixes) to repair; all when none."),
    forget: bool = typer.Option(False, "--forget", help="Remove each damaged snapshot once its repaired copy is written."),
    remove_damaged_files: bool = typer.Option(False, "--remove-damaged-files", help="Leave damaged files out instead of keeping them with zeros for the lost ranges."),
    dry_run: bool = _DRY,
) -> int:
    from backupkit.managers.repair_snapshots import RepairSnapshotsManager, RepairSnapshotsOptions

    st: State = ctx.obj
    opts = RepairSnapshotsOptions(forget=forget, remove_damaged_files=remove_damaged_files, ids=tuple(ids or ()))
    res = _run(st, "repair snapshots", RepairSnapshotsManager, lambda mgr: mgr.run(opts, dry_run=dry_run))
    plan = res.plan
    lines = []
    limit = None if st.verbose else 20
    for r in plan.repairs:
        sid = r.snapshot[:8]
        if r.action == "lost":
            lines.append(f"snapshot {sid}: cannot be recovered ({r.reason})" + ("; removed" if forget and not dry_run else ""))
            continue
        if r.action == "restore_object":
            lines.append(f"snapshot {sid}: {r.reason}; written back from the catalog")
            continue
        new = res.written.get(r.snapshot)
        lines.append(
            f"snapshot {sid}: {len(r.patched)} file(s) patched with zeros, {len(r.removed)} removed, "
            f"{r.lost_nodes} unreadable tree node(s), {len(r.dirs_added)} directories re-created"
            + (f"; repaired as {new[:8]}" if new else "")
            + ("; original removed" if r.snapshot in res.forgotten else "")
        )
        details = [f"  patched {p} ({n} bytes of zeros)" for p, n in r.patched] + [f"  removed {p}" for p in r.removed]
        lines += details[:limit] if limit is not None else details
        if limit is not None and len(details) > limit:
            lines.append(f"  ... and {len(details) - limit} more (-v shows all)")
    if plan.nothing_to_do:
        lines.append(f"checked {plan.snapshots_checked} snapshots: nothing to repair")
    return _finish(st, res, lines, dry_run)


_NEW_ID = typer.Option(
    False, "--new-id", help="When no local cache holds this repository, give it a new repository id (every machine's cache of it is then rebuilt)."
)


@app.command("config", help="Put back a missing or damaged config: the local cache's sealed copy, else one rebuilt from the data.")
def config(
    ctx: typer.Context,
    new_id: bool = _NEW_ID,
    dry_run: bool = _DRY,
) -> int:
    # not through ``_run``: the repository cannot be opened (nor locked) before its config is back
    from backupkit.managers.repair_config import RepairConfigManager, RepairConfigOptions, RepairConfigResult

    st: State = ctx.obj
    mgr = RepairConfigManager(st.open_store(), st.password(), cache_root=st.cache_root(), connections=st.store_connections())
    try:
        plan = mgr.plan(RepairConfigOptions(new_id=new_id))
        if plan.config is None or dry_run:
            res = RepairConfigResult(plan, False)
        else:
            with st.locked_repo(exclusive=True, operation="repair config", opened=mgr.repository(plan)) as repo:
                res = mgr.execute(plan, repo)
    finally:
        mgr.close()
    if plan.problem is None:
        lines = ["the config authenticates: nothing to repair"]
    else:
        lines = [plan.problem]
        if plan.source == "cache":
            lines.append(f"the local cache holds a copy that authenticates: {plan.cache_file}")
        else:
            c = plan.config
            lines.append("no cached copy; rebuilt from the repository:")
            lines.append(f"  repository id {c.repo_id[:10]}: {plan.fields['repo_id']}")
            lines.append(f"  chunker {c.chunker_min}/{c.chunker_avg}/{c.chunker_max}: {plan.fields['chunker']}")
            lines.append(f"  pack size {human_bytes(c.pack_size)}: {plan.fields['pack_size']}")
            lines.append(f"  compression level {c.compression_level}: {plan.fields['compression_level']}")
        if res.written:
            lines.append("wrote the config")
        elif not dry_run:
            lines.append("the store's config authenticates now: nothing written")
    return _finish(st, res, lines, dry_run)
