"""The ObjectStore contract, and what a backend module declares.

Vocabulary: an *object* is an immutable-by-convention byte string stored under a *name*.
Names are ``/``-separated relative paths made of ``[A-Za-z0-9._-]`` segments, e.g.
``config``, ``keys/3fa0...``, ``data/3f/3fa0...``. A *prefix* is a name prefix ending in
``/`` (or empty for everything).

Every backend (local directory, memory, S3) implements ``ObjectStore`` and passes the one
contract suite in ``tests/support/store_contract.py``. Errors are always
``backupkit.errors.StoreError`` subclasses; no backend library exception escapes a store.

An object too large to hold in memory (a pack, spooled to a temporary file while it
fills) is stored with ``put_source(name, source)`` from an ``ObjectSource``: a backend
streams it from there (the default reads it whole and calls ``put``).

Capabilities are part of the contract, with defaults a simple store keeps:
``atomic_put_if_absent`` (is the conditional create atomic), ``probe_conditional_writes()``
(find that out, for stores that must ask the server), ``request_bytes`` (what a request
costs, in bytes of transfer) and ``stats()`` (request counters, or None). Callers use
them directly; nobody probes a store with ``getattr``.

A *backend* is one module that defines an ``ObjectStore`` subclass and a module-level
``BACKEND = Backend(...)``: its name (the prefix of its ``-o NAME.OPTION=VALUE``
options), how it opens a location, its text options with their parsers and help, and its
default number of connections. ``backupkit.store`` registers the module under its
schemes (one line in ``SCHEMES``).
"""

from __future__ import annotations

import abc
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

_NAME_RE = re.compile(r"^[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*$")


def too_large(name: str, size: int, max_size: int | None) -> None:
    """Raise ObjectTooLarge if ``size`` exceeds ``max_size`` (None: no limit)."""
    if max_size is not None and size > max_size:
        from backupkit.errors import ObjectTooLarge

        raise ObjectTooLarge(f"{name}: {size} bytes, more than the {max_size} an object of its kind may have")


def read_at_most(read: Callable[[int], bytes], limit: int, first: bytes = b"") -> bytes:
    """``first``, then what ``read(n)`` gives, in pieces of at most 1 MiB, until ``limit``
    bytes in all or the end. Never ``read(limit)``: that allocates ``limit`` bytes up
    front (an index object's 512 MiB limit, once per reading thread, broke a 1 GiB
    address-space limit on a repository of a few MB)."""
    parts, got = [first], len(first)
    while got < limit:
        piece = read(min(1 << 20, limit - got))
        if not piece:
            break
        parts.append(piece)
        got += len(piece)
    return b"".join(parts)


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid object name, else raise ValueError."""
    if not _NAME_RE.match(name) or any(seg in (".", "..") for seg in name.split("/")):
        raise ValueError(f"invalid object name: {name!r}")
    return name


_PARTIAL_SEGMENT_RE = re.compile(r"^[A-Za-z0-9._-]*$")


def split_prefix(prefix: str) -> tuple[str, str]:
    """A listing prefix as (its folders, the partial last segment): ``"data/3f"`` is
    ``("data", "3f")``, ``"keys/"`` is ``("keys", "")``. Raises ValueError for a prefix no
    valid name can start with."""
    dir_part, _, partial = prefix.rpartition("/")
    if dir_part:
        check_name(dir_part)
    if not _PARTIAL_SEGMENT_RE.match(partial):
        raise ValueError(f"invalid prefix: {prefix!r}")
    return dir_part, partial


#: Bytes an ObjectSource moves per read or write when it copies through memory.
SOURCE_PIECE = 1 << 20


class ObjectSource(abc.ABC):
    """An object's bytes kept outside memory (in a file), to be stored by ``put_source``.

    ``size`` bytes in all. ``reader()`` opens a new seekable binary reader positioned at
    byte 0 (a retried upload opens another, or seeks back); ``copy_to(fd)`` writes every
    byte to a file descriptor at its current position. A source stays valid until its
    owner closes it; stores only read it.
    """

    size: int

    @abc.abstractmethod
    def reader(self):  # -> a seekable binary file object (io.RawIOBase)
        """A new reader over the bytes, at byte 0 (``read``, ``readinto``, ``seek``, ``tell``)."""

    def copy_to(self, fd: int) -> None:
        """Write all bytes to ``fd`` (default: through a reader, 1 MiB at a time)."""
        with self.reader() as r:
            for piece in iter_pieces(r):
                write_all(fd, piece)

    def read_all(self) -> bytes:
        """Every byte in memory (for a store that keeps objects in memory)."""
        with self.reader() as r:
            return b"".join(iter_pieces(r))


def write_all(fd: int, data: bytes | memoryview) -> int:
    """``os.write`` until every byte of ``data`` is written (a write may be short);
    returns ``len(data)``. The writes release the GIL."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    return len(data)


