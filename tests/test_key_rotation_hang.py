"""Issue 8.1: opening after a password change or a re-init must not hang.

``Repository.open`` used to derive a cached key file on a thread while the main thread
derived the newly listed one; two concurrent Argon2id derivations with 4 lanes deadlock
in the installed cryptography/OpenSSL. Each sequence runs in a subprocess with the real
KDF parameters (the cheap test KDF has one lane and does not deadlock) and a timeout, so a
regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from tests.support.kit import installed_bk

TIMEOUT = 90  # each sequence is ~6 derivations of ~0.4 s on an idle machine


def run_script(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = textwrap.dedent(
        """
        import shutil, sys, threading
        from pathlib import Path
        from backupkit.repo.keymanager import KeyManager
        from backupkit.repo.keys import KdfParams
        from backupkit.repo.repository import Repository
        from backupkit.store.local import LocalObjectStore

        base = Path(sys.argv[1])
        cache = base / "cache"
        def store():
            return LocalObjectStore(base / "repo", fsync=False)
        """
    ) + textwrap.dedent(body)
    try:
        return subprocess.run(
            [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=TIMEOUT
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the sequence did not finish in {TIMEOUT} s (Argon2id deadlock?)") from None


def test_open_after_a_password_change_does_not_hang(tmp_path):
    r = run_script(
        """
        Repository.init(store(), b"old", kdf=KdfParams(), cache_root=cache).close()
        repo = Repository.open(store(), b"old", cache_root=cache)  # caches the old key file
        KeyManager(repo).passwd(b"new", KdfParams())
        again = Repository.open(store(), b"new", cache_root=cache)
        assert again.keys == repo.keys
        print("ok")
        """,
        tmp_path,
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_open_after_a_reinit_at_the_same_location_does_not_hang(tmp_path):
    r = run_script(
        """
        Repository.init(store(), b"pw", kdf=KdfParams(), cache_root=cache).close()
        Repository.open(store(), b"pw", cache_root=cache).close()  # caches config and key
        shutil.rmtree(base / "repo")
        new = Repository.init(store(), b"pw", kdf=KdfParams(), cache_root=cache)
        assert Repository.open(store(), b"pw", cache_root=cache).config == new.config
        print("ok")
        """,
        tmp_path,
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_no_two_derivations_run_at_once(tmp_path):
    """Many threads opening key files at once finish (derivations are serialised)."""
    r = run_script(
        """
        from backupkit.repo.keys import make_key_file, open_key_file
        from backupkit.crypto import MasterKeys
        keys = MasterKeys.generate()
        raw = make_key_file("ab" * 32, keys, b"pw", KdfParams())
        out = []
        threads = [threading.Thread(target=lambda: out.append(open_key_file("ab" * 32, raw, b"pw"))) for _ in range(3)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        assert out == [keys] * 3
        print("ok")
        """,
        tmp_path,
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr


def test_cli_key_passwd_then_snapshots_and_reinit(tmp_path):
    """The two reported command sequences, with the installed bk (the real KDF)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BK_")}
    env.update(BK_REPOSITORY=str(tmp_path / "repo"), BK_CACHE_DIR=str(tmp_path / "cache"), BK_PASSWORD="old pw")
    (tmp_path / "new").write_text("new pw\n")

    def bk(*args: str, **extra: str) -> subprocess.CompletedProcess:
        try:
            r = subprocess.run([installed_bk(), *args], env={**env, **extra}, capture_output=True, text=True, timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"bk {' '.join(args)} did not finish in {TIMEOUT} s") from None
        assert r.returncode == 0, r.stderr
        return r

    bk("init")
    bk("snapshots")
    bk("key", "passwd", "--new-password-file", str(tmp_path / "new"))
    bk("snapshots", BK_PASSWORD="new pw")
    import shutil

    shutil.rmtree(tmp_path / "repo")
    bk("init", BK_PASSWORD="third pw")
    bk("snapshots", BK_PASSWORD="third pw")
