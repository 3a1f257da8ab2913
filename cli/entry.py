"""The ``bk`` console script: start the key's derivation ahead (``keyahead``), then run
the command line (``main.run``). Imports nothing else before ``keyahead`` has decided."""

from __future__ import annotations

import os
import sys


def run() -> None:
    from backupkit_cli import keyahead

    keyahead.start(sys.argv[1:], os.environ)
    from backupkit_cli.main import run as run_command_line

    run_command_line()
