"""MountFS: a repository as a read-only file system, path by path; no FUSE in here.

The FUSE adapter (``backupkit.mount.fuse``) calls these methods with the paths the kernel
asks about and turns ``OSError`` into error numbers. A path is either in the meta tree
above the snapshots (``backupkit.mount.layout``) or inside one snapshot: the part after a
snapshot's directory is a path in its trie (``/snapshots/<time>/home/u`` is ``/home/u``).

What it costs:
    getattr   a meta path: nothing; a snapshot path: one trie lookup, unless a listing of
              its directory put the entry in the entry cache (``find`` and ``ls -l`` stat
              every name they list, so they cost one listing per directory).
    readdir   ``SnapshotTree.children``: the trie nodes holding that directory's
              children, never the whole snapshot.
    read      the blobs overlapping the range (``OpenFile``).

Inode numbers are stable hashes: of (snapshot id, path), or of (snapshot id, device,
inode) for a file with several names, so every name of a hardlinked file has one inode
number and its link count (within one view of a snapshot: see ``_entry_attrs``). The snapshot list is read again on a listing of a meta
directory, at most once every ``refresh_seconds``.

Errors: a path that is not there is ENOENT; anything else raised while serving a
request (a damaged or missing blob, a malformed entry) is EIO, and is passed to the
reporter's ``on_error`` so the command can say what went wrong; the mount goes on.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from backupkit.reporters import silent
from backupkit.errors import BackupkitError
from backupkit.mount.files import OpenFile
from backupkit.mount.layout import Layout, MetaNode, build_layout
from backupkit.objects.entry import Entry
from backupkit.objects.reader import ContentReader
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot
from backupkit.tree import SnapshotTree, make_hamt

S_IF = {
    "f": stat.S_IFREG,
    "d": stat.S_IFDIR,
    "l": stat.S_IFLNK,
    "p": stat.S_IFIFO,
    "s": stat.S_IFSOCK,
    "c": stat.S_IFCHR,
    "b": stat.S_IFBLK,
}


class MountReporter(Protocol):
    def on_error(self, path: str, error: Exception) -> None: ...


NullMountReporter = silent(MountReporter)


@dataclass(frozen=True)
class MountSummary:
    """What a mount served, for the command's last line."""

    snapshots: int
    files_opened: int
    errors: int
    seconds: float

    def to_json(self) -> dict:
        return {"snapshots": self.snapshots, "files_opened": self.files_opened, "errors": self.errors, "seconds": round(self.seconds, 3)}


