"""Snapshot paths and their trie keys.

Paths are absolute byte strings (``b"/home/u/f.txt"``), byte-exact, never decoded.
The trie key of a path is ``H("dir", parent)[:8] | H("path", path)[:8]`` with the keyed
hash of the id key, so a directory's children share a key prefix.

The entries stored under the paths are ``backupkit.objects.entry.Entry``.
"""

from __future__ import annotations

from collections.abc import Callable


def parent_of(path: bytes) -> bytes:
    if path == b"/":
        return b""
    head = path.rsplit(b"/", 1)[0]
    return head or b"/"


def name_of(path: bytes) -> bytes:
    return path.rsplit(b"/", 1)[1] if path != b"/" else b"/"


def join(parent: bytes, name: bytes) -> bytes:
    return parent + name if parent.endswith(b"/") else parent + b"/" + name


class Keyer:
    """Computes trie keys of paths with a keyed hash ``hash(domain, data) -> bytes``."""

    def __init__(self, keyed_hash: Callable[[bytes, bytes], bytes]) -> None:
        self._h = keyed_hash
        self._dirs: dict[bytes, bytes] = {}

    def dir_prefix(self, dirpath: bytes) -> bytes:
        p = self._dirs.get(dirpath)
        if p is None:
            p = self._h(b"dir", dirpath)[:8]
            if len(self._dirs) > 100_000:
                self._dirs.clear()
            self._dirs[dirpath] = p
        return p

    def key(self, path: bytes) -> bytes:
        return self.dir_prefix(parent_of(path)) + self._h(b"path", path)[:8]


def display_path(path: bytes) -> str:
    """A printable form of a byte path (non-UTF-8 bytes as \\xNN)."""
    return path.decode("utf-8", "backslashreplace")
