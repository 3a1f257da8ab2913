"""Where bk's time goes: a profiled repetition of its steps with py-spy, apart from the timed run.

The timed figures never come from a profiled process. After (or instead of, with
``--profile-only``) the timed steps, ``run.py --profile`` repeats bk's steps of each data set
in a fresh repository of its own (``<work>/profile/<set>-<mode>``): backup, unchanged
backup, restore to a directory and check --read-data, as far as the run selected them.
Every command runs under ``py-spy record --format raw --subprocesses --nonblocking``
twice, each time in its own repository, so both repetitions see the same state:

- ``cpu``: every thread py-spy does not judge idle is sampled: a function's *own time* is the
  samples in which it is the innermost Python frame (time in C code it called counts for it,
  and so does a thread blocked in a read: py-spy's idle filter does not catch every wait, so
  the sum over threads can exceed cores x wall);
- ``gil``: only the thread holding the GIL is sampled (``--gil``). The GIL share of a
  function is its GIL samples over its CPU samples; the step's "GIL held" is all GIL samples
  over rate x wall seconds (summed over processes; a lagging sampler makes it an under-estimate).

The page cache is dropped before each profiled command when the run is cold, as in the timed run.
"""

from __future__ import annotations

import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from . import measure
from .tools import Tool, Workspace

RATE = 100  # samples per second
TOP = 5
SEQUENCES = {  # data set -> (step, what it does), in order; later ones need the first
    "mixed": ["backup", "backup-unchanged", "restore", "check-read-data"],
    "many": ["many-backup", "many-unchanged"],
    "tree": ["tree-backup", "tree-unchanged", "tree-restore", "tree-check-read-data"],
}
_LINE = re.compile(r"^(?P<stack>.*) (?P<count>\d+)$")
_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::\d+)?\)$")


def py_spy() -> str | None:
    """py-spy beside this Python (the venv) or on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def own_samples(raw: str) -> Counter[str]:
    """Samples per innermost frame ("function (file)") of py-spy's raw (collapsed) output."""
    out: Counter[str] = Counter()
    for line in raw.splitlines():
        m = _LINE.match(line.strip())
        if not m:
            continue
        leaf = m["stack"].rsplit(";", 1)[-1]
        if leaf.startswith("process ") and ";" not in m["stack"]:
            leaf = "(no Python frame)"
        f = _FRAME.match(leaf)
        name = f"{f['func']} ({_short(f['file'])})" if f else leaf
        out[name] += int(m["count"])
    return out


def _short(path: str) -> str:
    """A source path from the package down (``backupkit/...``, ``cli/...``), else its last two parts."""
    parts = Path(path).parts
    for anchor in ("backupkit", "cli", "backupkit_cli"):
        if anchor in parts:
            return "/".join(parts[parts.index(anchor):])
    return "/".join(parts[-2:])


def summarize(step: str, wall: float, cpu_raw: str, gil_raw: str, rate: int = RATE) -> dict[str, Any]:
    """One step's profile: GIL held over wall time, and the top functions by own time."""
    cpu, gil = own_samples(cpu_raw), own_samples(gil_raw)
    top = [{"function": f, "own_s": round(n / rate, 2),
            "gil_share": round(min(1.0, gil.get(f, 0) / n), 2) if n else None}
           for f, n in cpu.most_common(TOP)]
    return {"step": step, "wall_s": round(wall, 2), "cpu_samples_s": round(sum(cpu.values()) / rate, 2),
            "gil_held": round(sum(gil.values()) / (rate * wall), 2) if wall > 0 else None, "top": top}


def _reported_errors(log: Path, start: int) -> bool:
    """Did the command(s) logged after offset ``start`` print an error line?"""
    try:
        with open(log, "rb") as f:
            f.seek(start)
            return any(line.startswith(b"error:") for line in f)
    except OSError:
        return False


class Profiler:
    """Runs the profiled repetitions of bk's steps; ``run.Runner`` supplies data and commands."""

    def __init__(self, bk: Tool, work: Path, cold: bool, timeout: float) -> None:
        self.bk, self.work, self.cold, self.timeout = bk, work / "profile", cold, timeout
        self.spy = py_spy()

    def run(self, dataset: str, src: Path, steps: list[str], say=print) -> list[dict[str, Any]]:
        wanted = [s for s in SEQUENCES[dataset] if s in steps]
        if not wanted or not self.spy:
            return []
        raws: dict[tuple[str, str], tuple[float, str]] = {}
        errors: dict[str, str] = {}
        for mode in ("cpu", "gil"):
            ws = Workspace(self.work / f"{dataset}-{mode}")
            ws.create()
            log = self.work / "logs" / f"{dataset}-{mode}.log"
            if not measure.run_all(self.bk.init(ws), self.bk.env(ws), log, self.timeout).ok:
                return [{"step": wanted[0], "error": f"init failed, see {log}"}]
            for step in SEQUENCES[dataset]:  # a restore or check needs the backup before it
                if step not in wanted and not step.endswith("backup"):
                    continue
                cmds = self._cmds(step, ws, src)
                out = self.work / f"{step}-{mode}.txt"
                out.unlink(missing_ok=True)
                spy = [self.spy, "record", "--format", "raw", "--rate", str(RATE), "--subprocesses",
                       "--nonblocking", "-o", str(out), *(["--gil"] if mode == "gil" else []), "--"]
                if self.cold:
                    measure.drop_caches()
                mark = log.stat().st_size if log.exists() else 0
                m = measure.run_all([measure.Cmd([*spy, *c.argv], cwd=c.cwd, stdout=c.stdout, ok_codes=c.ok_codes)
                                     for c in cmds], self.bk.env(ws), log, self.timeout)
                if step in ("tree-restore", "restore"):
                    shutil.rmtree(ws.root / "restore", ignore_errors=True)
                if not m.ok:
                    raws[(step, mode)] = (0.0, "")
                    say(f"profile {step} {mode}: {'; '.join(m.errors)}")
                    continue
                raws[(step, mode)] = (m.wall, out.read_text() if out.exists() else "")
                if _reported_errors(log, mark):  # py-spy exits 0 whatever bk's exit code was
                    errors[step] = f"bk reported errors under the profiler (see {log})"
                say(f"profile {step:20} {mode}: {m.wall:.1f} s")
        return [summarize(s, raws[(s, "cpu")][0], raws[(s, "cpu")][1], raws[(s, "gil")][1])
                | {"gil_wall_s": round(raws[(s, "gil")][0], 2)} | ({"note": errors[s]} if s in errors else {})
                for s in wanted if (s, "cpu") in raws and (s, "gil") in raws and raws[(s, "cpu")][0] > 0]

    def _cmds(self, step: str, ws: Workspace, src: Path) -> list[measure.Cmd]:
        if step.endswith("backup") or step.endswith("unchanged"):
            return self.bk.backup(ws, src)
        if step.endswith("restore"):
            target = ws.root / "restore"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            return self.bk.restore(ws, target)
        return self.bk.check(ws)
