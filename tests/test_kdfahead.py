"""kdfahead: the one Argon2id, and a derivation started ahead that the open then takes.

Cheap parameters (t=1, 64 KiB, 1 lane) except where the lanes matter: the deadlock of two
concurrent multi-lane derivations (issue 8.1) runs in a subprocess with the real ones.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from cryptography.hazmat.primitives.kdf.argon2 import Argon2id

from backupkit.errors import FormatError
from backupkit.repo import kdfahead
from backupkit.repo.keys import KdfParams, check_kdf_params

CHEAP = (1, 64, 1)


def reference(password: bytes, salt: bytes, t: int, m: int, p: int) -> bytes:
    return Argon2id(salt=salt, length=32, iterations=t, lanes=p, memory_cost=m).derive(password)


def test_derive_is_argon2id():
    assert kdfahead.derive(b"pw", b"s" * 16, *CHEAP) == reference(b"pw", b"s" * 16, *CHEAP)


def test_a_started_derivation_is_taken_once():
    salt = b"t" * 16
    before = kdfahead.taken
    assert kdfahead.start(b"pw", salt, *CHEAP)
    assert kdfahead.start(b"pw", salt, *CHEAP)  # the same inputs: one derivation
    assert kdfahead.derive(b"pw", salt, *CHEAP) == reference(b"pw", salt, *CHEAP)
    assert kdfahead.taken == before + 1
    assert kdfahead.derive(b"pw", salt, *CHEAP) == reference(b"pw", salt, *CHEAP)  # derived anew
    assert kdfahead.taken == before + 1


def test_other_inputs_do_not_take_it():
    salt = b"u" * 16
    before = kdfahead.taken
    assert kdfahead.start(b"guess", salt, *CHEAP)
    assert kdfahead.derive(b"other", salt, *CHEAP) == reference(b"other", salt, *CHEAP)
    assert kdfahead.derive(b"pw", b"v" * 16, *CHEAP) == reference(b"pw", b"v" * 16, *CHEAP)
    assert kdfahead.derive(b"guess", salt, 2, 64, 1) == reference(b"guess", salt, 2, 64, 1)
    assert kdfahead.taken == before
    assert kdfahead.derive(b"guess", salt, *CHEAP) == reference(b"guess", salt, *CHEAP)
    assert kdfahead.taken == before + 1


@pytest.mark.parametrize("t, m, p", [(0, 64, 1), (17, 64, 1), (1, 64, 0), (1, 7, 1), (1, 10**9, 1), (16, 256 * 1024, 4)])
def test_out_of_bounds_is_never_started(t, m, p):
    assert kdfahead.bounds_problem(t, m, p) is not None
    assert not kdfahead.start(b"pw", b"w" * 16, t, m, p)
    with pytest.raises(FormatError, match="^key file: Argon2id "):
        check_kdf_params(KdfParams(t, m, p))


def test_no_thread_no_derivation_ahead(monkeypatch):
    """A thread that cannot start leaves nothing for ``derive`` to wait for."""

    def refuse(self):
        raise RuntimeError("can't start new thread")

    monkeypatch.setattr(kdfahead.threading.Thread, "start", refuse)
    assert not kdfahead.start(b"pw", b"x" * 16, *CHEAP)
    monkeypatch.undo()
    assert kdfahead.derive(b"pw", b"x" * 16, *CHEAP) == reference(b"pw", b"x" * 16, *CHEAP)


def test_the_error_of_a_derivation_ahead_is_raised_by_derive():
    salt = b"short"  # Argon2id wants at least 8 bytes of salt
    assert kdfahead.start(b"pw", salt, *CHEAP)
    with pytest.raises(ValueError):
        kdfahead.derive(b"pw", salt, *CHEAP)


def test_a_derivation_ahead_and_another_one_at_once_do_not_deadlock():
    """The one started ahead holds the process's KDF lock; a different derivation on the
    main thread waits for it instead of running beside it (4 lanes: the deadlock of
    issue 8.1 when two run at once)."""
    script = textwrap.dedent(
        """
        from backupkit.repo import kdfahead
        for i in range(3):
            assert kdfahead.start(b"ahead", bytes([i]) * 16, 3, 64 * 1024, 4)
            kdfahead.derive(b"other", bytes([i + 100]) * 16, 3, 64 * 1024, 4)
            kdfahead.derive(b"ahead", bytes([i]) * 16, 3, 64 * 1024, 4)
        print("ok", kdfahead.taken)
        """
    )
    try:
        r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=90)
    except subprocess.TimeoutExpired:
        raise AssertionError("two Argon2id derivations at once hung (issue 8.1)") from None
    assert r.returncode == 0 and r.stdout.split() == ["ok", "3"], r.stderr
