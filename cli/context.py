"""Global options, password resolution and opening the repository for a command."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from backupkit_cli.console import Console


def data_dir() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir("backupkit"))


def default_repo() -> str:
    return str(data_dir() / "repo")


def default_password_file() -> Path:
    return data_dir() / "password"


@dataclass
class Settings:
    """Process-wide settings no command-line option or environment variable reaches.

    The shipped ``bk`` always runs with the defaults (None: the engine's own defaults).
    A program embedding the CLI may change ``SETTINGS`` before calling
    ``backupkit_cli.main.run()``; the test suite's launcher (``tests/support/bk.py``)
    does, for a cheap KDF and short lock waits.
    """

    #: Argon2id parameters for new key files (``KdfParams``); None: ``KdfParams()``.
    kdf: Any = None
    #: ``LockManager(recheck_delay=...)``; None: the lock module's default (200 ms).
    lock_recheck_delay: float | None = None
    #: ``LockManager(retry_backoff=...)``; None: the lock module's default (5 s, 60 s).
    lock_retry_backoff: tuple[float, float] | None = None


SETTINGS = Settings()


def repository_source(repo: str | None, repository_file: str | None, env: Mapping[str, str]) -> tuple[str, str] | None:
    """Where the repository's location comes from, by bk's precedence: ("url", LOCATION)
    from -r or BK_REPOSITORY, ("file", PATH) from --repository-file or BK_REPOSITORY_FILE
    (a flag before the environment), or None: the default repository. Both flags at once
    is the caller's BadArgument."""
    if repo:
        return "url", repo
    path = repository_file or (None if env.get("BK_REPOSITORY") else env.get("BK_REPOSITORY_FILE"))
    if path:
        return "file", path
    return ("url", env["BK_REPOSITORY"]) if env.get("BK_REPOSITORY") else None


def password_source(
    password_file: str | None, password_command: str | None, insecure_no_password: bool, env: Mapping[str, str]
) -> tuple[str, str] | None:
    """Where the password comes from, by bk's precedence: ("file", PATH) or ("command",
    CMD) from the flags, else ("value", TEXT) from BK_PASSWORD, ("file", PATH) from
    BK_PASSWORD_FILE, ("command", CMD) from BK_PASSWORD_COMMAND, ("value", "") with
    --insecure-no-password; None: none given (the default repository's password file,
    else a prompt)."""
    if password_file:
        return "file", password_file
    if password_command:
        return "command", password_command
    if "BK_PASSWORD" in env:
        return "value", env["BK_PASSWORD"]
    if env.get("BK_PASSWORD_FILE"):
        return "file", env["BK_PASSWORD_FILE"]
    if env.get("BK_PASSWORD_COMMAND"):
        return "command", env["BK_PASSWORD_COMMAND"]
    return ("value", "") if insecure_no_password else None


@dataclass
class State:
    """What the global options say; every command receives it through the typer context."""

    repo: str | None = None
    password_file: str | None = None
    #: ``--repository-file``: a file holding the repository's location (restic's)
    repository_file: str | None = None
    #: ``--limit-upload`` / ``--limit-download``: KiB/s (restic's), None: unlimited
    limit_upload: int | None = None
    limit_download: int | None = None
    password_command: str | None = None
    json: bool = False
    quiet: bool = False
    verbose: int = 0
    cache_dir: str | None = None
    no_cache: bool = False
    connections: int | None = None
    console: Console = field(default_factory=Console)
    #: ``--retry-lock DURATION`` as given (``5m``, ``30s``); parsed by ``retry_lock_seconds``.
    retry_lock: str | None = None
    #: The ``backupkit.repo.lock.Lock`` held inside ``locked_repo`` (None outside it).
    lock: Any = None
    #: ``-o BACKEND.NAME=VALUE`` store options as given.
    options: list[str] = field(default_factory=list)
    #: Every store this command opened, for the request statistics (``store_stats``).
    stores: list[Any] = field(default_factory=list)
    #: ``--no-lock``: commands that only read take no lock and write nothing to the store.
    no_lock: bool = False
    #: Every repository this command opened, for their warnings (``repo_warnings``).
    repos: list[Any] = field(default_factory=list)
    #: ``--insecure-no-password``: an empty password is allowed, and used when none is given.
    insecure_no_password: bool = False

    def check_new_password(self, password: bytes) -> bytes:
        """Refuse an empty password for a new key (restic's rule) unless
        ``--insecure-no-password``: an unset variable in a script must not make a
        repository anyone can open."""
        from backupkit.errors import UsageError

        if not password and not self.insecure_no_password:
            raise UsageError("an empty password is not allowed: give --insecure-no-password to use one anyway")
        return password

    def repo_url(self) -> str:
        return self._named_repo() or default_repo()

    def uses_default_repo(self) -> bool:
        return not self._named_repo()

    def _named_repo(self) -> str | None:
        """-r, else --repository-file, else BK_REPOSITORY, else BK_REPOSITORY_FILE (flags
        before the environment; restic refuses any two together, bk only the two flags:
        docs/restic.md); None: the default repository."""
        from backupkit.errors import BadArgument

        if self.repo and self.repository_file:
            raise BadArgument("-r and --repository-file name the repository twice: give one")
        source = repository_source(self.repo, self.repository_file, os.environ)
        if source is None:
            return None
        kind, path = source
        if kind == "url":
            return path
        try:
            with open(path, encoding="utf-8") as f:
                location = f.read().strip()
        except (OSError, UnicodeDecodeError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise BadArgument(f"cannot read the repository file {path}: {why}") from None
        if not location:
            raise BadArgument(f"the repository file {path} is empty")
        return location

    def password(self, confirm: bool = False, create_default: bool = False) -> bytes:
        from backupkit.errors import UsageError

        source = password_source(self.password_file, self.password_command, self.insecure_no_password, os.environ)
        kind, given = source if source is not None else ("", "")
        if kind == "value":
            return given.encode()
        pf = given if kind == "file" else None
        pc = given if kind == "command" else None
        if pf:
            try:
                return Path(pf).read_bytes().rstrip(b"\r\n")
            except OSError as e:
                raise UsageError(f"cannot read password file {pf}: {e.strerror}") from None
        if pc:
            r = subprocess.run(pc, shell=True, capture_output=True)
            if r.returncode != 0:
                raise UsageError(f"password command failed with exit code {r.returncode}")
            return r.stdout.rstrip(b"\r\n")
        if self.uses_default_repo():
            dpf = default_password_file()
            if dpf.exists():
                return dpf.read_bytes().rstrip(b"\r\n")
            if create_default:
                import secrets

                dpf.parent.mkdir(parents=True, exist_ok=True)
                pw = secrets.token_urlsafe(32).encode()
                fd = os.open(dpf, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(pw + b"\n")
                self.console.info(f"generated a password for the default repository in {dpf}")
                return pw
        if sys.stdin.isatty():
            import getpass

            pw = getpass.getpass("repository password: ").encode()
            if confirm and getpass.getpass("repeat password: ").encode() != pw:
                raise UsageError("passwords do not match")
            return pw
        raise UsageError("no password given: use --password-file, --password-command or BK_PASSWORD")

    def store_connections(self) -> int:
        """``--connections``, else the default of the repository's backend."""
        if self.connections:
            return self.connections
        from backupkit.store import default_connections

        return default_connections(self.repo_url())

    def cache_root(self):
        if self.no_cache:
            return False
        return Path(self.cache_dir) if self.cache_dir else None

    def open_store(self):
        """The repository's store, with ``--connections`` and the ``-o`` options."""
        from backupkit.store import open_location

        store = open_location(self.repo_url(), self.options, self.store_connections())
        if self.limit_upload or self.limit_download:
            from backupkit.repo.lock_info import LOCK_PREFIX
            from backupkit.store.throttle import Rate, ThrottledStore

            store = ThrottledStore(
                store,
                Rate(self.limit_upload * 1024) if self.limit_upload else None,
                Rate(self.limit_download * 1024) if self.limit_download else None,
                exempt=(LOCK_PREFIX,),
            )
        self.stores.append(store)
        return store

    def store_stats(self) -> dict[str, int] | None:
        """Requests per kind, bytes and retries of every store opened so far (summed).

        None if no store was opened, or none counts requests (the memory store).
        ``requests`` is the total over the kinds (the upper-case keys).
        """
        from backupkit.store.retry import REQUEST_KINDS

        counted = [stats for stats in (s.stats() for s in self.stores) if stats is not None]
        if not counted:
            return None
        total: dict[str, int] = {"requests": 0, **dict.fromkeys(REQUEST_KINDS, 0)}
        total.update(bytes_up=0, bytes_down=0, retries=0)
        for stats in counted:
            for key, n in stats.items():
                total[key] = total.get(key, 0) + int(n)
        total["requests"] = sum(n for k, n in total.items() if k.isupper())
        return total

    def open_repo(self):
        """Open the repository; a missing one is RepositoryNotFound saying how to make one,
        also when no password was given (a fresh machine's first command)."""
        from backupkit.errors import RepositoryNotFound, UsageError
        from backupkit.repo.repository import Repository

        store = self.open_store()
        try:
            password = self.password()
        except UsageError:
            if not store.exists("config"):
                raise RepositoryNotFound(self._no_repository()) from None
            raise
        try:
            repo = Repository.open(store, password, cache_root=self.cache_root(), connections=self.store_connections())
        except RepositoryNotFound as e:
            if str(e).startswith("no repository at"):
                raise RepositoryNotFound(self._no_repository()) from None
            raise
        self.remember_key(repo)
        self.repos.append(repo)
        if self.verbose:
            for why in repo.open_warnings:
                self.console.warn(why)
        return repo

    def remember_key(self, repo) -> None:
        """After ``repo`` was opened or made: for a location that is not a local directory,
        leave the KDF hint the next command derives ahead from (``keyahead.remember``;
        keyahead reads a local repository's key file itself, and a memory store lives one
        process)."""
        from backupkit.store import is_local_scheme, split_location

        scheme = split_location(self.repo_url())[0]
        if not is_local_scheme(scheme) and scheme != "memory":
            from backupkit_cli import keyahead

            keyahead.remember(self.cache_root(), self.repo_url(), repo.key_raw)

    def repo_warnings(self) -> list[str]:
        """What the repositories opened so far recorded for the user (each once): a cache
        that cannot be written, names in the store that are not ours, snapshots left out."""
        out: list[str] = []
        for repo in self.repos:
            out.extend(w for w in repo.warnings if w not in out)
        return out

    def _no_repository(self) -> str:
        from backupkit_cli.fmt import display_name

        where = display_name(self.repo_url())
        if self.uses_default_repo():
            return f"no repository at {where} (the default): create one with bk init, or name one with -r or BK_REPOSITORY"
        import shlex

        return f"no repository at {where}: create one with bk -r {shlex.quote(where)} init"

    @contextmanager
    def unlocked_repo(self) -> Iterator[Any]:
        """The repository for the ``with`` block, without a lock (a dry run, ``--no-lock``)."""
        repo = self.open_repo()
        try:
            yield repo
        finally:
            repo.close()

    # -- locks -------------------------------------------------------------------------------
    def retry_lock_seconds(self) -> float:
        return parse_wait(self.retry_lock) if self.retry_lock else 0.0

    def lock_manager(self, repo):
        """A LockManager for ``repo`` honouring ``--retry-lock``; it prints while it waits."""
        from backupkit.repo.lock import LockManager, human_age

        def on_retry(err: Exception, wait: float) -> None:
            self.console.info(f"{err}; retrying in {human_age(wait)}")

        kwargs: dict[str, Any] = {}
        if SETTINGS.lock_recheck_delay is not None:
            kwargs["recheck_delay"] = SETTINGS.lock_recheck_delay
        if SETTINGS.lock_retry_backoff is not None:
            kwargs["retry_backoff"] = SETTINGS.lock_retry_backoff
        return LockManager(repo, retry_lock=self.retry_lock_seconds(), on_retry=on_retry, **kwargs)

    def snapshots(self, repo) -> list[Any]:
        """Every snapshot (oldest first); with ``--no-lock`` a stale catalog is not rewritten."""
        from backupkit.snapshot import list_snapshots

        return list_snapshots(repo, repair_catalog=not self.no_lock)

    @contextmanager
    def locked_repo(self, exclusive: bool, operation: str, read_only: bool = False, opened: Any = None) -> Iterator[Any]:
        """Open the repository and hold a lock on it for the ``with`` block; yields the Repository.

        Shared locks for commands that read or add (backup, restore, check, ls, diff),
        exclusive ones for commands that delete or rewrite (forget, prune, key changes).
        While the block runs, ``self.lock`` is the held lock and ``repo.check_lock()`` checks
        it (managers call it right before publishing or deleting anything); it raises
        LockLost (exit 11) if the lock was removed or could not be refreshed.
        Acquisition raises LockConflict (exit 11) naming the holder, after retrying for
        ``--retry-lock``. On exit the repository is closed (uploads finish) before the
        lock is released.

        ``read_only``: the command writes nothing to the repository, so ``--no-lock``
        skips the lock (as restic: a read-only mount, or reading while another client
        prunes, at the risk of a read error if it deletes what is being read). Without
        ``read_only``, ``--no-lock`` is a usage error. A store that refuses the lock
        write (permission, read-only file system) is a LockError naming ``--no-lock``.
        ``opened``: a repository opened otherwise (``repair config``: no config to open
        with) to lock instead of opening one.
        """
        from backupkit.errors import BadArgument, LockError, StorePermissionError

        if self.no_lock and not read_only:
            raise BadArgument(
                f"--no-lock: {operation.split()[0]} writes to the repository and needs its lock "
                "(--no-lock is for commands that only read: snapshots, ls, diff, restore, check, cat, mount, find, stats, dump)"
            )
        if self.no_lock:
            with self.unlocked_repo() as repo:
                yield repo
            return
        from backupkit_cli.signals import deferred

        repo = self.open_repo() if opened is None else opened
        manager = None
        try:
            # Exclusive locks rely on an atomic conditional create (the sentinel): find
            # out whether the store has one first (a few requests on some backends).
            # Shared locks never need it (their objects have random names).
            if exclusive:
                repo.store.probe_conditional_writes()
            manager = self.lock_manager(repo)
            lock = manager.acquire(exclusive, operation)
            self.lock = lock
            repo.install_lock_check(lock.check)
        except BaseException as e:
            try:
                if manager is not None:
                    # a signal right after the grant: the lock object exists, nobody owns it yet
                    with deferred():
                        manager.release_granted()
                self.lock = None
            finally:
                repo.close()
            if isinstance(e, StorePermissionError):
                detail = str(e).partition(": ")[2] if str(e).startswith("writing locks/") else str(e)
                hint = f"; {operation} only reads: add --no-lock" if read_only else " (is it read-only?)"
                raise LockError(f"cannot write a lock to the repository: {detail}{hint}") from None
            raise
        try:
            yield repo
        finally:
            try:
                repo.close()
            finally:
                self.lock = None
                with deferred():  # a signal now is raised once the lock is gone, not halfway
                    lock.release()


_WAIT_RE = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_WAIT_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_wait(text: str) -> float:
    """Seconds in a wait such as ``30s``, ``5m``, ``1h30m`` or a bare number of seconds."""
    from backupkit.errors import BadArgument

    t = text.strip().lower()
    try:
        return max(0.0, float(t))
    except ValueError:
        pass
    pos, total = 0, 0.0
    for m in _WAIT_RE.finditer(t):
        if m.start() != pos:
            break
        total += float(m.group(1)) * _WAIT_UNITS[m.group(2)]
        pos = m.end()
    if not t or pos != len(t):
        raise BadArgument(f"invalid duration {text!r}: use e.g. 30s, 5m or 1h30m")
    return total


def kdf_params():
    """Argon2id parameters for new key files: ``SETTINGS.kdf``, else the strong default."""
    from backupkit.repo.keys import KdfParams

    return SETTINGS.kdf if SETTINGS.kdf is not None else KdfParams()
