"""bk stats"""

from __future__ import annotations

import typer

from backupkit_cli.select import HOSTS, PATHS, TAGS, selection
from backupkit_cli.context import State
from backupkit_cli.fmt import human_bytes


def command(
    ctx: typer.Context,
    snapshots: list[str] = typer.Argument(None, help="Snapshots (latest, ids or prefixes); default: every snapshot the filters select."),
    mode: str = typer.Option("restore-size", "--mode", help="restore-size (what a restore writes), files-by-contents (distinct contents), blobs-per-file (each distinct content's blobs once per path) or raw-data (stored blobs)."),
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    path: list[str] = PATHS,
    unused: bool = typer.Option(False, "--unused", help="Also count the repository's unused space (reads every snapshot's trees; bk prune --dry-run says what prune would free)."),
) -> None:
    from backupkit.managers.stats import StatsManager, StatsOptions

    st: State = ctx.obj
    opts = StatsOptions(mode=mode, unused=unused, **selection(snapshots, host, tag, path))
    with st.locked_repo(exclusive=False, operation="stats", read_only=True) as repo:
        res = StatsManager(repo, st.snapshots(repo)).run(opts)
    if st.json:
        st.console.json(res.to_json())
        return
    d = res.to_json()
    out = st.console.data
    rows = [("Snapshots processed", str(len(res.snapshots)))]
    if res.mode == "raw-data":
        rows += [
            ("Total Blob Count", str(res.blobs)),
            ("Total Uncompressed Size", human_bytes(res.blob_bytes_raw)),
            ("Total Size", human_bytes(res.blob_bytes_stored)),
            ("Compression Ratio", f"{d['compression_ratio']:.2f}x"),
            ("Deduplication Ratio", f"{d['dedup_ratio']:.2f}x (restore size {human_bytes(res.restore_bytes)})"),
        ]
    elif res.mode == "blobs-per-file":  # restic's order
        rows += [
            ("Total Blob Count", str(res.blobs)),
            ("Total File Count", str(res.files)),
            ("Total Size", human_bytes(res.bytes)),
        ]
    else:
        rows += [
            ("Total File Count", str(res.files) + ("" if res.mode == "files-by-contents" else f" (and {res.dirs} dirs, {res.others} others)")),
            ("Total Size", human_bytes(res.bytes)),
        ]
    out(f"Stats in {res.mode} mode:")
    width = max(len(label) for label, _ in rows)
    for label, value in rows:  # labels right-aligned, as restic prints them
        out(f"{label + ':':>{width + 1}}  {value}")
    r = res.repository
    out("Repository:")
    out(f"  packs {r.packs} ({r.data_packs} data, {r.meta_packs} metadata), {human_bytes(r.pack_bytes)}")
    out(f"  blobs {r.data_blobs} data, {r.meta_blobs} metadata: {human_bytes(r.blob_bytes_raw)} raw, "
        f"{human_bytes(r.blob_bytes_stored)} stored (compression {r.compression_ratio:.2f}x)")
    if r.unused_bytes is not None:
        out(f"  unused {human_bytes(r.unused_bytes)} in {r.unused_blobs} blobs, {human_bytes(r.pack_overhead_bytes)} pack overhead")
    else:
        out(f"  pack overhead {human_bytes(r.pack_overhead_bytes)} (--unused also counts unused blobs)")
    out(f"  snapshots {r.snapshots}: " + ", ".join(f"{h} {n}" for h, n in r.snapshots_per_host.items()))
