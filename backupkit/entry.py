"""File entries: the metadata a snapshot keeps for each path, and their trie keys.

An entry is a dict with short keys, stored msgpack-encoded (keys sorted, so equal
entries give equal bytes and unchanged subtrees keep their ids)::

    t   type: "f" file, "d" dir, "l" symlink, "p" fifo, "s" socket, "c" char dev, "b" block dev
    m   permission bits (S_IMODE)       u, g   uid, gid        un, gn  user and group names
    s   size in bytes                   mt, ct mtime, ctime in ns
    i   inode    dv  device    n  link count    rd  device number (c, b)
    l   symlink target (bytes)          x   xattrs {name bytes: value bytes}
    c   content: list of data blob ids (32 bytes) and ints (holes: that many zero bytes)
    cb  content blobs: metadata blobs each holding a msgpack list like ``c``, when the
        list is long (more than INLINE_CONTENT items)

Paths are absolute byte strings (``b"/home/u/f.txt"``), byte-exact, never decoded.
The trie key of a path is ``H("dir", parent)[:8] | H("path", path)[:8]`` with the keyed
hash of the id key, so a directory's children share a key prefix.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from collections.abc import Callable
from functools import lru_cache

import msgpack

from backupkit.errors import FormatError

INLINE_CONTENT = 64
CONTENT_BLOB_ITEMS = 8192

TYPE_OF_MODE = {
    stat.S_IFREG: "f",
    stat.S_IFDIR: "d",
    stat.S_IFLNK: "l",
    stat.S_IFIFO: "p",
    stat.S_IFSOCK: "s",
    stat.S_IFCHR: "c",
    stat.S_IFBLK: "b",
}
TYPE_NAMES = {"f": "file", "d": "dir", "l": "symlink", "p": "fifo", "s": "socket", "c": "chardev", "b": "blockdev"}


@lru_cache(maxsize=1024)
def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return ""


@lru_cache(maxsize=1024)
def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return ""


def entry_from_stat(st: os.stat_result) -> dict:
    """The metadata part of an entry (no content, target or xattrs)."""
    t = TYPE_OF_MODE.get(stat.S_IFMT(st.st_mode))
    if t is None:
        raise ValueError(f"unsupported file type {stat.S_IFMT(st.st_mode):o}")
    e = {
        "t": t,
        "m": stat.S_IMODE(st.st_mode),
        "u": st.st_uid,
        "g": st.st_gid,
        "un": user_name(st.st_uid),
        "gn": group_name(st.st_gid),
        "mt": st.st_mtime_ns,
        "ct": st.st_ctime_ns,
        "i": st.st_ino,
        "dv": st.st_dev,
        "n": st.st_nlink,
    }
    if t == "f":
        e["s"] = st.st_size
    elif t in ("c", "b"):
        e["rd"] = st.st_rdev
    return e


def encode_entry(e: dict) -> bytes:
    return msgpack.packb({k: e[k] for k in sorted(e)})


def decode_entry(raw: bytes) -> dict:
    try:
        e = msgpack.unpackb(raw, strict_map_key=False)
        if not isinstance(e, dict) or e.get("t") not in TYPE_NAMES:
            raise ValueError("not an entry")
        return e
    except (ValueError, TypeError) as err:
        raise FormatError(f"malformed file entry: {err}") from None


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


def content_items(e: dict, load_blob: Callable[[bytes], bytes]) -> list:
    """The full content list of a file entry, loading content blobs when needed."""
    if "cb" in e:
        out: list = []
        for bid in e["cb"]:
            try:
                out.extend(msgpack.unpackb(load_blob(bid)))
            except (ValueError, TypeError) as err:
                raise FormatError(f"content blob {bid.hex()[:16]} is malformed: {err}") from None
        return out
    return list(e.get("c", ()))


def set_content(e: dict, items: list, save_blob: Callable[[bytes], bytes]) -> None:
    """Store a content list inline, or in content blobs when it is long."""
    e.pop("c", None)
    e.pop("cb", None)
    if len(items) <= INLINE_CONTENT:
        e["c"] = items
    else:
        e["cb"] = [
            save_blob(msgpack.packb(items[i : i + CONTENT_BLOB_ITEMS]))
            for i in range(0, len(items), CONTENT_BLOB_ITEMS)
        ]


def display_path(path: bytes) -> str:
    """A printable form of a byte path (non-UTF-8 bytes as \\xNN)."""
    return path.decode("utf-8", "backslashreplace")