def fs_error(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _ino(*parts: bytes) -> int:
    n = int.from_bytes(hashlib.blake2b(b"\0".join(parts), digest_size=8).digest(), "little")
    return n if n > 1 else n + 2  # 0 is invalid, 1 is the root


def fsencode(path: str) -> bytes:
    return path.encode("utf-8", "surrogateescape")


def fsdecode(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


class MountFS:
    """The file system of one open repository (see the module docstring).

    ``snapshots``: returns the snapshots to show (the command's filters applied).
    """

    def __init__(
        self,
        repo: Repository,
        snapshots: Callable[[], list[Snapshot]],
        reader: ContentReader,
        reporter: MountReporter | None = None,
        refresh_seconds: float = 60.0,
        entry_cache: int = 50_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.repo = repo
        self.reader = reader
        self.reporter = reporter or NullMountReporter()
        self._list_snapshots = snapshots
        self._refresh_seconds = refresh_seconds
        self._clock = clock
        self._lock = threading.RLock()  # the trie caches and the layout
        self._hamt = make_hamt(repo)
        self._trees: dict[str, SnapshotTree] = {}
        self._entries: OrderedDict[tuple[str, bytes], Entry] = OrderedDict()
        self._entry_cache = entry_cache
        self._files: dict[int, OpenFile] = {}
        self._next_fh = 1
        self._pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="bk-mount-read")
        self.uid, self.gid = os.getuid(), os.getgid()
        self._layout: Layout = build_layout(snapshots())
        self._loaded_at = clock()
        self.files_opened = 0
        self.errors = 0

    @property
    def snapshots(self) -> tuple[Snapshot, ...]:
        """The snapshots shown (as of the last refresh), oldest first."""
        return self._layout.snapshots

    def summary(self, seconds: float) -> MountSummary:
        return MountSummary(len(self.snapshots), self.files_opened, self.errors, seconds)

    def close(self) -> None:
        with self._lock:
            files, self._files = list(self._files.values()), {}
        for f in files:
            f.close()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- resolving paths ---------------------------------------------------------------------
    def _resolve(self, path: str) -> tuple[MetaNode, Snapshot | None, bytes, bytes]:
        """(meta node, snapshot, path inside it, meta path of the snapshot's directory);
        the snapshot is None (and the paths empty) for a meta path. A name the meta tree
        lacks may be a snapshot made since the last refresh: refresh (if due) and retry."""
        try:
            return self._resolve_once(path)
        except OSError:
            if not self._maybe_refresh():
                raise
            return self._resolve_once(path)

    def _resolve_once(self, path: str) -> tuple[MetaNode, Snapshot | None, bytes, bytes]:
        node = self._layout.root
        parts = [p for p in path.split("/") if p]
        for i, name in enumerate(parts):
            if node.snap is not None:
                return node, node.snap, b"/" + b"/".join(fsencode(p) for p in parts[i:]), fsencode("/".join(parts[:i]))
            kids = node.children
            if kids is None or name not in kids:
                raise fs_error(errno.ENOENT)
            node = kids[name]
        if node.snap is not None:
            return node, node.snap, b"/", fsencode("/".join(parts))
        return node, None, b"", b""

    def _tree(self, snap: Snapshot) -> SnapshotTree:
        t = self._trees.get(snap.id)
        if t is None:
            t = self._trees[snap.id] = SnapshotTree(self.repo, snap.root, self._hamt)
        return t

    def _entry(self, snap: Snapshot, path: bytes) -> Entry:
        key = (snap.id, path)
        e = self._entries.get(key)
        if e is not None:
            return e
        e = self._tree(snap).get(path)
        if e is None:
            raise fs_error(errno.ENOENT)
        self._remember(key, e)
        return e

    def _remember(self, key: tuple[str, bytes], e: Entry) -> None:
        self._entries[key] = e
        if len(self._entries) > self._entry_cache:
            self._entries.popitem(last=False)

    def _guard(self, path: str, fn: Callable):
        """Run ``fn`` with the lock held; repository errors become EIO (and are reported)."""
        try:
            with self._lock:
                return fn()
        except OSError:
            raise
        except Exception as err:  # noqa: BLE001 - a request fails, the mount goes on
            self._failed(path, err)

    def _failed(self, path: str, err: Exception):
        """Count and report ``err``, then raise EIO (FUSE gets an error number, never a
        traceback; the reporter gets a repository error's message, or the type and
        message of anything else)."""
        self.errors += 1
        if not isinstance(err, BackupkitError):
            err = BackupkitError(f"internal error: {type(err).__name__}: {err}")
        self.reporter.on_error(path, err)
        raise fs_error(errno.EIO) from None

    def _maybe_refresh(self) -> bool:
        """Read the snapshot list again if the last read is ``refresh_seconds`` old."""
        if self._clock() - self._loaded_at < self._refresh_seconds:
            return False
        self._loaded_at = self._clock()
        self._layout = build_layout(self._list_snapshots())
        return True

    # -- attributes --------------------------------------------------------------------------
    def getattr(self, path: str) -> dict:
        return self._guard(path, lambda: self._getattr(path))

    def _getattr(self, path: str) -> dict:
        node, snap, sub, base = self._resolve(path)
        if snap is None:
            return self._meta_attrs(path, node)
        return self._entry_attrs(base, sub, self._entry(snap, sub))

    def _meta_attrs(self, path: str, node: MetaNode) -> dict:
        t = self._layout.newest_ns
        out = {
            "st_ino": 1 if path.strip("/") == "" else _ino(b"meta", fsencode(path.rstrip("/"))),
            "st_uid": self.uid,
            "st_gid": self.gid,
            "st_atime": t,
            "st_mtime": t,
            "st_ctime": t,
        }
        if node.target is not None:
            out.update(st_mode=stat.S_IFLNK | 0o777, st_nlink=1, st_size=len(fsencode(node.target)))
        else:
            kids = node.children or {}
            subdirs = sum(1 for k in kids.values() if k.is_dir or k.snap is not None)
            out.update(st_mode=stat.S_IFDIR | 0o555, st_nlink=2 + subdirs, st_size=0)
        return out

    def _entry_attrs(self, base: bytes, path: bytes, e: Entry) -> dict:
        """Attributes of entry ``e`` at ``path`` of the snapshot mounted at meta path ``base``.

        Inode numbers differ between the views of one snapshot (``ids/``, ``snapshots/``),
        so no directory appears twice under one inode number."""
        hl = e.hardlink_key
        ino = _ino(base, b"%d" % hl[0], b"%d" % hl[1]) if hl else _ino(base, path)
        size = e.size or 0 if e.type == "f" else len(e.target or b"") if e.type == "l" else 0
        mtime = e.mtime or 0
        return {
            "st_ino": ino,
            "st_mode": S_IF[e.type] | (e.mode or 0),
            "st_nlink": e.nlink or (2 if e.is_dir else 1),
            "st_uid": e.uid or 0,
            "st_gid": e.gid or 0,
            "st_size": size,
            "st_blocks": (size + 511) // 512,
            "st_blksize": 1 << 20,
            "st_rdev": e.rdev or 0,
            "st_atime": mtime,
            "st_mtime": mtime,
            "st_ctime": e.ctime if e.ctime is not None else mtime,
        }

    # -- directories and links ---------------------------------------------------------------
    def readdir(self, path: str) -> list[tuple[str, dict]]:
        """(name, attributes) of each child (without ``.`` and ``..``), sorted by name."""
        return self._guard(path, lambda: self._readdir(path))

    def _readdir(self, path: str) -> list[tuple[str, dict]]:
        node, snap, sub, base = self._resolve(path)
        if snap is None:
            if node.children is None:
                raise fs_error(errno.ENOTDIR)
            self._maybe_refresh()
            node, snap, sub, base = self._resolve(path)  # a refresh may have changed the tree
        if snap is None:
            if node.children is None:
                raise fs_error(errno.ENOTDIR)
            return [(name, self._child_attrs(path, name, k)) for name, k in sorted(node.children.items())]
        e = self._entry(snap, sub)
        if not e.is_dir:
            raise fs_error(errno.ENOTDIR)
        out = []
        for p, ce in self._tree(snap).children(sub):
            self._remember((snap.id, p), ce)
            out.append((fsdecode(p.rsplit(b"/", 1)[1]), self._entry_attrs(base, p, ce)))
        return out

    def _child_attrs(self, path: str, name: str, node: MetaNode) -> dict:
        full = f"{path.rstrip('/')}/{name}"
        if node.snap is not None:  # what a listing needs: type and inode number
            return {"st_mode": stat.S_IFDIR | 0o555, "st_ino": _ino(fsencode(full.strip("/")), b"/")}
        return self._meta_attrs(full, node)

    def readlink(self, path: str) -> str:
        return self._guard(path, lambda: self._readlink(path))

    def _readlink(self, path: str) -> str:
        node, snap, sub, _base = self._resolve(path)
        if snap is None:
            if node.target is None:
                raise fs_error(errno.EINVAL)
            return node.target
        e = self._entry(snap, sub)
        if e.type != "l":
            raise fs_error(errno.EINVAL)
        return fsdecode(e.target or b"")

    # -- extended attributes -----------------------------------------------------------------
    def listxattr(self, path: str) -> list[str]:
        return self._guard(path, lambda: [fsdecode(k) for k, _v in self._xattrs(path)])

    def getxattr(self, path: str, name: str) -> bytes:
        def get() -> bytes:
            want = fsencode(name)
            for k, v in self._xattrs(path):
                if k == want:
                    return v
            raise fs_error(errno.ENODATA)

        return self._guard(path, get)

    def _xattrs(self, path: str) -> tuple[tuple[bytes, bytes], ...]:
        _node, snap, sub, _base = self._resolve(path)
        if snap is None:
            return ()
        return self._entry(snap, sub).xattrs or ()

    # -- files -------------------------------------------------------------------------------
    def open(self, path: str, flags: int) -> int:
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & os.O_TRUNC:
            raise fs_error(errno.EROFS)

        def entry() -> Entry:
            _node, snap, sub, _base = self._resolve(path)
            if snap is None:
                raise fs_error(errno.EISDIR)
            e = self._entry(snap, sub)
            if e.is_dir:
                raise fs_error(errno.EISDIR)
            return e

        e = self._guard(path, entry)
        try:
            f = OpenFile(self.reader, e, self._pool)  # outside the lock: may read content blobs
        except Exception as err:  # noqa: BLE001 - this file fails, the mount goes on
            self._failed(path, err)
        with self._lock:
            self.files_opened += 1
            fh = self._next_fh
            self._next_fh += 1
            self._files[fh] = f
        return fh

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        f = self._files.get(fh)
        if f is None:
            raise fs_error(errno.EBADF)
        try:
            return f.read(offset, size)
        except Exception as err:  # noqa: BLE001 - this read fails, the mount goes on
            self._failed(path, err)

    def release(self, fh: int) -> None:
        with self._lock:
            f = self._files.pop(fh, None)
        if f is None:
            raise fs_error(errno.EBADF)
        f.close()

    def statfs(self) -> dict:
        return {"f_bsize": 1 << 20, "f_frsize": 1 << 20, "f_namemax": 255}


__all__ = ["MountFS", "MountSummary", "MountReporter", "NullMountReporter", "fs_error"]
