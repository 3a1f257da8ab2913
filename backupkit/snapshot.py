"""Snapshot objects, the snapshot catalog, and snapshot references.

A snapshot object ``snapshots/<id>`` is sealed msgpack::

    {"v": 1, "root": trie root id, "time": ns since epoch (UTC), "host", "user",
     "paths": [bytes], "source": {"type": "local"|"stdin", "account", "path"},
     "tags": [str], "meta": {str: str}, "parent": hex id | None, "generator": str,
     "summary": {counts and bytes}}

Its id is ``HMAC(id_key, plaintext)``. The catalog (``catalog``, one sealed object) maps
every snapshot id to that same dict, so listing snapshots costs one LIST and one GET. It is
derived data: when its ids differ from the listed ``snapshots/``, the missing snapshot
objects are read and the catalog is rewritten. A replayed old catalog is caught the same
way, since the listing is the source of truth.

``filter_snapshots`` is the one snapshot filter of every command.

References: ``latest``, a full id, a unique prefix of at least 4 hex digits, or
``snapshot/<id>``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import msgpack

from backupkit.catalog import load_catalog, read_catalog, write_catalog
from backupkit.crypto import T_SNAPSHOT
from backupkit.errors import (
    AmbiguousSnapshot,
    BadArgument,
    FormatError,
    IntegrityError,
    ObjectNotFound,
    SnapshotNotFound,
    StorePermissionError,
)
from backupkit.policy import GroupKey, SnapshotInfo, group_snapshots
from backupkit.policy import filter_snapshots as policy_filter
from backupkit.repo.repository import Repository


@dataclass(frozen=True)
class Snapshot:
    """One snapshot, as stored (plus its id)."""

    id: str
    root: bytes
    time_ns: int
    host: str
    user: str
    paths: tuple[bytes, ...]
    source: dict = field(default_factory=dict)
    tags: tuple[str, ...] = ()
    meta: dict = field(default_factory=dict)
    parent: str | None = None
    generator: str = ""
    summary: dict = field(default_factory=dict)

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.time_ns / 1e9, tz=UTC)

    @property
    def short_id(self) -> str:
        return self.id[:8]

    @property
    def str_paths(self) -> tuple[str, ...]:
        return tuple(p.decode("utf-8", "surrogateescape") for p in self.paths)

    def to_doc(self) -> dict:
        return {
            "v": 1,
            "root": self.root,
            "time": self.time_ns,
            "host": self.host,
            "user": self.user,
            "paths": list(self.paths),
            "source": self.source,
            "tags": list(self.tags),
            "meta": self.meta,
            "parent": self.parent,
            "generator": self.generator,
            "summary": self.summary,
        }

    @classmethod
    def from_doc(cls, snap_id: str, d: dict) -> Snapshot:
        """FormatError unless every field has its type (a hostile document must not
        make ``bytes(10**12)`` of an int, nor a str of a nested structure)."""
        try:
            if type(d) is not dict or d.get("v") != 1:
                raise ValueError(f"version {d.get('v') if type(d) is dict else None}")
            root, paths, tags, parent = d["root"], d["paths"], d.get("tags") or [], d.get("parent")
            if type(root) is not bytes or len(root) != 32 or type(d["time"]) is not int:
                raise ValueError("root or time of the wrong type")
            if type(paths) is not list or not all(type(p) is bytes for p in paths):
                raise ValueError("paths are not a list of byte strings")
            if type(tags) is not list or not all(type(t) is str for t in tags):
                raise ValueError("tags are not a list of strings")
            if parent is not None and type(parent) is not str:
                raise ValueError("parent is not an id")
            texts = (d["host"], d["user"], d.get("generator", ""))
            maps = (d.get("source") or {}, d.get("meta") or {}, d.get("summary") or {})
            if not all(type(t) is str for t in texts) or not all(type(m) is dict for m in maps):
                raise ValueError("a field is of the wrong type")
            return cls(
                id=snap_id,
                root=root,
                time_ns=d["time"],
                host=texts[0],
                user=texts[1],
                paths=tuple(paths),
                source=maps[0],
                tags=tuple(tags),
                meta=maps[1],
                parent=parent,
                generator=texts[2],
                summary=maps[2],
            )
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise FormatError(f"snapshot {snap_id[:8]} is malformed: {e}") from None

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "short_id": self.short_id,
            "time": self.time.isoformat(),
            "host": self.host,
            "user": self.user,
            "paths": list(self.str_paths),
            "tags": list(self.tags),
            "source": self.source,
            "meta": self.meta,
            "parent": self.parent,
            "root": self.root.hex(),
            "generator": self.generator,
            "summary": self.summary,
        }


_catalog_lock = threading.Lock()


def save_snapshot(repo: Repository, doc: dict) -> Snapshot:
    """Write a snapshot object, then add it to the catalog. Returns the snapshot."""
    plain = msgpack.packb(doc)
    sid = repo.sealer.blob_id(plain)
    repo.put_object(T_SNAPSHOT, f"snapshots/{sid.hex()}", sid, plain)
    snap = Snapshot.from_doc(sid.hex(), doc)
    with _catalog_lock:
        cat = read_catalog(repo) or {}
        cat[snap.id] = doc
        write_catalog(repo, cat)
    return snap


def load_snapshot(repo: Repository, snap_id: str) -> Snapshot:
    sid = bytes.fromhex(snap_id)
    try:
        plain = repo.get_object(T_SNAPSHOT, f"snapshots/{snap_id}", sid)
    except ObjectNotFound:
        raise SnapshotNotFound(f"snapshot {snap_id[:8]} not found") from None
    if repo.sealer.blob_id(plain) != sid:
        raise IntegrityError(f"snapshot {snap_id[:8]}: content does not match its id")
    try:
        doc = msgpack.unpackb(plain)
    except (ValueError, TypeError, RecursionError) as e:
        raise FormatError(f"snapshot {snap_id[:8]} is malformed: {e}") from None
    if not isinstance(doc, dict):
        raise FormatError(f"snapshot {snap_id[:8]} is malformed: not a map")
    return Snapshot.from_doc(snap_id, doc)


def _load_or_reason(repo: Repository, snap_id: str) -> Snapshot | str:
    try:
        return load_snapshot(repo, snap_id)
    except (IntegrityError, FormatError, SnapshotNotFound) as e:
        return str(e)


def list_snapshots(repo: Repository, repair_catalog: bool = True) -> list[Snapshot]:
    """Every readable snapshot, oldest first: one LIST plus the catalog, more only if
    they disagree.

    Snapshot objects the catalog lacks are read and added (the catalog is rewritten
    when ``repair_catalog``); an unreadable catalog is rebuilt from the snapshot objects.
    What cannot be used is left out with a warning on ``repo`` (never failing the
    listing): snapshot objects that cannot be read, and catalog entries whose object
    is missing (kept in the catalog, so ``repair snapshots`` can write them again).
    """
    listed = {bytes.hex(i) for i in repo.list_ids("snapshots")}
    got = load_catalog(repo)
    cat = dict(got.entries or {})
    if got.problem is not None:
        repo.warn(f"{got.problem}; rebuilt it from the snapshot objects")
    for sid in sorted(set(cat) - listed):
        repo.warn(f"snapshot {sid[:8]} is in the catalog but its object is missing (run bk check)")
    snaps: list[Snapshot] = []
    to_read = sorted(listed - set(cat))
    for sid in sorted(listed & set(cat)):
        try:
            snaps.append(Snapshot.from_doc(sid, cat[sid]))
        except FormatError:
            to_read.append(sid)  # a bad catalog entry: the object decides
    added: dict[str, dict] = {}
    if to_read:
        with ThreadPoolExecutor(max_workers=repo.connections) as pool:
            for sid, r in zip(to_read, pool.map(lambda i: _load_or_reason(repo, i), to_read)):
                if isinstance(r, str):
                    repo.warn(f"{r}; it is left out (run bk check)")
                    continue
                snaps.append(r)
                added[sid] = r.to_doc()
    if repair_catalog and (added or (got.entries is None and listed)):
        with _catalog_lock:
            try:
                write_catalog(repo, {**cat, **added})
            except StorePermissionError:
                pass  # a read-only repository: the catalog only saves reading snapshot objects
    snaps.sort(key=lambda s: (s.time_ns, s.id))
    return snaps


def lost_snapshots(repo: Repository) -> list[Snapshot]:
    """Snapshots the catalog names whose objects are missing from the store, as the
    catalog remembers them (what ``repair snapshots`` can write back, or ``remove_snapshots``
    drops); entries that do not parse are left out."""
    cat = read_catalog(repo) or {}
    listed = {bytes.hex(i) for i in repo.list_ids("snapshots")}
    out = []
    for sid in sorted(set(cat) - listed):
        try:
            out.append(Snapshot.from_doc(sid, cat[sid]))
        except FormatError:
            continue
    out.sort(key=lambda s: (s.time_ns, s.id))
    return out


def remove_snapshots(repo: Repository, ids: Iterable[str]) -> None:
    """Drop snapshots from the catalog, delete their objects, and drop them from the
    catalog once more (a concurrent listing may have added them back meanwhile).

    The catalog goes first so that a catalog entry without its object always means a
    lost snapshot object (``check`` reports it); an interrupted removal only leaves
    objects the next listing adds back (forget again).
    """
    ids = list(ids)
    _drop_from_catalog(repo, ids)
    repo.delete_objects(f"snapshots/{i}" for i in ids)
    _drop_from_catalog(repo, ids)


def _drop_from_catalog(repo: Repository, ids: list[str]) -> None:
    with _catalog_lock:
        cat = read_catalog(repo)
        if cat is None or not any(i in cat for i in ids):
            return
        for i in ids:
            cat.pop(i, None)
        write_catalog(repo, cat)


def snapshot_info(s: Snapshot) -> SnapshotInfo:
    """What the policy and the snapshot filter see of a snapshot; calendar buckets use
    this machine's local time."""
    return SnapshotInfo(id=s.id, time=s.time.astimezone(), host=s.host, paths=s.str_paths, tags=s.tags)


