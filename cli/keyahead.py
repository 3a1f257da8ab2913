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
"""

from __future__ import annotations

import base64
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


def plan(argv: Sequence[str], env: Mapping[str, str]) -> tuple[str, bytes] | None:
    """(the local repository's directory, the password) when ``start`` should derive
    ahead; None otherwise. Raises nothing it does not catch."""
    try:
        command, values, flags = read_command_line(argv)
        if command not in OPENING or {"-h", "--help", "--version"} & flags:
            return None
        repo = _repository(values, env)
        if repo is None:
            return None
        from backupkit.store import resolve

        backend, location = resolve(repo[0])
        if backend.name != "local" or location.startswith("//"):
            return None  # file:// URLs: let the store say what they are
        password = _password(values, flags, env, repo[1])
        if password is None:
            return None
        return location, password
    except Exception:  # noqa: BLE001 - a guess: the command reports what is wrong
        return None


def start(argv: Sequence[str], env: Mapping[str, str]) -> bool:
    """Begin the derivation when the command line allows it (``plan``) and the repository
    has exactly one well-formed key file; True if one was started."""
    got = plan(argv, env)
    if got is None:
        return False
    root, password = got
    try:
        from backupkit import limits
        from backupkit.repo import kdfahead

        keys = os.path.join(root, "keys")
        names = [n for n in os.listdir(keys) if _KEY_NAME.match(n)]
        if len(names) != 1:
            return False
        # a regular file, not followed if a link, never waited for (a fifo planted there)
        fd = os.open(os.path.join(keys, names[0]), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        with os.fdopen(fd, "rb") as f:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return False
            raw = f.read(limits.KEY_FILE_MAX + 1)
        if len(raw) > limits.KEY_FILE_MAX:
            return False
        kdf = json.loads(raw)["kdf"]
        if kdf.get("name") != "argon2id":
            return False
        nums = kdf["iterations"], kdf["memory_kib"], kdf["lanes"]
        if not all(type(n) is int for n in nums):
            return False
        salt = base64.b64decode(kdf["salt"], validate=True)
        if not limits.KDF_SALT_MIN <= len(salt) <= limits.KDF_SALT_MAX:
            return False
        return kdfahead.start(password, salt, *nums)
    except Exception:  # noqa: BLE001 - as plan
        return False


__all__ = ["OPENING", "plan", "read_command_line", "start"]
