"""Restore as a ZIP or TAR stream: the archive side of ``managers/restore.py``.

As for a directory restore, an entry goes out only below a directory that went out (and
a name goes out once): an extractor would write a member "s/x" through an earlier member
"s" that is a symlink. A file whose content cannot be read still gets its full size
(zeros for what is lost), so the archive stays well-formed, and the loss is named.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from backupkit.archive import TarWriter, open_archive
from backupkit.entry import display_path, parent_of
from backupkit.managers.restore_files import safe_path, xattr_filter
from backupkit.objects.entry import Entry
from backupkit.objects.reader import Parts
from backupkit.tree import normalize

if TYPE_CHECKING:
    from backupkit.managers.restore import RestoreManager, _Run
    from backupkit.snapshot import Snapshot
    from backupkit.tree import SnapshotTree

_ZERO = bytes(1024 * 1024)


def write_archive(mgr: RestoreManager, run: _Run, snap: Snapshot, tree: SnapshotTree) -> None:
    opts = run.opts
    keep_xattr = xattr_filter(opts.include_xattrs, opts.exclude_xattrs)
    with open_archive(opts.format, opts.output) as w:  # type: ignore[arg-type]
        tar = isinstance(w, TarWriter)
        entries = _archive_entries(mgr, run, snap, tree)
        for (path, rel), e, parts in run.reader.files(entries, mgr._wants(run, links=tar)):
            if opts.dry_run:
                run.count(e)
                continue
            content = None
            if e.is_file and not (tar and w.is_link(e)):  # type: ignore[union-attr]
                content = _content_stream(mgr, run, path, e, parts if parts is not None else run.reader.parts(e))
            if keep_xattr is not None and e.xattrs:
                e = e.replace(xattrs=tuple(x for x in e.xattrs if keep_xattr(x[0])) or None)
            w.add(rel, e, content)
            run.count(e)
            if e.is_file:
                mgr.reporter.file_done(display_path(path), e.size or 0)


def _archive_entries(mgr: RestoreManager, run: _Run, snap: Snapshot, tree: SnapshotTree) -> Iterator[tuple[tuple[bytes, bytes], Entry]]:
    """(snapshot path, member name) and entry. A folder's archive (``SNAPSHOT:FOLDER``)
    holds what is in the folder, named relative to it, as restic's ``dump`` of a
    subfolder; with ``keep_path`` (and for the whole snapshot) members have their full
    paths, the ancestors of the folder included."""
    run.strip = not run.opts.keep_path and normalize(run.opts.path) != b"/"
    dirs = {b"/"}
    for path, e in mgr._entries(run, snap, tree, ancestors=not run.strip):
        if path == b"/":
            continue
        if not safe_path(path):
            run.problem(path, "unsafe path in snapshot, refused")
            continue
        rel = run.rel_of(path)  # run.base is set once the walk has started
        if not rel:  # the folder itself: its contents are the archive's top level
            dirs.add(path)
            continue
        if path != run.base and parent_of(path) not in dirs:
            run.problem(path, "parent is not a directory in the archive, skipped")
            continue
        if e.is_dir:
            dirs.add(path)
        yield (path, rel), e


def _content_stream(mgr: RestoreManager, run: _Run, path: bytes, e: Entry, parts: Parts) -> Iterator[bytes]:
    """Exactly the entry's size in bytes: what can be read, zeros for the rest (the
    member's size is written before its content, so a loss cannot shorten it)."""
    size = e.size or 0
    done = 0
    try:
        for part in parts:
            if isinstance(part, int):
                n = min(part, size - done)
                while n > 0:
                    k = min(n, len(_ZERO))
                    yield _ZERO[:k]
                    n -= k
                    done += k
            else:
                part = part[: size - done]
                mgr.reporter.bytes_done(len(part))
                done += len(part)
                yield part
    except Exception as err:  # noqa: BLE001 - named, and the archive stays well-formed
        run.problem(path, f"content unreadable from byte {done}, zeros in the archive: {err}")
    else:
        if done != size:
            run.problem(path, f"content is {done} bytes, the snapshot says {size}; zeros in the archive")
    while done < size:
        k = min(size - done, len(_ZERO))
        yield _ZERO[:k]
        done += k
