"""Render a run's results as Markdown (and JSON).

A result is a dict (see ``run.Result``): step, tool, status (ok, failed, timeout, wrong,
skipped), seconds, cpu_seconds, mb (source MB the step covers), peak_rss_mib, repo_bytes,
note. Ratios are bk's seconds over the other tool's: below 1 means bk is faster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

MB = 1e6
MiB = 1 << 20
RSS_SLACK = 1.05  # bk's peak RSS may exceed restic's by 5% (or 2 MiB) before it counts: noise

DESCRIPTIONS = {
    "help": "`--help` start-up",
    "init": "create a repository",
    "backup": "first backup of the mixed set",
    "backup-unchanged": "second backup, nothing changed",
    "backup-1pct": "backup after the 1% change",
    "restore": "restore latest to a directory (verified)",
    "restore-zip": "latest as a ZIP stream to a file (verified; borg: TAR)",
    "check-read-data": "check, reading all data",
    "forget-prune": "keep the last snapshot, reclaim space",
    "many-backup": "first backup of the many set",
    "many-unchanged": "many set, nothing changed",
    "many-1pct": "many set after the 1% change",
}

# The brief's section 4, as (step, limit on bk/restic time or absolute seconds, wording).
TARGETS = [
    ("backup", 1 / 3, "first backup throughput >= 3x restic"),
    ("many-unchanged", 0.3, "unchanged backup of the many set <= 0.3x restic's time"),
    ("many-1pct", 0.5, "backup after a 1% change (many set) <= 0.5x restic's time"),
    ("restore", 1 / 1.5, "restore to a directory >= 1.5x restic's throughput"),
    ("restore-zip", 1 / 1.5, "ZIP stream >= 1.5x restic's throughput"),
    ("check-read-data", 1 / 1.5, "check --read-data >= 1.5x restic's throughput"),
    ("forget-prune", 1.0, "forget + prune <= restic's time"),
]


def _secs(x: float) -> str:
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 100 else f"{x:.0f}"


def _cell(r: dict[str, Any] | None, what: str) -> str:
    if r is None:
        return ""
    if r["status"] != "ok":
        return {"failed": "FAIL", "timeout": "TIMEOUT", "wrong": "WRONG", "skipped": "skip"}[r["status"]] \
            if what == "s" else ""
    if what == "s":
        return _secs(r["seconds"])
    if what == "mbs":
        return f"{r['mb'] / r['seconds']:.0f}" if r.get("mb") and r["seconds"] > 0 else "—"
    if what == "rss":
        return f"{r['peak_rss_mib']:.0f}"
    if what == "repo":
        return f"{r['repo_bytes'] / MiB:.1f}" if r.get("repo_bytes") is not None else "—"
    if what == "cpu":
        return _secs(r["cpu_seconds"])
    raise ValueError(what)


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None, key: str = "seconds") -> float | None:
    if a and b and a["status"] == b["status"] == "ok" and b[key] > 0:
        return a[key] / b[key]
    return None


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def render(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    tools: list[str] = meta["tools"]
    steps = list(dict.fromkeys(r["step"] for r in results))
    by = {(r["step"], r["tool"]): r for r in results}
    others = [t for t in tools if t != "bk"] if "bk" in tools else []

    lines = [f"# backupkit benchmark: {meta['scale']} scale, {meta['date']}", ""]
    lines += [f"- {k}: {v}" for k, v in meta["summary"].items()]
    lines += ["", "## Results", ""]
    header = ["step", "MB"]
    for t in tools:
        header += [f"{t} s", f"{t} MB/s", f"{t} RSS MiB", f"{t} repo MiB"]
    header += [f"bk/{t} time" for t in others]
    rows = []
    for s in steps:
        mb = next((r["mb"] for t in tools if (r := by.get((s, t))) and r.get("mb")), None)
        row = [s, f"{mb:.0f}" if mb else "—"]
        for t in tools:
            row += [_cell(by.get((s, t)), w) for w in ("s", "mbs", "rss", "repo")]
        for t in others:
            q = _ratio(by.get((s, "bk")), by.get((s, t)))
            row.append(f"{q:.2f}" if q is not None else "—")
        rows.append(row)
    lines += _table(header, rows)
    lines += ["", "Seconds are wall time; MB/s is source data (10^6 bytes) over wall time; RSS is the "
              "peak of the command's process tree; repo is its size on disk after the step; "
              "bk/x time below 1 means bk is faster.", ""]

    lines += ["## CPU seconds (user + sys)", ""]
    lines += _table(["step", *tools], [[s, *(_cell(by.get((s, t)), "cpu") for t in tools)] for s in steps])

    if "bk" in tools and "restic" in tools:
        lines += ["", "## Targets (the product brief, section 4)", ""]
        if meta["scale"] != "full":
            lines += ["Most steps take about a second at this scale: judge the figures on a `full` run.", ""]
        trows = []
        for step, limit, text in TARGETS:
            q = _ratio(by.get((step, "bk")), by.get((step, "restic")))
            verdict = "n/a" if q is None else ("pass" if q <= limit else "FAIL")
            trows.append([text, f"<= {limit:.2f}", f"{q:.2f}" if q is not None else "—", verdict])
        heavier = []
        for s in steps:
            b, r = by.get((s, "bk")), by.get((s, "restic"))
            if _ratio(b, r) is not None and b["peak_rss_mib"] > max(r["peak_rss_mib"] * RSS_SLACK,
                                                                     r["peak_rss_mib"] + 2):
                heavier.append(f"{s} ({b['peak_rss_mib'] / r['peak_rss_mib']:.2f}x)")
        measured = any(_ratio(by.get((s, "bk")), by.get((s, "restic"))) is not None for s in steps)
        trows.append(["peak memory <= restic's in every step", f"<= 1.00 (+{RSS_SLACK - 1:.0%} / 2 MiB noise)",
                      ", ".join(heavier) if heavier else "—",
                      "n/a" if not measured else ("FAIL" if heavier else "pass")])
        h = by.get(("help", "bk"))
        trows.append(["`bk --help` < 0.3 s", "< 0.3 s", f"{h['seconds']:.3f}" if h and h["status"] == "ok" else "—",
                      "n/a" if not h or h["status"] != "ok" else ("pass" if h["seconds"] < 0.3 else "FAIL")])
        lines += _table(["figure", "limit (bk/restic time)", "measured", "verdict"], trows)

    notes = [f"- {r['tool']} {r['step']}: {r['note']}" for r in results if r.get("note")]
    if meta.get("notes") or notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in meta.get("notes", [])] + notes
    lines += ["", "## Steps", ""] + [f"- `{s}`: {DESCRIPTIONS.get(s, s)}" for s in steps]
    return "\n".join(lines) + "\n"


def write(md_path: Path, meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    text = render(meta, results)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text)
    md_path.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    return text
