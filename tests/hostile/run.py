"""Running ``bk`` against a hostile repository: under a memory limit and a timeout, and
judging the outcome (success, or a clean error with a documented exit code).

With ``BK_HOSTILE_STATS=FILE`` in the environment, every run appends one JSON line to
FILE: its arguments, exit code, wall time and peak resident memory (``wait4``), so a
long corpus run can report its slowest and largest cases.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
import time

from tests.support.kit import bk_executable

MEMORY_LIMIT = 1 << 30  # RLIMIT_AS: address space, so a little above what bk touches
TIMEOUT = 60
#: The documented exit codes (cli/exit_codes.py); 2 is a usage error, never expected here.
DOCUMENTED = {0, 1, 3, 10, 11, 12}


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def _drain(stream, sink: list[bytes]) -> None:
    sink.append(stream.read())


def run_limited(*args: str | os.PathLike, env: dict[str, str], timeout: float = TIMEOUT, cwd=None) -> subprocess.CompletedProcess:
    """``bk ARGS`` with at most MEMORY_LIMIT of address space; a timeout fails the test."""
    argv = [bk_executable(), *map(os.fspath, args)]
    start = time.monotonic()
    p = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=_limit,
        stdin=subprocess.DEVNULL, cwd=cwd,
    )
    out: list[bytes] = []
    err: list[bytes] = []
    readers = [threading.Thread(target=_drain, args=(p.stdout, out)), threading.Thread(target=_drain, args=(p.stderr, err))]
    for t in readers:
        t.start()
    while True:
        pid, status, usage = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() - start > timeout:
            p.kill()
            os.wait4(p.pid, 0)
            p.returncode = -9  # reaped here; keep Popen from waiting again
            for t in readers:
                t.join()
            raise AssertionError(f"bk {' '.join(map(str, args))} ran past {timeout} s")
        time.sleep(0.02)
    p.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    p.stdout.close()
    p.stderr.close()
    elapsed = time.monotonic() - start
    stats = os.environ.get("BK_HOSTILE_STATS")
    if stats:
        row = {"args": [str(a) for a in args], "rc": p.returncode, "seconds": round(elapsed, 2),
               "maxrss_kib": usage.ru_maxrss, "oom": b"out of memory" in err[0], "test": os.environ.get("PYTEST_CURRENT_TEST", "")}
        with open(stats, "a") as f:
            f.write(json.dumps(row) + "\n")
    return subprocess.CompletedProcess(argv, p.returncode, out[0], err[0].decode("utf-8", "replace"))


def problem(r: subprocess.CompletedProcess) -> str | None:
    """Why an outcome is not acceptable, or None: success, or a documented exit code with
    one ``error:`` line (``check`` prints one per finding and a summary), no traceback and
    no internal error."""
    err = r.stderr
    if "Traceback" in err or "internal error" in err:
        return f"exit {r.returncode}: {err.strip()[-600:]}"
    if "out of memory" in err:  # a clean line, but the memory bound is what is tested
        return f"ran out of the {MEMORY_LIMIT >> 20} MiB address space: {err.strip()[-300:]}"
    if r.returncode not in DOCUMENTED:
        return f"undocumented exit code {r.returncode}: {err.strip()[-300:]}"
    if r.returncode not in (0, 3):
        errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        is_check = "check" in r.args[1:3]
        if len(errors) != 1 and not (is_check and errors):
            return f"exit {r.returncode} without exactly one error line: {err.strip()[-300:]}"
    return None
