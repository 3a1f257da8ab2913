"""The ``bk`` command: global options, command registration, and the error boundary.

Every error a user can cause ends here as one line on stderr and an exit code from
``exit_codes``; no traceback reaches a user (set BK_DEBUG=1 to see one).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import typer

from backupkit.store import supported_schemes
from backupkit_cli import exit_codes
from backupkit_cli.commands import backup, cat, init, key, listing, ls, restore, snapshots
from backupkit_cli.commands import cache, completion, unlock, version
from backupkit_cli.commands import check, diff, forget, prune, repair
from backupkit_cli.commands import serve
from backupkit_cli.commands import copy, dump, find, rewrite, stats, tag
from backupkit_cli.console import Console
from backupkit_cli.context import State


class _Group(typer.core.TyperGroup):
    """The root group: global options are accepted after the command too (``argv.py``)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        from backupkit_cli.argv import hoist_global_options

        return super().parse_args(ctx, hoist_global_options(self, args))

    def invoke(self, ctx):
        # typer turns an interrupt into a bare exit code 130: carry it past typer whole
        # (its signal, and what a backup saved) to ``run``
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt as e:
            raise _Carried(e) from None


class _Carried(Exception):
    """An interrupt on its way through typer to ``run`` (which unwraps it)."""

    def __init__(self, interrupt: KeyboardInterrupt) -> None:
        super().__init__("interrupted")
        self.interrupt = interrupt


