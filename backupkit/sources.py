"""Where a backup's sources come from besides the command line, as in restic.

- ``--files-from FILE``: one glob pattern a line (surrounding white space dropped, blank
  lines and ``#`` comments skipped); each pattern is expanded, one that matches nothing
  is skipped with a warning.
- ``--files-from-verbatim FILE``: one path a line, taken as it is (only empty lines are
  skipped): for names with spaces at either end or glob characters.
- ``--files-from-raw FILE``: paths each ended by a NUL byte (``find -print0``); any byte
  but NUL is allowed, a missing final NUL or an empty name is an error.
``-`` as FILE reads standard input.

``--stdin-from-command``: :class:`CommandOutput` runs a command and reads its standard
output as the stream to back up; the command's failure fails the backup.
"""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from typing import BinaryIO

from backupkit.errors import BadArgument, SourceError


@dataclass(frozen=True)
class SourceList:
    paths: tuple[str, ...]
    warnings: tuple[str, ...]


def _read(path: str, option: str, stdin: BinaryIO | None) -> bytes:
    if path == "-":
        if stdin is None:
            raise BadArgument(f"{option} -: standard input is not available")
        return stdin.read()
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as e:
        raise BadArgument(f"cannot read {option} {path}: {e.strerror}") from None


def _lines(data: bytes) -> list[str]:
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    return [os.fsdecode(line[:-1] if line.endswith(b"\r") else line) for line in data.split(b"\n")]


def collect_sources(
    files_from: Sequence[str] = (),
    verbatim: Sequence[str] = (),
    raw: Sequence[str] = (),
    stdin: BinaryIO | None = None,
) -> SourceList:
    """The paths named by the three --files-from forms, in the order restic takes them."""
    paths: list[str] = []
    warnings: list[str] = []
    for f in files_from:
        for line in _lines(_read(f, "--files-from", stdin)):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            found = sorted(glob.glob(line, include_hidden=True)) if glob.has_magic(line) else (
                [line] if os.path.lexists(line) else []
            )
            if not found:
                warnings.append(f"--files-from: {line!r} matches no file, skipped")
            paths.extend(found)
    for f in verbatim:
        paths.extend(line for line in _lines(_read(f, "--files-from-verbatim", stdin)) if line)
    for f in raw:
        data = _read(f, "--files-from-raw", stdin)
        if not data:
            continue
        if not data.endswith(b"\0"):
            raise BadArgument(f"--files-from-raw {f}: the last name is not ended by a NUL byte")
        names = data[:-1].split(b"\0")
        if any(not n for n in names):
            raise BadArgument(f"--files-from-raw {f}: empty file name in the listing")
        paths.extend(os.fsdecode(n) for n in names)
    return SourceList(tuple(paths), tuple(warnings))


class CommandOutput:
    """A command's standard output as a binary stream; at its end the command's exit
    status is checked and a failure raises SourceError (so no snapshot is written)."""

    def __init__(self, argv: Sequence[str]) -> None:
        if not argv:
            raise BadArgument("--stdin-from-command needs a command: bk backup --stdin-from-command -- CMD ARGS...")
        self.argv = list(argv)
        try:
            self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        except OSError as e:
            raise SourceError(f"cannot run {self.argv[0]}: {e.strerror}") from None
        self.stdout = self.proc.stdout
        self._done = False

    def _chunk(self, data: bytes) -> bytes:
        if not data and not self._done:
            self._done = True
            code = self.proc.wait()
            if code != 0:
                how = f"was killed by signal {-code}" if code < 0 else f"exited with status {code}"
                raise SourceError(f"{self.argv[0]} {how}: no snapshot saved")
        return data

    def read(self, n: int = -1) -> bytes:
        return self._chunk(self.stdout.read(n))

    def read1(self, n: int = -1) -> bytes:
        return self._chunk(self.stdout.read1(n))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stdout.close()

    def __enter__(self) -> CommandOutput:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


__all__ = ["CommandOutput", "SourceList", "collect_sources"]
