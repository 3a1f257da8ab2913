"""KeyManager: list, add, remove and re-password key files."""

from __future__ import annotations

import os

from backupkit.errors import UsageError
from backupkit.repo.keys import KdfParams, KeyInfo, key_info, make_key_file, open_key_file
from backupkit.repo.repository import Repository


class KeyManager:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def _ids(self) -> list[str]:
        return sorted(o.name.split("/", 1)[1] for o in self.repo.store.list("keys/"))

    def list(self) -> list[KeyInfo]:
        return [key_info(i, self.repo.store.get(f"keys/{i}"), self.repo.sealer) for i in self._ids()]

    def add(self, password: bytes, kdf: KdfParams) -> str:
        """Write a new key file for ``password``, then re-read it to prove it opens."""
        key_id = os.urandom(32).hex()
        name = f"keys/{key_id}"
        self.repo.store.put(name, make_key_file(key_id, self.repo.keys, password, kdf))
        if open_key_file(key_id, self.repo.store.get(name), password) != self.repo.keys:
            self.repo.store.delete(name)
            raise UsageError("the new key file did not read back correctly; nothing changed")
        return key_id

    def remove(self, prefix: str) -> str:
        matches = [i for i in self._ids() if i.startswith(prefix.lower())]
        if not matches:
            raise UsageError(f"no key matches {prefix!r}")
        if len(matches) > 1:
            raise UsageError(f"{prefix!r} matches {len(matches)} keys; give more digits")
        (key_id,) = matches
        if key_id == self.repo.key_id:
            raise UsageError("refusing to remove the key in use; open the repository with another key first")
        self.repo.store.delete(f"keys/{key_id}")
        return key_id

    def passwd(self, password: bytes, kdf: KdfParams) -> str:
        """Add a key with the new password, then remove the old one."""
        new_id = self.add(password, kdf)
        self.repo.store.delete(f"keys/{self.repo.key_id}")
        self.repo.key_id = new_id
        return new_id
