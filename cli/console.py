"""One console object for everything the CLI shows (hatch's terminal.py style).

Data and ``--json`` go to stdout; messages, warnings and progress go to stderr.

With ``--json`` every line on stderr is one JSON object with ``message_type`` and
``message``: ``warning`` and ``error`` lines (``warn``, ``error``) also carry restic's
``error: {"message": ...}``, and ``item`` (the path) and ``during`` (``archival``,
``restore``) when the problem is about one path; the error that ends the command is
restic's ``exit_error`` (``exit_error``); ``-v``'s request counts are a ``store`` line.
Informational messages are not printed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any

from backupkit_cli.fmt import display_name


class Console:
    def __init__(self, json_mode: bool = False, quiet: bool = False, verbose: int = 0) -> None:
        from rich.console import Console as RichConsole

        self.json_mode = json_mode
        self.quiet = quiet
        self.verbose = verbose
        #: Returns extra top-level keys for every JSON object printed (the store's
        #: request statistics under "store"); set by the ``bk`` callback.
        self.json_extra: Callable[[], dict[str, Any]] | None = None
        # Nothing printed is ever read as markup or emoji codes: names are data.
        self.err = RichConsole(stderr=True, highlight=False, soft_wrap=True, markup=False, emoji=False)
        # Tables piped to a file or a program are never wrapped or cut at 80 columns.
        wide = None if sys.stdout.isatty() else 1_000_000
        self.out = RichConsole(highlight=False, soft_wrap=True, markup=False, emoji=False, width=wide)

    @property
    def interactive(self) -> bool:
        return self.err.is_terminal and not self.quiet and not self.json_mode

    # Messages are one line each; a name inside one may hold control characters, so
    # every message is escaped whole with display_name (messages have none of their own).
    def info(self, msg: str) -> None:
        if not self.quiet and not self.json_mode:
            self.err.print(display_name(msg))

    def success(self, msg: str) -> None:
        if not self.quiet and not self.json_mode:
            self.err.print(display_name(msg), style="green")

    def warn(self, msg: str, item: str | None = None, during: str | None = None) -> None:
        """Always shown (on stderr), also with --quiet: ``warning: [ITEM: ]MSG``, or with
        --json a ``{"message_type": "warning", ...}`` line."""
        if self.json_mode:
            self._problem("warning", msg, item, during)
        else:
            self.err.print(f"warning: {display_name(f'{item}: {msg}' if item else msg)}", style="yellow")

    def error(self, msg: str, item: str | None = None, during: str | None = None) -> None:
        """``error: [ITEM: ]MSG`` on stderr, or with --json a ``{"message_type": "error", ...}``
        line (restic's shape for a file that could not be read or restored)."""
        if self.json_mode:
            self._problem("error", msg, item, during)
        else:
            self.err.print(f"error: {display_name(f'{item}: {msg}' if item else msg)}", style="bold red")

    def _problem(self, message_type: str, msg: str, item: str | None, during: str | None) -> None:
        doc: dict[str, Any] = {"message_type": message_type, "message": msg, "error": {"message": msg}}
        if during is not None:
            doc["during"] = during
        if item is not None:
            doc["item"] = item
        sys.stderr.write(json.dumps(doc) + "\n")
        sys.stderr.flush()

    def exit_error(self, msg: str, code: int, **extra: Any) -> None:
        """The error that ends the command: ``error: MSG``, or with --json restic's
        ``{"message_type": "exit_error", "code": N, "message": MSG}`` (plus ``extra``
        keys), on stderr either way."""
        if self.json_mode:
            doc = {"message_type": "exit_error", "code": code, "message": msg, **extra}
            sys.stderr.write(json.dumps(doc) + "\n")
            sys.stderr.flush()
        else:
            self.error(msg)

    def line(self, msg: str, style: str | None = None) -> None:
        """A detail line on stderr (a finding's paths, a -v file line), escaped; not
        hidden by -q or --json (callers decide)."""
        self.err.print(display_name(msg), style=style)

    def data(self, text: str) -> None:
        """One line of data on stdout (ls and diff lines), control characters escaped."""
        sys.stdout.write(display_name(text) + "\n")

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
        """The one-line request summary ``-v`` prints on stderr at the end of a command
        (with --json: ``{"message_type": "store", "message": LINE, ...the counts}``)."""
        if self.json_mode:
            sys.stderr.write(json.dumps({"message_type": "store", "message": store_summary_line(stats), **stats}) + "\n")
            sys.stderr.flush()
            return
        self.err.print(store_summary_line(stats), markup=False, highlight=False)

    def table(self, table) -> None:
        """A rich Table on stdout; put names in cells through ``display_name``."""
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
