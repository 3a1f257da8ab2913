"""bk stats"""

from __future__ import annotations

import typer

from backupkit_cli.select import HOSTS, PATHS, TAGS, abs_paths
from backupkit_cli.context import State
from backupkit_cli.fmt import human_bytes


def command(
    ctx: typer.Context,
    snapshots: list[str] = typer.Argument(None, help="Snapshots (latest, ids or prefixes); default: every snapshot the filters select."),
    mode: str = typer.Option("restore-size", "--mode", help="restore-size (what a restore writes), files-by-contents (distinct contents) or raw-data (stored blobs)."),
    host: list[str] = HOSTS,
    tag: list[str] = TAGS,
    path: list[str] = PATHS,
) -> None:
    from backupkit.managers.stats import StatsManager, StatsOptions

    st: State = ctx.obj
    opts = StatsOptions(mode=mode, refs=tuple(snapshots or ()), hosts=tuple(host), tags=tuple(tag), paths=tuple(abs_paths(path)))
    with st.locked_repo(exclusive=False, operation="stats", read_only=True) as repo:
        res = StatsManager(repo).run(opts)
    if st.json:
        st.console.json(res.to_json())
        return
    d = res.to_json()
    out = st.console.data
    out(f"Stats in {res.mode} mode:")
    out(f"     Snapshots processed:  {len(res.snapshots)}")
    if res.mode == "raw-data":
        out(f"              Total Blob Count:  {res.blobs}")
        out(f"  Total Uncompressed Size:  {human_bytes(res.blob_bytes_raw)}")
        out(f"               Total Size:  {human_bytes(res.blob_bytes_stored)}")
        out(f"        Compression Ratio:  {d['compression_ratio']:.2f}x")
        out(f"  Deduplication Ratio:  {d['dedup_ratio']:.2f}x (restore size {human_bytes(res.restore_bytes)})")
    else:
        out(f"        Total File Count:  {res.files}" + ("" if res.mode == "files-by-contents" else f" (and {res.dirs} dirs, {res.others} others)"))
        out(f"              Total Size:  {human_bytes(res.bytes)}")
    r = res.repository
    out("Repository:")
    out(f"  packs {r.packs} ({r.data_packs} data, {r.meta_packs} metadata), {human_bytes(r.pack_bytes)}")
    out(f"  blobs {r.data_blobs} data, {r.meta_blobs} metadata: {human_bytes(r.blob_bytes_raw)} raw, "
        f"{human_bytes(r.blob_bytes_stored)} stored (compression {r.compression_ratio:.2f}x)")
    out(f"  unused {human_bytes(r.unused_bytes)} in {r.unused_blobs} blobs, {human_bytes(r.pack_overhead_bytes)} pack overhead")
    out(f"  snapshots {r.snapshots}: " + ", ".join(f"{h} {n}" for h, n in r.snapshots_per_host.items()))
