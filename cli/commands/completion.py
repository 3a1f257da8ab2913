"""bk completion bash|zsh|fish"""

from __future__ import annotations

import typer

#: The environment variable the shell sets when it asks bk for completions.
COMPLETE_VAR = "_BK_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def command(
    shell: str = typer.Argument(..., metavar="bash|zsh|fish", help="The shell to print the completion script for."),
) -> None:
    """Print a shell completion script, to be sourced by the shell:

    \b
      bash: bk completion bash > ~/.local/share/bash-completion/completions/bk
      zsh:  bk completion zsh > "${fpath[1]}/_bk"
      fish: bk completion fish > ~/.config/fish/completions/bk.fish
    """
    import sys

    from backupkit.errors import BadArgument

    if shell not in SHELLS:
        raise BadArgument(f"unknown shell {shell!r}: use one of {', '.join(SHELLS)}")
    from typer._completion_shared import get_completion_script

    sys.stdout.write(get_completion_script(prog_name="bk", complete_var=COMPLETE_VAR, shell=shell) + "\n")


def answer_if_asked() -> None:
    """When the shell asks for completions (``_BK_COMPLETE`` set), make typer's
    completion classes answer (they read the words the scripts above pass)."""
    import os

    if os.environ.get(COMPLETE_VAR):
        from typer._completion_classes import completion_init

        completion_init()
