"""A sealing process (``python -m backupkit.objects.sealworker``, started by
``sealprocs.SealProcesses``): reads batches of small files, and gives each one-chunk
file's blob id and sealed blob back. Frames on stdin and stdout (``sealprocs``): first
the keys, zstd level, chunk minimum and read-ahead, then a batch per frame; it ends at
the end of its input. Imports only what sealing needs (no CLI), to stay small.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from backupkit.crypto import T_DATA_BLOB, MasterKeys, Sealer
from backupkit.errors import FileReadError
from backupkit.objects.sealprocs import read_frame, write_frame
from backupkit.objects.smallfiles import changed, read_batch, read_xattrs
from backupkit.repo.pack import blob_ids, seal_payloads


class _Stat:
    """The fields of the walk's lstat that reading a file compares."""

    __slots__ = ("st_size", "st_mtime_ns", "st_ctime_ns")

    def __init__(self, size: int, mtime_ns: int, ctime_ns: int) -> None:
        self.st_size, self.st_mtime_ns, self.st_ctime_ns = size, mtime_ns, ctime_ns


def _more(fd: int, st: Any, fst: Any) -> tuple[bytes, bool] | None:
    """A file that is not one chunk: an empty one is answered here (no content, and
    whether it changed, as ``ContentWriter._read_open`` would say); any other is read by
    the backup's reader thread (None)."""
    if min(st.st_size, fst.st_size):
        return None
    try:
        return b"", changed(os.fstat(fd), st)
    except OSError:
        return None


def _no_bytes(_n: int) -> None:
    return None


def seal_batch(sealer: Sealer, level: int, min_size: int, ahead: int, files: list) -> list:
    """Each file of the batch ([path, size, mtime_ns, ctime_ns as the walk's lstat saw
    them, read its xattrs]) read (``smallfiles.read_batch``), and the content of each
    that is one chunk given its id and sealed as a data blob (``sealprocs.SealedRead``)."""
    out: list = []
    todo: list[int] = []  # rows whose content is sealed below, all in one call
    got_all = read_batch(os, [(f[0], _Stat(f[1], f[2], f[3])) for f in files], min_size, ahead, _more, _no_bytes)
    for f, got in zip(files, got_all):
        if isinstance(got, FileReadError):
            out.append(str(got))
        elif got is None:
            out.append(None)
        else:
            data, ch = got
            xattrs = read_xattrs(os, f[0]) if f[4] else None
            if data:
                todo.append(len(out))
            out.append([b"", len(data), data, ch, xattrs])
    if todo:
        datas = [out[i][2] for i in todo]
        ids = blob_ids(sealer, datas)
        for i, bid, env in zip(todo, ids, seal_payloads(sealer, T_DATA_BLOB, list(zip(ids, datas)), level)):
            out[i][0], out[i][2] = bid, env
    return out


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the backup decides when this ends
    inp, out = sys.stdin.buffer, sys.stdout.buffer
    try:
        enc, ident, chunker, level, min_size, ahead = read_frame(inp)
        sealer = Sealer(MasterKeys(enc, ident, chunker))
        while True:
            write_frame(out, seal_batch(sealer, level, min_size, ahead, read_frame(inp)))
    except (EOFError, BrokenPipeError):
        return 0  # the backup closed the pipe, or is gone


if __name__ == "__main__":
    raise SystemExit(main())