def iter_pieces(reader: Any, piece: int = SOURCE_PIECE) -> Iterator[bytes]:
    """A reader's bytes from its position to the end, ``piece`` bytes at a time."""
    while True:
        data = reader.read(piece)
        if not data:
            return
        yield data


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing or stat says about one object.

    Attributes:
        name: the object's full name.
        size: its size in bytes.
        mtime: its modification time by the *store's* clock, seconds since the epoch.
    """

    name: str
    size: int
    mtime: float


class ObjectStore(abc.ABC):
    """A flat namespace of named byte strings."""

    #: A short URL-like description for messages (never contains credentials).
    location: str = ""

    @abc.abstractmethod
    def get(self, name: str, max_size: int | None = None) -> bytes:
        """Return the whole object. Raises ObjectNotFound if it does not exist.

        With ``max_size``, an object larger than that raises ObjectTooLarge before its
        content is read (from its stat or the response's Content-Length), so a planted
        huge object costs no memory (see ``backupkit.limits``).
        """

    @abc.abstractmethod
    def get_range(self, name: str, offset: int, length: int) -> bytes:
        """Return ``length`` bytes starting at ``offset``.

        Raises ObjectNotFound if the object does not exist, and StoreError if the range
        extends past its end (a short read is never returned silently).
        """

    def get_ranges(self, name: str, ranges: Sequence[tuple[int, int]]) -> Iterator[bytes]:
        """The bytes of each (offset, length) of ``ranges`` in turn, as ``get_range``
        gives them (its errors too), one at a time: a reader holds one range while it
        works on it. The local store reads them all through one open file and no
        readahead hint (``check --read-data`` reads a pack this way)."""
        for offset, length in ranges:
            yield self.get_range(name, offset, length)

    @abc.abstractmethod
    def put(self, name: str, data: bytes) -> None:
        """Store ``data`` under ``name`` atomically, replacing any existing object.

        Readers see either the old object, the complete new one, or (for a new name)
        nothing; never a partial object. ``data`` may be any bytes-like object; a store
        that keeps it must copy it.
        """

    def put_source(self, name: str, source: ObjectSource) -> None:
        """Store ``source``'s bytes under ``name``, exactly as ``put`` would (atomically,
        replacing any existing object), without holding them in memory where the backend
        can stream them. The default reads them whole and calls ``put`` (a store that
        keeps its objects in memory, a test wrapper counting ``put`` calls)."""
        self.put(name, source.read_all())

    @abc.abstractmethod
    def put_if_absent(self, name: str, data: bytes) -> bool:
        """Store ``data`` only if ``name`` does not exist yet, atomically.

        Returns True if this call created the object, False if the name was taken.
        Backends that cannot do this atomically set ``atomic_put_if_absent`` False.
        """

    #: Where an object bound for ``put_source`` is best spooled (a directory on the
    #: store's own filesystem, for a local store: its copy then stays in one filesystem);
    #: None: the system's temporary directory (``TMPDIR``).
    spool_dir: str | None = None

    #: True when put_if_absent is a real atomic conditional create (see also
    #: ``probe_conditional_writes``).
    atomic_put_if_absent: bool = True

    #: True when a listing started after a write finished always shows it (a local
    #: directory, memory): taking a lock then lists at once instead of first waiting
    #: ``recheck_delay`` for a listing that may lag (lock_acquire.py, step 3). Safety
    #: never rests on that wait; this only saves it where it cannot help.
    immediate_listings: bool = False

    def probe_conditional_writes(self) -> bool:
        """Find out whether ``put_if_absent`` is atomic here; set and return
        ``atomic_put_if_absent``.

        Stores that cannot know without asking the server (S3: some servers ignore
        ``If-None-Match``) override this; it may cost requests, so callers ask once,
        before relying on the answer (exclusive locks do). Default: the attribute as is.
        """
        return self.atomic_put_if_absent

    def rewrite_existing(self, name: str, data: bytes) -> float:
        """Overwrite an object that must still exist (a held lock's refresh); return the
        store time of the write (the object's new modification time).

        Raises ObjectNotFound if the object is gone. The default costs three requests
        (stat, put, stat) and is not atomic: a delete between the stat and the put is
        undone by the put. Stores whose server can make the write conditional and tell
        its time in the answer (``bk serve``) do it in one request.
        """
        self.stat(name)
        self.put(name, data)
        return float(self.stat(name).mtime)

    #: Bytes worth transferring to save one request: ~0 for a local directory, about
    #: what the link moves in one request's latency for a remote store. Readers use it
    #: to decide when to join neighbouring byte ranges into one request.
    request_bytes: int = 0

    #: True when ``get_ranges`` reads ascending ranges of one object with one request
    #: and hands each over as it arrives (S3): a reader may then take a span in pieces,
    #: holding one piece at a time, at the cost of no extra request.
    streams_ranges: bool = False

    @abc.abstractmethod
    def delete(self, name: str) -> None:
        """Delete the object. Raises ObjectNotFound if it does not exist."""

    @abc.abstractmethod
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Yield every object whose name starts with ``prefix``, each exactly once.

        Order is unspecified. A failure part-way raises StoreError; it never ends the
        iteration early as if the listing were complete.
        """

    @abc.abstractmethod
    def stat(self, name: str) -> ObjectInfo:
        """Return size and modification time. Raises ObjectNotFound."""

    def exists(self, name: str) -> bool:
        """True if the object exists."""
        from backupkit.errors import ObjectNotFound

        try:
            self.stat(name)
        except ObjectNotFound:
            return False
        return True

    def holds(self, name: str, data: bytes) -> bool:
        """True if the object ``name`` exists with exactly ``data`` (a conditional create
        answered "taken" on a retry: did our own first attempt take it?)."""
        from backupkit.errors import ObjectNotFound

        try:
            return self.get(name) == data
        except ObjectNotFound:
            return False

    def remove_abandoned(self, older_than: float) -> int:
        """Delete partial writes left by writers that died (a local store's temp files)
        untouched for ``older_than`` seconds; returns how many. Default: there are none
        (an S3 PUT is atomic). Only call it while no writer can be active (prune holds
        the exclusive lock)."""
        return 0

    def stats(self) -> dict[str, int] | None:
        """Request counters, or None for a store that counts nothing (the default).

        Keys: the kinds in ``backupkit.store.retry.REQUEST_KINDS`` (``GET`` ...
        ``DELETE``, requests sent, retries included), ``bytes_up``, ``bytes_down``,
        ``retries``; a backend may add keys of its own (upper-case ones are request
        kinds).
        """
        return None

    def close(self) -> None:
        """Release connections and other resources."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.location!r})"


# -- what a backend module declares -----------------------------------------------------

@dataclass(frozen=True)
class BackendOption:
    """One text option of a backend: ``-o BACKEND.NAME=VALUE`` on the command line.

    Attributes:
        name: the option's name, also the keyword argument of the backend's ``open``.
        parse: turns the text into the value; raises ValueError (its message is shown).
        help: one line for ``docs`` and error messages.
    """

    name: str
    parse: Callable[[str], Any]
    help: str


@dataclass(frozen=True)
class Backend:
    """A backend's declaration: a module's ``BACKEND``.

    Attributes:
        name: the backend's name: the prefix of its options (``-o s3.retries=3``) and the
            name used in messages.
        open: ``open(location, **options) -> ObjectStore``. ``location`` is the text
            after ``SCHEME:`` (the whole text for a plain path). ``options`` are the
            ``connections`` the caller wants, the parsed text options, and any other
            keyword the backend's Python API accepts (``fsync=False``); a keyword it does
            not know raises TypeError.
        forms: the location forms it accepts, for help and error messages
            (``"s3:bucket[/prefix]"``).
        options: its text options (``-o``), in the order help lists them.
        connections: concurrent requests when the user does not say (``--connections``).
    """

    name: str
    open: Callable[..., ObjectStore]
    forms: tuple[str, ...] = ()
    options: tuple[BackendOption, ...] = ()
    connections: int = 2

    def parse_options(self, texts: Iterable[str]) -> dict[str, Any]:
        """Keyword arguments for ``open`` from ``-o`` texts (``"s3.retries=3"``).

        Raises BadArgument, naming the option, for a text that is not
        ``NAME.OPTION=VALUE``, an option of another backend, an unknown option or a value
        that does not parse. Range checks stay with the store class.
        """
        from backupkit.errors import BadArgument

        known = {opt.name: opt for opt in self.options}
        listed = ", ".join(f"{self.name}.{n}" for n in known) or "none"
        out: dict[str, Any] = {}
        for text in texts:
            key, sep, value = text.partition("=")
            backend, dot, name = key.strip().partition(".")
            if not sep or not dot or not backend or not name:
                example = f"{self.name}.{self.options[0].name}=VALUE" if self.options else "BACKEND.NAME=VALUE"
                raise BadArgument(f"-o {text!r}: use -o {example}")
            if backend != self.name:
                raise BadArgument(f"-o {text!r}: the repository is a {self.name} one; its options: {listed}")
            opt = known.get(name.replace("-", "_"))  # sftp.accept-new-host-key, as ssh spells it
            if opt is None:
                raise BadArgument(f"-o {text!r}: unknown option {self.name}.{name} (known: {listed})")
            try:
                out[opt.name] = opt.parse(value.strip())
            except ValueError as exc:
                raise BadArgument(f"-o {text!r}: bad value for {self.name}.{name}: {exc}") from None
        return out


# -- parsers for option values ------------------------------------------------------------

_SIZE_RE = re.compile(r"^\s*(\d+)\s*(|b|k|kb|kib|m|mb|mib|g|gb|gib)\s*$", re.IGNORECASE)
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 * 1024, "g": 1024 * 1024 * 1024}


def parse_size(text: str) -> int:
    """Bytes in ``8388608``, ``8M``, ``8MiB`` or ``512k`` (binary units)."""
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 8MiB)")
    return int(match.group(1)) * _SIZE_UNITS[match.group(2).lower()[:1]]


def parse_bool(text: str) -> bool:
    """``1 true yes on`` or ``0 false no off``."""
    low = text.strip().lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a yes/no value: {text!r}")


def parse_seconds(text: str) -> float:
    """A non-negative number of seconds."""
    value = float(text)
    if not value >= 0:
        raise ValueError(f"not a non-negative number: {text!r}")
    return value


def parse_count(text: str) -> int:
    """A whole number, at least 1."""
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1: {text!r}")
    return value


def parse_port(text: str) -> int:
    """A TCP port number, 1 to 65535."""
    value = int(text)
    if not 0 < value < 65536:
        raise ValueError(f"not a TCP port: {text!r}")
    return value


# -- options every network backend has, spelled once ----------------------------------------

def retries_option(attempts: int, per: str = "request in all") -> BackendOption:
    """``retries``: attempts per request (or per ``per``) before an error is given up on."""
    return BackendOption("retries", parse_count, f"attempts per {per} (default {attempts})")


#: ``backoff``: the bound of the first random wait between attempts; it doubles per retry
#: (up to 5 s: ``store.retry.Backoff``).
BACKOFF_OPTION = BackendOption("backoff", parse_seconds, "first backoff bound in seconds (default 0.2)")


def socket_timeout_options(read_seconds: int) -> tuple[BackendOption, BackendOption]:
    """``connect_timeout`` (default 10 s) and ``read_timeout`` of an HTTP backend."""
    return (
        BackendOption("connect_timeout", parse_seconds, "socket connect timeout in seconds (default 10)"),
        BackendOption("read_timeout", parse_seconds, f"socket read timeout in seconds (default {read_seconds})"),
    )
