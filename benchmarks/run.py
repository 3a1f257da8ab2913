"""Benchmark bk against restic and borg on the same generated data, in the same run.

    python -m benchmarks.run --scale small|full [--tools bk,restic,borg] [--steps ...]
                             [--out FILE] [--many-files N] [--warm] [--timeout S]
                             [--source DIR] [--render A.json [B.json ...]]

Steps run in a fixed order and, within a step, tool after tool, so every tool sees the
same data and much the same machine load (this 2-core machine is shared). Before each
measured command the page cache is dropped when permitted (``--warm`` keeps it). A step
that fails, times out or restores the wrong bytes is reported as such; the run goes on.
Steps a selected step needs (``backup`` before ``restore``) are added. ``--source DIR``
adds a real tree (e.g. ``/usr``) as a third data set, the ``tree-*`` steps.

A verified restore is not deleted at once but moved to ``WORK/trash``, emptied when the
run ends (and at its start, of an interrupted run's leftovers): on ext4 without a journal
(this machine's root file system), creating a file passes over the free inodes freed
recently, looking up each one's inode table block (``recently_deleted`` in
``fs/ext4/ialloc.c``); a restore of ``/usr`` that came within minutes of the deletion of
another (140k files) spent 5-7x the system time of one that did not, charged to whichever
tool came next (docs/benchmarks.md, session 12). For the same reason a run with restore
steps first waits until the previous run's trash was emptied ``DELETES_SETTLE`` seconds
ago (``BK_BENCH_DELETES_SETTLE``, default 420).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from . import datagen, measure, report, verify
from .profiling import Profiler
from .tools import Tool, Workspace, install, locate

STEPS = list(report.DESCRIPTIONS)
REQUIRES = {
    "backup": "init", "backup-unchanged": "backup", "backup-1pct": "backup", "restore": "backup",
    "restore-zip": "backup", "check-read-data": "backup", "forget-prune": "backup",
    "many-unchanged": "many-backup", "many-1pct": "many-backup",
    "tree-unchanged": "tree-backup", "tree-restore": "tree-backup", "tree-check-read-data": "tree-backup",
}
FRESH_REPO = ("many-backup", "tree-backup")  # steps that init their own repository (not timed)
BACKUPS = ("backup", "backup-unchanged", "backup-1pct", "many-backup", "many-unchanged", "many-1pct",
           "tree-backup", "tree-unchanged")
HERE = Path(__file__).resolve().parent
#: seconds a restore step waits after the last run's restored trees were deleted (see above)
DELETES_SETTLE = float(os.environ.get("BK_BENCH_DELETES_SETTLE", "420"))
# Outside the source tree: the data set holds ~20k generated (syntactically invalid) .py
# files that linters and compileall walking the project must not meet. /var/tmp is on disk.
DEFAULT_WORK = Path(os.environ.get("BK_BENCH_WORK", "/var/tmp/backupkit-bench"))


@dataclass
class Result:
    step: str
    tool: str
    status: str = "ok"  # ok | failed | timeout | wrong | skipped
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    sys_seconds: float = 0.0  # of cpu_seconds, the kernel's
    mb: float | None = None  # source MB (10^6 bytes) the step covers, for MB/s
    peak_rss_mib: float = 0.0
    maxrss_mib: float = 0.0
    tree_pss_mib: float = 0.0
    repo_bytes: int | None = None
    repo_apparent_bytes: int | None = None
    load_before: float | None = None
    note: str = ""


def dataset_of(step: str) -> str:
    return "many" if step.startswith("many") else "tree" if step.startswith("tree") else "mixed"


@dataclass
class DataSet:
    """A generated source tree (or, kind "tree", a real one) and what a restore must reproduce."""

    src: Path
    stamp: Path
    params: dict
    manifest: verify.Manifest | None = None

    @property
    def bytes(self) -> int:
        return sum(size for size, _ in self.manifest.values())

    def ensure(self) -> str:
        """Generate the tree unless an unchanged one with the same parameters exists."""
        if self.params["kind"] == "tree":  # a live tree: only its manifest
            t0 = time.perf_counter()
            self.manifest = verify.tree_manifest(self.src)
            return (f"{len(self.manifest)} regular files, {self.bytes / 1e6:.0f} MB (a live tree, "
                    f"hashed in {time.perf_counter() - t0:.0f} s)")
        try:
            reuse = json.loads(self.stamp.read_text()) == self.params
        except (OSError, ValueError):
            reuse = False
        if not reuse:
            self.stamp.unlink(missing_ok=True)
            if self.src.exists():
                shutil.rmtree(self.src)
            p = self.params
            if p["kind"] == "many":
                s = datagen.generate_many(self.src, p["files"], p["seed"])
            else:
                s = datagen.generate_mixed(self.src, p["bytes"], p["files"], p["seed"])
            self.stamp.write_text(json.dumps(self.params))
        self.manifest = verify.tree_manifest(self.src)
        how = "reused" if reuse else f"generated in {s.seconds:.0f} s"
        return f"{len(self.manifest)} files, {self.bytes / 1e6:.0f} MB ({how})"

    def change(self) -> str:
        self.stamp.unlink(missing_ok=True)  # no longer the pristine tree
        s = datagen.apply_change(self.src, self.params["seed"])
        self.manifest = verify.tree_manifest(self.src)
        return s.detail


class Runner:
    def __init__(self, args: argparse.Namespace, tools: dict[str, Tool], work: Path) -> None:
        self.args, self.tools, self.work = args, tools, work
        self.results: list[Result] = []
        self.done: dict[str, set[str]] = {t: set() for t in tools}
        self.spaces: dict[tuple[str, str], Workspace] = {}
        self.data: dict[str, DataSet] = {}
        self.cold = False
        self.floors: dict[str, float] = {}  # data set -> seconds of `tar | cat` (the read floor)
        self.started = time.time()  # a live tree's files changed after this are not held against a restore

    def ws(self, tool: str, dataset: str) -> Workspace:
        key = (tool, dataset)
        if key not in self.spaces:
            self.spaces[key] = Workspace(self.work / tool / dataset)
        return self.spaces[key]

    def measure(self, step: str, tool: Tool, cmds: list[measure.Cmd], ws: Workspace) -> measure.Measured:
        log = self.work / "logs" / f"{tool.name}-{step}.log"
        log.unlink(missing_ok=True)
        if self.cold:
            measure.drop_caches()
        return measure.run_all(cmds, tool.env(ws), log, self.args.timeout)

    def prep(self, step: str, tool: Tool, cmds: list[measure.Cmd], ws: Workspace) -> str | None:
        """Unmeasured commands; returns an error text or None."""
        m = measure.run_all(cmds, tool.env(ws), self.work / "logs" / f"{tool.name}-{step}-prep.log",
                            self.args.timeout)
        return "; ".join(m.errors) or None

    def after_restore(self, path: Path, fmt: str | None, data: DataSet) -> str:
        """Compare a restored directory (``fmt`` None) or stream with the source, then drop
        it (a directory: into the trash, emptied when the run ends; see the module's text)."""
        if fmt is None:
            v = verify.verify_tree(path, data.src, data.manifest,
                                   changed_since=self.started if data.params["kind"] == "tree" else None)
            if not self.args.keep:
                self.trash(path)
        else:
            v = verify.verify_archive(path, fmt, data.src, data.manifest)
            if not self.args.keep:
                path.unlink(missing_ok=True)
        return v.text if v.ok else "WRONG: " + v.text

    def trash(self, path: Path) -> None:
        """Move ``path`` out of the way, to be deleted by ``empty_trash`` (same file system)."""
        bin_ = self.work / "trash"
        bin_.mkdir(exist_ok=True)
        try:
            path.rename(bin_ / f"{len(os.listdir(bin_))}-{path.parent.parent.name}-{path.parent.name}")
        except OSError:
            shutil.rmtree(path, ignore_errors=True)

    def empty_trash(self) -> None:
        """Delete what ``trash`` kept, write the deletions out (``sync``), and note when
        (``wait_after_deletes``)."""
        if (self.work / "trash").exists():
            shutil.rmtree(self.work / "trash", ignore_errors=True)
            os.sync()
            (self.work / "trash.emptied").touch()

    def wait_after_deletes(self, say: Callable[[str], None]) -> None:
        """Wait until the last emptied trash is ``DELETES_SETTLE`` seconds old: a run that
        starts right after another would otherwise restore among the inodes it freed."""
        try:
            age = time.time() - (self.work / "trash.emptied").stat().st_mtime
        except OSError:
            return
        if 0 <= age < DELETES_SETTLE:
            say(f"waiting {DELETES_SETTLE - age:.0f} s: the last run's restores were deleted {age:.0f} s ago")
            time.sleep(DELETES_SETTLE - age)

    def after_backup(self, tool: Tool, ws: Workspace) -> str | None:
        """Does the tool now list as many snapshots as it has taken?"""
        ws.snapshots += 1
        try:
            out = subprocess.run(tool.snapshot_count(ws)[0].argv, env=tool.env(ws), capture_output=True,
                                 text=True, timeout=self.args.timeout)
        except (OSError, subprocess.SubprocessError) as e:
            return f"note: could not list snapshots ({e})"
        try:
            n = tool.parse_count(out.stdout)
        except (ValueError, KeyError, TypeError):
            tail = (out.stderr.strip().splitlines() or ["no output"])[-1][:200]
            return f"note: could not list snapshots (exit {out.returncode}: {tail})"
        return None if n == ws.snapshots else f"WRONG: {n} snapshots listed, {ws.snapshots} taken"

    def run_step(self, step: str, tool: Tool) -> Result:
        r = Result(step, tool.name)
        if tool.missing:
            r.status, r.note = "skipped", ""
            return r
        need = REQUIRES.get(step)
        if need and need not in self.done[tool.name]:
            r.status, r.note = "skipped", f"needs a successful `{need}`"
            return r
        dataset = dataset_of(step)
        ws = self.ws(tool.name, dataset)
        data = self.data.get(dataset)
        if data:
            r.mb = data.bytes / 1e6
        post = None
        if step == "help":
            cmds = tool.help()
        elif step == "init":
            ws.create()
            cmds = tool.init(ws)
        elif step in BACKUPS:
            if step in FRESH_REPO:
                ws.create()
                if err := self.prep(step, tool, tool.init(ws), ws):
                    r.status, r.note = "failed", f"init: {err}"
                    return r
            cmds = tool.backup(ws, data.src)
            post = partial(self.after_backup, tool, ws)
        elif step in ("restore", "tree-restore"):
            target = ws.root / "restore"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            cmds = tool.restore(ws, target)
            post = partial(self.after_restore, target, None, data)
        elif step == "restore-zip":
            out = ws.root / f"stream.{tool.stream_format}"
            cmds = tool.stream(ws, out)
            post = partial(self.after_restore, out, tool.stream_format, data)
        elif step in ("check-read-data", "tree-check-read-data"):
            cmds = tool.check(ws)
        elif step == "forget-prune":
            cmds = tool.forget_prune(ws)
        else:
            raise ValueError(step)
        if step in ("help", "init", "forget-prune"):
            r.mb = None
        r.load_before = round(os.getloadavg()[0], 2)
        m = self.measure(step, tool, cmds, ws)
        r.seconds, r.cpu_seconds, r.sys_seconds = round(m.wall, 3), round(m.cpu, 3), round(m.sys_cpu, 3)
        r.peak_rss_mib = round(m.peak_kib / 1024, 1)
        r.maxrss_mib, r.tree_pss_mib = round(m.maxrss_kib / 1024, 1), round(m.tree_pss_kib / 1024, 1)
        if step != "help" and ws.repo.exists():
            r.repo_bytes, r.repo_apparent_bytes = measure.dir_usage(ws.repo)
        if not m.ok:
            r.status, r.note = ("timeout" if m.timed_out else "failed"), "; ".join(m.errors)
            return r
        if post and (note := post()):
            r.note = note
            if note.startswith("WRONG"):
                r.status = "wrong"
                return r
        self.done[tool.name].add(step)
        return r

    def baselines(self) -> dict[str, str]:
        """Two yardsticks for the backup rows.

        The read floor (``tar | cat`` of the mixed set, cold cache when it can be dropped,
        one reader) is what any backup pays to read the data. ``zstd -3 -T2`` over a TAR
        file of the set in the page cache is the brief's "room in the pipeline" for
        compression (~650 MB/s claimed); the file is still in the page cache from its writing.
        """
        if not (shutil.which("zstd") and shutil.which("tar")):
            return {"baselines": "zstd or tar not installed"}
        src = self.data["mixed"].src
        mb = self.data["mixed"].bytes / 1e6
        tar_file, out = self.work / "baseline.tar", self.work / "logs" / "baseline.out"
        log = self.work / "logs" / "baseline.log"
        floor = f"read floor: `tar | cat` of the mixed set, {'cold' if self.cold else 'warm'} cache"
        zstd = "`zstd -3 -T2` of a TAR of the mixed set, warm cache"
        rows = {}
        if self.cold:
            measure.drop_caches()
        m = measure.run(measure.Cmd(["bash", "-c", f"tar -C '{src}' -cf - . | cat"], stdout=tar_file),
                        dict(os.environ), log, self.args.timeout)
        rows[floor] = f"{mb / m.wall:.0f} MB/s ({m.wall:.2f} s)" if m.ok else "failed: " + "; ".join(m.errors)
        if m.ok:
            self.floors["mixed"] = round(m.wall, 3)
            m = measure.run(measure.Cmd(["bash", "-c", f"zstd -3 -T2 -q -c '{tar_file}' | wc -c"], stdout=out),
                            dict(os.environ), log, self.args.timeout)
            rows[zstd] = (f"{mb / m.wall:.0f} MB/s ({m.wall:.2f} s), compresses to "
                          f"{int(out.read_text().split()[0]) / 1e6 / mb:.0%}") if m.ok else "failed"
        tar_file.unlink(missing_ok=True)
        return rows

    def tree_floor(self) -> dict[str, str]:
        """The read floor of the source tree: ``tar | cat`` of it to /dev/null, one reader."""
        data = self.data["tree"]
        if self.cold:
            measure.drop_caches()
        m = measure.run(measure.Cmd(["bash", "-c", f"tar -C '{data.src}' -cf - . | cat"], stdout=Path("/dev/null")),
                        dict(os.environ), self.work / "logs" / "baseline-tree.log", self.args.timeout)
        key = f"read floor: `tar | cat` of `{data.src}`, {'cold' if self.cold else 'warm'} cache"
        if not m.ok:
            return {key: "failed: " + "; ".join(m.errors)}
        self.floors["tree"] = round(m.wall, 3)
        return {key: f"{data.bytes / 1e6 / m.wall:.0f} MB/s ({m.wall:.2f} s, {m.cpu:.1f} CPU s)"}


def select_steps(text: str | None, source: bool = False) -> tuple[list[str], list[str]]:
    """The steps to run in order, and the ones added because a selected step needs them.

    By default every step, the ``tree-*`` ones only with a ``source`` tree.
    """
    wanted = set(text.split(",") if text else (s for s in STEPS if source or dataset_of(s) != "tree"))
    if unknown := wanted - set(STEPS):
        raise SystemExit(f"unknown steps {sorted(unknown)} (known: {', '.join(STEPS)})")
    added = []
    for s in list(wanted):
        while (need := REQUIRES.get(s)) and need not in wanted:
            wanted.add(need)
            added.append(need)
            s = need
    if not source and (tree := sorted(s for s in wanted if dataset_of(s) == "tree")):
        raise SystemExit(f"steps {', '.join(tree)} need --source DIR")
    return [s for s in STEPS if s in wanted], added


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="small", help="small (~50 MiB), full (~1 GiB) or MiB of the mixed set")
    ap.add_argument("--tools", default="bk,restic,borg", help="comma-separated, in column order")
    ap.add_argument("--steps", help=f"comma-separated subset of: {', '.join(STEPS)}")
    ap.add_argument("--out", type=Path, help="Markdown file (JSON next to it); default "
                    "benchmarks/results/<date>-<scale>.md")
    ap.add_argument("--files", type=int, help="small files in the mixed set (default 20 per MiB)")
    ap.add_argument("--many-files", type=int, help="files in the many set (200000 at full, else 10000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, help="seconds per step (default 600, full: 3600)")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK,
                    help=f"scratch directory for data, repositories and logs (default {DEFAULT_WORK})")
    ap.add_argument("--warm", action="store_true", help="do not drop the page cache before each step")
    ap.add_argument("--keep", action="store_true", help="keep restored trees and streams")
    ap.add_argument("--bk", help='how to start bk (default: "bk" on PATH), e.g. "python -m backupkit_cli.main"')
    ap.add_argument("--no-install", action="store_true", help="do not apt/pip-install missing restic or borg")
    ap.add_argument("--source", type=Path, help="a real tree (e.g. /usr) as a third data set: the tree-* steps")
    ap.add_argument("--profile", action="store_true",
                    help="after the timed steps, a profiled repetition of bk's (py-spy; see profiling.py)")
    ap.add_argument("--profile-only", action="store_true", help="only the profiled repetition, no timed steps")
    ap.add_argument("--render", type=Path, nargs="+", metavar="JSON",
                    help="only write the page (--out) of earlier runs' JSON; several are merged into one page")
    ap.add_argument("--note", action="append", default=[], help="with --render: a line added to the page's notes")
    a = ap.parse_args(argv)
    if a.timeout is None:
        a.timeout = 3600.0 if a.scale == "full" else 600.0
    if a.many_files is None:
        a.many_files = 200_000 if a.scale == "full" else 10_000
    return a


