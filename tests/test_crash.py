"""Crash consistency: ``kill -9`` the real ``bk`` at random points of backup and of prune.

The figure (BRIEF.md section 4; research/reliability-security.md section 7 rows 1-2):
after a SIGKILL at any point of a backup, a ``forget --prune`` or a ``prune``, ``bk
check`` is clean (information such as unreferenced packs is allowed), every snapshot that
existed before restores byte for byte, the next backup succeeds with the local cache the
killed process left behind, and a later prune finishes the work (no unreferenced pack,
one index object, nothing left to plan).

One campaign (:class:`Campaign`) runs on a local-directory repository (512 KiB packs,
64-512 KiB chunks, so a round writes several packs):

setup    a generated tree (80 small files in a few directories, two 6-9 MiB random
         files), three backups and a ``forget --prune``. Every uninterrupted backup and
         prune is timed twice: from its start and from the moment its lock object
         appears in ``locks/`` (the test watches the directory). A kill comes, a quarter
         of the time, after a delay drawn uniformly (seeded) from [0, the median whole
         run) after the start, otherwise from [0, the median rest of the run) after the
         lock object appears: start-up (imports, opening) touches nothing, so most kills
         go where the repository is written.
B round  change the tree (4 small files modified, 3 added, 2 deleted; one big file
         replaced, 256 KiB of another rewritten); start ``bk backup`` in its own process
         group and SIGKILL the group after the delay; ``bk check --json`` must pass; a snapshot
         the killed run still wrote must restore as the tree it read; the snapshot
         verified longest ago restores byte-identical; the next change is backed up
         uninterrupted and must succeed.
P round  alternately SIGKILL ``bk forget --keep-last 2 --prune``, or run ``bk forget
         --keep-last 2`` and SIGKILL ``bk prune``; then ``bk check`` must pass, only
         snapshots the policy drops may be gone, a rotating restore, an uninterrupted
         backup (with the stale cache), an uninterrupted ``bk prune``, and after it the
         repository is fully compacted: check reports nothing at all (not even
         information), one index object is left and a new plan has nothing to do.
end      every snapshot still present restores (in-process), then a final ``forget
         --prune``, ``bk check`` without a single finding, and every kept snapshot
         restored by ``bk restore``.

B and P rounds come in a seeded random order. Restores during the rounds run in this
process (RestoreManager, no cache, never writing to the repository) and are compared
with the tree record taken before the backup (testing.record_tree: types, modes, owners,
mtimes, sizes, SHA-256 of contents).

Locks: a killed command leaves its lock object behind; its process on this machine is
gone, so the lock is stale (backupkit/repo/lock.py) and must not block anything. No
round runs ``bk unlock``: a command refusing to run (exit 11) fails the test.

Where each kill landed is classified from the repository directory before and after it
(:func:`classify_backup`, :func:`classify_prune`); the campaign prints the distribution.

The default suite runs a few rounds; the ``slow`` test runs ``BK_CRASH_BACKUP_KILLS``
(default 200) and ``BK_CRASH_PRUNE_KILLS`` (100) kills with seed ``BK_CRASH_SEED`` (1),
stops starting rounds after ``BK_CRASH_MINUTES`` (30), and writes every kill's record
as JSON to ``BK_CRASH_REPORT`` when set::

    BK_CRASH_REPORT=/tmp/crash.json .venv/bin/python -m pytest -q -s -m slow tests/test_crash.py
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import msgpack
import pytest

from backupkit.crypto import T_LOCK
from backupkit.managers.check import CheckManager
from backupkit.managers.prune import PruneManager
from backupkit.catalog import read_catalog
from backupkit.managers.restore import RestoreManager, RestoreOptions
from backupkit.repo.lock import LOCK_PREFIX, LockManager
from backupkit.repo.repository import Repository
from backupkit.snapshot import load_snapshot
from backupkit.store.local import LocalObjectStore
from tests.support.kit import (
    PASSWORD,
    FileRecord,
    bk_executable,
    cli_env,
    diff_trees,
    make_test_repo,
    record_tree,
    run_bk,
    write_file,
)

KiB = 1024
MiB = 1024 * KiB
KEEP = 2
#: Any single bk command taking longer than this is a hang, not slowness.
CMD_TIMEOUT = 180.0


# -- the repository directory as seen from outside --------------------------------------

@dataclass(frozen=True)
class RepoState:
    """What a kill can have changed, read from the directory (no key needed)."""

    packs: frozenset[str]
    index: frozenset[str]
    snapshots: frozenset[str]  # snapshot ids
    locks: frozenset[str]
    catalog: str  # sha256 of the catalog file, "" if there is none
    tmp: int  # .tmp- files: writes a kill cut short


def repo_state(root: Path) -> RepoState:
    found: dict[str, set[str]] = {"data": set(), "meta": set(), "index": set(), "snapshots": set(), "locks": set()}
    tmp = 0
    for dirpath, _dirs, files in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        top = rel.split(os.sep)[0]
        for f in files:
            if f.startswith(".tmp-"):
                tmp += 1
            elif top in found:
                found[top].add(f if top in ("snapshots", "locks") else f"{rel}/{f}")
    cat = root / "catalog"
    return RepoState(
        packs=frozenset(found["data"] | found["meta"]),
        index=frozenset(found["index"]),
        snapshots=frozenset(found["snapshots"]),
        locks=frozenset(found["locks"]),
        catalog=hashlib.sha256(cat.read_bytes()).hexdigest() if cat.exists() else "",
        tmp=tmp,
    )


def classify_backup(before: RepoState, after: RepoState, catalog_has_new: bool, finished: bool) -> str:
    """The last step of a backup that landed before its kill (design.md section 11 order)."""
    if finished:
        return "exited before the kill"
    if after.snapshots - before.snapshots:
        return "after the catalog" if catalog_has_new else "after the snapshot, before the catalog"
    if after.index - before.index:
        return "after an index object, before the snapshot"
    if after.packs - before.packs:
        return "packs written, none indexed"
    if after.locks - before.locks:
        return "locked, nothing written"
    return "before the lock"


def classify_prune(before: RepoState, after: RepoState, finished: bool, work_left: bool) -> str:
    """The last step of a forget/prune that landed before its kill (lifecycle.md order)."""
    if finished:
        return "exited before the kill"
    if before.packs - after.packs:
        return "deleting packs" if work_left else "all deleted, before exit"
    if before.index - after.index:
        return "deleting old index objects"
    if after.index - before.index:
        return "new index written, nothing deleted"
    if after.packs - before.packs:
        return "repacking (new packs unindexed)"
    if before.snapshots - after.snapshots:
        return "forget: snapshots deleted" + ("" if after.catalog != before.catalog else " (catalog not yet rewritten)")
    if after.locks - before.locks:
        return "locked, planning"
    return "before the lock"


# -- the source tree ------------------------------------------------------------------------

class Tree:
    """A seeded tree of small files in a few directories and a few multi-MiB random files."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.small: list[str] = []
        self.big: list[str] = []
        self.serial = 0

    def _name(self, prefix: str) -> str:
        self.serial += 1
        return f"{prefix}{self.serial:05d}"

    def _small_data(self) -> bytes:
        n = self.rng.randrange(0, 12 * KiB)
        half = self.rng.randbytes(n // 2)
        return half + b"line of text %d\n" % self.rng.randrange(1000) * ((n - len(half)) // 16)

    def _add_small(self) -> None:
        d = f"d{self.rng.randrange(5)}" + (f"/s{self.rng.randrange(3)}" if self.rng.random() < 0.4 else "")
        rel = f"{d}/{self._name('f')}.txt"
        write_file(self.root / rel, self._small_data())
        self.small.append(rel)

    def _add_big(self) -> None:
        rel = f"big/{self._name('b')}.bin"
        write_file(self.root / rel, self.rng.randbytes(self.rng.randrange(6 * MiB, 9 * MiB)))
        self.big.append(rel)

    def create(self) -> None:
        for _ in range(80):
            self._add_small()
        for _ in range(2):
            self._add_big()

    def change(self) -> None:
        """Some small files modified, added, deleted; one big file replaced, one rewritten in part."""
        rng = self.rng
        for rel in rng.sample(self.small, 4):
            write_file(self.root / rel, self._small_data())
        for rel in rng.sample(self.small, 2):
            os.unlink(self.root / rel)
            self.small.remove(rel)
        for _ in range(3):
            self._add_small()
        os.unlink(self.root / self.big.pop(0))
        self._add_big()
        rel = rng.choice(self.big)
        size = os.path.getsize(self.root / rel)
        with open(self.root / rel, "r+b") as f:
            f.seek(rng.randrange(0, size - 256 * KiB))
            f.write(rng.randbytes(256 * KiB))

    def record(self) -> dict[bytes, FileRecord]:
        return record_tree(self.root)


# -- the campaign ---------------------------------------------------------------------------

@dataclass
class Run:
    """One bk process: exit code (None: killed), output, and when its lock object appeared."""

    rc: int | None
    stdout: bytes
    stderr: str
    total: float  # seconds from start to exit or kill
    locked_at: float | None  # seconds from start until a new object showed up in locks/
    pid: int

    @property
    def after_lock(self) -> float:
        return self.total - (self.locked_at if self.locked_at is not None else self.total)


@dataclass
class Kill:
    """One killed command: when the kill came, where it landed, what it left."""

    round: int
    kind: str  # backup, forget --prune, prune
    mode: str  # "start": delay from the start; "lock": delay from the lock object's appearance
    delay: float
    window: float
    finished: bool
    landed: str
    pid: int
    new_packs: int = 0
    new_index: int = 0
    deleted_packs: int = 0
    deleted_index: int = 0
    snapshots_added: int = 0
    snapshots_deleted: int = 0
    lock_left: bool = False
    tmp_files: int = 0
    check_info: list[str] = field(default_factory=list)


def _new_locks(locks: Path, old: set[str]) -> set[str]:
    """Finished lock objects in ``locks`` not in ``old`` (a .tmp- file is one being written)."""
    try:
        return {n for n in os.listdir(locks) if not n.startswith(".tmp-")} - old
    except FileNotFoundError:
        return set()


#: Share of kills timed from the process start over its whole run (start-up included);
#: the others are timed from the moment its lock object appears, over the rest of the run,
#: where everything that touches the repository happens.
WHOLE_RUN_SHARE = 0.25


class Campaign:
    def __init__(self, base: Path, seed: int) -> None:
        self.base = base
        self.repo_dir = base / "repo"
        self.src = base / "src"
        self.rng = random.Random(seed)
        self.seed = seed
        make_test_repo(self.repo_dir, pack_size=512 * KiB, chunker=(64 * KiB, 128 * KiB, 512 * KiB)).close()
        self.env = cli_env(self.repo_dir, base / "cache")
        self.tree = Tree(self.src, self.rng)
        #: every snapshot that must exist, in creation order, with the tree it must restore
        self.records: dict[str, dict[bytes, FileRecord]] = {}
        self.verified: dict[str, int] = {}  # snapshot id -> round it was last restored
        #: (total, after lock) seconds of uninterrupted runs, per kind of killed command
        self.timings: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        self.kills: list[Kill] = []
        self.round = 0
        self.restores = 0
        self.commands = 0
        self.bk_seconds = 0.0  # wall time spent in bk processes

    # -- running bk ----------------------------------------------------------------------
    def where(self) -> str:
        return f"round {self.round} (seed {self.seed})"

    def launch(self, args: list[str], kill: tuple[str, float] | None = None) -> Run:
        """Run bk ARGS in its own process group, watching ``locks/`` for its lock object.

        ``kill=("start", d)`` SIGKILLs the group ``d`` s after the start, ``("lock", d)``
        ``d`` s after its lock object appeared (never, if none does before it exits).
        """
        self.commands += 1
        locks = self.repo_dir / "locks"
        old = _new_locks(locks, set())
        out_path, err_path = self.base / "bk.stdout", self.base / "bk.stderr"
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            t0 = time.monotonic()
            p = subprocess.Popen(
                [bk_executable(), *args], env=self.env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                start_new_session=True,
            )
            locked_at = None
            kill_at = t0 + kill[1] if kill is not None and kill[0] == "start" else None
            rc: int | None = None
            while True:
                now = time.monotonic()
                rc = p.poll()
                if rc is not None:
                    break
                if locked_at is None and _new_locks(locks, old):
                    locked_at = now - t0
                    if kill is not None and kill[0] == "lock":
                        kill_at = now + kill[1]
                if kill_at is not None and now >= kill_at:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=60)  # reaped: a zombie's pid would still look alive
                    break
                if now - t0 > CMD_TIMEOUT:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait(timeout=60)
                    raise AssertionError(f"{self.where()}: bk {' '.join(args)} hung for {CMD_TIMEOUT:.0f} s")
                time.sleep(0.002)
            total = time.monotonic() - t0
        self.bk_seconds += total
        return Run(rc, out_path.read_bytes(), err_path.read_text("utf-8", "replace"), total, locked_at, p.pid)

    def bk(self, *args: str, what: str, timed: str | None = None) -> Run:
        """Run bk uninterrupted; it must succeed. ``timed`` files its timing under that kind."""
        r = self.launch(list(args))
        assert r.rc == 0, f"{self.where()}: {what}: bk {' '.join(args)} exited {r.rc}:\n{r.stderr}"
        assert "Traceback" not in r.stderr, f"{self.where()}: {what}: {r.stderr}"
        if timed is not None:
            assert r.locked_at is not None, f"{self.where()}: {what}: no lock object was seen"
            self.timings[timed].append((r.total, r.after_lock))
        return r

    def kill(self, kind: str, args: list[str]) -> tuple[Run, str, float, float]:
        """Run a command of ``kind`` and SIGKILL it at a random point; (run, mode, delay, window)."""
        base = self.timings["prune" if kind == "forget --prune" else kind][-9:]
        whole = self.rng.random() < WHOLE_RUN_SHARE
        window = statistics.median(t[0 if whole else 1] for t in base)
        delay = self.rng.uniform(0, window)
        mode = "start" if whole else "lock"
        r = self.launch(args, kill=(mode, delay))
        assert r.rc in (None, 0), f"{self.where()}: {kind} exited {r.rc} before its kill:\n{r.stderr}"
        assert "Traceback" not in r.stderr, f"{self.where()}: {kind}: {r.stderr}"
        return r, mode, delay, window

    def open_repo(self) -> Repository:
        """The repository in this process, without cache (verification never writes)."""
        return Repository.open(LocalObjectStore(self.repo_dir, fsync=False), PASSWORD, cache_root=False, connections=2)

    # -- verification ----------------------------------------------------------------------
    def check(self, what: str, allow_info: bool = True) -> list[str]:
        """``bk check --json`` passes; returns the kinds of its (information) findings."""
        doc = json.loads(self.bk("--json", "check", what=what).stdout)
        bad = [f for f in doc["findings"] if f["severity"] != "info" or not allow_info]
        assert doc["ok"] and doc["errors"] == 0 and not bad, f"{self.where()}: {what}: check found {json.dumps(bad or doc, indent=1)}"
        return sorted(f["kind"] for f in doc["findings"])

    def restore(self, sid: str, what: str, cli: bool = False) -> None:
        """Restore ``sid`` (in this process, or with ``bk restore``) and compare it byte for byte."""
        self.restores += 1
        target = self.base / f"restore-{self.restores}"
        if cli:
            self.bk("restore", sid, "--target", str(target), what=what)
        else:
            repo = self.open_repo()
            try:
                res = RestoreManager(repo).restore(load_snapshot(repo, sid), RestoreOptions(target=str(target), connections=2))
            finally:
                repo.close()
            assert not res.errors, f"{self.where()}: {what}: restoring {sid[:8]}: {res.errors}"
        try:
            got = record_tree(os.path.join(target, os.fspath(self.src).lstrip("/")))
            diff = diff_trees(self.records[sid], got)
        finally:
            shutil.rmtree(target, ignore_errors=True)
        assert diff == [], f"{self.where()}: {what}: snapshot {sid[:8]} restores differently:\n" + "\n".join(diff[:20])
        self.verified[sid] = self.round

    def restore_rotating(self, what: str) -> None:
        """Restore the snapshot verified longest ago."""
        self.restore(min(self.records, key=lambda s: self.verified.get(s, -1)), what)

    def assert_snapshots(self, state: RepoState, what: str) -> None:
        assert state.snapshots == set(self.records), (
            f"{self.where()}: {what}: snapshots {sorted(s[:8] for s in state.snapshots)} "
            f"!= expected {sorted(s[:8] for s in self.records)}"
        )

    def assert_compacted(self, what: str) -> None:
        """After an uninterrupted prune: nothing unreferenced, one index object, nothing to plan."""
        state = repo_state(self.repo_dir)
        assert len(state.index) == 1, f"{self.where()}: {what}: {len(state.index)} index objects after prune"
        repo = self.open_repo()
        try:
            res = CheckManager(repo).run()
            plan = PruneManager(repo).plan()
        finally:
            repo.close()
        assert not res.findings, f"{self.where()}: {what}: " + "; ".join(f"{f.kind}: {f.message}" for f in res.findings)
        assert plan.nothing_to_do, f"{self.where()}: {what}: prune left work: {plan.to_json()['stats']}"

    # -- uninterrupted commands --------------------------------------------------------------
    def backup(self, what: str, timed: bool = True) -> str:
        """Change the tree and back it up, uninterrupted; returns the snapshot id."""
        self.tree.change()
        rec = self.tree.record()
        r = self.bk("--json", "backup", str(self.src), what=what, timed="backup" if timed else None)
        sid = json.loads(r.stdout.splitlines()[-1])["snapshot_id"]
        assert sid not in self.records
        self.records[sid] = rec
        return sid

    def forget(self, what: str, prune: bool) -> Run:
        args = ["--json", "forget", "--keep-last", str(KEEP), *(["--prune"] if prune else [])]
        r = self.bk(*args, what=what, timed="prune" if prune else None)
        for sid in list(self.records)[:-KEEP]:
            del self.records[sid]
        self.assert_snapshots(repo_state(self.repo_dir), what)
        return r

    def prune(self, what: str) -> None:
        self.bk("--json", "prune", what=what, timed="prune")

    # -- the parts ---------------------------------------------------------------------------
    def setup(self) -> None:
        self.tree.create()
        self.backup("setup backup 0 (reads everything)", timed=False)
        for i in range(KEEP):
            self.backup(f"setup backup {i + 1}")
        self.forget("setup forget --prune (timed)", prune=True)
        self.assert_compacted("setup forget --prune")
        self.backup("setup backup after forget --prune")

    def backup_round(self) -> None:
        self.tree.change()
        rec = self.tree.record()
        before = repo_state(self.repo_dir)
        r, mode, delay, window = self.kill("backup", ["--json", "backup", str(self.src)])
        after = repo_state(self.repo_dir)
        added = after.snapshots - before.snapshots
        assert before.snapshots <= after.snapshots and len(added) <= 1, f"{self.where()}: a backup changed snapshots {before.snapshots ^ after.snapshots}"
        catalog_has_new = False
        if added:
            repo = self.open_repo()
            try:
                catalog_has_new = next(iter(added)) in (read_catalog(repo) or {})
            finally:
                repo.close()
        landed = classify_backup(before, after, catalog_has_new, r.rc is not None)
        k = self._kill_record("backup", mode, delay, window, r, landed, before, after)
        k.check_info = self.check("check after a killed backup")
        for sid in added:  # the killed run got as far as its snapshot: it must be whole
            self.records[sid] = rec
            self.restore(sid, "the snapshot a killed backup wrote")
        self.assert_snapshots(repo_state(self.repo_dir), "after a killed backup")
        self.restore_rotating("an older snapshot after a killed backup")
        self.backup("the backup after a killed backup")

    def prune_round(self, with_forget: bool) -> None:
        doomed = set(list(self.records)[:-KEEP])
        if with_forget:
            args, kind = ["--json", "forget", "--keep-last", str(KEEP), "--prune"], "forget --prune"
        else:
            self.forget("forget before a killed prune", prune=False)
            doomed = set()
            args, kind = ["--json", "prune"], "prune"
        before = repo_state(self.repo_dir)
        r, mode, delay, window = self.kill(kind, args)
        after = repo_state(self.repo_dir)
        gone = before.snapshots - after.snapshots
        assert after.snapshots <= before.snapshots and gone <= doomed, (
            f"{self.where()}: a killed {kind} removed {sorted(s[:8] for s in gone - doomed)} (only {sorted(s[:8] for s in doomed)} may go) "
            f"or added {sorted(s[:8] for s in after.snapshots - before.snapshots)}"
        )
        for sid in gone:
            del self.records[sid]
        repo = self.open_repo()
        try:
            work_left = not PruneManager(repo).plan().nothing_to_do
        finally:
            repo.close()
        k = self._kill_record(kind, mode, delay, window, r, classify_prune(before, after, r.rc is not None, work_left), before, after)
        k.check_info = self.check(f"check after a killed {kind}")
        self.restore_rotating(f"a kept snapshot after a killed {kind}")
        self.backup(f"the backup after a killed {kind} (stale cache)")
        self.prune(f"the prune after a killed {kind}")
        self.assert_compacted(f"the prune after a killed {kind}")

    def _kill_record(self, kind, mode, delay, window, r: Run, landed, before: RepoState, after: RepoState) -> Kill:
        k = Kill(
            round=self.round, kind=kind, mode=mode, delay=round(delay, 3), window=round(window, 3),
            finished=r.rc is not None, landed=landed, pid=r.pid,
            new_packs=len(after.packs - before.packs), new_index=len(after.index - before.index),
            deleted_packs=len(before.packs - after.packs), deleted_index=len(before.index - after.index),
            snapshots_added=len(after.snapshots - before.snapshots), snapshots_deleted=len(before.snapshots - after.snapshots),
            lock_left=bool(after.locks - before.locks), tmp_files=after.tmp - before.tmp,
        )
        self.kills.append(k)
        return k

    def finish(self) -> None:
        for sid in list(self.records):
            self.restore(sid, "every snapshot at the end")
        self.forget("final forget --prune", prune=True)
        assert self.check("final check", allow_info=False) == []
        for sid in self.records:
            self.restore(sid, "bk restore of every kept snapshot at the end", cli=True)

    def run(self, backup_kills: int, prune_kills: int, deadline: float) -> None:
        self.setup()
        schedule = ["B"] * backup_kills + ["P"] * prune_kills
        self.rng.shuffle(schedule)
        prunes = 0
        for kind in schedule:
            if time.monotonic() > deadline:
                break
            self.round += 1
            if kind == "B":
                self.backup_round()
            else:
                self.prune_round(with_forget=prunes % 2 == 0)
                prunes += 1
        self.finish()

    def summary(self, seconds: float) -> str:
        state = repo_state(self.repo_dir)
        med = {k: (statistics.median(t[0] for t in v), statistics.median(t[1] for t in v)) for k, v in self.timings.items() if v}
        lines = [
            f"seed {self.seed}: {len(self.kills)} kills in {self.round} rounds, {self.commands} bk commands, "
            f"{self.restores} restores, {seconds:.0f} s ({self.bk_seconds:.0f} s in bk); left at the end: {len(state.locks)} stale lock objects, "
            f"{state.tmp} .tmp files",
            "  uninterrupted runs, median seconds (whole, after the lock): "
            + ", ".join(f"{k} {a:.2f}/{b:.2f}" for k, (a, b) in sorted(med.items())),
        ]
        by_kind: dict[tuple[str, str], collections.Counter] = collections.defaultdict(collections.Counter)
        for k in self.kills:
            by_kind[(k.kind, k.mode)][k.landed] += 1
        for (kind, mode), counts in sorted(by_kind.items()):
            lines.append(f"  {kind}, timed from {'the start' if mode == 'start' else 'the lock'} ({sum(counts.values())} kills):")
            for landed, n in counts.most_common():
                lines.append(f"    {n:4d}  {landed}")
        info = collections.Counter(i for k in self.kills for i in k.check_info)
        lines.append("  check information after kills: " + (", ".join(f"{k} x{n}" for k, n in info.most_common()) or "none"))
        return "\n".join(lines)


def run_campaign(base: Path, backup_kills: int, prune_kills: int, seed: int, minutes: float = 60.0) -> Campaign:
    t0 = time.monotonic()
    c = Campaign(base, seed)
    try:
        c.run(backup_kills, prune_kills, deadline=t0 + minutes * 60)
    finally:
        print("\n" + c.summary(time.monotonic() - t0))
        report = os.environ.get("BK_CRASH_REPORT")
        if report:
            with open(report, "w") as f:
                json.dump({"seed": seed, "seconds": round(time.monotonic() - t0, 1), "kills": [asdict(k) for k in c.kills]}, f, indent=1)
    shutil.rmtree(base / "repo")  # kept on failure for a look
    shutil.rmtree(base / "cache", ignore_errors=True)
    shutil.rmtree(base / "src")
    return c


# -- tests ----------------------------------------------------------------------------------

def test_kill9_backup_and_prune(tmp_path):
    c = run_campaign(tmp_path, backup_kills=6, prune_kills=3, seed=20261201)
    assert len(c.kills) == 9
    landed = {k.landed for k in c.kills}
    assert len(landed) >= 3, f"the kills all landed in {landed}: the window is off"


def test_the_campaign_notices_damage(tmp_path):
    """Its checks can fail: a restore that differs, a lock that blocks, a lost pack, garbage."""
    c = Campaign(tmp_path, seed=7)
    c.tree.create()
    sid = c.backup("one backup", timed=False)
    c.restore(sid, "intact")
    true = c.records[sid]
    some = next(p for p, r in true.items() if r.type == "f" and r.size)
    c.records[sid] = {**true, some: dataclasses.replace(true[some], sha256="0" * 64)}
    with pytest.raises(AssertionError, match="restores differently"):
        c.restore(sid, "expecting other content")
    c.records[sid] = true
    repo = c.open_repo()
    held = LockManager(repo, refresh=0, recheck_delay=0).acquire(True, "prune")  # a live holder
    try:
        with pytest.raises(AssertionError, match="exited 11"):
            c.check("a live exclusive lock")
    finally:
        held.release()
        repo.close()
    c.prune("compact")
    c.assert_compacted("compacted")
    packs = sorted(p for p in repo_state(c.repo_dir).packs if p.startswith("data/"))
    garbage = c.repo_dir / "data" / "00" / ("00" * 32)
    garbage.parent.mkdir(exist_ok=True)
    shutil.copyfile(c.repo_dir / packs[0], garbage)
    assert c.check("a garbage pack") == ["pack_unreferenced"]
    with pytest.raises(AssertionError, match="pack_unreferenced"):
        c.assert_compacted("a garbage pack")
    os.unlink(c.repo_dir / packs[0])
    with pytest.raises(AssertionError, match="pack_missing"):
        c.check("a lost pack")
    with pytest.raises(Exception):
        c.restore(sid, "a lost pack")
    shutil.rmtree(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(int(float(os.environ.get("BK_CRASH_MINUTES", "30")) * 60 + 900))
def test_kill9_backup_and_prune_soak(tmp_path):
    backup_kills = int(os.environ.get("BK_CRASH_BACKUP_KILLS", "200"))
    prune_kills = int(os.environ.get("BK_CRASH_PRUNE_KILLS", "100"))
    seed = int(os.environ.get("BK_CRASH_SEED", "1"))
    minutes = float(os.environ.get("BK_CRASH_MINUTES", "30"))
    c = run_campaign(tmp_path, backup_kills, prune_kills, seed, minutes)
    assert c.kills, "no round ran"


# -- a killed command's lock once its pid names another process -----------------------------
#
# Here pid_max is 32768 and the pids wrapped twice during one 22-minute soak: the pid in
# a killed bk's lock object soon belongs to some other process. The lock's process is
# gone all the same, so the lock is stale (README "bk unlock", lock.py); it used to count
# as alive until its TTL (30 minutes) ran out, and every exclusive command (forget, prune)
# failed with exit 11 meanwhile, and 'bk unlock' would not remove it.

def _rewrite_lock(repo: Repository, name: str, **changes) -> dict:
    """Change fields of a lock object's document in place (as if another process wrote it)."""
    lock_id = bytes.fromhex(name[len(LOCK_PREFIX):])
    doc = msgpack.unpackb(repo.open_object(T_LOCK, lock_id, repo.store.get(name), name))
    doc.update(changes)
    repo.store.put(name, repo.seal_object(T_LOCK, lock_id, msgpack.packb(doc)))
    return doc


def test_killed_commands_lock_is_stale_once_its_pid_is_reused(tmp_path):
    repo = make_test_repo(tmp_path / "repo")
    env = cli_env(tmp_path / "repo", tmp_path / "cache")
    write_file(tmp_path / "src" / "file", os.urandom(64 * KiB))
    locks = tmp_path / "repo" / "locks"
    # a real backup, SIGKILLed as soon as its lock object is in place
    p = subprocess.Popen([bk_executable(), "backup", str(tmp_path / "src")], env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + CMD_TIMEOUT
    while not _new_locks(locks, set()) and p.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    left = sorted(_new_locks(locks, set()))
    assert len(left) == 1, f"the killed backup left {left}"
    name = LOCK_PREFIX + left[0]
    # its pid now belongs to another process (a sleep stands in for whatever got it)
    other = subprocess.Popen(["sleep", "120"])
    try:
        doc = _rewrite_lock(repo, name, pid=other.pid)
        assert doc["pid"] == other.pid
        r = run_bk("--json", "prune", env=env)
        assert r.returncode == 0, f"a killed backup's lock (its pid now another process's) blocks prune: {r.stderr}"
        r = run_bk("unlock", env=env)
        assert r.returncode == 0, r.stderr
        assert not _new_locks(locks, set()), "bk unlock left the stale lock"
    finally:
        other.kill()
        other.wait()
    repo.close()


def test_lock_naming_our_pid_from_an_earlier_process_is_stale(tmp_path):
    """The new command itself got the dead command's pid: not our lock, so stale."""
    repo = make_test_repo(tmp_path / "repo")
    mine = LockManager(repo, refresh=0, recheck_delay=0)
    held = mine.acquire(False, "backup")  # then "killed": never released
    started = _rewrite_lock(repo, held.name)["pstart"]
    _rewrite_lock(repo, held.name, pstart=started - 1)  # an earlier process with our pid
    fresh = LockManager(repo, refresh=0, recheck_delay=0)
    now_ref, infos = fresh.list_locks()
    (li,) = [i for i in infos if i.name == held.name]
    assert fresh.stale_reason(li, now_ref) is not None
    fresh.acquire(True, "prune").release()
    # while a lock with our pid and our start time is ours: alive
    _rewrite_lock(repo, held.name, pstart=started)
    now_ref, infos = fresh.list_locks()
    (li,) = [i for i in infos if i.name == held.name]
    assert fresh.stale_reason(li, now_ref) is None
    repo.close()
