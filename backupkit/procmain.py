"""The entry of a worker process (``procs.py``): ``python -P -m backupkit.procmain ROLE``.

Imports only its role's module (no CLI, no store), to start fast and stay small.
"""

from __future__ import annotations

import importlib
import signal
import sys

#: role -> the module whose ``start(arguments)`` gives the job handler
ROLES = {
    "seal": "backupkit.objects.sealworker",
    "verify": "backupkit.repo.packverify",
}


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when this ends
    if len(argv) != 1 or argv[0] not in ROLES:
        print(f"usage: python -m backupkit.procmain {{{','.join(ROLES)}}}", file=sys.stderr)
        return 2
    from backupkit.procframes import serve

    return serve(importlib.import_module(ROLES[argv[0]]).start)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
