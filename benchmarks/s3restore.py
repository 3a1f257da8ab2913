"""Restore from S3, bk revisions against restic, on one backup per tool.

    python -m benchmarks.s3restore [--mib 256] [--delay-ms 20] [--rounds 2]
                                   [--bk-rev HEAD] [--bk-rev main ...] [--work DIR]

The throughput phase of ``s3bench.py`` backs up afresh for every backend, so each restore
reads a repository of its own random pack layout and bk's request counts move between
backends. Here each tool backs up the mixed set once to SeaweedFS (``s3bench.Server``:
``weed mini`` on 127.0.0.1 behind the counting proxy, no delay; not measured), then
every round restores it with each bk revision and restic, at 0 ms and at ``--delay-ms``
per request, each restore verified and preceded by a page-cache drop. The bk revisions
restore the same repository (the first revision makes it), so their counts compare
directly. Per restore: wall and CPU seconds, requests, data range requests, bytes down
(all areas) over the bytes of the repository's data packs (a restore of everything needs
their blobs, a little less than the packs: above 1.0 some byte was downloaded twice), and
when the first response, the first and the last data range ended (seconds after start).

Run it under the shared lock (``flock /var/tmp/bench.lock``); results go to
``--out`` (Markdown and JSON beside it).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from . import datagen, measure
from .run import DEFAULT_WORK, DataSet
from .s3bench import S3Workspace, Server, export_source
from .tools import Tool, install, locate


def data_packs(server: Server, prefix: str) -> tuple[int, int]:
    """Count and bytes of the objects under ``prefix/data/`` (both tools keep packs there)."""
    client = server.s3.client()
    n = total = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=server.s3.bucket, Prefix=f"{prefix}/data/"):
        n += len(page.get("Contents", []))
        total += sum(o["Size"] for o in page.get("Contents", []))
    return n, total


def restore_once(server: Server, tool: Tool, label: str, ws: S3Workspace, data: DataSet, delay_ms: float,
                 logs: Path, timeout: float) -> dict[str, Any]:
    target = ws.root / "restore"
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    server.proxy.delay = delay_ms / 1000
    measure.drop_caches()
    load = os.getloadavg()[0]
    before = server.proxy.snapshot()
    counts = server.proxy.counts
    events: list[tuple[float, str]] = []  # (seconds since start, "KIND area") as each response ends
    add = counts.add
    t0 = time.perf_counter()
    counts.add = lambda kind, area, *rest: (events.append((time.perf_counter() - t0, f"{kind} {area}")),  # type: ignore[method-assign]
                                            add(kind, area, *rest))
    try:
        m = measure.run_all(tool.restore(ws, target), tool.env(ws) | server.env,
                            logs / f"restore-{label}-{delay_ms:g}ms.log", timeout)
    finally:
        counts.add = add  # type: ignore[method-assign]
    req = server.proxy.since(before)
    data_t = [t for t, what in events if what.endswith(" data")]
    from . import verify

    v = verify.verify_tree(target, data.src, data.manifest) if m.ok else None
    shutil.rmtree(target, ignore_errors=True)
    by_area = req.get("by_area", {})
    return {"tool": label, "delay_ms": delay_ms, "ok": bool(m.ok and v and v.ok), "seconds": round(m.wall, 2),
            "cpu_seconds": round(m.cpu, 2), "peak_rss_mib": round(m.peak_kib / 1024, 1), "load": round(load, 2),
            "requests": req["requests"], "data_ranges": by_area.get("GET_RANGE data", 0) + by_area.get("GET data", 0),
            "bytes_down": req.get("bytes_down", 0), "by_area": by_area,
            "first_response_s": round(events[0][0], 2) if events else None,
            "first_data_s": round(data_t[0], 2) if data_t else None, "last_data_s": round(data_t[-1], 2) if data_t else None,
            "note": (v.text if v else "; ".join(m.errors))[:200]}


def render(meta: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    lines = [f"# Restore from S3, {meta['date']}", ""] + [f"- {k}: {v}" for k, v in meta["summary"].items()]
    lines += ["", "| round | delay | tool | s | CPU s | requests | data ranges | MiB down | down / data packs | "
              "first response, first / last data range done (s) | load | vs restic |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ref = next((x for x in rows if x["tool"] == "restic" and x["round"] == r["round"]
                    and x["delay_ms"] == r["delay_ms"]), None)
        ratio = f"{r['seconds'] / ref['seconds']:.2f}" if ref and ref["seconds"] and r["tool"] != "restic" else ""
        lines.append(f"| {r['round']} | {r['delay_ms']:g} ms | {r['tool']} | {r['seconds']:.2f} | {r['cpu_seconds']:.2f} "
                     f"| {r['requests']} | {r['data_ranges']} | {r['bytes_down'] / 2**20:.1f} | "
                     f"{r['down_over_packs']:.3f} | {r['first_response_s']}, {r['first_data_s']} / {r['last_data_s']} | "
                     f"{r['load']} | {ratio} |" + ("" if r["ok"] else f" WRONG {r['note']}"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=float, default=256)
    ap.add_argument("--delay-ms", type=float, default=20.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bk-rev", action="append", default=[], help="a bk revision to run (repeatable; default HEAD)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK / "s3restore")
    ap.add_argument("--out", type=Path, required=True, help="Markdown file (JSON beside it)")
    a = ap.parse_args(argv)
    install(["restic"], log=lambda s: print(s, file=sys.stderr))
    work: Path = a.work
    work.mkdir(parents=True, exist_ok=True)
    tools: dict[str, Tool] = {}
    for i, rev in enumerate(a.bk_rev or ["HEAD"]):
        src, sha = export_source(rev, work / f"bk-src-{i}")
        tool = locate(["bk"], f"env PYTHONPATH={src} {sys.executable} -P -m backupkit_cli")["bk"]
        tools[f"bk@{rev}({sha[:7]})"] = tool
    tools["restic"] = locate(["restic"])["restic"]
    total = int(a.mib * datagen.MiB)
    data = DataSet(work / "data" / f"mixed-{a.mib:g}MiB", work / "data" / f"mixed-{a.mib:g}MiB.stamp",
                   {"kind": "mixed", "bytes": total, "files": datagen.default_small_files(total), "seed": a.seed,
                    "format": datagen.FORMAT})
    data.src.parent.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"data": str(data.src) + ": " + data.ensure(),
                               "command": "`python -m benchmarks.s3restore " + " ".join(sys.argv[1:] if argv is None else argv) + "`",
                               "load at start": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    logs = work / "logs"
    logs.mkdir(exist_ok=True)
    started = dt.datetime.now(dt.timezone.utc)
    server = Server(work / "seaweedfs")
    rows: list[dict[str, Any]] = []
    try:
        server.proxy.delay = 0.0
        spaces: dict[str, S3Workspace] = {}
        packs: dict[str, int] = {}
        count: dict[str, int] = {}
        first_bk = next(iter(tools))
        for label, tool in tools.items():
            if label.startswith("bk@") and label != first_bk:
                spaces[label] = spaces[first_bk]  # every bk revision restores the same repository
                continue
            prefix = "restic" if label == "restic" else "bk"
            ws = S3Workspace(work / "ws" / prefix, url=server.url(prefix))
            shutil.rmtree(ws.root, ignore_errors=True)
            ws.create()
            spaces[label] = ws
            for what, cmds in (("init", tool.init(ws)), ("backup", tool.backup(ws, data.src))):
                m = measure.run_all(cmds, tool.env(ws) | server.env, logs / f"{what}-{prefix}.log", a.timeout)
                if not m.ok:
                    raise SystemExit(f"{label} {what} failed: {m.errors}")
            count[prefix], packs[prefix] = data_packs(server, prefix)
        summary["data packs"] = ", ".join(f"{k} {count[k]} ({v / 2**20:.1f} MiB)" for k, v in packs.items())
        for rnd in range(1, a.rounds + 1):
            for delay in (0.0, a.delay_ms):
                for label, tool in tools.items():
                    r = restore_once(server, tool, label, spaces[label], data, delay, logs, a.timeout)
                    r["round"] = rnd
                    r["down_over_packs"] = r["bytes_down"] / packs["restic" if label == "restic" else "bk"]
                    rows.append(r)
                    print(f"round {rnd} {delay:>4g} ms {label:24} {r['seconds']:7.2f} s cpu {r['cpu_seconds']:6.2f} "
                          f"req {r['requests']:4d} data {r['data_ranges']:4d} down/packs {r['down_over_packs']:.3f} "
                          f"load {r['load']} {'ok' if r['ok'] else 'WRONG ' + r['note']}", file=sys.stderr, flush=True)
    finally:
        server.stop()
        shutil.rmtree(work / "seaweedfs", ignore_errors=True)
        shutil.rmtree(work / "ws", ignore_errors=True)
    summary["load at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "summary": summary}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    text = render(meta, rows)
    a.out.write_text(text)
    a.out.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": rows}, indent=1) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