def machine() -> str:
    model = "?"
    try:
        model = next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / (1 << 30)
    return f"{os.cpu_count()} cores ({model}), {mem:.0f} GiB RAM, Linux {platform.release()}, Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.render:
        doc = report.merge([json.loads(p.read_text()) for p in a.render])
        doc["meta"]["notes"] = doc["meta"].get("notes", []) + a.note
        out = a.out or a.render[0].with_suffix(".md")
        report.write(out, doc["meta"], doc["results"])
        print(f"written: {out} and {out.with_suffix('.json')}", file=sys.stderr)
        return 0
    steps, added = select_steps(a.steps, a.source is not None)
    names = [t for t in a.tools.split(",") if t]
    if not a.no_install:
        install(names, log=lambda s: print(s, file=sys.stderr))
    tools = locate(names, a.bk)
    scale_name = a.scale if a.scale in datagen.SCALES else f"{a.scale}MiB"
    work = a.work / scale_name
    (work / "logs").mkdir(parents=True, exist_ok=True)
    for name in tools:  # repositories and caches of an earlier run must not be reused
        shutil.rmtree(work / name, ignore_errors=True)
    runner = Runner(a, tools, work)

    def say(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    runner.empty_trash()  # an interrupted run's restores
    if any(s in ("restore", "tree-restore") for s in steps):
        runner.wait_after_deletes(say)

    started = dt.datetime.now(dt.timezone.utc)
    notes = []
    if added:
        notes.append(f"added steps needed by the selection: {', '.join(added)}")
    for t in tools.values():
        if t.missing:
            hint = " (install it: `pip install -e .` in the project, or pass --bk)" if t.name == "bk" else ""
            notes.append(f"{t.name}: not found on PATH{hint}; its steps are skipped")
    summary = {"machine": machine(), "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    for t in tools.values():
        summary[t.name] = t.version or "not found"
    total = datagen.parse_scale(a.scale)
    n_small = a.files if a.files is not None else datagen.default_small_files(total)
    if any(dataset_of(s) == "mixed" and s != "help" for s in steps):
        runner.data["mixed"] = DataSet(work / "data" / "mixed", work / "data" / "mixed.stamp",
                                       {"kind": "mixed", "bytes": total, "files": n_small, "seed": a.seed,
                                        "format": datagen.FORMAT})
    if a.source:
        runner.data["tree"] = DataSet(a.source.resolve(), work / "data" / "tree.stamp",
                                      {"kind": "tree", "path": str(a.source.resolve())})
    if any(s.startswith("many") for s in steps):
        runner.data["many"] = DataSet(work / "data" / "many", work / "data" / "many.stamp",
                                      {"kind": "many", "files": a.many_files, "seed": a.seed,
                                       "format": datagen.FORMAT})
    for name, ds in runner.data.items():
        if ds.params["kind"] != "tree":
            ds.src.parent.mkdir(parents=True, exist_ok=True)
        say(f"data: {name} set ...")
        summary[f"{name} set"] = f"`{ds.src}`: " + ds.ensure()

    if a.warm:
        summary["page cache"] = "kept warm (--warm)"
    else:
        runner.cold = measure.drop_caches()
        summary["page cache"] = ("dropped before every measured command (sync; echo 3 > /proc/sys/vm/drop_caches)"
                                 if runner.cold else "could NOT be dropped here (no permission): runs are warm")
    if "mixed" in runner.data and "backup" in steps and not a.profile_only:
        say("baselines: tar | cat, zstd -3 -T2 ...")
        summary.update(runner.baselines())
    if "tree" in runner.data and "tree-backup" in steps and not a.profile_only:
        say(f"baseline: tar | cat of {runner.data['tree'].src} ...")
        summary.update(runner.tree_floor())
    if "borg" in tools and "restore-zip" in steps:
        notes.append(tools["borg"].stream_note)

    profiles: list[dict] = []
    try:
        for step in ([] if a.profile_only else steps):
            if step == "backup-1pct":
                notes.append(f"1% change to the mixed set: {runner.data['mixed'].change()}")
            elif step == "many-1pct":
                notes.append(f"1% change to the many set: {runner.data['many'].change()}")
            for tool in tools.values():
                r = runner.run_step(step, tool)
                runner.results.append(r)
                if r.status != "skipped" or r.note:
                    say(f"{step:16} {tool.name:7} {r.status:7} {r.seconds:8.2f} s  "
                        f"{r.peak_rss_mib:7.1f} MiB  {r.note}")
        if (a.profile or a.profile_only) and "bk" in tools and not tools["bk"].missing:
            prof = Profiler(tools["bk"], work, runner.cold, a.timeout)
            if not prof.spy:
                notes.append("py-spy not found (pip install py-spy): no profile")
            for name, ds in runner.data.items():
                if prof.spy:
                    say(f"profiling bk on the {name} set ...")
                    profiles += prof.run(name, ds.src, steps, say)
    except KeyboardInterrupt:
        notes.append("interrupted: the results are partial")

    summary["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    summary["command"] = "`python -m benchmarks.run " + " ".join(sys.argv[1:] if argv is None else argv) + "`"
    meta = {"scale": scale_name, "date": started.strftime("%Y-%m-%d %H:%M UTC"), "tools": list(tools),
            "steps": steps, "timeout_s": a.timeout, "work": str(work), "summary": summary, "notes": notes,
            "elapsed_s": round(time.time() - started.timestamp(), 1), "cache": "cold" if runner.cold else "warm",
            "sets": {"mixed": "mixed", "many": "many", **({"tree": f"`{a.source}`"} if a.source else {})},
            "floors_s": runner.floors, "profiles": profiles}
    out = a.out or HERE / "results" / f"{started.strftime('%Y-%m-%d')}-{scale_name}.md"
    print(report.write(out, meta, [asdict(r) for r in runner.results]))
    say(f"written: {out} and {out.with_suffix('.json')}")
    runner.empty_trash()  # after the page: a run stopped here loses nothing (the next run empties it)
    return 0


if __name__ == "__main__":
    sys.exit(main())
