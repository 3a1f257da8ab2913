"""KeyManager: list, add, remove and re-password key files."""

from __future__ import annotations

import os
from dataclasses import dataclass

from backupkit.errors import FormatError, IntegrityError, ObjectNotFound, UsageError, WrongPassword
from backupkit.limits import KEY_FILE_MAX
from backupkit.repo.keys import KdfParams, KeyInfo, make_key_file, open_key_file, verify_key_file
from backupkit.repo.repository import Repository


@dataclass(frozen=True)
class KeyListing:
    """``bk key list``: the key files that read (host and user "?" when their sealed
    metadata does not authenticate) and the damaged ones: (id, why)."""

    keys: tuple[KeyInfo, ...]
    damaged: tuple[tuple[str, str], ...]


class KeyManager:
    def __init__(self, repo: Repository) -> None:
        self.repo = repo

    def _ids(self) -> list[str]:
        return sorted(n.split("/", 1)[1] for n in self.repo.list_names("keys"))

    def list(self) -> KeyListing:
        """Every key file: the readable ones, and the damaged ones named with the reason
        (one damaged key file never hides the others). Each is verified byte for byte
        (``verify_key_file``), as ``check`` does."""
        keys: list[KeyInfo] = []
        damaged: list[tuple[str, str]] = []
        for i in self._ids():
            try:
                keys.append(verify_key_file(i, self.repo.store.get(f"keys/{i}", max_size=KEY_FILE_MAX), self.repo.sealer))
            except ObjectNotFound:
                continue  # removed since the listing
            except (FormatError, IntegrityError) as e:  # ObjectTooLarge too
                damaged.append((i, str(e) if "damaged key file" in str(e) else f"damaged key file {i}: {e}"))
        return KeyListing(tuple(keys), tuple(damaged))

    def add(self, password: bytes, kdf: KdfParams, host: str | None = None, user: str | None = None) -> str:
        """Write a new key file for ``password`` (``host``/``user``: what ``key list``
        shows; default this machine's), then re-read it to prove it opens."""
        key_id = os.urandom(32).hex()
        name = f"keys/{key_id}"
        self.repo.store.put(name, make_key_file(key_id, self.repo.keys, password, kdf, host, user))
        if open_key_file(key_id, self.repo.store.get(name, max_size=KEY_FILE_MAX), password) != self.repo.keys:
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
            raise UsageError(
                "refusing to remove the key in use: add one (bk key add), then remove this one with the new key's password"
            )
        self.repo.check_lock()
        self.repo.store.delete(f"keys/{key_id}")
        return key_id

    def passwd(self, password: bytes, kdf: KdfParams, host: str | None = None, user: str | None = None) -> str:
        """Add a key with the new password, then remove the old one."""
        new_id = self.add(password, kdf, host, user)
        self.repo.check_lock()
        self.repo.store.delete(f"keys/{self.repo.key_id}")
        self.repo.key_id = new_id
        return new_id


KEY_DAMAGED = "key_damaged"
KEY_META_UNAUTHENTICATED = "key_meta_unauthenticated"


def check_key_file(repo: Repository, name: str) -> tuple[str, str] | None:
    """What is wrong with key file ``name`` as the store holds it: (``KEY_DAMAGED`` or
    ``KEY_META_UNAUTHENTICATED``, message), or None.

    Reads the store, never the cache. The file must be byte for byte as bk writes it,
    and its sealed metadata must authenticate with this repository's master keys and
    bind its KDF fields and wrapped keys (``verify_key_file``); a metadata that does not
    authenticate is only a warning when the password that opened the repository opens
    the file and finds this repository's keys. When that password opens it, it must
    hold those master keys; and the key file that opened the repository (perhaps from a
    cached copy) must still open from the store.
    """
    key_id = name.split("/", 1)[1]
    try:
        raw = repo.read_raw(name, max_size=KEY_FILE_MAX)
        info = verify_key_file(key_id, raw, repo.sealer)
    except ObjectNotFound:
        return KEY_DAMAGED, f"key file {key_id[:8]} disappeared while check ran"
    except (FormatError, IntegrityError) as e:
        return KEY_DAMAGED, f"damaged key file {key_id[:8]}: {e}"
    if repo.password is None:
        if info.host == "?":
            return KEY_META_UNAUTHENTICATED, f"key file {key_id[:8]}: its sealed metadata does not authenticate"
        return None
    try:
        if key_id == repo.key_id and raw == repo.key_raw:
            keys = repo.keys  # the bytes and password that opened it: one Argon2id run saved
        else:
            keys = open_key_file(key_id, raw, repo.password)
    except WrongPassword:
        if info.host == "?":
            # nothing in it is verified: damaged, another key file's bytes, or planted
            return KEY_DAMAGED, (
                f"damaged key file {key_id[:8]}: its sealed metadata does not authenticate with this repository's keys"
            )
        if key_id == repo.key_id:
            return KEY_DAMAGED, f"damaged key file {key_id[:8]}: the password that opened the repository (from a cached copy) no longer opens it"
        return None  # another password's key file
    except (FormatError, IntegrityError) as e:
        return KEY_DAMAGED, f"damaged key file {key_id[:8]}: {e}"
    if keys != repo.keys:
        return KEY_DAMAGED, f"key file {key_id[:8]} holds the keys of another repository"
    if info.host == "?":  # its keys open: only the host/user/time fields are lost
        return KEY_META_UNAUTHENTICATED, f"key file {key_id[:8]}: its sealed metadata does not authenticate (its keys still open)"
    return None
