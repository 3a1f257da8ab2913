"""The repository key's Argon2id derivation started before the command line loads.

``bk`` spends ~0.15 s importing typer, rich and the command's modules before it opens
the repository, and opening it spends ~0.16 s in Argon2id, which lets the GIL go. When
the command line names a repository on a local disk and a password that needs no prompt
and no program, ``start`` reads that repository's key file and begins the derivation on
a thread (``backupkit.repo.kdfahead``) before anything else is imported; the open then
takes its result. ``bk snapshots`` took 0.47 s instead of 0.60 warm and 0.60 instead of
0.71 cold, an unchanged backup of 200,000 files 1.45 s instead of 1.55 warm (cold it is
bound by the disk either way; docs/benchmarks.md, session 11).

The guess is only an optimisation: whatever ``start`` reads wrong (an option it does not
know, a second key file, a password the command takes elsewhere) at worst derives a key
nobody takes, since the open matches the derivation by password, salt and costs. So
``start`` reads as little as it can and gives up on any doubt: a command that opens no
repository, ``--help``, a location that is not a local directory, more than one key
file, ``--password-command``, ``--repository-file``, a prompt, a password "file" that is
a pipe (``-p <(pass show backup)``: reading it here would leave nothing for the command).
It never prints and never raises; the command then reports whatever is wrong as it
always does.

A repository elsewhere (S3, SFTP, REST, rclone) cannot be read before its client is
imported and connected (~0.3 s on S3), so there ``start`` derives from a *hint*: the key
file's KDF section (salt and costs, which the key file stores in the clear) as the last
open (or ``bk init``) of the same location, as given on the command line, left it in the
cache (``remember``; ``locations/<hash>/kdf`` under the cache root; never with
``--no-cache``). The open still lists and reads the store's key file and takes the
derivation only if its salt and costs are the hint's, so a stale or planted hint costs
one derivation's CPU and nothing else. ``bk snapshots`` on SeaweedFS on loopback: 0.47 ->
0.37 s warm by hand, 0.61 -> 0.50 s in ``benchmarks.ab`` (docs/benchmarks.md, session 15).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
from collections.abc import Mapping, Sequence

#: commands that open an existing repository with the password (not init, serve, cache,
#: version, completion)
OPENING = frozenset(
    "backup snapshots ls restore diff check forget prune find stats dump tag rewrite cat list mount unlock key copy repair".split()
)
#: the global options that take a value (``main.py``'s callback)
_VALUED = frozenset(
    "-r --repo --repository-file -p --password-file --password-command --cache-dir --connections "
    "--limit-upload --limit-download --retry-lock -o --option".split()
)
_KEY_NAME = re.compile(r"^[0-9a-f]{64}$")


def read_command_line(argv: Sequence[str]) -> tuple[str | None, dict[str, str], set[str]]:
    """(the command, the valued global options given (last one wins), the flags seen) from
    ``argv`` without the program name; global options may come before or after the
    command. A command's own valued options are not known here: their values read as
    positionals, which is harmless after the command."""
    command = None
    values: dict[str, str] = {}
    flags: set[str] = set()
    i = 0
    while i < len(argv):
        a = argv[i]
        i += 1
        if a == "--":
            break
        if a.startswith("--") and "=" in a:
            name, _, value = a.partition("=")
            if name in _VALUED:
                values[name] = value
            continue
        if a in _VALUED:
            if i < len(argv):
                values[a] = argv[i]
                i += 1
            continue
        if a[:2] in _VALUED and len(a) > 2 and a[1] != "-":  # -rPATH, as click reads it
            values[a[:2]] = a[2:]
            continue
        if a.startswith("-") and a != "-":
            flags.add(a)
            continue
        if command is None:
            command = a
    return command, values, flags


def _password(values: dict[str, str], flags: set[str], env: Mapping[str, str], default_repo: bool) -> bytes | None:
    """The password as ``State.password`` finds it (``password_source``: the same
    precedence), or None where it would run a program, prompt, or read a pipe."""
    from backupkit_cli.context import default_password_file, password_source

    source = password_source(values.get("--password-file") or values.get("-p"), values.get("--password-command"),
                             "--insecure-no-password" in flags, env)
    if source is None:
        if not default_repo:
            return None  # a prompt
        source = ("file", str(default_password_file()))
    kind, given = source
    if kind == "value":
        return given.encode()
    if kind != "file" or not stat.S_ISREG(os.stat(given).st_mode):
        return None  # a program; a pipe (-p <(pass show x), /dev/stdin) is the command's to read, once
    with open(given, "rb") as f:
        return f.read(1 << 20).rstrip(b"\r\n")


def _repository(values: dict[str, str], env: Mapping[str, str]) -> tuple[str, bool] | None:
    """(the repository location, whether it is the default one) as ``State`` finds it
    (``repository_source``), or None when it comes from a file."""
    from backupkit_cli.context import default_repo, repository_source

    source = repository_source(values.get("--repo") or values.get("-r"), values.get("--repository-file"), env)
    if source is None:
        return default_repo(), True
    kind, location = source
    return (location, False) if kind == "url" else None


def _read(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, str, str, bytes, dict[str, str], set[str]] | None:
    """(the location as given, "local" or its scheme, the location after the scheme, the
    password, the valued options, the flags) when the command opens a repository named
    plainly and its password needs no prompt and no program; None otherwise."""
    command, values, flags = read_command_line(argv)
    if command not in OPENING or {"-h", "--help", "--version"} & flags:
        return None
    repo = _repository(values, env)
    if repo is None:
        return None
    from backupkit.store import is_local_scheme, split_location

    scheme, location = split_location(repo[0])  # imports no backend (botocore: ~0.12 s)
    password = _password(values, flags, env, repo[1])
    if password is None:
        return None
    return repo[0], "local" if is_local_scheme(scheme) else scheme, location, password, values, flags


def plan(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, bytes] | None:
    """(the local repository's directory, the password) when ``start`` should derive
    ahead from its key file; None otherwise. Raises nothing it does not catch."""
    try:
        got = _read(argv, env)
        if got is None:
            return None
        _, backend, location, password, _, _ = got
        if backend != "local" or location.startswith("//"):
            return None  # file:// URLs: let the store say what they are
        return location, password
    except Exception:  # noqa: BLE001 - a guess: the command reports what is wrong
        return None


def hint_file(cache_root: os.PathLike | str, url: str) -> str:
    """Where the KDF hint of the location ``url`` (as given) is kept under ``cache_root``:
    a directory of its own among the per-location open caches (``bk cache --cleanup``
    ages it like them), named by a hash no store location's directory can have."""
    from backupkit.repo.cache import LOCATIONS

    digest = hashlib.sha256(b"kdf-hint\0" + url.encode("utf-8", "surrogateescape")).hexdigest()[:32]
    return os.path.join(os.fspath(cache_root), LOCATIONS, digest, "kdf")


def _cache_root(values: dict[str, str], flags: set[str], env: Mapping[str, str]) -> str | None:
    """The cache root the command will use (``State.cache_root``), None with ``--no-cache``."""
    if "--no-cache" in flags:
        return None
    if values.get("--cache-dir"):
        return values["--cache-dir"]
    from backupkit.repo.cache import default_cache_root

    return env.get("BK_CACHE_DIR") or str(default_cache_root())


def hint_plan(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, bytes] | None:
    """(the KDF hint's file, the password) when the command line names a repository that
    is not a local directory and the cache is on; None otherwise. Raises nothing."""
    try:
        got = _read(argv, env)
        if got is None:
            return None
        url, backend, _, password, values, flags = got
        if backend == "local":
            return None
        root = _cache_root(values, flags, env)
        return None if root is None else (hint_file(root, url), password)
    except Exception:  # noqa: BLE001 - as plan
        return None


def _kdf_inputs(raw: bytes) -> tuple[bytes, int, int, int] | None:
    """(salt, iterations, memory KiB, lanes) of a key file's (or a hint's) KDF section,
    or None if it is not a well-formed Argon2id one."""
    from backupkit import limits

    doc = json.loads(raw)
    kdf = doc["kdf"] if "kdf" in doc else doc
    if kdf.get("name") != "argon2id":
        return None
    nums = kdf["iterations"], kdf["memory_kib"], kdf["lanes"]
    if not all(type(n) is int for n in nums):
        return None
    salt = base64.b64decode(kdf["salt"], validate=True)
    if not limits.KDF_SALT_MIN <= len(salt) <= limits.KDF_SALT_MAX:
        return None
    return (salt, *nums)


def _read_small(path: str) -> bytes | None:
    """A regular file's bytes, at most a key file's size: not followed if a link, never
    waited for (a fifo planted there); None if it is anything else."""
    from backupkit import limits

    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    with os.fdopen(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        raw = f.read(limits.KEY_FILE_MAX + 1)
    return None if len(raw) > limits.KEY_FILE_MAX else raw


def start(argv: Sequence[str], env: Mapping[str, str]) -> bool:
    """Begin the derivation when the command line allows it: from a local repository's
    key file when it has exactly one well-formed one (``plan``), else from the location's
    KDF hint (``hint_plan``); True if one was started."""
    try:
        got = plan(argv, env)
        if got is not None:
            root, password = got
            keys = os.path.join(root, "keys")
            names = [n for n in os.listdir(keys) if _KEY_NAME.match(n)]
            if len(names) != 1:
                return False
            raw = _read_small(os.path.join(keys, names[0]))
        else:
            hinted = hint_plan(argv, env)
            if hinted is None:
                return False
            path, password = hinted
            raw = _read_small(path)
        inputs = None if raw is None else _kdf_inputs(raw)
        if inputs is None:
            return False
        from backupkit.repo import kdfahead

        return kdfahead.start(password, *inputs)
    except Exception:  # noqa: BLE001 - as plan
        return False


def remember(cache_root: os.PathLike | str | None | bool, url: str, key_raw: bytes) -> None:
    """After an open of ``url`` (as given) that is not a local directory: keep the opened
    key file's KDF section as the location's hint for the next command's ``start``
    (written when it changed; otherwise the directory's time is bumped, as an open
    bumps its location's). ``cache_root``: ``State.cache_root()`` (False: no cache).
    Never raises: a hint only saves time."""
    if cache_root is False:
        return
    try:
        if cache_root is None:
            from backupkit.repo.cache import default_cache_root

            cache_root = default_cache_root()
        data = json.dumps(json.loads(key_raw)["kdf"], sort_keys=True).encode()
        if _kdf_inputs(data) is None:
            return
        path = hint_file(cache_root, url)
        try:
            if _read_small(path) == data:
                os.utime(os.path.dirname(path))
                return
        except OSError:
            pass
        from pathlib import Path

        from backupkit.repo.cache import OpenCache

        OpenCache(Path(path).parent).put("kdf", data)  # atomically; an OSError only costs time
    except Exception:  # noqa: BLE001 - as the docstring says
        return


__all__ = ["OPENING", "hint_file", "hint_plan", "plan", "read_command_line", "remember", "start"]
