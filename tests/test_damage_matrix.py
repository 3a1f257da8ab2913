"""The damage matrix (issue 9): every object kind x every damage, and what follows.

For each cell, on a copy of one small repository (three snapshots, a branch node in the
trie, a file long enough for a content blob, two key files with the same password):

    truth      which (snapshot, path) pairs the damage touches, worked out independently
               of check: every blob of the undamaged index is read back from the damaged
               store and verified; a file is touched when one of its blobs (or content
               blobs) fails, a snapshot with ``None`` for the path when one of its trie
               nodes (or the snapshot object) fails.
    detect     ``check --read-data`` names exactly the truth: precision and recall 1.
    restore    every snapshot still restores every file the damage does not touch,
               byte-identical.
    repair     the steps ``remedies(findings)`` names (docs/recovery.md), run in order,
               plus one backup of the unchanged source, leave ``check --read-data``
               without errors and a latest snapshot identical to the source.

The default run covers a sample (one cell per damage, spread over the kinds); ``-m
slow`` runs every cell. Cells today's code fails would be xfail with the reason (see
``KNOWN``; none today).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import msgpack
import pytest

from backupkit.crypto import T_META_BLOB, T_DATA_BLOB
from backupkit.objects.entry import decode_entry
from backupkit.errors import BackupkitError
from backupkit.managers.backup import BackupManager, BackupOptions
from backupkit.managers.check import CheckManager, CheckOptions
from backupkit.managers.prune import PruneManager
from backupkit.managers.remedies import (
    BACKUP, CONFIG, INDEX, KEY_REMOVE, LISTING, PACKS, PRUNE, SNAPSHOTS, remedies,
)
from backupkit.managers.repair_config import RepairConfigManager
from backupkit.errors import ConfigDamaged
from backupkit.repo.repository import Repository
from backupkit.managers.repair_index import RepairIndexManager
from backupkit.managers.repair_packs import RepairPacksManager
from backupkit.managers.repair_snapshots import RepairSnapshotsManager, RepairSnapshotsOptions
from backupkit.managers.restore import RestoreManager, RestoreOptions
from backupkit.repo.keymanager import KeyManager
from backupkit.repo.indexload import load_index
from tests.support.kit import INSECURE_TEST_KDF
from backupkit.repo.lock import LockManager
from backupkit.repo.pack import decode_payload, pack_name
from backupkit.snapshot import list_snapshots, load_snapshot
from backupkit.store.local import LocalObjectStore
from tests.managers.lifecycle_util import PASSWORD, day, init_repo, open_repo, random_bytes, tree_bytes, write_files

KINDS = ("config", "key", "index", "data pack", "meta pack", "snapshot", "catalog", "lock")
DAMAGES = ("flip", "truncate", "delete", "replace")
SAMPLE = {("data pack", "flip"), ("meta pack", "truncate"), ("index", "delete"), ("snapshot", "replace"),
          ("catalog", "flip"), ("key", "flip"), ("lock", "replace"), ("data pack", "delete")}

#: (kind, damage) -> reason, for cells today's code does not pass (part: "detect", "repair")
KNOWN: dict[tuple[str, str, str], str] = {}


def cells(part: str):
    """Parameters for one part ("detect", "restore", "repair") of every cell: slow
    outside the sample, xfail where KNOWN (strict: an XPASS fails, so a fix that lands
    takes its cell out of KNOWN)."""
    out = []
    for k in KINDS:
        for d in DAMAGES:
            marks = [] if (k, d) in SAMPLE else [pytest.mark.slow]
            why = KNOWN.get((k, d, part))
            if why:
                marks.append(pytest.mark.xfail(reason=why, strict=True))
            out.append(pytest.param(k, d, marks=marks, id=f"{k.replace(' ', '_')}-{d}"))
    return out


#: config damage repaired from the local cache's copy (the others: rebuilt from the data,
#: with only the repository cache left under the cache root)
CONFIG_FROM_CACHE = ("flip", "replace")


@dataclass
class Base:
    root: Path      # the directory holding repo/ and src/
    snaps: list     # Snapshot values, oldest first
    contents: dict  # snapshot id -> {relative path: bytes} of the source at backup time
    src: Path


def _backup(repo, src, n, force=False):
    res = BackupManager(repo).run(BackupOptions(paths=(str(src),), time=day(n), host="h1", force=force))
    assert res.snapshot is not None and not res.errors, res.errors
    return res.snapshot


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Base:
    root = tmp_path_factory.mktemp("matrix")
    src = root / "src"
    files = {
        "shared.bin": random_bytes(150_000, 1),
        "only12.bin": random_bytes(90_000, 2),
        "long.bin": random_bytes(2_400_000, 4),  # > 64 chunks: a content blob
        "sub/x.txt": b"x" * 10,
        "sub/deep/y.txt": b"y" * 20,
        "zeros.bin": bytes(300_000),  # cut at the chunker's maximum: bk repair config can tell it
    }
    files.update({f"many/f{i:03}.txt": f"file {i}\n".encode() for i in range(300)})  # > 256: a branch node
    write_files(src, files)
    store = LocalObjectStore(root / "repo", fsync=False)
    repo = init_repo(store)
    KeyManager(repo).add(PASSWORD, INSECURE_TEST_KDF)  # a second key file, same password
    snaps, contents = [], {}
    s = _backup(repo, src, 0)
    snaps.append(s), contents.setdefault(s.id, tree_bytes(src))
    write_files(src, {"sub/x.txt": b"changed", "new2.txt": b"2"})
    s = _backup(repo, src, 1)
    snaps.append(s), contents.setdefault(s.id, tree_bytes(src))
    (src / "only12.bin").unlink()
    write_files(src, {"only3.bin": random_bytes(80_000, 3)})
    (root / "catalog.2").write_bytes(store.get("catalog"))  # an older catalog, for "replace"
    s = _backup(repo, src, 2)
    snaps.append(s), contents.setdefault(s.id, tree_bytes(src))
    return Base(root, snaps, contents, src)


# -- damage ---------------------------------------------------------------------------------

def _target(kind: str, store, repo, b: Base) -> tuple[str, str | None]:
    """(object to damage, another object of the same kind)."""
    s3 = b.snaps[-1]
    if kind == "config":
        other = b.root / "other"
        if not other.exists():
            init_repo(LocalObjectStore(other, fsync=False))
        return "config", str(other / "config")
    if kind == "key":
        a, c = sorted(o.name for o in store.list("keys/"))
        return (a, c) if a.split("/")[1] == repo.key_id else (c, a)
    if kind == "index":
        objs = sorted(store.list("index/"), key=lambda o: o.mtime)
        return objs[-1].name, objs[0].name
    if kind in ("data pack", "meta pack"):
        from backupkit.tree import SnapshotTree

        if kind == "data pack":
            e = SnapshotTree(repo, s3.root).require(os.fsencode(b.src / "shared.bin"))
            loc = repo.index.lookup(next(i for i in e.content if isinstance(i, bytes)))
        else:
            loc = repo.index.lookup(s3.root)
        name = pack_name(loc.pack.kind, loc.pack.id)
        others = sorted(o.name for o in store.list(loc.pack.kind + "/") if o.name != name)
        return name, others[0]
    if kind == "snapshot":
        return f"snapshots/{b.snaps[0].id}", f"snapshots/{b.snaps[1].id}"
    if kind == "catalog":
        return "catalog", str(b.root / "catalog.2")
    if kind == "lock":
        lm = LockManager(repo, refresh=0)
        lm.acquire(False, "backup")  # left behind, as by a killed process
        LockManager(repo, refresh=0).acquire(False, "backup")
        a, c = sorted(o.name for o in store.list("locks/") if not o.name.endswith("sentinel"))[:2]
        return a, c
    raise AssertionError(kind)


def _damage(store, name: str, damage: str, other: str | None, repo) -> None:
    path = Path(store.root) / name
    data = path.read_bytes()
    if damage == "flip":
        if name.startswith(("data/", "meta/")):
            # a byte inside a blob (the middle of the pack's blob area), not padding
            _kind, pid = name.split("/")[0], bytes.fromhex(name.rsplit("/", 1)[1])
            locs = sorted((loc for loc in repo.index.blobs() if loc.pack.id == pid), key=lambda l: l.offset)
            loc = locs[len(locs) // 2]
            off = loc.offset + loc.length // 2
        else:
            off = len(data) // 2
        path.write_bytes(data[:off] + bytes([data[off] ^ 0x55]) + data[off + 1 :])
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "delete":
        path.unlink()
    else:
        src = Path(other) if other.startswith("/") else Path(store.root) / other
        path.write_bytes(src.read_bytes())


# -- truth ----------------------------------------------------------------------------------

#: snapshot id -> {directory path: the trie nodes from the root to the leaf holding its
#: entry}: a restore walks directories, so a file whose ancestor's entry is lost cannot
#: be reached (bk repair snapshots re-creates such directories)
_DIR_CHAINS: dict[str, dict[str, tuple]] = {}


def _oracle(repo, b: Base):
    """Before damage: every blob's location, and per snapshot its nodes and, for each
    file, the chain of trie nodes from the root to its leaf, its content blobs and its
    data blobs."""
    index = {loc.blob_id: loc for loc in repo.index.blobs()}
    trees = {}
    dir_chains = _DIR_CHAINS
    for s in b.snaps:
        nodes, files, dirs = [], {}, {}
        stack = [(s.root, ())]
        while stack:
            nid, chain = stack.pop()
            chain = (*chain, nid)
            nodes.append(nid)
            n = msgpack.unpackb(repo.read_blob(nid, T_META_BLOB))
            if n[0] == 1:
                stack.extend((c, chain) for _s, c, _n in n[4])
                continue
            for _k, p, raw in n[1]:
                e = decode_entry(raw)
                if e.is_dir:
                    dirs[os.fsdecode(p)] = chain
                if not e.is_file:
                    continue
                cbs = list(e.content_blobs or ())
                items = [i for cb in cbs for i in msgpack.unpackb(repo.read_blob(cb, T_META_BLOB))] if cbs else list(e.content or ())
                files[os.fsdecode(p)] = (chain, cbs, [i for i in items if isinstance(i, bytes)])
        trees[s.id] = (nodes, files)
        dir_chains[s.id] = dirs
    return index, trees


def _truth(store, repo_keys_sealer, index, trees, b: Base, kind: str, name: str) -> tuple[set, set]:
    """Blobs that do not verify where they were stored, or that no readable index object
    still names (until ``repair index``), and the pairs they touch."""
    bad = set()
    try:
        surviving = load_index(open_repo(store), tolerant=True).index
    except BackupkitError:
        surviving = None  # the repository does not open (config damage)
    for bid, loc in index.items():
        if surviving is not None and bid not in surviving:
            bad.add(bid)
            continue
        pname = pack_name(loc.pack.kind, loc.pack.id)
        t = T_META_BLOB if loc.pack.kind == "meta" else T_DATA_BLOB
        try:
            sealed = store.get_range(pname, loc.offset, loc.length)
            plain = decode_payload(repo_keys_sealer.open(t, bid, sealed, "x"), "x")
            assert repo_keys_sealer.blob_id(plain) == bid
        except (BackupkitError, AssertionError):
            bad.add(bid)
    pairs = set()
    for s in b.snaps:
        nodes, files = trees[s.id]
        if kind == "snapshot" and name == f"snapshots/{s.id}":
            pairs.add((s.id, None))
            continue
        lost_nodes = {n for n in nodes if n in bad}
        if lost_nodes:
            pairs.add((s.id, None))
        for path, (chain, cbs, items) in files.items():
            if any(n in lost_nodes for n in chain):
                continue  # below a lost node: check cannot name it, restore cannot see it
            if any(c in bad for c in cbs) or any(i in bad for i in items):
                pairs.add((s.id, path))
    return pairs, bad


# -- running the steps ----------------------------------------------------------------------

def _run_steps(store, b: Base, steps: list[str], cache: Path | None = None) -> None:
    backed_up = False
    for step in steps:
        if step == CONFIG:
            mgr = RepairConfigManager(store, PASSWORD, cache_root=cache if cache is not None else False)
            try:
                assert mgr.run().written
            finally:
                mgr.close()
            continue
        repo = open_repo(store)
        if step == INDEX:
            RepairIndexManager(repo).run()
        elif step.startswith(PACKS.split(" {")[0]):
            RepairPacksManager(repo).run(step.split()[3:])
        elif step == BACKUP:
            _backup(repo, b.src, 3)
            backed_up = True
        elif step == SNAPSHOTS:
            RepairSnapshotsManager(repo).run(RepairSnapshotsOptions(forget=True))
        elif step.startswith("bk repair snapshots "):
            RepairSnapshotsManager(repo).run(RepairSnapshotsOptions(ids=tuple(step.split()[3:])))
        elif step == LISTING:
            list_snapshots(repo)
        elif step == PRUNE:
            PruneManager(repo).run()
        elif step.startswith(KEY_REMOVE.split(" {")[0]):
            KeyManager(repo).remove(step.split()[3])
        else:
            raise AssertionError(f"unknown step {step!r}")
    if not backed_up:
        _backup(open_repo(store), b.src, 3)


def _restore_check(store, b: Base, trees, bad: set, out: Path, repo=None) -> list[str]:
    """Restore every readable snapshot; return the files that neither a bad blob nor a
    bad trie node above them touches but that did not come back byte-identical."""
    repo = repo or open_repo(store)
    problems = []
    for s in b.snaps:
        try:
            snap = load_snapshot(repo, s.id)
        except BackupkitError:
            continue  # the snapshot object itself is the damage
        dest = out / s.id[:8]
        try:
            RestoreManager(repo).restore(snap, RestoreOptions(target=str(dest), connections=2))
        except BackupkitError:
            pass
        top = dest / b.src.relative_to("/")
        got = tree_bytes(top) if top.exists() else {}
        _nodes, files = trees[s.id]
        dirs = _DIR_CHAINS[s.id]
        for path, (chain, cbs, items) in files.items():
            above = [n for d, c in dirs.items() if path.startswith(d.rstrip("/") + "/") for n in c]
            if bad & {*chain, *cbs, *items, *above}:
                continue
            rel = os.path.relpath(path, b.src)
            if got.get(rel) != b.contents[s.id][rel]:
                problems.append(f"{s.id[:8]} {rel}")
    return problems


def _assert_exactly_the_lost_pairs_differ(repo, b: Base, trees, out: Path) -> None:
    """After repair and one backup: each original snapshot (or its repaired copy)
    restores every file byte-identical except exactly those whose blobs, or a trie node
    above them, the repository no longer has."""
    ok: dict[bytes, bool] = {}

    def readable(bid: bytes) -> bool:
        if bid not in ok:
            try:
                repo.read_blob(bid)
                ok[bid] = True
            except BackupkitError:
                ok[bid] = False
        return ok[bid]

    snaps = list_snapshots(repo)
    by_id = {s.id: s for s in snaps}
    by_origin = {s.meta.get("repaired_from"): s for s in snaps if s.meta.get("repaired_from")}
    for s in b.snaps:
        now = by_id.get(s.id) or by_origin.get(s.id)
        assert now is not None, f"snapshot {s.id[:8]} is gone without a repaired copy"
        _nodes, files = trees[s.id]
        expected = set()
        for path, (chain, cbs, items) in files.items():
            if not all(readable(n) for n in chain) or not all(readable(c) for c in cbs) or not all(readable(i) for i in items):
                expected.add(os.path.relpath(path, b.src))
        dest = out / s.id[:8]
        res = RestoreManager(repo).restore(now, RestoreOptions(target=str(dest), connections=2))
        assert not res.errors, res.errors
        got = tree_bytes(dest / b.src.relative_to("/"))
        differ = {rel for rel, data in b.contents[s.id].items() if got.get(rel) != data}
        assert differ == expected, (s.id[:8], differ, expected)


# -- the matrix -----------------------------------------------------------------------------

def _cell(base: Base, tmp_path: Path, kind: str, damage: str, oracle: bool = False):
    root = tmp_path / "cell"
    shutil.copytree(base.root / "repo", root / "repo")
    store = LocalObjectStore(root / "repo", fsync=False)
    repo = open_repo(store)
    if kind == "config":  # a machine that used the repository: its cache holds the config
        cached = Repository.open(store, PASSWORD, cache_root=tmp_path / "cache")
        cached.index  # noqa: B018 - caches the index objects under the repository id
        cached.close()
    index, trees = _oracle(repo, base)
    name, other = _target(kind, store, repo, base)
    _damage(store, name, damage, other, repo)
    truth, bad = _truth(store, repo.sealer, index, trees, base, kind, name)
    return (store, repo, truth, name, trees, bad) if oracle else (store, repo, truth, name)


@pytest.mark.parametrize("kind,damage", cells("detect"))
def test_check_names_exactly_what_the_damage_touches(base, tmp_path, kind, damage):
    store, _repo, truth, name = _cell(base, tmp_path, kind, damage)
    if kind == "config":
        # without a cache the repository cannot be opened: one line naming the damage and
        # the repair; with the cache that holds its copy, check names the damage
        with pytest.raises(ConfigDamaged, match=r"^config: .*; run bk repair config$"):
            open_repo(store)
        cached = Repository.open(store, PASSWORD, cache_root=tmp_path / "cache")
        res = CheckManager(cached).run(CheckOptions(read_data=True))
        assert [f.kind for f in res.errors] == ["config_unreadable"], res.errors
        assert remedies(res.findings) == [CONFIG]
        return
    try:
        res = CheckManager(open_repo(store)).run(CheckOptions(read_data=True))
    except BackupkitError as e:
        raise AssertionError(f"{kind}/{damage}: {e}") from None
    found = {(s, p) for f in res.errors for s, p in f.paths}
    assert found == truth, (res.errors, truth)
    if truth:
        assert not res.ok, "damage that touches data must be an error"
    # the damaged object itself is named (a deleted key file or index object leaves no
    # trace of its name; locks are not check's business)
    if kind != "lock" and not (kind in ("key", "index") and damage == "delete"):
        assert any(name in f"{f.object} {f.message}" for f in res.findings), (name, res.findings)


@pytest.mark.parametrize("kind,damage", cells("restore"))
def test_restore_restores_everything_the_damage_does_not_touch(base, tmp_path, kind, damage):
    store, _repo, truth, name, trees, bad = _cell(base, tmp_path, kind, damage, oracle=True)
    repo = None
    if kind == "config":  # opened with the cached copy of the config (elsewhere: ConfigDamaged)
        repo = Repository.open(store, PASSWORD, cache_root=tmp_path / "cache")
    assert _restore_check(store, base, trees, bad, tmp_path / "out", repo) == []


@pytest.mark.parametrize("kind,damage", cells("repair"))
def test_repair_and_one_backup_bring_check_back_to_clean(base, tmp_path, kind, damage):
    store, _repo, truth, name, trees, _bad = _cell(base, tmp_path, kind, damage, oracle=True)
    cache = None
    if kind == "config":
        cache = tmp_path / "cache"
        res = CheckManager(Repository.open(store, PASSWORD, cache_root=cache)).run(CheckOptions(read_data=True))
        if damage not in CONFIG_FROM_CACHE:
            shutil.rmtree(cache / "locations")  # rebuilt: only the repository cache is left
    else:
        res = CheckManager(open_repo(store)).run(CheckOptions(read_data=True))
    steps = remedies(res.findings)
    _run_steps(store, base, steps, cache)
    after = CheckManager(open_repo(store)).run(CheckOptions(read_data=True))
    assert after.ok, (steps, after.errors)
    repo = open_repo(store)
    if kind == "config":
        was, now = _repo.config, repo.config
        assert (now.repo_id, now.chunker_min, now.chunker_avg, now.chunker_max) == (
            was.repo_id, was.chunker_min, was.chunker_avg, was.chunker_max)
        if damage in CONFIG_FROM_CACHE:
            assert now == was
    _assert_exactly_the_lost_pairs_differ(repo, base, trees, tmp_path / "old")
    latest = max(list_snapshots(repo), key=lambda s: s.time_ns)
    out = tmp_path / "latest"
    r = RestoreManager(repo).restore(latest, RestoreOptions(target=str(out), connections=2))
    assert not r.errors, (steps, r.errors)
    assert tree_bytes(out / base.src.relative_to("/")) == tree_bytes(base.src)
