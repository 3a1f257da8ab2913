"""What a restore into an existing tree does with what is already there.

``--overwrite`` (restic 0.17's modes) decides for each file that exists in the target:

    always      compare the content with the snapshot (the file is read and hashed);
                rewrite it if it differs, else only refresh its metadata
    if-changed  the default: a file whose size and mtime match the snapshot is taken as
                unchanged (its metadata is refreshed), any other is rewritten (restic's
                ``always`` reads every file; bk's default trusts size and mtime, as
                restic's ``if-changed`` and rsync do)
    if-newer    rewrite only if the snapshot's mtime is newer than the file's
    never       leave every existing file as it is

``--delete`` removes what a restored directory holds that the snapshot's directory does
not (never outside the target, never through a symlink: see ``remove_tree_at``).
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field

from backupkit.errors import BadArgument
from backupkit.objects.entry import Entry

OVERWRITE_MODES = ("always", "if-changed", "if-newer", "never")
DEFAULT_OVERWRITE = "if-changed"

#: what to do with one entry
NEW = "new"  # nothing there: create it
WRITE = "write"  # something there: replace it
UNCHANGED = "unchanged"  # already right: refresh the metadata only
SKIP = "skip"  # leave what is there (--overwrite if-newer/never)


def check_overwrite(mode: str) -> str:
    if mode not in OVERWRITE_MODES:
        raise BadArgument(f"invalid --overwrite {mode!r}: use one of {', '.join(OVERWRITE_MODES)}")
    return mode


def signature(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _by_presence_and_age(mode: str, e: Entry, st: os.stat_result | None) -> str | None:
    """What to do whatever is there: nothing there, ``never`` and ``if-newer``; None
    when the mode looks at what is there."""
    if st is None:
        return NEW
    if mode == "never":
        return SKIP
    if mode == "if-newer":
        return WRITE if (e.mtime or 0) > st.st_mtime_ns else SKIP
    return None


def file_action(mode: str, e: Entry, st: os.stat_result | None, same_content: Callable[[], bool]) -> str:
    """What to do with regular file ``e`` given what is at its place (``st``, lstat)."""
    decided = _by_presence_and_age(mode, e, st)
    if decided is not None:
        return decided
    assert st is not None
    if not stat.S_ISREG(st.st_mode) or st.st_size != (e.size or 0):
        return WRITE
    if mode == "if-changed":
        return UNCHANGED if st.st_mtime_ns == (e.mtime or 0) else WRITE
    return UNCHANGED if same_content() else WRITE


def special_action(mode: str, e: Entry, st: os.stat_result | None, target: Callable[[], bytes]) -> str:
    """The same for a symlink, fifo or device node: one that is already the same kind
    of thing (same link target, same device number) is unchanged."""
    decided = _by_presence_and_age(mode, e, st)
    if decided is not None:
        return decided
    assert st is not None
    fmt = stat.S_IFMT(st.st_mode)
    if e.type == "l" and fmt == stat.S_IFLNK:
        return UNCHANGED if target() == (e.target or b"") else WRITE
    if e.type == "p" and fmt == stat.S_IFIFO:
        return UNCHANGED
    if (e.type, fmt) in (("c", stat.S_IFCHR), ("b", stat.S_IFBLK)):
        return UNCHANGED if st.st_rdev == (e.rdev or 0) else WRITE
    return WRITE


@dataclass
class OpenDirs:
    """The directories a restore is inside of (``--delete`` clears each when it is left).

    The entries come depth first, so a directory is complete when an entry outside it
    comes; the snapshot's names in it were recorded by the walk, which runs ahead of
    the writer.
    """

    stack: list[tuple[bytes, bytes]] = field(default_factory=list)  # (rel, snapshot path)

    def enter(self, rel: bytes, path: bytes) -> None:
        self.stack.append((rel, path))

    def leave_for(self, rel: bytes) -> list[tuple[bytes, bytes]]:
        """The directories an entry at ``rel`` is not inside of, innermost first."""
        out = []
        while self.stack:
            top = self.stack[-1][0]
            if top == b"" or rel.startswith(top + b"/"):
                break
            out.append(self.stack.pop())
        return out

    def leave_all(self) -> list[tuple[bytes, bytes]]:
        out = self.stack[::-1]
        self.stack.clear()
        return out


__all__ = [
    "DEFAULT_OVERWRITE", "NEW", "OVERWRITE_MODES", "OpenDirs", "SKIP", "UNCHANGED", "WRITE",
    "check_overwrite", "file_action", "signature", "special_action",
]
