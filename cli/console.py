"""One console object for everything the CLI shows (hatch's terminal.py style).

Data and ``--json`` go to stdout; messages, warnings and progress go to stderr.
"""

from __future__ import annotations

import json
import sys
from typing import Any


class Console:
    def __init__(self, json_mode: bool = False, quiet: bool = False, verbose: int = 0) -> None:
        from rich.console import Console as RichConsole

        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
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
        sys.stdout.write(json.dumps(obj, indent=None, default=str) + "\n")
        sys.stdout.flush()

    def table(self, table) -> None:
        self.out.print(table)
