"""Run one command and measure it: wall time, CPU time, peak memory, with a timeout.

Vocabulary:
    Cmd: argv plus where it runs and where its stdout goes (a file, for the ZIP/TAR
        streams; otherwise the step's log).
    peak RSS: the larger of two numbers, both in KiB:
        - ``maxrss``: the kernel's high-water mark of the largest single process in the
          tree (it covers every descendant that was waited for), as GNU ``/usr/bin/time``
          reports it ("%M"). Without GNU time it comes from ``os.wait4``, which also
          counts this Python process's image the child was forked from (~15 MiB);
        - ``tree_pss``: the largest sum of PSS over all live processes of the command's
          session, sampled every 0.1 s from ``/proc``. It only exceeds ``maxrss`` when
          several processes run at once (worker pools); PSS, not RSS, so pages shared
          between forked workers are not counted twice.
    page cache: ``drop_caches`` writes 3 to ``/proc/sys/vm/drop_caches`` after a sync;
        it needs root outside a restricted sandbox, and reports whether it worked.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TIME_BIN = next((p for p in ("/usr/bin/time",) if os.access(p, os.X_OK)), None)


@dataclass(frozen=True)
class Cmd:
    argv: list[str]
    cwd: Path | None = None
    stdout: Path | None = None  # stream stdout into this file instead of the log
    ok_codes: tuple[int, ...] = (0,)


@dataclass
class Measured:
    """One or more commands' figures, summed (times) or maxed (memory)."""

    rc: int | None = 0
    wall: float = 0.0
    cpu: float = 0.0
    #: of ``cpu``, the kernel's (system time): file creation, page-cache copies, page faults
    sys_cpu: float = 0.0
    #: minor page faults (first touches of memory; costly on a VM after drop_caches)
    minflt: int = 0
    maxrss_kib: int = 0
    tree_pss_kib: int = 0
    timed_out: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def peak_kib(self) -> int:
        return max(self.maxrss_kib, self.tree_pss_kib)

    def add(self, other: Measured) -> None:
        self.rc = other.rc
        self.wall += other.wall
        self.cpu += other.cpu
        self.sys_cpu += other.sys_cpu
        self.minflt += other.minflt
        self.maxrss_kib = max(self.maxrss_kib, other.maxrss_kib)
        self.tree_pss_kib = max(self.tree_pss_kib, other.tree_pss_kib)
        self.timed_out |= other.timed_out
        self.errors += other.errors


def _session_pids(sid: int) -> list[int]:
    """The processes of session ``sid`` and every process descended from one of them (bk's
    worker processes run in sessions of their own, so that a terminal's Ctrl-C reaches
    only bk: they are part of what a step costs all the same)."""
    parent: dict[int, int] = {}
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parent[int(name)] = int(fields[1])
        if int(fields[3]) == sid:  # fields: state ppid pgrp session ...
            pids.append(int(name))
    found = set(pids)
    grew = True
    while grew:
        grew = False
        for pid, ppid in parent.items():
            if ppid in found and pid not in found:
                found.add(pid)
                pids.append(pid)
                grew = True
    return pids


def _pss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class _TreeSampler(threading.Thread):
    def __init__(self, sid: int, interval: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.sid, self.interval = sid, interval
        self.peak_kib = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            total = sum(_pss_kib(p) for p in _session_pids(self.sid))
            self.peak_kib = max(self.peak_kib, total)


def _tail(path: Path, start: int, n: int = 400) -> str:
    """The last ``n`` bytes written to ``path`` after offset ``start``, on one line."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(start, f.tell() - n))
            return f.read().decode("utf-8", "replace").strip().replace("\n", " | ")
    except OSError:
        return ""


def run(cmd: Cmd, env: dict[str, str], log: Path, timeout: float) -> Measured:
    """Run ``cmd`` in its own session; stderr (and stdout unless redirected) go to ``log``."""
    log.parent.mkdir(parents=True, exist_ok=True)
    rss_file = log.with_suffix(".maxrss")
    argv = cmd.argv
    if TIME_BIN:  # its own tiny image, not this Python process's, is what the child forks from
        argv = [TIME_BIN, "-q", "-f", "%M", "-o", str(rss_file), *argv]
    with open(log, "ab") as logf:
        logf.write(f"$ {' '.join(cmd.argv)}  (cwd={cmd.cwd or os.getcwd()})\n".encode())
        logf.flush()
        start = logf.tell()
        out = open(cmd.stdout, "wb") if cmd.stdout else logf
        try:
            t0 = time.perf_counter()
            try:
                proc = subprocess.Popen(argv, cwd=cmd.cwd, env=env, stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=logf, start_new_session=True)
            except OSError as e:
                return Measured(rc=None, errors=[f"cannot start {argv[0]}: {e}"])
            sampler = _TreeSampler(proc.pid)
            sampler.start()
            expired = threading.Event()
            killer = threading.Timer(timeout, lambda: (expired.set(), _kill_group(proc.pid)))
            killer.start()
            try:
                _, status, ru = os.wait4(proc.pid, 0)
            except KeyboardInterrupt:
                _kill_group(proc.pid)
                raise
            finally:
                wall = time.perf_counter() - t0
                killer.cancel()
                sampler.stop.set()
                sampler.join()
            proc.returncode = rc = os.waitstatus_to_exitcode(status)
        finally:
            if cmd.stdout:
                out.close()
    if _session_pids(proc.pid):  # leftovers (daemonized children) must not outlive the step;
        _kill_group(proc.pid)  # while they live, their group id cannot be reused
    m = Measured(rc=rc, wall=wall, cpu=ru.ru_utime + ru.ru_stime, sys_cpu=ru.ru_stime, minflt=ru.ru_minflt,
                 maxrss_kib=_read_maxrss(rss_file, ru.ru_maxrss),
                 tree_pss_kib=sampler.peak_kib, timed_out=expired.is_set())
    if m.timed_out:
        m.errors.append(f"timed out after {timeout:.0f} s")
    elif rc not in cmd.ok_codes:
        what = " ".join([Path(cmd.argv[0]).name, *cmd.argv[1:3]])
        m.errors.append(f"{what}: exit {rc}: {_tail(log, start)}")
    return m


def _read_maxrss(rss_file: Path, fallback: int) -> int:
    """GNU time's "%M" (KiB); without it, wait4's figure (which includes this process)."""
    try:
        text = rss_file.read_text().split()
        rss_file.unlink()
        return int(text[-1])
    except (OSError, ValueError, IndexError):
        return fallback


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_all(cmds: list[Cmd], env: dict[str, str], log: Path, timeout: float) -> Measured:
    """Run ``cmds`` in order, stopping at the first failure; the timeout is shared."""
    total = Measured()
    for cmd in cmds:
        m = run(cmd, env, log, max(1.0, timeout - total.wall))
        total.add(m)
        if not m.ok:
            break
    return total


def dir_usage(path: Path) -> tuple[int, int]:
    """(allocated bytes on disk, apparent bytes) of everything under ``path``."""
    alloc = apparent = 0
    for d, _, files in os.walk(path):
        for name in files:
            try:
                st = os.lstat(os.path.join(d, name))
            except OSError:
                continue
            alloc += st.st_blocks * 512
            apparent += st.st_size
    return alloc, apparent


def drop_caches() -> bool:
    """Sync and drop the page cache, dentries and inodes; False if not permitted."""
    os.sync()
    try:
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True
    except OSError:
        return False
