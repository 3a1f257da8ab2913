"""bk repair snapshots [--forget]: rewrite snapshots that reference missing or damaged data
(restic ``repair snapshots``).

Vocabulary:
    usable blob   a blob the index holds in a pack of its kind that the store lists at its
                  indexed size. Corrupt blobs count as usable until ``bk repair packs``
                  (or ``repair index --read-all-packs``) takes them out of the index, as
                  in restic: run those first.
    lost node     a trie node that cannot be read: the entries below it are unknown, so
                  they are simply absent from the repaired snapshot. A directory whose
                  own entry was lost but whose children survive is re-created as an empty
                  directory (mode 0755) so they have a parent.
    patched file  a file whose content references unusable blobs: each missing range is
                  replaced by a hole of zeros of the same length (the index or the file
                  size tells the length; where several ranges of one file have unknown
                  lengths, the unknown bytes go in the first of them). Its recorded ctime
                  becomes 0 (ctime is never restored), so the next backup of the file
                  sees a change and reads it again instead of keeping the zeros.
                  With ``remove_damaged_files`` such files are left out instead.
    repaired      the new snapshot: the same document with the new trie root, tag
                  ``repaired`` added, and ``meta["repaired_from"]`` = the original id.

Snapshot objects the catalog still lists but the store lost (or that no longer
authenticate) are written back from the catalog's copy when that copy still hashes to
the id; otherwise they are reported as lost (and, with ``forget``, removed). Finally the
catalog is rewritten from the snapshot objects, which fixes a catalog that disagrees.

Plan (reads only), then execute: write each repaired snapshot, then (``forget``) remove
the damaged original; a new snapshot is always published before its original goes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import msgpack

from backupkit.crypto import T_META_BLOB, T_SNAPSHOT
from backupkit.entry import Keyer, display_path, parent_of
from backupkit.errors import FormatError, IntegrityError, ObjectNotFound, RepositoryError, SnapshotNotFound
from backupkit.hamt import Hamt
from backupkit.hamt_node import BRANCH
from backupkit.catalog import read_catalog
from backupkit.managers.json_fields import json_fields
from backupkit.objects.content import content_list, with_content
from backupkit.objects.entry import Entry, decode_entry, encode_entry
from backupkit.managers.repair_common import RepairManager, RepairResult, delete_objects
from backupkit.repo.pack import KIND_DATA, KIND_META, pack_name
from backupkit.snapshot import Snapshot, load_snapshot, rewrite_catalog, save_snapshot
from backupkit.tree import make_hamt

REPAIRED_TAG = "repaired"


@dataclass(frozen=True)
class RepairSnapshotsOptions:
    forget: bool = False
    #: leave damaged files out instead of keeping them with zeros for the missing ranges
    remove_damaged_files: bool = False
    #: snapshot ids to consider (all when empty)
    ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class SnapshotRepair:
    """What is wrong with one snapshot and what its repair does."""

    snapshot: str
    #: "rewrite" (trie or content damaged), "restore_object" (write the object back from
    #: the catalog), "lost" (unreadable, no usable catalog copy)
    action: str
    reason: str = ""
    lost_nodes: int = 0
    #: (path, bytes replaced by zeros) of patched files
    patched: tuple[tuple[str, int], ...] = ()
    removed: tuple[str, ...] = ()
    dirs_added: tuple[str, ...] = ()
    #: the new trie's entries (key, path, value), for execute
    entries: list = field(default_factory=list, repr=False, compare=False)
    doc: dict | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict:
        return json_fields(self, patched=[{"path": p, "zeros": n} for p, n in self.patched])


@dataclass(frozen=True)
class RepairSnapshotsPlan:
    options: RepairSnapshotsOptions
    snapshots_checked: int
    repairs: tuple[SnapshotRepair, ...]

    @property
    def nothing_to_do(self) -> bool:
        return not self.repairs

    def to_json(self) -> dict:
        return {
            "forget": self.options.forget,
            "remove_damaged_files": self.options.remove_damaged_files,
            "snapshots_checked": self.snapshots_checked,
            "repairs": [r.to_json() for r in self.repairs],
        }


@dataclass(frozen=True)
class RepairSnapshotsResult(RepairResult):
    plan: RepairSnapshotsPlan
    #: original id -> new id
    written: dict[str, str]
    objects_restored: tuple[str, ...]
    forgotten: tuple[str, ...]
    seconds: float
    dry_run: bool = False


class RepairSnapshotsManager(RepairManager):
    """Plans and executes ``repair snapshots``. The caller holds the exclusive lock."""

    def run(self, opts: RepairSnapshotsOptions | None = None, dry_run: bool = False) -> RepairSnapshotsResult:
        plan = self.plan(opts)
        if dry_run:
            return RepairSnapshotsResult(plan, {}, (), (), 0.0, dry_run=True)
        return self.execute(plan)

    # -- planning ----------------------------------------------------------------------------
    def plan(self, opts: RepairSnapshotsOptions | None = None) -> RepairSnapshotsPlan:
        opts = opts or RepairSnapshotsOptions()
        repo = self.repo
        index = repo.reload_index()
        if repo.index_failures:
            raise RepositoryError(
                f"{len(repo.index_failures)} index object(s) cannot be read; run bk repair index first"
            )
        listed = {p.hex() for p in repo.list_ids("snapshots")}
        catalog = read_catalog(repo) or {}
        ids = sorted(listed | set(catalog))
        if opts.ids:
            want = {i.lower() for i in opts.ids}
            ids = [i for i in ids if any(i.startswith(w) for w in want)]
            if not ids:
                raise SnapshotNotFound(f"no snapshot matches {', '.join(opts.ids)}")
        sizes = repo.list_packs()

        def usable(bid: bytes, kind: str) -> tuple[bool, int | None]:
            loc = index.lookup(bid)
            if loc is None:
                return False, None
            ok = loc.pack.kind == kind and sizes.get(pack_name(loc.pack.kind, loc.pack.id)) == loc.pack.size
            return ok, loc.raw_length

        self.reporter.phase("snapshots", len(ids))
        self._usable = usable
        self._hamt = Hamt(lambda nid: self._read_meta(nid), lambda _d: b"", cache_size=4096)
        self._keyer = Keyer(repo.sealer.keyed_hash)
        repairs = []
        for sid in ids:
            r = self._plan_one(sid, sid in listed, catalog.get(sid), opts)
            if r is not None:
                repairs.append(r)
            self.reporter.advance(1)
        return RepairSnapshotsPlan(opts, len(ids), tuple(repairs))

    def _read_meta(self, bid: bytes) -> bytes:
        ok, _n = self._usable(bid, KIND_META)
        if not ok:
            raise IntegrityError(f"blob {bid.hex()[:16]} is not usable")
        return self.repo.read_blob(bid, T_META_BLOB)

    def _plan_one(self, sid: str, listed: bool, cat_doc: dict | None, opts: RepairSnapshotsOptions) -> SnapshotRepair | None:
        repo = self.repo
        restore_doc = None
        try:
            if not listed:
                raise SnapshotNotFound(f"snapshot {sid[:8]} is in the catalog but its object is gone")
            snap = load_snapshot(repo, sid)
        except (SnapshotNotFound, IntegrityError, FormatError, ObjectNotFound) as e:
            reason = str(e)
            if cat_doc is None:
                return SnapshotRepair(sid, "lost", reason + "; the catalog has no copy")
            try:
                plain = msgpack.packb(cat_doc)
                if repo.sealer.blob_id(plain).hex() != sid:
                    raise FormatError("the catalog's copy does not hash to the id")
                snap = Snapshot.from_doc(sid, cat_doc)
            except (FormatError, ValueError, TypeError) as err:
                return SnapshotRepair(sid, "lost", f"{reason}; {err}")
            restore_doc = cat_doc
        r = self._examine(snap, opts)
        if r is None:
            return SnapshotRepair(sid, "restore_object", reason, doc=restore_doc) if restore_doc is not None else None
        if restore_doc is not None:
            r = SnapshotRepair(**{**r.__dict__, "reason": f"{reason}; rewritten from the catalog's copy"})
        return r

    def _examine(self, snap: Snapshot, opts: RepairSnapshotsOptions) -> SnapshotRepair | None:
        """The repair one readable snapshot needs, or None when it is intact."""
        hamt, keyer, usable = self._hamt, self._keyer, self._usable
        rows: dict[bytes, tuple[bytes, Entry, bytes]] = {}  # path -> (key, entry, raw)
        lost_nodes = 0
        # ``Hamt.visit`` checks each child against its parent (as check does), so a hostile
        # chain or a node listed twice is lost, not walked without end
        for _nid, n in hamt.visit(snap.root, set()):
            if n is None or isinstance(n, Exception):
                lost_nodes += 1  # unreadable, or listed twice: a tree never lists one node twice
                continue
            if n[0] == BRANCH:
                continue
            for k, path, raw in n[1]:
                try:
                    rows[bytes(path)] = (bytes(k), decode_entry(raw, bytes(path)), raw)
                except FormatError:
                    lost_nodes += 1  # one entry: counted like a node
        patched: list[tuple[str, int]] = []
        removed: list[str] = []
        #: path -> None (left out) or (entry, new content items)
        changed: dict[bytes, tuple[Entry, list] | None] = {}
        for path, (_k, e, _raw) in rows.items():
            if not e.is_file:
                continue
            fixed = self._fix_content(e, usable)
            if fixed is None:
                continue
            items, zeros = fixed
            if opts.remove_damaged_files:
                changed[path] = None
                removed.append(display_path(path))
            else:
                changed[path] = (e.replace(ctime=0), items)  # ctime 0: the next backup reads it again
                patched.append((display_path(path), zeros))
        # parents for every surviving entry (and the backed-up paths themselves)
        have = {p for p in rows if not (p in changed and changed[p] is None)}
        dirs_added: list[bytes] = []
        need = set(snap.paths) | {b"/"}
        for p in have:
            q = parent_of(p)
            while q and q not in have and q not in need:
                need.add(q)
                q = parent_of(q)
        for q in sorted(need):
            anc = q
            while anc:
                if anc not in have and anc not in dirs_added:
                    dirs_added.append(anc)
                anc = parent_of(anc)
        dirs_added = sorted(set(dirs_added))
        if not (lost_nodes or changed or dirs_added):
            return None
        entries: list = []
        for path, (k, e, raw) in rows.items():
            if path in changed:
                c = changed[path]
                if c is not None:
                    entries.append((k, path, c))
            else:
                entries.append((k, path, raw))
        t = snap.time_ns
        for d in dirs_added:
            entries.append((keyer.key(d), d, Entry("d", mode=0o755, uid=0, gid=0, mtime=t, ctime=t)))
        return SnapshotRepair(
            snap.id,
            "rewrite",
            "",
            lost_nodes,
            tuple(sorted(patched)),
            tuple(sorted(removed)),
            tuple(display_path(d) for d in dirs_added),
            entries,
            snap.to_doc(),
        )

    def _fix_content(self, e: Entry, usable) -> tuple[list, int] | None:
        """(new content items, bytes replaced) for a file with unusable blobs, else None."""
        segments: list[list | None] = []  # None: a content blob that cannot be read
        if e.content_blobs is not None:
            for cb in e.content_blobs:
                try:
                    segments.append(content_list(Entry("f", size=0, content_blobs=(cb,)), self._read_meta))
                except Exception:  # noqa: BLE001 - an unreadable content blob: its range is lost
                    segments.append(None)
        else:
            segments.append(list(e.content or ()))
        damaged = False
        out: list = []
        unknown: list[int] = []  # positions in ``out`` of holes of unknown length
        known = 0
        zeros = 0
        for seg in segments:
            if seg is None:
                damaged = True
                unknown.append(len(out))
                out.append(0)
                continue
            for item in seg:
                if isinstance(item, int):
                    out.append(item)
                    known += item
                    continue
                ok, n = usable(item, KIND_DATA)
                if ok:
                    out.append(item)
                    known += n or 0
                    continue
                damaged = True
                if n is None:
                    unknown.append(len(out))
                    out.append(0)
                else:
                    out.append(n)
                    known += n
                    zeros += n
        if not damaged:
            return None
        rest = max(0, int(e.size or 0) - known)
        if unknown:
            out[unknown[0]] = rest
            zeros += rest
        return [i for i in out if not (isinstance(i, int) and i == 0)], zeros

    # -- executing ---------------------------------------------------------------------------
    def execute(self, plan: RepairSnapshotsPlan) -> RepairSnapshotsResult:
        t0 = time.monotonic()
        repo = self.repo
        written: dict[str, str] = {}
        restored: list[str] = []
        forgotten: list[str] = []
        hamt = make_hamt(repo)
        self.reporter.phase("write snapshots", len(plan.repairs))
        for r in plan.repairs:
            self.lock_check()
            if r.action == "restore_object" and r.doc is not None:
                plain = msgpack.packb(r.doc)
                repo.put_object(T_SNAPSHOT, f"snapshots/{r.snapshot}", bytes.fromhex(r.snapshot), plain)
                restored.append(r.snapshot)
            elif r.action == "rewrite" and r.doc is not None:
                rows = []
                for k, path, v in r.entries:
                    if isinstance(v, Entry):  # (before tuple: an Entry is a named tuple)
                        v = encode_entry(v)
                    elif isinstance(v, tuple):  # a patched file: (entry, content items)
                        e, items = v
                        v = encode_entry(with_content(e, items, lambda data: repo.add_blob(T_META_BLOB, data)[0]))
                    rows.append((k, path, v))
                root = hamt.build(rows)
                repo.flush()
                self.lock_check()
                doc = dict(r.doc)
                doc["root"] = root
                doc["tags"] = sorted(set(doc.get("tags") or ()) | {REPAIRED_TAG})
                doc["meta"] = {**(doc.get("meta") or {}), "repaired_from": r.snapshot}
                written[r.snapshot] = save_snapshot(repo, doc).id
            self.reporter.advance(1)
        if plan.options.forget:
            doomed = [r.snapshot for r in plan.repairs if r.action in ("rewrite", "lost")]
            if doomed:
                self.lock_check()
                delete_objects(repo, [f"snapshots/{i}" for i in doomed])
                forgotten = doomed
        rewrite_catalog(repo)
        return RepairSnapshotsResult(plan, written, tuple(restored), tuple(forgotten), time.monotonic() - t0)


__all__ = [
    "REPAIRED_TAG",
    "RepairSnapshotsManager",
    "RepairSnapshotsOptions",
    "RepairSnapshotsPlan",
    "RepairSnapshotsResult",
    "SnapshotRepair",
]
