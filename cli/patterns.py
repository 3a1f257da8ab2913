"""The pattern options of backup, restore and rewrite (restic's patterns and pattern
files), declared once as select.py declares the snapshot filters; commands take them as
their defaults. ``--exclude`` itself is declared by each command: its help says what the
command leaves out.
"""

from __future__ import annotations

import typer

IEXCLUDE = typer.Option([], "--iexclude", metavar="PATTERN", help="Like --exclude, ignoring case.")
EXCLUDE_FILE = typer.Option(
    [], "--exclude-file", metavar="FILE", help="Read exclude patterns from a file: one a line, # comments, $VAR expanded (repeatable)."
)
IEXCLUDE_FILE = typer.Option([], "--iexclude-file", metavar="FILE", help="Like --exclude-file, ignoring case.")
