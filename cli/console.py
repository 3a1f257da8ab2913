"""One console object for everything the CLI shows (hatch's terminal.py style).

Data and ``--json`` go to stdout; messages, warnings and progress go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any


class Console:
    def __init__(self, json_mode: bool = False, quiet: bool = False, verbose: int = 0) -> None:
        from rich.console import Console as RichConsole

        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
        #: Returns extra top-level keys for every JSON object printed (the store's
        #: request statistics under "store"); set by the ``bk`` callback.
        self.json_extra: Callable[[], dict[str, Any]] | None = None
        self.err = RichConsole(stderr=True, highlight=False, soft_wrap=True)
        self.out = RichConsole(highlight=False, soft_wrap=True)

    @property
    def interactive(self) -> bool:
        return self.err.is_terminal and not self.quiet and not self.json_mode

    def info(self, msg: str) -> None:
        if not self.quiet and not self.json_mode:
            self.err.print(msg, markup=False)

    def success(self, msg: str) -> None:
        if not self.quiet and not self.json_mode:
            self.err.print(msg, style="green", markup=False)

    def warn(self, msg: str) -> None:
        if not self.json_mode or True:
            self.err.print(f"warning: {msg}", style="yellow", markup=False)

    def error(self, msg: str) -> None:
        self.err.print(f"error: {msg}", style="bold red", markup=False)

    def data(self, text: str) -> None:
        """Plain data on stdout (ls lines and such)."""
        sys.stdout.write(text + "\n")

    def json(self, obj: Any) -> None:
        """One JSON document on stdout. An object (not an array: ``snapshots`` and
        ``key list`` print arrays) gets the keys ``json_extra`` returns, if any."""
        if isinstance(obj, dict) and self.json_extra is not None:
            extra = {k: v for k, v in self.json_extra().items() if k not in obj}
            if extra:
                obj = {**obj, **extra}
        sys.stdout.write(json.dumps(obj, indent=None, default=str) + "\n")
        sys.stdout.flush()

    def store_summary(self, stats: dict[str, int]) -> None:
        """The one-line request summary ``-v`` prints on stderr at the end of a command."""
        self.err.print(store_summary_line(stats), markup=False, highlight=False)

    def table(self, table) -> None:
        self.out.print(table)


def store_summary_line(stats: dict[str, int]) -> str:
    """``store: 12 requests (GET 3, PUT 8, LIST 1), 1.20 MiB up, 300.00 KiB down, 0 retries``."""
    from backupkit.store.retry import REQUEST_KINDS
    from backupkit_cli.fmt import human_bytes

    kinds = [k for k in REQUEST_KINDS if stats.get(k)] + sorted(
        k for k, n in stats.items() if n and k not in REQUEST_KINDS and k not in ("requests", "bytes_up", "bytes_down", "retries")
    )
    total = stats.get("requests", sum(stats.get(k, 0) for k in kinds))
    detail = f" ({', '.join(f'{k} {stats[k]}' for k in kinds)})" if kinds else ""
    retries = stats.get("retries", 0)
    return (
        f"store: {total} request{'s' if total != 1 else ''}{detail}, {human_bytes(stats.get('bytes_up', 0))} up, "
        f"{human_bytes(stats.get('bytes_down', 0))} down, {retries} retr{'ies' if retries != 1 else 'y'}"
    )
