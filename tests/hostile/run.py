"""Running ``bk`` against a hostile repository: under a memory limit and a timeout, and
judging the outcome (success, or a clean error with a documented exit code)."""

from __future__ import annotations

import os
import resource
import subprocess

from tests.support.kit import bk_executable

MEMORY_LIMIT = 1 << 30  # RLIMIT_AS: address space, so a little above what bk touches
TIMEOUT = 60
#: The documented exit codes (cli/exit_codes.py); 2 is a usage error, never expected here.
DOCUMENTED = {0, 1, 3, 10, 11, 12}


def _limit() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def run_limited(*args: str | os.PathLike, env: dict[str, str], timeout: float = TIMEOUT, cwd=None) -> subprocess.CompletedProcess:
    """``bk ARGS`` with at most MEMORY_LIMIT of address space; a timeout fails the test."""
    argv = [bk_executable(), *map(os.fspath, args)]
    try:
        r = subprocess.run(
            argv, env=env, capture_output=True, timeout=timeout, preexec_fn=_limit, stdin=subprocess.DEVNULL, cwd=cwd
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"bk {' '.join(map(str, args))} ran past {timeout} s") from None
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout, r.stderr.decode("utf-8", "replace"))


def problem(r: subprocess.CompletedProcess) -> str | None:
    """Why an outcome is not acceptable, or None: success, or a documented exit code with
    one ``error:`` line (``check`` prints one per finding and a summary), no traceback and
    no internal error."""
    err = r.stderr
    if "Traceback" in err or "internal error" in err:
        return f"exit {r.returncode}: {err.strip()[-600:]}"
    if r.returncode not in DOCUMENTED:
        return f"undocumented exit code {r.returncode}: {err.strip()[-300:]}"
    if r.returncode not in (0, 3):
        errors = [ln for ln in err.splitlines() if ln.startswith("error: ")]
        is_check = "check" in r.args[1:3]
        if len(errors) != 1 and not (is_check and errors):
            return f"exit {r.returncode} without exactly one error line: {err.strip()[-300:]}"
    return None