def filter_snapshots(
    snaps: Iterable[Snapshot], hosts: Iterable[str] = (), tags: Iterable[str] = (), paths: Iterable[str] = ()
) -> list[Snapshot]:
    """The snapshots that ``--host``, ``--tag`` and ``--path`` select, in their order.

    Every command filters through here and thus through ``policy.filter_snapshots``,
    the one implementation of restic's rules: any of the hosts; every tag of one
    ``--tag`` value ``"a, b"`` (whitespace around a tag stripped; values OR'ed; ``''``
    selects untagged snapshots); all of the paths.
    """
    snaps = list(snaps)
    chosen = {i.id for i in policy_filter([snapshot_info(s) for s in snaps], hosts, tags, paths)}
    return [s for s in snaps if s.id in chosen]


def time_ns_of(t: datetime) -> int:
    """``t`` as a snapshot's ``time``: nanoseconds since the epoch, exact to the
    microsecond a datetime holds (a naive ``t`` is local time)."""
    aware = t if t.tzinfo is not None else t.astimezone()
    return (aware - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(microseconds=1) * 1000


def latest_per_source(snaps: Iterable[Snapshot], n: int) -> list[Snapshot]:
    """The ``n`` newest snapshots of each host and set of paths (restic's ``snapshots
    --latest N``: the groups of ``group_by(..., ("host", "paths"))``), oldest first."""
    if n < 1:
        raise BadArgument(f"--latest must be at least 1, not {n}")
    by_time = sorted(snaps, key=lambda s: (s.time_ns, s.id))
    keep = {s.id for _key, members in group_by(by_time, ("host", "paths")) for s in members[-n:]}
    return [s for s in by_time if s.id in keep]


def group_by(snaps: Iterable[Snapshot], fields: Iterable[str]) -> list[tuple[GroupKey, list[Snapshot]]]:
    """Snapshots in groups by ``host``, ``paths`` and/or ``tags`` (``--group-by``, as
    ``forget`` groups them), groups in key order, each in the order given."""
    snaps = list(snaps)
    by_id = {s.id: s for s in snaps}
    groups = group_snapshots([snapshot_info(s) for s in snaps], fields)
    return [(key, [by_id[i.id] for i in infos]) for key, infos in groups.items()]


def resolve_ref(snaps: list[Snapshot], ref: str) -> Snapshot:
    """Resolve ``latest``, an id, a unique prefix (>= 4 hex) or ``snapshot/<id>``."""
    if ref.startswith("snapshot/"):
        ref = ref[len("snapshot/") :]
    if ref == "latest":
        if not snaps:
            raise SnapshotNotFound("no snapshot found (repository is empty or nothing matches the filters)")
        return max(snaps, key=lambda s: (s.time_ns, s.id))
    r = ref.lower()
    if len(r) < 4 or any(c not in "0123456789abcdef" for c in r):
        raise BadArgument(f"invalid snapshot reference {ref!r}: use latest, an id, or a prefix of at least 4 hex digits")
    matches = [s for s in snaps if s.id.startswith(r)]
    if not matches:
        raise SnapshotNotFound(f"no snapshot matches {ref!r}")
    if len(matches) > 1:
        raise AmbiguousSnapshot(f"{ref!r} matches {len(matches)} snapshots; give more digits")
    return matches[0]


def select_snapshot(snaps: list[Snapshot], ref: str, hosts=(), tags=(), paths=()) -> Snapshot:
    """The snapshot ``ref`` names (restic's rule, for every command): ``latest`` is the
    newest of those the filters select; an id or a prefix names its snapshot whatever
    the filters say."""
    if ref.removeprefix("snapshot/") == "latest":
        snaps = filter_snapshots(snaps, hosts, tags, paths)
    return resolve_ref(snaps, ref)


def raise_if_unreadable(repo: Repository, ref: str, readable: Iterable[Snapshot]) -> None:
    """When ``ref`` (not found among ``readable``) names a snapshot object that cannot be
    read, raise that object's error: "damaged" says more than "not found"."""
    r = ref.removeprefix("snapshot/").lower()
    if r == "latest":
        return
    ids = {s.id for s in readable}
    for sid in sorted(i.hex() for i in repo.list_ids("snapshots")):
        if sid.startswith(r) and sid not in ids:
            load_snapshot(repo, sid)  # raises why it cannot be read


def find_snapshot(repo: Repository, ref: str, hosts=(), tags=(), paths=()) -> Snapshot:
    """``select_snapshot`` among every readable snapshot of ``repo``."""
    snaps = list_snapshots(repo)
    try:
        return select_snapshot(snaps, ref, hosts, tags, paths)
    except SnapshotNotFound:
        raise_if_unreadable(repo, ref, snaps)
        raise


def rewrite_catalog(repo: Repository) -> list[str]:
    """Rewrite the catalog from the snapshot objects (``bk repair snapshots``): fixes a
    catalog that disagrees with them. Returns the ids of the objects that could not be
    read; they are left out."""
    cat: dict[str, dict] = {}
    bad: list[str] = []
    for sid in sorted(i.hex() for i in repo.list_ids("snapshots")):
        try:
            cat[sid] = load_snapshot(repo, sid).to_doc()
        except (SnapshotNotFound, IntegrityError, FormatError):
            bad.append(sid)
    with _catalog_lock:
        write_catalog(repo, cat)
    return bad
