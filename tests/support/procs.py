"""Finding the worker processes (``backupkit/procs.py``) a process started, by /proc."""

from __future__ import annotations

import os


def worker_children(role: str, pid: int | None = None) -> list[int]:
    """The live worker processes of ``role`` whose parent is ``pid`` (default: this process)."""
    pid = os.getpid() if pid is None else pid
    want = b"backupkit.procmain\x00" + role.encode() + b"\x00"
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                stat = f.read()
            with open(f"/proc/{d}/cmdline", "rb") as f:
                cmd = f.read()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z" and want in cmd:
            out.append(int(d))
    return out
