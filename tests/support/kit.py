"""Helpers for tests: cheap repositories, running ``bk``, and file trees to compare.

Vocabulary:
    test repository   a repository with INSECURE_TEST_KDF (restic's
                      TestUseLowSecurityKDFParameters), so opening it costs microseconds.
    every-kind tree   :func:`make_every_kind_tree`: one of each file kind and attribute
                      a backup must keep (needs root: it chowns and sets setuid bits).
    tree record       ``{relative byte path: FileRecord}``: what a round trip must keep of
                      each file (type, mode, owner, mtime, size, content digest, link
                      target, xattrs, inode group), made by :func:`record_tree` on the
                      source and on a restored copy, then compared with :func:`diff_trees`.

Running ``bk``: ``run_bk`` starts the test launcher (``tests/support/bk.py``: the real
CLI with a cheap KDF and short lock waits) through the executable ``bk_executable()``
returns; ``installed_bk()`` is the real installed script, for the few tests that must run
exactly what a user runs.

Nothing here is used by the product; store contract checks live in ``store_contract``.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
import random
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from backupkit.chunker import DEFAULT_AVG, DEFAULT_MAX, DEFAULT_MIN
from backupkit.repo.repository import MiB, Repository
from backupkit.store.base import ObjectStore
from backupkit.store.local import LocalObjectStore
from backupkit.store.memory import MemoryObjectStore
from tests.support.bk import INSECURE_TEST_KDF

PASSWORD = b"correct horse battery staple"


def make_test_repo(
    store: ObjectStore | str | os.PathLike | None = None,
    *,
    password: bytes = PASSWORD,
    cache: str | os.PathLike | None = None,
    pack_size: int = 16 * MiB,
    chunker: tuple[int, int, int] = (DEFAULT_MIN, DEFAULT_AVG, DEFAULT_MAX),
) -> Repository:
    """A new repository with a cheap KDF.

    Args:
        store: an ObjectStore, a directory path (a LocalObjectStore without fsync), or
            None for a MemoryObjectStore.
        cache: a cache directory, or None for no cache.
        pack_size, chunker: as for ``Repository.init`` (defaults are the product's).
    """
    if store is None:
        store = MemoryObjectStore()
    elif not isinstance(store, ObjectStore):
        store = LocalObjectStore(store, fsync=False)
    return Repository.init(
        store, password, kdf=INSECURE_TEST_KDF, pack_size=pack_size, chunker=chunker,
        cache_root=cache if cache is not None else False,
    )


def reopen(repo: Repository, password: bytes = PASSWORD, cache: str | os.PathLike | None = None) -> Repository:
    """The same repository opened afresh (new index, new HAMT caches)."""
    return Repository.open(repo.store, password, cache_root=cache if cache is not None else False, connections=2)


def cli_env(repo: str | os.PathLike, cache: str | os.PathLike, password: str = PASSWORD.decode()) -> dict[str, str]:
    """Environment for running ``bk`` (``run_bk``) in a subprocess against ``repo``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BK_")}
    env.update(
        BK_REPOSITORY=os.fspath(repo),
        BK_PASSWORD=password,
        BK_CACHE_DIR=os.fspath(cache),
        COLUMNS="200",
    )
    return env


def store_listing(store: ObjectStore, prefix: str = "") -> dict[str, int]:
    """Every object name with its size (locks excluded: they come and go)."""
    return {o.name: o.size for o in store.list(prefix) if not o.name.startswith("locks/")}


# -- running the bk command ---------------------------------------------------------------

_LAUNCHER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bk.py")
_wrapper: str | None = None


def old_checkout() -> str | None:
    """The checkout of an older bk that ``bk_executable`` and ``installed_bk`` run instead
    of this one (``BK_TEST_OLD_CHECKOUT``, with its own ``.venv``), or None: only for
    showing that a test fails on old code (``tests/hostile/prove_old_main.py``)."""
    return os.environ.get("BK_TEST_OLD_CHECKOUT") or None


def bk_executable() -> str:
    """An executable that runs ``bk`` for tests: the test launcher (``tests/support/bk.py``:
    the real CLI with a cheap KDF and short lock waits) under this interpreter.

    A script in the source tree cannot name this interpreter in its ``#!`` line, so a
    three-line wrapper is written to the temporary directory, at a path fixed by the
    interpreter and the checkout (every test process shares it; nothing piles up), in a
    directory readable by everyone so that ``unprivileged_prefix`` can run it. Use it as
    ``argv[0]``.
    """
    global _wrapper
    if _wrapper is not None and os.path.exists(_wrapper):
        return _wrapper
    import tempfile

    old = old_checkout()
    if old is not None:
        # an older bk (tests/hostile/prove_old_main.py): its own test switches, read
        # from the environment then, give the same cheap KDF and short lock waits
        text = (
            "#!/bin/sh\n# an old bk for the proof run (written by tests/support/kit.py)\n"
            f"BK_TEST_INSECURE_KDF=1 BK_TEST_LOCK_FAST=1 exec {os.path.join(old, '.venv', 'bin', 'bk')!r} \"$@\"\n"
        )
    else:
        text = (
            f"#!{sys.executable}\n"
            "# bk for the test suite (written by tests/support/kit.py)\n"
            "import runpy\n"
            f"runpy.run_path({_LAUNCHER!r}, run_name='__main__')\n"
        )
    tag = hashlib.sha256(text.encode()).hexdigest()[:16]
    d = os.path.join(tempfile.gettempdir(), f"bk-test-launcher-{os.getuid()}-{tag}")
    try:
        os.mkdir(d, 0o755)
    except FileExistsError:
        st = os.lstat(d)
        if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
            d = tempfile.mkdtemp(prefix="bk-test-launcher-")  # not ours: use a private one
    os.chmod(d, 0o755)
    path = os.path.join(d, "bk")
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp-")  # atomic: parallel workers share it
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)
    _wrapper = path
    return path


