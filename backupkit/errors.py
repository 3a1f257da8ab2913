"""The exception tree of backupkit.

Every error a user can cause is one of these, with a one-line message. The CLI maps
classes to exit codes in one table (``cli/exit_codes.py``); nothing here knows about
exit codes.

    BackupkitError
    ├── StoreError                     anything the object store said
    │   ├── ObjectNotFound             the named object does not exist
    │   ├── ObjectExists               put_if_absent found the name taken
    │   ├── StorePermissionError       the store refused (credentials, ACL)
    │   └── StoreUnavailable           transient: retry may help (5xx, reset, throttle)
    ├── RepositoryError
    │   ├── RepositoryNotFound         no config at that location
    │   ├── RepositoryExists           init over an existing repository
    │   ├── WrongPassword              no key file opens with this password
    │   ├── ConfigDamaged              a key file opens but the config is missing or
    │   │                              does not authenticate (bk repair config)
    │   ├── IntegrityError             an object failed authentication or id check
    │   ├── FormatError                an object decrypted but does not parse
    │   │   └── ObjectTooLarge         an object is larger than its kind allows (not read)
    │   ├── BlobNotFound               a referenced blob is not in the index
    │   └── DamagedRepository          prune refused: snapshots need missing data
    ├── LockError                      a lock could not be taken or was lost
    │   ├── LockConflict               someone else holds a conflicting lock
    │   └── LockLost                   a held lock was removed or went unrefreshed
    ├── SnapshotNotFound               a snapshot ref resolved to nothing
    ├── AmbiguousSnapshot              a prefix matched several snapshots
    ├── PathNotFound                   a path is not in a snapshot / not on disk
    ├── UsageError                     the request itself is wrong (a refusal)
    │   └── BadArgument                malformed or conflicting arguments (exit 2)
    ├── RestoreError                   restore refused (target is a file, unsafe name)
    ├── SourceError                    a backup source failed as a whole (--stdin-from-command)
    ├── FileReadError                  one source file could not be read (reported, left out)
    ├── Cancelled                      work was cancelled (an interrupted backup's reads)
    └── MountError                     mount refused (mount point not a free directory, no FUSE)

    KeyboardInterrupt
    └── Interrupted                    a signal (SIGINT, SIGTERM, SIGHUP) stopped the command
        └── BackupInterrupted          ... a backup, after indexing every pack it completed
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from backupkit.repo.lock import LockInfo


class BackupkitError(Exception):
    """Root of every error backupkit raises on purpose."""


class StoreError(BackupkitError):
    """The object store failed an operation."""

    retryable = False


class ObjectNotFound(StoreError):
    """The named object does not exist in the store."""


class ObjectExists(StoreError):
    """A conditional create found the name already taken."""


class StorePermissionError(StoreError):
    """The store denied the operation."""


class StoreUnavailable(StoreError):
    """A transient failure; the same call may succeed later."""

    retryable = True


class RepositoryError(BackupkitError):
    """The repository is missing, malformed or damaged."""


class RepositoryNotFound(RepositoryError):
    """There is no repository at the given location."""


class RepositoryExists(RepositoryError):
    """init was asked to create a repository where one exists."""


class WrongPassword(RepositoryError):
    """No key file of the repository opens with the given password."""


class ConfigDamaged(RepositoryError):
    """A key file opened but the store's config is missing, too large or does not
    authenticate (and no cached copy stood in); ``bk repair config`` puts one back."""


class IntegrityError(RepositoryError):
    """An object failed authentication, or its content does not match its id."""


class FormatError(RepositoryError):
    """An object decrypted correctly but its content does not parse."""


class ObjectTooLarge(FormatError):
    """An object (or a payload's plaintext) is larger than its kind may be
    (``backupkit.limits``); it was not read whole."""


class BlobNotFound(RepositoryError):
    """A referenced blob is not known to the index."""


class DamagedRepository(RepositoryError):
    """Prune refused to run: the repository misses data that snapshots need.

    Attributes:
        snapshots: ids of the damaged snapshots (those that reference missing data).
        details: one line per problem, for display.
    """

    def __init__(self, message: str, snapshots: Iterable[str] = (), details: Iterable[str] = ()) -> None:
        super().__init__(message)
        self.snapshots = tuple(snapshots)
        self.details = tuple(details)


class LockError(BackupkitError):
    """A repository lock could not be taken, or was lost while held."""


class LockConflict(LockError):
    """The lock is held by someone else. ``holder`` is the lock that blocked us."""

    def __init__(self, message: str, holder: LockInfo | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class LockLost(LockError):
    """A held lock was removed, or could not be refreshed in time; stop before publishing."""


class SnapshotNotFound(BackupkitError):
    """A snapshot reference matched no snapshot."""


class AmbiguousSnapshot(BackupkitError):
    """A snapshot id prefix matched more than one snapshot."""


class PathNotFound(BackupkitError):
    """A path does not exist (in a snapshot or on disk)."""


class UsageError(BackupkitError):
    """The request itself is invalid (bad option value, conflicting options)."""


class BadArgument(UsageError):
    """A command-line argument or option value is malformed or conflicts with another;
    the CLI treats it like a parse error (exit 2). Refusals of a well-formed request
    stay plain UsageErrors."""


class RestoreError(BackupkitError):
    """A restore was refused (target is a file, unsafe entry name, ...)."""


class SourceError(BackupkitError):
    """A backup source failed as a whole, e.g. the command of --stdin-from-command
    exited with an error: no snapshot is written."""


class FileReadError(BackupkitError):
    """One source file could not be read (the message says why); the backup reports it
    and leaves the file out."""


class Cancelled(BackupkitError):
    """Work was cancelled while in progress (a content writer's reads, on interrupt)."""


class MountError(BackupkitError):
    """A mount was refused or failed (mount point missing, not a directory, busy; no FUSE)."""


class Interrupted(KeyboardInterrupt):
    """A signal asked the command to stop: SIGINT (Ctrl-C), SIGTERM or SIGHUP.

    A KeyboardInterrupt (not an Exception), so that no ``except Exception`` on the way
    swallows it: every ``finally`` and context manager unwinds (uploads end, locks are
    released). The CLI raises it in the main thread from its signal handler and maps it
    to 128 + ``signum``.
    """

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal_name(signum))
        self.signum = int(signum)


@dataclass(frozen=True)
class SavedWork:
    """What an interrupted backup kept: packs uploaded and indexed in this run (a later
    backup deduplicates against them); no snapshot was written."""

    packs: int
    bytes: int
    blobs: int

    def to_json(self) -> dict:
        return {"packs_saved": self.packs, "bytes_saved": self.bytes, "blobs_saved": self.blobs}


class BackupInterrupted(Interrupted):
    """A backup was interrupted; ``saved`` says what it kept (None: it could not tell,
    e.g. an upload had failed too)."""

    def __init__(self, signum: int, saved: SavedWork | None) -> None:
        super().__init__(signum)
        self.saved = saved


def signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"
