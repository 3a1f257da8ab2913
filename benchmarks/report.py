"""Render a run's results as Markdown (and JSON).

A result is a dict (see ``run.Result``): step, tool, status (ok, failed, timeout, wrong,
skipped), seconds, cpu_seconds (sys_seconds of them, the kernel's), mb (source MB the
step covers), peak_rss_mib, repo_bytes, note. Ratios are bk's seconds over the other
tool's: below 1 means bk is faster.
"""

from __future__ import annotations

import json
import re
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
    "tree-backup": "first backup of the source tree (`--source`, e.g. `/usr`; fresh repository, init not timed)",
    "tree-unchanged": "source tree again, nothing changed",
    "tree-restore": "restore the source tree to a directory (verified; files the system changed meanwhile are left out)",
    "tree-check-read-data": "check the source tree's repository, reading all data",
}

# Where borg 1.x has no direct equivalent of the step: what its column measures instead.
BORG_INSTEAD = {
    "restore-zip": "`export-tar` to a file: borg 1.x cannot write ZIP (uncompressed TAR instead)",
    "check-read-data": "`check --verify-data`: also checks the archives' metadata; no `--read-data` subset",
    "tree-check-read-data": "`check --verify-data` (as above)",
    "forget-prune": "`prune --keep-last 1` then `compact`: borg 1.2 frees space in a second command",
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

# Issue 13's goal column, as (step, limit on bk/restic time, row, the cache it is for or
# None for either). A limit of None is max(0.5, the mixed set's read floor / restic's time).
ISSUE13 = [
    ("tree-backup", 1 / 3, "first backup, `/usr` (issue: warm cache)", None),
    ("backup", 1 / 3, "first backup, generated mixed set, warm", "warm"),
    ("backup", None, "first backup, generated ~1.1 GB, cold: <= max(0.5, disk-read limit)", "cold"),
    ("many-backup", 0.7, "first backup, 200k tiny files", None),
    ("many-unchanged", 0.2, "backup, nothing changed, 200k tiny files", None),
    ("tree-unchanged", 0.3, "backup, nothing changed, `/usr`", None),
    ("tree-restore", 0.6, "restore to a directory, `/usr`", None),
    ("restore", 1 / 1.5, "restore to a directory, generated ~1.1 GB, cold", "cold"),
    ("tree-check-read-data", 0.5, "check --read-data, `/usr`", None),
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


def _cache(meta: dict[str, Any]) -> str:
    """"cold" or "warm" (older JSON: read from the summary's page cache line)."""
    if "cache" in meta:
        return meta["cache"]
    return "cold" if str(meta["summary"].get("page cache", "")).startswith("dropped") else "warm"


def _set_of(step: str, meta: dict[str, Any]) -> str:
    sets = meta.get("sets") or {}
    key = "many" if step.startswith("many") else "tree" if step.startswith("tree") else "mixed"
    return "—" if step in ("help", "init") else sets.get(key, key)


def _sys_share(r: dict[str, Any] | None) -> str:
    """The kernel's share of a step's CPU seconds ("" where not measured: older JSON)."""
    if r and r["status"] == "ok" and r.get("sys_seconds") is not None and r["cpu_seconds"] > 0:
        return f"{r['sys_seconds'] / r['cpu_seconds']:.0%}"
    return ""


def cores(r: dict[str, Any] | None) -> float | None:
    """CPU seconds over wall seconds: how many cores the step kept busy on average."""
    if r and r["status"] == "ok" and r["seconds"] > 0:
        return r["cpu_seconds"] / r["seconds"]
    return None


def merge(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Several invocations' JSON as one page: results in order, later summaries labelled."""
    meta = json.loads(json.dumps(docs[0]["meta"]))
    results = list(docs[0]["results"])
    for i, doc in enumerate(docs[1:], 2):
        m = doc["meta"]
        meta["tools"] += [t for t in m["tools"] if t not in meta["tools"]]
        meta["steps"] += [s for s in m["steps"] if s not in meta["steps"]]
        meta["notes"] += [n for n in m.get("notes", []) if n not in meta["notes"]]
        meta["sets"] = {**m.get("sets", {}), **meta.get("sets", {})}
        meta["floors_s"] = {**m.get("floors_s", {}), **meta.get("floors_s", {})}
        meta["elapsed_s"] = meta.get("elapsed_s", 0) + m.get("elapsed_s", 0)
        meta["profiles"] = meta.get("profiles", []) + m.get("profiles", [])
        if _cache(m) != _cache(meta):
            meta["cache"] = "mixed"
        for k, v in m["summary"].items():
            if meta["summary"].get(k) != v:
                meta["summary"][f"{k} (invocation {i}, {m['date']})"] = v
        results += doc["results"]
    return {"meta": meta, "results": results}


def render(meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    tools: list[str] = meta["tools"]
    steps = list(dict.fromkeys(r["step"] for r in results))
    by = {(r["step"], r["tool"]): r for r in results}
    others = [t for t in tools if t != "bk"] if "bk" in tools else []
    cache = _cache(meta)
    how = {"cold": "cold: the page cache dropped before every measured command",
           "warm": "warm: the page cache kept", "mixed": "see the summary: cold and warm invocations"}[cache]
    borg_marks = {s: f"[{i}]" for i, s in enumerate((s for s in steps if "borg" in tools and s in BORG_INSTEAD), 1)}

    lines = [f"# backupkit benchmark: {meta['scale']} scale, {meta['date']}", ""]
    lines += [f"- {k}: {v}" for k, v in meta["summary"].items()]
    lines += ["", f"## Results ({how})", ""]
    header = ["step", "set", "MB"]
    for t in tools:
        header += [f"{t} s", f"{t} MB/s", f"{t} RSS MiB", f"{t} repo MiB"]
    header += [f"bk/{t} time" for t in others]
    rows = []
    for s in steps:
        mb = next((r["mb"] for t in tools if (r := by.get((s, t))) and r.get("mb")), None)
        row = [f"{s} {borg_marks[s]}" if s in borg_marks else s, _set_of(s, meta), f"{mb:.0f}" if mb else "—"]
        for t in tools:
            row += [_cell(by.get((s, t)), w) for w in ("s", "mbs", "rss", "repo")]
        for t in others:
            q = _ratio(by.get((s, "bk")), by.get((s, t)))
            row.append(f"{q:.2f}" if q is not None else "—")
        rows.append(row)
    lines += _table(header, rows)
    lines += ["", "Seconds are wall time; MB/s is source data (10^6 bytes) over wall time; RSS is the "
              "peak of the command's process tree; repo is its size on disk after the step; "
              "bk/x time below 1 means bk is faster."]
    if borg_marks:
        lines += ["", "borg 1.x has no direct equivalent of some steps; its column measures instead:", ""]
        lines += [f"- {mark} `{s}`: {BORG_INSTEAD[s]}" for s, mark in borg_marks.items()]
    lines += ["", f"## CPU seconds (user + sys), the kernel's share of them (sys) and cores used "
              f"(CPU seconds / wall seconds; {cache})", ""]
    crows = []
    for s in steps:
        row = [s]
        for t in tools:
            c = cores(by.get((s, t)))
            row += [_cell(by.get((s, t)), "cpu"), _sys_share(by.get((s, t))), f"{c:.2f}" if c is not None else ""]
        crows.append(row)
    lines += _table(["step", *(x for t in tools for x in (f"{t} CPU s", f"{t} sys", f"{t} cores"))], crows)
    lines += _issue13(meta, by, steps)
    lines += _profiles(meta)

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


def _floor_s(meta: dict[str, Any], dataset: str) -> float | None:
    """Seconds of the data set's `tar | cat` read floor (older JSON: from the summary line)."""
    if (floor := (meta.get("floors_s") or {}).get(dataset)) is not None:
        return floor
    for k, v in meta["summary"].items():
        if k.startswith("read floor") and ("mixed set" in k) == (dataset == "mixed"):
            if m := re.search(r"\(([0-9.]+) s", str(v)):
                return float(m.group(1))
    return None


def _issue13(meta: dict[str, Any], by: dict[tuple[str, str], dict[str, Any]], steps: list[str]) -> list[str]:
    """Issue 13's goal rows that this run measured, with bk/restic (and bk/borg) and memory."""
    rows = []
    for step, limit, text, cache in ISSUE13:
        b, r, g = by.get((step, "bk")), by.get((step, "restic")), by.get((step, "borg"))
        if step not in steps or b is None or cache not in (None, _cache(meta)):
            continue
        q, qb = _ratio(b, r), _ratio(b, g)
        if limit is None:
            floor = _floor_s(meta, "mixed")
            limit = max(0.5, floor / r["seconds"]) if floor and q is not None else 0.5
        verdict = ("holds" if q <= limit else "does not hold") if q is not None else \
            f"bk {b['status'].upper()}" if b["status"] in ("failed", "timeout", "wrong") else "n/a"
        mem = (f"{b['peak_rss_mib']:.0f} / {r['peak_rss_mib']:.0f}" if q is not None else "—")
        text = text.replace("`/usr`", _set_of(step, meta))
        rows.append([text, f"<= {limit:.2f}", f"{q:.2f}" if q is not None else "—", verdict,
                     f"{qb:.2f}" if qb is not None else "—", mem])
    b, r = by.get(("tree-backup", "bk")), by.get(("tree-backup", "restic"))
    if _ratio(b, r) is not None:
        ok = b["peak_rss_mib"] <= max(r["peak_rss_mib"] * RSS_SLACK, r["peak_rss_mib"] + 2)
        rows.append([f"peak memory, first backup, {_set_of('tree-backup', meta)} (MiB)", "<= restic's",
                     f"{b['peak_rss_mib']:.0f} vs {r['peak_rss_mib']:.0f}", "holds" if ok else "does not hold", "—", ""])
    if not rows:
        return []
    out = ["", f"## Issue 13's goals ({_cache(meta)}; bk/restic time unless said)", ""]
    out += _table(["row", "goal", "bk/restic", "verdict", "bk/borg", "peak MiB bk / restic"], rows)
    return out


def _profiles(meta: dict[str, Any]) -> list[str]:
    """Where bk's time goes, from the profiled repetition (``profiling.py``)."""
    profs = meta.get("profiles") or []
    if not profs:
        return []
    out = ["", "## Where bk's time goes (py-spy, a separate profiled repetition; not the timed run)", "",
           "Own time: seconds in which the function was the innermost Python frame of a thread py-spy "
           "did not judge idle (C code it calls counts for it; so may a thread blocked in a read), summed "
           "over threads; GIL: the share of those samples in which it held the GIL. GIL held: GIL samples "
           "over wall time (1.00 = one thread held it all the time).", ""]
    rows = []
    for p in profs:
        if "error" in p:
            rows.append([p["step"], "", "", "", p["error"]])
            continue
        top = "; ".join(f"`{t['function']}` {t['own_s']:.1f} s"
                        + (f" (GIL {t['gil_share']:.0%})" if t.get("gil_share") is not None else "")
                        for t in p["top"])
        gil = f"{p['gil_held']:.2f}" if p.get("gil_held") is not None else "—"
        if p.get("note"):
            top = f"**{p['note']}**; " + top
        rows.append([p["step"], _secs(p["wall_s"]), f"{p['cpu_samples_s']:.1f}", gil, top])
    out += _table(["step", "profiled wall s", "active samples, s", "GIL held", "top 5 by own time"], rows)
    return out


def write(md_path: Path, meta: dict[str, Any], results: list[dict[str, Any]]) -> str:
    text = render(meta, results)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text)
    md_path.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    return text
