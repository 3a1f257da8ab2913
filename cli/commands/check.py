"""bk check"""

from __future__ import annotations

from typing import Optional

import typer

from backupkit_cli import exit_codes
from backupkit_cli.context import State
from backupkit_cli.fmt import count, human_bytes

_STYLE = {"error": "bold red", "warning": "yellow", "info": "dim"}


def command(
    ctx: typer.Context,
    read_data: bool = typer.Option(False, "--read-data", help="Also download every pack, decrypt every blob and verify its id."),
    read_data_subset: Optional[str] = typer.Option(None, "--read-data-subset", metavar="n/t|x%|SIZE", help="Read only group n of t (by pack id), a random x% of the packs, or random packs up to SIZE (e.g. 50M, 2G)."),
) -> int:
    from backupkit.managers.check import CheckManager, CheckOptions, parse_subset
    from backupkit_cli.progress import PhaseProgress
    from backupkit_cli.tuning import READ_TRIM, tune_malloc

    tune_malloc(trim_threshold=READ_TRIM)  # packs read whole, one after the other
    st: State = ctx.obj
    if read_data_subset is not None:
        parse_subset(read_data_subset)  # a usage error before any work
    opts = CheckOptions(read_data=read_data, read_data_subset=read_data_subset)
    with st.locked_repo(exclusive=False, operation="check", read_only=True) as repo:
        with PhaseProgress(st.console) as progress:
            res = CheckManager(repo, progress).run(opts)
    from backupkit.managers.remedies import NO_REPAIR, remedies

    steps = remedies(res.findings)
    if st.json:
        st.console.json({**res.to_json(), "next": steps})
        return exit_codes.OK if res.ok else exit_codes.FATAL
    limit = None if st.verbose else 20
    for f in res.findings:
        if f.severity == "info" and st.quiet:
            continue
        st.console.line(f"{f.severity}: {f.message}", style=_STYLE[f.severity])
        if f.snapshots:
            st.console.line(f"  snapshots: {', '.join(s[:8] for s in f.snapshots)}")
        shown = f.paths if limit is None else f.paths[:limit]
        for sid, p in shown:
            st.console.line(f"    {sid[:8]} {p if p is not None else '(a tree node: paths below it unknown)'}")
        if len(shown) < len(f.paths):
            st.console.line(f"    ... and {len(f.paths) - len(shown)} more (-v shows all)")
    read = f", read {count(res.packs_read, 'pack')} ({human_bytes(res.bytes_read)})" if res.packs_read else ""
    summary = (
        f"checked {count(res.snapshots, 'snapshot')}, {count(res.index_objects, 'index object')}, "
        f"{count(res.packs, 'pack')}, {count(res.blobs, 'blob')}{read} in {res.seconds:.1f}s"
    )
    if res.ok:
        st.console.success(f"{summary}: no errors were found")
        if steps and not st.quiet:
            st.console.err.print("to tidy up, run (see docs/recovery.md): " + "; ".join(steps), markup=False)
        return exit_codes.OK
    st.console.error(f"{summary}: {count(len(res.errors), 'error')}")
    for kind in sorted({f.kind for f in res.errors} & NO_REPAIR.keys()):
        st.console.err.print(f"{kind}: {NO_REPAIR[kind]}", markup=False)
    if steps:  # docs/recovery.md explains each step
        st.console.err.print("to repair, run in this order (see docs/recovery.md):", markup=False)
        for s in steps:
            st.console.err.print(f"  {s}", markup=False)
    return exit_codes.FATAL