def installed_bk() -> str:
    """The installed ``bk`` script next to this interpreter, else the one on PATH: exactly
    what a user runs (strong KDF, real lock waits)."""
    old = old_checkout()
    cand = os.path.join(old, ".venv", "bin", "bk") if old else os.path.join(os.path.dirname(sys.executable), "bk")
    if os.access(cand, os.X_OK):
        return cand
    found = shutil.which("bk")
    if found is None:
        raise RuntimeError("the bk command is not installed (pip install -e .)")
    return found


def unprivileged_prefix() -> tuple[list[str], str]:
    """A command prefix that runs a program without root's power to read any file.

    Tests of unreadable files run as root here, and root reads a ``chmod 000`` file. The
    first choice is user nobody; when nobody cannot even start this interpreter (it may
    live under /root, mode 0700), the fallback keeps uid 0 but drops CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH from the bounding set, so file modes apply to root too. Both
    need setpriv (util-linux). Returns (prefix, who) where who names the choice.
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        raise RuntimeError("setpriv is missing: install util-linux (needed to test unreadable files as root)")
    nobody = [setpriv, "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--"]
    if os.geteuid() != 0:
        return [], "an unprivileged user"
    r = subprocess.run([*nobody, sys.executable, "-c", "pass"], capture_output=True)
    if r.returncode == 0:
        return nobody, "nobody"
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", "--"], "root without DAC capabilities"


@contextmanager
def reachable_tmpdir(prefix: str) -> Iterator[pathlib.Path]:
    """A temporary directory in /tmp that user nobody can enter (mode 0755: pytest's
    ``tmp_path`` lies below a 0700 directory), for a test that runs a program through
    ``unprivileged_prefix()``; removed afterwards."""
    base = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    try:
        base.chmod(0o755)
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def run_bk(
    *args: str | os.PathLike | bytes,
    env: dict[str, str],
    input: bytes | None = None,
    prefix: Iterable[str] = (),
    cwd: str | os.PathLike | None = None,
    timeout: float = 120,
    executable: str | None = None,
) -> subprocess.CompletedProcess:
    """Run ``bk ARGS`` (after ``prefix``, e.g. a setpriv invocation); stdout stays bytes,
    stderr is text. ``executable``: what to run instead of ``bk_executable()`` (e.g.
    ``installed_bk()``)."""
    argv = [*prefix, executable or bk_executable(), *(a if isinstance(a, bytes) else os.fspath(a) for a in args)]
    r = subprocess.run(
        argv, env=env, input=input, capture_output=True, timeout=timeout, cwd=cwd,
        stdin=None if input is not None else subprocess.DEVNULL,
    )
    return subprocess.CompletedProcess(r.args, r.returncode, r.stdout, r.stderr.decode("utf-8", "replace"))


def ok(r: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    """``r`` (from ``run_bk``), after asserting that it exited 0 without a traceback."""
    assert r.returncode == 0, f"{r.args[1:]} exited {r.returncode}: {r.stderr}"
    assert "Traceback" not in r.stderr
    return r


def backed_up_repo(base: pathlib.Path) -> tuple[pathlib.Path, dict[str, str]]:
    """``base/repo`` (cache ``base/cache``) made by ``bk init`` and holding one ``bk backup``
    of ``base/src`` (``a.txt`` and ``sub/b.txt``); returns (the source, the CLI env)."""
    src = base / "src"
    write_file(src / "a.txt", b"alpha\n")
    write_file(src / "sub" / "b.txt", b"beta\n")
    env = cli_env(base / "repo", base / "cache")
    ok(run_bk("init", env=env))
    ok(run_bk("backup", src, env=env))
    return src, env


# -- tree records ------------------------------------------------------------------------

@dataclass(frozen=True)
class FileRecord:
    """What a restore must reproduce of one path (``None`` fields are not compared)."""

    type: str
    mode: int
    uid: int
    gid: int
    mtime_ns: int | None
    size: int | None = None
    sha256: str | None = None
    link: bytes | None = None
    xattrs: tuple[tuple[bytes, bytes], ...] = ()
    inode: int = field(default=0, compare=False)


_TYPES = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l", stat.S_IFIFO: "p", stat.S_IFSOCK: "s"}


def _digest(path: bytes) -> str | None:
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except PermissionError:
        return None
    try:
        while b := os.read(fd, 1 << 20):
            h.update(b)
    finally:
        os.close(fd)
    return h.hexdigest()


def _xattrs(path: bytes) -> tuple[tuple[bytes, bytes], ...]:
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError:
        return ()
    return tuple(sorted((n.encode(), os.getxattr(path, n, follow_symlinks=False)) for n in names if n.startswith("user.")))


def record_tree(root: str | os.PathLike | bytes, skip: Iterable[bytes] = ()) -> dict[bytes, FileRecord]:
    """A record of every path below ``root`` (root itself as ``b"."``), byte-exact names.

    Sockets are skipped (restore records them but does not recreate them), as are the
    relative paths in ``skip`` and everything below them.
    """
    base = os.fsencode(root)
    skip = set(skip)
    out: dict[bytes, FileRecord] = {}
    stack = [b"."]
    while stack:
        rel = stack.pop()
        if rel in skip:
            continue
        p = base if rel == b"." else os.path.join(base, rel)
        st = os.lstat(p)
        t = _TYPES.get(stat.S_IFMT(st.st_mode), "?")
        if t == "s":
            continue
        rec = FileRecord(
            type=t,
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            mtime_ns=st.st_mtime_ns if t in ("f", "d", "l", "p") else None,
            size=st.st_size if t == "f" else None,
            sha256=_digest(p) if t == "f" else None,
            link=os.readlink(p) if t == "l" else None,
            xattrs=_xattrs(p) if t in ("f", "d") else (),
            inode=st.st_ino,
        )
        out[rel] = rec
        if t == "d":
            for name in os.listdir(p):
                stack.append(name if rel == b"." else os.path.join(rel, name))
    return out


def hardlink_groups(rec: dict[bytes, FileRecord]) -> set[frozenset[bytes]]:
    """Sets of paths sharing an inode (only groups of two or more)."""
    by_ino: dict[int, set[bytes]] = {}
    for p, r in rec.items():
        if r.type == "f":
            by_ino.setdefault(r.inode, set()).add(p)
    return {frozenset(g) for g in by_ino.values() if len(g) > 1}


def diff_trees(a: dict[bytes, FileRecord], b: dict[bytes, FileRecord], ignore_mtime: Iterable[bytes] = ()) -> list[str]:
    """Human-readable differences between two tree records (empty when equal)."""
    ignore = set(ignore_mtime)
    out = []
    for p in sorted(set(a) | set(b)):
        ra, rb = a.get(p), b.get(p)
        if ra is None or rb is None:
            out.append(f"{p!r}: only in {'restored' if ra is None else 'source'}")
            continue
        if p in ignore:
            ra = FileRecord(**{**ra.__dict__, "mtime_ns": None})
            rb = FileRecord(**{**rb.__dict__, "mtime_ns": None})
        if ra != rb:
            fields = [f"{k}: {getattr(ra, k)!r} != {getattr(rb, k)!r}" for k in ra.__dict__ if k != "inode" and getattr(ra, k) != getattr(rb, k)]
            out.append(f"{p!r}: " + "; ".join(fields))
    ga, gb = hardlink_groups(a), hardlink_groups(b)
    if ga != gb:
        out.append(f"hardlink groups differ: {sorted(map(sorted, ga))} != {sorted(map(sorted, gb))}")
    return out


def write_file(path: str | os.PathLike | bytes, data: bytes, mode: int | None = None) -> bytes:
    """Create ``path`` (and parents) holding ``data``."""
    p = os.fsencode(path)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data)
    if mode is not None:
        os.chmod(p, mode)
    return p


# -- a tree holding every kind of file ---------------------------------------------------

#: mtimes given to the tree's paths: odd nanoseconds, so truncation to us or s shows.
MTIME_BASE = 1_600_000_000_123_456_789


@dataclass(frozen=True)
class EveryKindTree:
    """Where :func:`make_every_kind_tree` put things (byte paths relative to ``root``)."""

    root: bytes
    big: bytes = b"big.bin"
    sparse: bytes = b"sparse.img"
    sparse_data: tuple[tuple[int, bytes], ...] = ()
    fifo: bytes = b"fifo"
    socket: bytes = b"sock"
    hardlinks: tuple[bytes, ...] = (b"hard/a", b"hard/b", b"dir/hard-c")
    deep: bytes = b""
    regular: tuple[bytes, ...] = ()

    def path(self, rel: bytes) -> bytes:
        return os.path.join(self.root, rel)


def make_every_kind_tree(
    root: str | os.PathLike | bytes, big_size: int = 10 * MiB + 4321, sparse_size: int = 32 * MiB, seed: int = 1
) -> EveryKindTree:
    """Create a tree with every file kind a backup must keep (run as root: it chowns).

    Regular files (empty, small, multi-chunk random), empty and nested directories,
    relative/absolute/dangling symlinks and one to a directory, a hardlink triple across
    directories, non-UTF-8 names and names with newline/tab/backslash, a 255-byte name,
    a 40-level deep path, user xattrs (binary too) on a file and a directory, a sparse
    file, a fifo, a unix socket, setuid/setgid/sticky/000 modes, foreign owners, and
    distinct odd-nanosecond mtimes on everything.
    """
    base = os.fsencode(root)
    os.makedirs(base)

    def j(*parts: bytes) -> bytes:
        return os.path.join(base, *parts)

    regular = []

    def put(rel: bytes, data: bytes) -> None:
        write_file(j(rel), data)
        regular.append(rel)

    put(b"empty", b"")
    put(b"small.txt", b"hello, world\n")
    put(b"big.bin", random.Random(seed).randbytes(big_size))
    os.mkdir(j(b"emptydir"))
    put(b"dir/sub/file.txt", b"nested\n")
    os.mkdir(j(b"links"))
    os.symlink(b"../small.txt", j(b"links/relative"))
    os.symlink(j(b"small.txt"), j(b"links/absolute"))
    os.symlink(b"nowhere/missing", j(b"links/dangling"))
    os.symlink(b"../dir", j(b"links/to-dir"))
    os.symlink(b"not-utf8-\xff\xfe", j(b"links/non-utf8-target"))
    put(b"hard/a", b"one inode, three names\n")
    os.link(j(b"hard/a"), j(b"hard/b"))
    os.link(j(b"hard/a"), j(b"dir/hard-c"))
    put(b"\xff\xfe", b"a name that is not UTF-8\n")
    put(b"new\nline\ttab\\back slash", b"odd characters\n")
    put(b"caf\xe9-latin1/inside", b"in a non-UTF-8 directory\n")
    put("\u00fcn\u00efc\u00f6d\u00e9 \u2713".encode(), b"a UTF-8 name\n")
    put(b"L" * 255, b"a 255-byte name\n")
    deep = b"/".join(b"d%02d" % i for i in range(40)) + b"/" + b"N" * 200
    put(deep, b"deep down\n")
    os.setxattr(j(b"small.txt"), "user.comment", b"a comment")
    os.setxattr(j(b"small.txt"), "user.binary", bytes(range(256)))
    os.setxattr(j(b"dir"), "user.on-dir", b"directory attribute")
    # sparse: a few bytes at the start, middle and end of a large apparent size
    sparse_data = ((0, b"head"), (sparse_size // 2, b"middle"), (sparse_size - 4, b"tail"))
    fd = os.open(j(b"sparse.img"), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        for off, data in sparse_data:
            os.pwrite(fd, data, off)
    finally:
        os.close(fd)
    regular.append(b"sparse.img")
    os.mkfifo(j(b"fifo"), 0o640)
    cwd = os.getcwd()
    os.chdir(base)  # AF_UNIX paths are limited to 108 bytes: bind relative
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind("sock")
        s.close()
    finally:
        os.chdir(cwd)
    put(b"setuid-exe", b"#!/bin/sh\nexit 0\n")
    put(b"no-perms", b"mode 000\n")
    os.mkdir(j(b"sticky"))
    put(b"sticky/inside", b"in a sticky directory\n")
    os.mkdir(j(b"setgid"))
    # owners first: chown clears setuid/setgid bits of files
    os.chown(j(b"dir/sub/file.txt"), 1234, 5678)
    os.chown(j(b"setgid"), 4321, 8765)
    os.chown(j(b"hard/a"), 2000, 2001)
    os.lchown(j(b"links/relative"), 1111, 2222)
    os.chown(j(b"fifo"), 3333, 4444)
    os.chmod(j(b"setuid-exe"), 0o4755)
    os.chmod(j(b"no-perms"), 0)
    os.chmod(j(b"sticky"), 0o1777)
    os.chmod(j(b"setgid"), 0o2750)
    os.chmod(j(b"dir/sub/file.txt"), 0o640)
    # distinct odd-ns mtimes, children before their directory
    paths = []
    for dirpath, dirnames, filenames in os.walk(base):
        paths.extend(os.path.join(dirpath, n) for n in dirnames + filenames)
    paths.sort(key=lambda p: -p.count(b"/"))
    for i, p in enumerate([*paths, base]):
        mt = MTIME_BASE + i * 1_000_000_007
        os.utime(p, ns=(mt, mt), follow_symlinks=False)
    return EveryKindTree(root=base, sparse_data=sparse_data, deep=deep, regular=tuple(regular))


__all__ = [
    "MTIME_BASE",
    "INSECURE_TEST_KDF",
    "bk_executable",
    "installed_bk",
    "run_bk",
    "PASSWORD",
    "EveryKindTree",
    "FileRecord",
    "cli_env",
    "diff_trees",
    "hardlink_groups",
    "make_every_kind_tree",
    "make_test_repo",
    "record_tree",
    "reopen",
    "store_listing",
    "write_file",
]
