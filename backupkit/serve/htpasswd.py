"""Users and passwords from an htpasswd file (bcrypt or ``{SHA}`` entries).

Vocabulary: an *entry* is one ``user:hash`` line. bcrypt entries (``$2y$``, ``$2b$``,
``$2a$``; ``htpasswd -B``) are what rest-server and we recommend; ``{SHA}`` entries
(``htpasswd -s``) are accepted for old files. Other schemes (apr1 MD5, crypt) are
skipped, and ``skipped`` names them so the server can warn.

bcrypt is slow on purpose (~0.1-0.3 s a check), and a client sends the password with
every request: a successful check is remembered (keyed by a SHA-256 of user and
password, never the password itself) until the file changes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import threading


class Htpasswd:
    """An htpasswd file, re-read when its modification time changes."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._stamp: tuple[float, int] | None = None
        self._entries: dict[str, str] = {}
        self._verified: set[bytes] = set()
        self.skipped: list[str] = []
        self._load()

    def _load(self) -> None:
        """(Re)read the file if it changed. Raises OSError if it cannot be read."""
        st = os.stat(self.path)
        stamp = (st.st_mtime, st.st_size)
        if stamp == self._stamp:
            return
        entries: dict[str, str] = {}
        skipped: list[str] = []
        with open(self.path, encoding="utf-8", errors="replace") as f:
            for line in f:
                line = line.strip()
                if not line or line.startswith("#") or ":" not in line:
                    continue
                user, _, hashed = line.partition(":")
                if hashed.startswith(("$2y$", "$2b$", "$2a$", "{SHA}")):
                    entries[user] = hashed
                else:
                    skipped.append(user)
        self._entries, self.skipped, self._stamp = entries, skipped, stamp
        self._verified = set()

    def check(self, user: str, password: str) -> bool:
        """True if ``user`` exists and ``password`` is theirs."""
        key = hashlib.sha256(f"{user}\0{password}".encode()).digest()
        with self._lock:
            try:
                self._load()
            except OSError:
                return False  # the file vanished: nobody gets in
            if key in self._verified:
                return True
            hashed = self._entries.get(user)
        if hashed is None:
            return False
        if hashed.startswith("{SHA}"):
            digest = base64.b64encode(hashlib.sha1(password.encode()).digest()).decode()
            ok = hmac.compare_digest(digest, hashed[5:])
        else:
            import bcrypt

            try:
                ok = bcrypt.checkpw(password.encode(), hashed.replace("$2y$", "$2b$", 1).encode())
            except ValueError:
                ok = False
        if ok:
            with self._lock:
                self._verified.add(key)
        return ok


def make_entry(user: str, password: str, rounds: int = 10) -> str:
    """An htpasswd line for ``user`` with a bcrypt hash of ``password``."""
    import bcrypt

    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds)).decode()
    return f"{user}:{hashed}"
