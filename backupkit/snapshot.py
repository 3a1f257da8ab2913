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

References: ``latest``, a full id, a unique prefix of at least 4 hex digits, or
``snapshot/<id>``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgpack

from backupkit.crypto import T_CATALOG, T_SNAPSHOT
from backupkit.errors import (
    AmbiguousSnapshot,
    BadArgument,
    FormatError,
    IntegrityError,
    ObjectNotFound,
    SnapshotNotFound,
    StorePermissionError,
)
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
        try:
            if d.get("v") != 1:
                raise ValueError(f"version {d.get('v')}")
            return cls(
                id=snap_id,
                root=bytes(d["root"]),
                time_ns=int(d["time"]),
                host=str(d["host"]),
                user=str(d["user"]),
                paths=tuple(bytes(p) for p in d["paths"]),
                source=dict(d.get("source") or {}),
                tags=tuple(d.get("tags") or ()),
                meta=dict(d.get("meta") or {}),
                parent=d.get("parent"),
                generator=str(d.get("generator", "")),
                summary=dict(d.get("summary") or {}),
            )
        except (ValueError, KeyError, TypeError) as e:
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
        cat = _read_catalog(repo)
        cat[snap.id] = doc
        _write_catalog(repo, cat)
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
    except (ValueError, TypeError) as e:
        raise FormatError(f"snapshot {snap_id[:8]} is malformed: {e}") from None
    return Snapshot.from_doc(snap_id, doc)


def _read_catalog(repo: Repository) -> dict[str, dict]:
    try:
        plain = repo.get_object(T_CATALOG, "catalog", b"catalog")
    except (ObjectNotFound, IntegrityError, FormatError):
        return {}
    try:
        doc = msgpack.unpackb(plain)
        return dict(doc["snapshots"]) if doc.get("v") == 1 else {}
    except (ValueError, KeyError, TypeError):
        return {}


def _write_catalog(repo: Repository, cat: dict[str, dict]) -> None:
    repo.put_object(T_CATALOG, "catalog", b"catalog", msgpack.packb({"v": 1, "snapshots": cat}))


def list_snapshots(repo: Repository, repair_catalog: bool = True) -> list[Snapshot]:
    """Every snapshot, oldest first: one LIST plus the catalog, more only if they disagree."""
    listed = {bytes.hex(i) for i in repo.list_ids("snapshots")}
    cat = _read_catalog(repo)
    if set(cat) != listed:
        missing = sorted(listed - set(cat))
        fresh = {k: v for k, v in cat.items() if k in listed}
        with ThreadPoolExecutor(max_workers=repo.connections) as pool:
            for snap in pool.map(lambda i: load_snapshot(repo, i), missing):
                fresh[snap.id] = snap.to_doc()
        cat = fresh
        if repair_catalog:
            with _catalog_lock:
                try:
                    _write_catalog(repo, cat)
                except StorePermissionError:
                    pass  # a read-only repository: the catalog only saves reading snapshot objects
    snaps = [Snapshot.from_doc(k, v) for k, v in cat.items()]
    snaps.sort(key=lambda s: (s.time_ns, s.id))
    return snaps


def remove_snapshots(repo: Repository, ids: Iterable[str]) -> None:
    """Delete snapshot objects, then drop them from the catalog."""
    ids = list(ids)
    for i in ids:
        try:
            repo.store.delete(f"snapshots/{i}")
        except ObjectNotFound:
            pass
    with _catalog_lock:
        cat = _read_catalog(repo)
        for i in ids:
            cat.pop(i, None)
        _write_catalog(repo, cat)
    list_snapshots(repo)  # reconcile with the listing


def filter_snapshots(
    snaps: Iterable[Snapshot], hosts: Iterable[str] = (), tags: Iterable[str] = (), paths: Iterable[str] = ()
) -> list[Snapshot]:
    """restic's filters: any of the hosts; every tag of one --tag value "a,b" (values OR'ed);
    all of the given paths."""
    hosts = set(hosts)
    tag_sets = [set(t.split(",")) - {""} for t in tags]
    want_paths = {p.rstrip("/") or "/" for p in paths}
    out = []
    for s in snaps:
        if hosts and s.host not in hosts:
            continue
        if tag_sets and not any(ts <= set(s.tags) for ts in tag_sets):
            continue
        if want_paths and not want_paths <= set(s.str_paths):
            continue
        out.append(s)
    return out


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


def find_snapshot(repo: Repository, ref: str, hosts=(), tags=(), paths=()) -> Snapshot:
    return resolve_ref(filter_snapshots(list_snapshots(repo), hosts, tags, paths), ref)
