"""SIGINT, SIGTERM and SIGHUP stop every command the same way.

``install()`` (called once by ``main.run``) makes each of them raise
``backupkit.errors.Interrupted`` in the main thread, wherever it is: the command unwinds
through its ``finally`` blocks and context managers (the backup indexes the packs it
completed, uploads in flight end, the repository lock is released), and ``main.run``
prints one line and exits 128 + the signal's number (130, 143, 129).

A second signal while the first one unwinds ends the process at once (``os._exit``):
the user asked twice. What the store holds then is still a valid repository (write
order), at worst with a stale lock that ``bk unlock`` removes.

``left_to_c_library()`` hands the three signals back to a C library's loop (libfuse's,
for ``bk mount``, which unmounts on each of them and exits 0).

``deferred()`` marks a short critical section (releasing the lock) in which a first
signal is held back and raised when the section ends, so that it cannot cut the release
in half.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager

from backupkit.errors import Interrupted, signal_name

#: The signals that stop a command, and their exit codes (128 + number).
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _State:
    caught: int | None = None  # the first signal received
    depth: int = 0  # nesting of deferred() sections
    pending: bool = False  # a first signal arrived inside a deferred section


_state = _State()


def install() -> None:
    """Handle SIGINT, SIGTERM and SIGHUP in this process (call from the main thread)."""
    _state.caught, _state.depth, _state.pending = None, 0, False
    for s in HANDLED:
        signal.signal(s, _handler)


def _handler(signum: int, _frame) -> None:
    if _state.caught is not None:
        os.write(2, f"\n{signal_name(signum)} again: stopping at once\n".encode())
        os._exit(128 + signum)
    _state.caught = signum
    if _state.depth:
        _state.pending = True
        return
    raise Interrupted(signum)


def caught() -> int | None:
    """The first signal received since ``install()``, if any."""
    return _state.caught


@contextmanager
def deferred() -> Iterator[None]:
    """Hold back a first signal until the block ends (then raise it)."""
    _state.depth += 1
    try:
        yield
    finally:
        _state.depth -= 1
        if not _state.depth and _state.pending:
            _state.pending = False
            raise Interrupted(_state.caught or signal.SIGINT)


@contextmanager
def left_to_c_library() -> Iterator[None]:
    """Restore the default dispositions while a C library runs its own loop and
    installs its own handlers where it finds the default (libfuse: a signal ends
    ``bk mount``'s loop and unmounts). Python's handlers would only set a flag that
    nobody reads until the loop returns. Ours are back afterwards."""
    previous = {s: signal.signal(s, signal.SIG_DFL) for s in HANDLED}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


__all__ = ["HANDLED", "caught", "deferred", "install", "left_to_c_library"]
