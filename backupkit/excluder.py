"""What ``bk backup`` leaves out: restic's patterns (backupkit.filters), tag files
(--exclude-if-present, --exclude-caches), --exclude-larger-than and per-directory
ignore files with gitignore rules (--exclude-ignorefile). docs/filters.md shows them all.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from backupkit.errors import BadArgument
from backupkit.filters import compile_patterns
from backupkit.objects.smallfiles import read_upto
from backupkit.pattern_files import decode_text

#: --exclude-caches is --exclude-if-present with the Cache Directory Tagging Standard's tag
CACHEDIR_TAG = "CACHEDIR.TAG:Signature: 8a477f597d28d172789f06886806bc55"
#: an ignore file is read up to this size
MAX_IGNOREFILE = 4 * 1024 * 1024


@dataclass(frozen=True)
class _TagRule:
    """--exclude-if-present NAME[:HEADER]: a directory holding NAME (starting with HEADER)
    keeps only NAME itself, as in restic."""

    name: bytes
    header: bytes

    @classmethod
    def parse(cls, spec: str) -> _TagRule:
        name, _, header = spec.partition(":")
        if not name:
            raise BadArgument(f"--exclude-if-present {spec!r}: no file name")
        return cls(os.fsencode(name), header.encode("utf-8", "surrogateescape"))

    def applies(self, dirpath: bytes) -> bool:
        if not self.header:
            return True
        return _read_regular(os.path.join(dirpath, self.name), len(self.header)) == self.header


def _read_regular(path: bytes, limit: int) -> bytes | None:
    """Up to ``limit`` bytes of a regular file; None for anything else (a fifo named
    like a tag or ignore file must not block the backup) or when it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return read_upto(os, fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


class Excluder:
    """Everything ``bk backup`` leaves out, asked once per directory and once per entry.

    Built from an options object with the attributes ``excludes``, ``iexcludes``,
    ``exclude_files``, ``iexclude_files``, ``exclude_if_present``, ``exclude_caches``,
    ``exclude_larger_than`` and ``exclude_ignorefiles`` (BackupOptions). The walk calls
    :meth:`children` with a directory's names (tag files, per-directory ignore files),
    then :meth:`excluded` for each child it would back up.
    """

    def __init__(self, opts) -> None:
        self.patterns = [
            pl
            for pl in (
                compile_patterns(opts.excludes, opts.exclude_files, False, "--exclude-file"),
                compile_patterns(opts.iexcludes, getattr(opts, "iexclude_files", ()), True, "--iexclude-file"),
            )
            if pl
        ]
        tags = list(opts.exclude_if_present)
        if getattr(opts, "exclude_caches", False):
            tags.append(CACHEDIR_TAG)
        self.tags = [_TagRule.parse(t) for t in tags]
        self.max_size: int | None = getattr(opts, "exclude_larger_than", None)
        self.ignore_names = [os.fsencode(n) for n in getattr(opts, "exclude_ignorefiles", ())]
        for n in self.ignore_names:
            if not n or b"/" in n:
                raise BadArgument(f"--exclude-ignorefile {os.fsdecode(n)!r}: give a file name, not a path")
        self._ignores: dict[bytes, object] = {}  # directory -> its ignore files' GitIgnoreSpec
        self.active = bool(self.patterns or self.max_size is not None or self.ignore_names)

    # -- per directory ----------------------------------------------------------------------
    def children(self, dirpath: bytes, names: list[bytes]) -> list[bytes]:
        """The names of ``dirpath`` still worth looking at (all, or only its tag files)."""
        if self.ignore_names:
            self._load_ignores(dirpath, names)
        if not self.tags:
            return names
        present = set(names)
        keep: set[bytes] | None = None
        for rule in self.tags:
            if rule.name in present and rule.applies(dirpath):
                keep = {rule.name} if keep is None else keep & {rule.name}
        if keep is None:
            return names
        return [n for n in names if n in keep]

    def _load_ignores(self, dirpath: bytes, names: list[bytes]) -> None:
        lines: list[str] = []
        for n in self.ignore_names:
            if n in names:
                data = _read_regular(os.path.join(dirpath, n), MAX_IGNOREFILE)
                if data is not None:  # unreadable: the walk reports the file itself
                    lines.extend(decode_text(data).splitlines())
        if lines:
            import pathspec

            self._ignores[dirpath] = pathspec.GitIgnoreSpec.from_lines(lines)

    # -- per entry ----------------------------------------------------------------------------
    def excluded(self, path: bytes, st: os.stat_result) -> bool:
        if not self.active:
            return False
        is_dir = stat.S_ISDIR(st.st_mode)
        if self.max_size is not None and not is_dir and st.st_size > self.max_size:
            return True
        if self.patterns:
            text = path.decode("utf-8", "surrogateescape")
            if any(pl.matches(text) for pl in self.patterns):
                return True
        return bool(self._ignores) and self._ignored(path, is_dir)

    def _ignored(self, path: bytes, is_dir: bool) -> bool:
        """gitignore rules of the ignore files above ``path``; the nearest file decides."""
        d = path
        while True:
            cut = d.rfind(b"/")
            if cut < 0:
                return False
            d = d[:cut] or b"/"
            spec = self._ignores.get(d)
            if spec is not None:
                rel = path[len(d) :].lstrip(b"/").decode("utf-8", "surrogateescape") + ("/" if is_dir else "")
                verdict = spec.check_file(rel).include
                if verdict is not None:
                    return verdict
            if d == b"/":
                return False

    def source_excluded(self, path: bytes, st: os.stat_result) -> bool:
        """A path named on the command line: patterns, size and its directory's tag files."""
        if self.excluded(path, st):
            return True
        parent, name = os.path.split(path)
        return any(name != r.name and os.path.lexists(os.path.join(parent, r.name)) and r.applies(parent) for r in self.tags)


__all__ = ["CACHEDIR_TAG", "Excluder"]
