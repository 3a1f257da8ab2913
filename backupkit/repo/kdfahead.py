"""Argon2id, the one place it runs, and a derivation started ahead of the open.

Every key-encryption key is derived here (``derive``): a key file's salt and cost
parameters and the password in, 32 bytes out. Argon2id (64 MiB, t=3, 4 lanes) takes
~0.16 s of both cores and lets the GIL go, while a command spends about as long
importing its modules before it opens the repository. ``start`` lets the command line
begin that derivation on a thread as soon as it has read the key file, before those
imports (``backupkit_cli.keyahead`` decides when); ``derive`` with the same inputs then
waits for that result instead of deriving again. A derivation started ahead that nobody
takes only costs its CPU. Bounds (``bounds_problem``) are checked before anything is
derived, ahead or not.

This module imports nothing of the repository, so that the command line can load it
before the rest.
"""

from __future__ import annotations

import threading

from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from backupkit import limits

#: Held around every Argon2id derivation in the process: two concurrent derivations with
#: several lanes deadlock in the installed cryptography/OpenSSL (issue 8.1), and one at a
#: time is as fast in total (each already uses its lanes' threads).
KDF_LOCK = threading.Lock()

_Inputs = tuple[bytes, bytes, int, int, int]


class _Ahead:
    __slots__ = ("done", "key", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.key: bytes | None = None
        self.error: BaseException | None = None


_ahead: dict[_Inputs, _Ahead] = {}
_ahead_lock = threading.Lock()
#: derivations ``derive`` took from ``start`` (for tests and ``-vv``)
taken = 0


def bounds_problem(iterations: int, memory_kib: int, lanes: int) -> str | None:
    """What is out of ``backupkit.limits``' bounds in these parameters, or None."""
    if not 1 <= iterations <= limits.KDF_ITERATIONS_MAX:
        return f"Argon2id iterations {iterations} out of range 1..{limits.KDF_ITERATIONS_MAX}"
    if not 1 <= lanes <= limits.KDF_LANES_MAX:
        return f"Argon2id lanes {lanes} out of range 1..{limits.KDF_LANES_MAX}"
    if not 8 * lanes <= memory_kib <= limits.KDF_MEMORY_KIB_MAX:
        return f"Argon2id memory {memory_kib} KiB out of range {8 * lanes}..{limits.KDF_MEMORY_KIB_MAX}"
    if iterations * memory_kib > limits.KDF_WORK_KIB_MAX:
        return f"Argon2id cost {iterations} x {memory_kib} KiB is too high"
    return None


def _argon2id(password: bytes, salt: bytes, iterations: int, memory_kib: int, lanes: int) -> bytes:
    kdf = Argon2id(salt=salt, length=32, iterations=iterations, lanes=lanes, memory_cost=memory_kib)
    with KDF_LOCK:
        return kdf.derive(password)


def start(password: bytes, salt: bytes, iterations: int, memory_kib: int, lanes: int) -> bool:
    """Begin deriving on a daemon thread; False (nothing started) when the parameters are
    out of bounds. Starting the same inputs twice starts one derivation."""
    if bounds_problem(iterations, memory_kib, lanes) is not None or not isinstance(password, bytes):
        return False
    inputs = (password, salt, iterations, memory_kib, lanes)
    with _ahead_lock:
        if inputs in _ahead:
            return True
        ahead = _ahead[inputs] = _Ahead()

    def work() -> None:
        try:
            ahead.key = _argon2id(*inputs)
        except BaseException as e:  # noqa: BLE001 - handed to whoever takes it
            ahead.error = e
        finally:
            ahead.done.set()

    try:
        threading.Thread(target=work, name="bk-kdf-ahead", daemon=True).start()
    except RuntimeError:  # no thread to be had: the open derives it itself
        with _ahead_lock:
            _ahead.pop(inputs, None)
        return False
    return True


def derive(password: bytes, salt: bytes, iterations: int, memory_kib: int, lanes: int) -> bytes:
    """The key-encryption key: the result of a ``start`` with these inputs if there was
    one (waiting for it; its error raised here), else derived now. The caller has
    checked the bounds."""
    global taken
    with _ahead_lock:
        ahead = _ahead.pop((password, salt, iterations, memory_kib, lanes), None)
    if ahead is None:
        return _argon2id(password, salt, iterations, memory_kib, lanes)
    ahead.done.wait()
    if ahead.error is not None:
        raise ahead.error
    with _ahead_lock:
        taken += 1
    assert ahead.key is not None
    return ahead.key


__all__ = ["KDF_LOCK", "bounds_problem", "derive", "start"]
