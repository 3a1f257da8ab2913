"""Check a restore against its source, so a fast but wrong result cannot win.

Vocabulary:
    manifest: relative POSIX path -> (size, SHA-256 hex) of every regular file in a tree
        or an archive. Directories, modes and times are not compared: the benchmark
        checks that the bytes came back, the test suite checks the metadata.
    prefix: where the source sits inside a restore. restic restores ``/a/b/src`` to
        ``TARGET/a/b/src``, borg extracts ``a/b/src`` under its working directory, and bk
        may do either or restore the contents at the top; ``locate`` tries each.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator

Manifest = dict[str, tuple[int, str]]
_BUF = 1 << 20


def _digest(f: IO[bytes]) -> tuple[int, str]:
    h = hashlib.sha256()
    n = 0
    while chunk := f.read(_BUF):
        h.update(chunk)
        n += len(chunk)
    return n, h.hexdigest()


def tree_manifest(root: Path) -> Manifest:
    """Size and SHA-256 of every regular file under ``root`` (symlinks are not followed)."""
    out: Manifest = {}
    for d, dirnames, files in os.walk(root):
        dirnames.sort()
        for name in files:
            p = Path(d) / name
            if p.is_symlink() or not p.is_file():
                continue
            with open(p, "rb") as f:
                out[p.relative_to(root).as_posix()] = _digest(f)
    return out


def _prefixes(src: Path) -> list[str]:
    """Candidate prefixes of the source inside a restore, most specific first."""
    absolute = src.resolve().as_posix().lstrip("/")
    return [absolute + "/", src.resolve().name + "/", ""]


@dataclass(frozen=True)
class Verdict:
    ok: bool
    checked: int
    text: str


def compare(expected: Manifest, actual: Manifest) -> Verdict:
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    differ = sorted(k for k in set(expected) & set(actual) if expected[k] != actual[k])
    if not (missing or extra or differ):
        return Verdict(True, len(expected), f"verified {len(expected)} files")
    parts = []
    for label, keys in (("missing", missing), ("extra", extra), ("differ", differ)):
        if keys:
            parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
    return Verdict(False, len(expected), ", ".join(parts))


def locate(restored: Path, src: Path, expected: Manifest) -> Path:
    """The directory inside ``restored`` that corresponds to ``src``."""
    sample = next(iter(sorted(expected)), None)
    for prefix in _prefixes(src):
        cand = restored / prefix if prefix else restored
        if cand.is_dir() and (sample is None or (cand / sample).exists()):
            return cand
    return restored


def _changed_since(src: Path, rel: str, since: float) -> bool:
    """Was ``src/rel`` created, changed or deleted after ``since`` (a live tree)?"""
    try:
        st = (src / rel).lstat()
    except FileNotFoundError:
        return True  # gone now: deleted while the run went on (or never there: then not expected)
    except OSError:
        return False
    return max(st.st_mtime, st.st_ctime) >= since


def verify_tree(restored: Path, src: Path, expected: Manifest, changed_since: float | None = None) -> Verdict:
    """Compare a restored directory with the source's manifest.

    ``changed_since`` (a live source such as ``/usr``): a file of the source created,
    changed or deleted after that time is left out of the comparison, and counted.
    """
    actual = tree_manifest(locate(restored, src, expected))
    if changed_since is None:
        return compare(expected, actual)
    keys = set(expected) ^ set(actual) | {k for k in set(expected) & set(actual) if expected[k] != actual[k]}
    live = {k for k in keys if _changed_since(src, k, changed_since)}
    v = compare({k: v for k, v in expected.items() if k not in live},
                {k: v for k, v in actual.items() if k not in live})
    if live:
        return Verdict(v.ok, v.checked, f"{v.text} ({len(live)} changed in the source during the run, "
                                        f"e.g. {sorted(live)[0]}: not compared)")
    return v


def _archive_members(path: Path, fmt: str) -> Iterator[tuple[str, IO[bytes]]]:
    if fmt == "zip":
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():
                if not info.is_dir() and not _zip_is_symlink(info):
                    with zf.open(info) as f:
                        yield info.filename, f
    else:
        with tarfile.open(path, mode="r|*") as tf:
            for m in tf:
                if m.isfile():
                    f = tf.extractfile(m)
                    assert f is not None
                    yield m.name, f


def _normalize(name: str) -> str:
    while name.startswith("./"):
        name = name[2:]
    return name.lstrip("/")


def _zip_is_symlink(info: zipfile.ZipInfo) -> bool:
    return (info.external_attr >> 16) & 0o170000 == 0o120000


def verify_archive(path: Path, fmt: str, src: Path, expected: Manifest) -> Verdict:
    """Compare a ZIP or TAR stream's regular files with the source's manifest."""
    raw: Manifest = {}
    try:
        for name, f in _archive_members(path, fmt):
            raw[_normalize(name)] = _digest(f)
    except (zipfile.BadZipFile, tarfile.TarError, OSError, EOFError) as e:
        return Verdict(False, len(expected), f"unreadable {fmt}: {e}")
    best: Manifest = {}
    for prefix in _prefixes(src):
        got = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
        if len(set(got) & set(expected)) > len(set(best) & set(expected)):
            best = got
    return compare(expected, best)
