"""The one table of exit codes (BRIEF section 3). Engine exceptions know nothing of it."""

from __future__ import annotations

OK = 0
FATAL = 1
USAGE = 2  # bad command line: typer's parse errors and malformed option values
PARTIAL = 3  # backup saved, but some sources could not be read
NO_REPOSITORY = 10
LOCK_FAILED = 11
WRONG_PASSWORD = 12
INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2
TERMINATED = 143  # SIGTERM: 128 + 15
HANGUP = 129  # SIGHUP: 128 + 1


def code_for(exc: BaseException) -> int:
    """Exit code of an error that reached the top of a command."""
    from backupkit import errors

    if isinstance(exc, errors.Interrupted):
        return 128 + exc.signum  # as a shell reports a process a signal ended
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED
    if isinstance(exc, errors.BadArgument):
        return USAGE
    # ConfigDamaged (key files, but no config that authenticates) is FATAL, not
    # NO_REPOSITORY: a script that runs `bk init` on 10 must not start over on top of it.
    if isinstance(exc, errors.RepositoryNotFound):
        return NO_REPOSITORY
    if isinstance(exc, errors.LockError):
        return LOCK_FAILED
    if isinstance(exc, errors.WrongPassword):
        return WRONG_PASSWORD
    return FATAL
