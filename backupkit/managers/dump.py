"""Dump: one file of a snapshot as its exact bytes, or a directory as an archive.

restic's ``dump``: a file's content goes out byte for byte (holes as zeros); a
directory goes out as a TAR (``--archive zip``: a ZIP) of everything below it, member
names being the snapshot paths without the leading ``/``. The archive is the one
``restore --format`` streams (``managers/restore.py`` and ``archive.py``), so both
commands render entries, hard links and damage the same way; the directory itself is
a member too (restic leaves it out), which keeps its mode and time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from backupkit.entry import display_path
from backupkit.errors import BadArgument, IntegrityError, UsageError
from backupkit.managers.base import ContentReading
from backupkit.managers.restore import NullRestoreReporter, RestoreManager, RestoreOptions, RestoreReporter
from backupkit.objects.reader import ContentReader
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot
from backupkit.tree import SnapshotTree, normalize

ARCHIVES = ("tar", "zip")
_ZERO = bytes(1 << 16)


@dataclass(frozen=True)
class DumpOptions(ContentReading):
    path: str
    archive: str = "tar"


@dataclass(frozen=True)
class DumpResult:
    path: str
    #: "file", or the archive format for a directory
    kind: str
    files: int
    bytes: int
    #: (path, message) of what could not be put in the archive
    errors: tuple[tuple[str, str], ...] = ()

    @property
    def incomplete(self) -> bool:
        return bool(self.errors)

    def to_json(self) -> dict:
        return {"path": self.path, "kind": self.kind, "files": self.files, "bytes": self.bytes,
                "errors": [{"path": p, "message": m} for p, m in self.errors]}


class DumpManager:
    def __init__(self, repo: Repository, reporter: RestoreReporter | None = None) -> None:
        self.repo = repo
        self.reporter = reporter or NullRestoreReporter()

    def kind_of(self, snap: Snapshot, path: str) -> str:
        """The entry type at ``path`` ("file", "dir", ...); PathNotFound if absent."""
        return SnapshotTree(self.repo, snap.root).require(normalize(path)).type_name

    def dump(self, snap: Snapshot, opts: DumpOptions, out: BinaryIO) -> DumpResult:
        if opts.archive not in ARCHIVES:
            raise BadArgument(f"unknown --archive {opts.archive!r}: use tar or zip")
        p = normalize(opts.path)
        tree = SnapshotTree(self.repo, snap.root)
        e = tree.require(p)
        if e.is_file:
            size = e.size or 0
            done = 0
            with ContentReader(self.repo, opts.connections) as reader:
                for part in reader.parts(e):
                    if isinstance(part, int):
                        n = min(part, size - done)
                        while n > 0:
                            k = min(n, len(_ZERO))
                            out.write(_ZERO[:k])
                            n -= k
                            done += k
                    else:
                        part = part[: size - done]
                        out.write(part)
                        done += len(part)
                        self.reporter.bytes_done(len(part))
            if done != size:
                raise IntegrityError(f"{display_path(p)}: content is {done} bytes, the snapshot says {size}")
            return DumpResult(display_path(p), "file", 1, done)
        if not e.is_dir:
            raise UsageError(f"{display_path(p)} is a {e.type_name}: dump writes files and directories")
        res = RestoreManager(self.repo, self.reporter).restore(
            snap, RestoreOptions(path=display_path(p), format=opts.archive, output=out, connections=opts.connections, keep_path=True)
        )
        return DumpResult(display_path(p), opts.archive, res.files, res.bytes, res.errors)
