"""The source repository of ``copy`` and ``init --copy-chunker-params``: ``--from-repo``
and its password (``--from-password-file``, ``--from-password-command``; without either
the source's password is found as the target's is)."""

from __future__ import annotations

import dataclasses
from typing import Optional

import typer

from backupkit_cli.context import State


def from_repo_option():
    return typer.Option(None, "--from-repo", help="Source repository location [env BK_FROM_REPOSITORY].")


def from_password_file_option():
    return typer.Option(None, "--from-password-file", help="Read the source repository's password from a file [env BK_FROM_PASSWORD_FILE].")


def from_password_command_option():
    return typer.Option(None, "--from-password-command", help="Command that prints the source repository's password [env BK_FROM_PASSWORD_COMMAND].")


def source_state(st: State, from_repo: Optional[str], pw_file: Optional[str], pw_command: Optional[str]) -> State:
    """A State that opens the source repository (its store options: none of ``-o``)."""
    import os

    from backupkit.errors import BadArgument

    from_repo = from_repo or os.environ.get("BK_FROM_REPOSITORY")
    if not from_repo:
        raise BadArgument("give the source repository with --from-repo")
    pw_file = pw_file or os.environ.get("BK_FROM_PASSWORD_FILE")
    pw_command = pw_command or (os.environ.get("BK_FROM_PASSWORD_COMMAND") if not pw_file else None)
    if pw_file and pw_command:
        raise BadArgument("--from-password-file and --from-password-command exclude each other")
    changes: dict = {"repo": from_repo, "repository_file": None, "options": [], "lock": None}
    if pw_file:
        changes.update(password_file=pw_file, password_command=None)
    elif pw_command:
        changes.update(password_command=pw_command, password_file=None)
    return dataclasses.replace(st, **changes)