app = typer.Typer(
    name="bk",
    cls=_Group,
    help="backupkit: deduplicating, encrypted backups to a local directory, S3, SFTP, a REST server or rclone.\n\n"
    "Global options may be given before or after the command (bk snapshots --json).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


@app.callback()
def main(
    ctx: typer.Context,
    repo: Optional[str] = typer.Option(None, "--repo", "-r", help=f"Repository location: a path, or one of the schemes {supported_schemes()} (see README) [env BK_REPOSITORY]."),
    repository_file: Optional[str] = typer.Option(None, "--repository-file", metavar="FILE", help="Read the repository location from a file [env BK_REPOSITORY_FILE]."),
    password_file: Optional[str] = typer.Option(None, "--password-file", "-p", help="Read the password from a file [env BK_PASSWORD_FILE]."),
    password_command: Optional[str] = typer.Option(None, "--password-command", help="Run a command that prints the password [env BK_PASSWORD_COMMAND]."),
    json_output: bool = typer.Option(False, "--json", help="Machine-readable output on stdout."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only errors and warnings."),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More detail (repeat for more)."),
    cache_dir: Optional[str] = typer.Option(None, "--cache-dir", help="Local cache directory [env BK_CACHE_DIR]."),
    no_cache: bool = typer.Option(False, "--no-cache", help="Do not use a local cache."),
    connections: Optional[int] = typer.Option(None, "--connections", help="Concurrent store requests (default: the backend's, 2 for a local directory)."),
    limit_upload: Optional[int] = typer.Option(None, "--limit-upload", metavar="KIB", min=1, help="Upload at most KIB KiB/s (restic's)."),
    limit_download: Optional[int] = typer.Option(None, "--limit-download", metavar="KIB", min=1, help="Download at most KIB KiB/s (restic's)."),
    retry_lock: Optional[str] = typer.Option(None, "--retry-lock", metavar="DURATION", help="If the repository is locked, retry for this long (e.g. 30s, 5m)."),
    no_lock: bool = typer.Option(False, "--no-lock", help="Take no lock (commands that only read: a read-only repository)."),
    show_version: bool = typer.Option(False, "--version", is_eager=True, callback=version.eager_option, help="Print the version and exit."),
    option: list[str] = typer.Option([], "--option", "-o", metavar="BACKEND.NAME=VALUE", help="A store option of the repository's backend (repeatable); see README."),
    insecure_no_password: bool = typer.Option(False, "--insecure-no-password", help="Use an empty password (init, key add/passwd refuse one without this flag)."),
) -> None:
    global _state
    ctx.obj = _state = State(
        repo=repo,
        repository_file=repository_file,
        password_file=password_file,
        password_command=password_command,
        json=json_output,
        quiet=quiet,
        verbose=verbose,
        cache_dir=cache_dir,
        no_cache=no_cache,
        connections=max(1, connections) if connections else None,
        limit_upload=limit_upload,
        limit_download=limit_download,
        console=Console(json_mode=json_output, quiet=quiet, verbose=verbose),
        retry_lock=retry_lock,
        options=list(option),
        no_lock=no_lock,
        insecure_no_password=insecure_no_password,
    )
    st = ctx.obj
    if retry_lock:
        from backupkit_cli.context import parse_wait

        parse_wait(retry_lock)  # a malformed duration fails every command, locked or not

    def store_key() -> dict:
        stats = st.store_stats()
        return {"store": stats} if stats is not None else {}

    # bk cat prints a repository object itself as JSON: nothing may be added to it.
    if ctx.invoked_subcommand != "cat":
        st.console.json_extra = store_key


#: The State of the command being run (set by ``main``), for the statistics line at exit.
_state: Optional[State] = None


def _repo_warnings() -> None:
    """The conditions the engine recorded on the repository, one warning line each."""
    st = _state
    if st is None:
        return
    try:
        for w in st.repo_warnings():
            st.console.warn(w)
    except Exception:  # noqa: BLE001 - warnings must never change the outcome
        pass


def _store_summary() -> None:
    """With -v: one line of store request statistics on stderr, if a store was opened."""
    st = _state
    if st is None or not st.verbose:
        return
    try:
        stats = st.store_stats()
        if stats is not None:
            st.console.store_summary(stats)
    except Exception:  # noqa: BLE001 - statistics must never change the outcome
        pass


#: Under every command's own help: where the global options are.
_EPILOG = "Global options (bk --help: -r, --json, -q, -v, --no-lock, ...) may also be given here."


def _command(name: str, help: str):
    return app.command(name, help=help, epilog=_EPILOG)


_command("init", help="Create a repository and its first key.")(init.command)
_command("backup", help="Back up paths (or stdin with -) into a new snapshot.")(backup.command)
_command("snapshots", help="List snapshots.")(snapshots.command)
_command("ls", help="List the files in a snapshot (all levels; --max-depth N).")(ls.command)
_command("restore", help="Restore a snapshot to a directory or as a ZIP/TAR stream.")(restore.command)
_command("list", help="List the ids of one kind of object: snapshots, index, packs, keys, locks or blobs.")(listing.command)
_command("cat", help="Print a repository object (config, index, snapshot, blob, key, lock, pack) for debugging.")(cat.command)
_command("unlock", help="Remove stale locks (--remove-all: every lock).")(unlock.command)
_command("diff", help="Show what changed between two snapshots.")(diff.command)
_command("forget", help="Remove snapshots by id or by a retention policy (--keep-*).")(forget.command)
_command("prune", help="Delete data no snapshot needs; repack partly used packs.")(prune.command)
_command("check", help="Verify the repository's structure (--read-data: and all data).")(check.command)
_command("cache", help="List local caches; --cleanup removes those of repositories not used for a while.")(cache.command)
app.command("serve", help="Serve repositories over restic's REST protocol (--append-only, TLS, htpasswd users).")(serve.command)
from backupkit_cli.commands import mount  # noqa: E402
_command("mount", help="Serve the repository as a read-only file system at MOUNTPOINT (until Ctrl-C or unmount).")(mount.command)
_command("tag", help="Add, remove or set the tags of snapshots (writes new snapshot objects).")(tag.command)
_command("find", help="Find files (by name pattern, or holding a blob or pack) across snapshots.")(find.command)
_command("stats", help="Sizes: what a restore writes, distinct contents, stored blobs, and the repository.")(stats.command)
_command("dump", help="Write one file of a snapshot to stdout, or a directory as a tar or zip archive.")(dump.command)
_command("rewrite", help="Remove paths from existing snapshots (--exclude), as new snapshots or replacing them (--forget).")(rewrite.command)
_command("copy", help="Copy snapshots from another repository (--from-repo) that this one lacks.")(copy.command)
app.add_typer(key.app, name="key", help="Manage the repository's keys (passwords).")
app.add_typer(repair.app, name="repair", help="Repair a damaged repository: index, packs, snapshots, config (docs/recovery.md).")
_command("version", help="Print the version of bk.")(version.command)
_command("completion", help=completion.command.__doc__ or "")(completion.command)


def _click_exceptions() -> tuple[tuple[type[BaseException], ...], ...]:
    """(Exit, Abort, ClickException) classes of every click the app may raise from.

    typer >= 0.2x vendors click as ``typer._click`` (with its own Exit and Abort) and no
    longer installs click; older typers re-export the real click's. Collect whichever
    exist, never assume click is installed.
    """
    exits: list[type[BaseException]] = [typer.Exit]
    aborts: list[type[BaseException]] = [typer.Abort]
    try:
        from typer._click.exceptions import ClickException as Vendored

        return tuple(exits), tuple(aborts), (Vendored,)
    except ImportError:
        pass
    import click.exceptions as real  # an older typer: it depends on click and raises its errors

    exits.append(real.Exit)
    aborts.append(real.Abort)
    usage: list[type[BaseException]] = [real.ClickException]
    return tuple(exits), tuple(aborts), tuple(usage)


def _wants_json() -> bool:
    """Whether --json was given (parsed, or at least on the command line before ``--``)."""
    if _state is not None:
        return _state.json
    args = sys.argv[1:]
    return "--json" in (args[: args.index("--")] if "--" in args else args)


def _interrupted(e: KeyboardInterrupt) -> int:
    """Say that a signal stopped the command (and what a backup saved); the exit code."""
    from backupkit.errors import BackupInterrupted, Interrupted, signal_name
    from backupkit_cli.fmt import count, human_bytes

    signum = e.signum if isinstance(e, Interrupted) else 2
    code = exit_codes.code_for(e)
    msg = f"interrupted by {signal_name(signum)}"
    extra: dict = {"signal": signal_name(signum)}
    saved = e.saved if isinstance(e, BackupInterrupted) else None
    if saved is not None:
        extra.update(saved.to_json())
        if saved.packs:
            msg += f": {human_bytes(saved.bytes)} in {count(saved.packs, 'pack')} saved; the next backup will reuse them"
        else:
            msg += ": no pack was complete yet, nothing saved"
    if _wants_json():
        Console(json_mode=True).exit_error(msg, code, **extra)
    else:
        sys.stderr.write(msg + "\n")
    return code


def run() -> None:
    """Console-script entry point."""
    from backupkit_cli import signals

    signals.install()
    try:
        code = _run()
    except KeyboardInterrupt as e:  # a signal after the command's own error boundary
        code = _interrupted(e)
    sys.exit(code)


def _run() -> int:
    """Run the command line's command; its exit code."""
    exit_errors, abort_errors, click_errors = _click_exceptions()
    completion.answer_if_asked()
    from backupkit.errors import Interrupted
    from backupkit_cli import signals

    try:
        try:
            rv = app(prog_name="bk", standalone_mode=False)
            code = rv if isinstance(rv, int) else 0
            if code == exit_codes.INTERRUPTED and signals.caught() is not None:
                # typer's own code 130 for an interrupt outside a command (parsing)
                raise Interrupted(signals.caught())  # type: ignore[arg-type]
        except _Carried as e:
            raise e.interrupt from None
        except exit_errors as e:
            code = e.exit_code  # type: ignore[attr-defined]
        except abort_errors:
            raise KeyboardInterrupt() from None
    except KeyboardInterrupt as e:
        code = _interrupted(e)
    except click_errors as e:
        code = e.exit_code  # type: ignore[attr-defined]
        if _wants_json():
            Console(json_mode=True).exit_error(e.format_message(), code)  # type: ignore[attr-defined]
        else:
            e.show()  # type: ignore[attr-defined]
    except BrokenPipeError:
        code = exit_codes.FATAL
    except (SystemExit, GeneratorExit):
        raise
    except BaseException as e:  # noqa: BLE001 - the one place that turns errors into exit codes
        # BaseException: the crypto library's pyo3_runtime.PanicException (e.g. on a
        # 2 GiB object) derives from it, and no traceback may reach a user.
        from backupkit.errors import BackupkitError

        if os.environ.get("BK_DEBUG"):
            raise
        if isinstance(e, BackupkitError):
            msg = str(e)
        elif isinstance(e, OSError):
            msg = f"{e.strerror or e}" + (f": {e.filename}" if e.filename else "")
        elif isinstance(e, MemoryError):
            msg = "out of memory (set BK_DEBUG=1 for a traceback)"
        else:
            msg = f"internal error: {type(e).__name__}: {e} (set BK_DEBUG=1 for a traceback)"
        code = exit_codes.code_for(e)
        Console(json_mode=_wants_json()).exit_error(msg.splitlines()[0] if msg else type(e).__name__, code)
    _repo_warnings()
    _store_summary()
    sys.stdout.flush()
    return code


if __name__ == "__main__":
    run()
