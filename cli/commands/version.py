"""bk version (and bk --version)"""

from __future__ import annotations

import typer

from backupkit_cli.context import State


def version_text() -> str:
    import platform

    from backupkit import __version__

    return f"bk {__version__} (backupkit) on Python {platform.python_version()}, {platform.system().lower()}/{platform.machine()}"


def command(ctx: typer.Context) -> None:
    import platform

    from backupkit import __version__

    st: State = ctx.obj
    if st.json:
        st.console.json(
            {
                "message_type": "version",
                "version": __version__,
                "python_version": platform.python_version(),
                "os": platform.system().lower(),
                "arch": platform.machine(),
            }
        )
        return
    st.console.data(version_text())


def eager_option(value: bool) -> None:
    """The ``--version`` option's callback: print and stop before any command runs."""
    if value:
        import sys

        sys.stdout.write(version_text() + "\n")
        raise typer.Exit(0)
