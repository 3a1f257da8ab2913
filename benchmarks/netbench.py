"""SFTP and REST benchmark: bk and restic on the same server, with and without added delay.

    python -m benchmarks.netbench [--scale small|full|MiB] [--delays 0,20] [--repeat 2]
                                  [--backends rest-bk,rest-rclone,sftp,rclone] [--tools bk,restic]
                                  [--bk-rev REV] [--out FILE] [--work DIR] [--timeout S]

For each backend, one server on 127.0.0.1 that both tools use:

rest-bk
    ``bk serve --no-auth`` (fsync on, its default), reached through the counting HTTP proxy
    of the S3 benchmark (``s3proxy.CountingProxy`` with ``netproxy.rest_classify``): one
    sleep of ``delay`` per request; requests counted by kind at the proxy.
rest-rclone
    ``rclone serve restic --addr``, the same proxy in front.
sftp
    OpenSSH's ``sshd`` (the test suite's launcher, generated keys) with the external
    ``sftp-server -l DEBUG1`` whose request log gives the request counts, reached through
    ``netproxy.TcpDelayProxy``: every chunk the client sends is held ``delay`` before it
    goes on (one more ``delay`` per round trip; the server's direction is not delayed).
    bk uses paramiko (``-o sftp.ssh-config``), restic OpenSSH's ``ssh`` (``-o sftp.command``).
rclone
    bk's ``rclone:DIR`` and restic's ``rclone:DIR`` (each starts its own ``rclone serve
    restic`` child: bk on a loopback port, restic over ``--stdio``); no proxy, so only
    delay 0 and no request counts.

Cells: for every repetition, delay and tool a fresh repository: ``init`` (timed, not
compared), the first ``backup`` of the mixed set (``benchmarks/datagen.py``), and a
``restore`` of it (verified file by file against the source). Within a cell the tools
alternate (the order flips every repetition), so ratios compare runs under the same load.

``--bk-rev REV`` runs bk (client and ``bk serve``) from ``git archive REV``
(``s3bench.export_source``). Results: ``benchmarks/results/<date>-net-<scale>.md`` and
``.json``; work files in ``--work`` (``/var/tmp/backupkit-bench/net``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import datagen, measure, verify
from .netproxy import LOOPBACK, TcpDelayProxy, count_sftp_log, rest_classify
from .run import DEFAULT_WORK, DataSet, machine
from .s3proxy import CountingProxy
from .tools import PASSWORD, Tool, _clean_env, install, locate

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BACKENDS = ("rest-bk", "rest-rclone", "sftp", "rclone")
STEPS = ("init", "backup", "restore")


@dataclass
class Row:
    backend: str
    delay_ms: float
    rep: int
    tool: str
    step: str
    status: str = "ok"  # ok | failed | timeout | wrong
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    peak_rss_mib: float = 0.0
    requests: dict[str, Any] | None = None
    load_before: float = 0.0
    note: str = ""


def _test_kit() -> Any:
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import tests.conftest_backends as kit

    return kit


class Backend:
    """A server both tools use, and how each tool reaches it."""

    name = ""
    delays_supported = True

    def __init__(self, work: Path) -> None:
        self.work = work
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        self.processes: list[subprocess.Popen[bytes]] = []

    def set_delay(self, seconds: float) -> None:
        raise NotImplementedError

    def location(self, tool: str, repo: str) -> str:
        raise NotImplementedError

    def options(self, tool: str) -> list[str]:
        return []

    def counts(self) -> Any:
        return None

    def since(self, before: Any) -> dict[str, Any] | None:
        return None

    def remove(self, repo: str) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        kit = _test_kit()
        for p in self.processes:
            kit.stop_process(p)


class RestBackend(Backend):
    def __init__(self, work: Path, server: str, bk: Tool) -> None:
        super().__init__(work)
        kit = _test_kit()
        self.name = f"rest-{server}"
        self.data = work / "data"
        self.data.mkdir()
        log = work / "server.log"
        if server == "bk":
            argv = [*bk.argv, "serve", "--path", str(self.data), "--listen", f"{LOOPBACK}:0", "--no-auth"]
            pattern = kit._BK_READY_RE
        else:
            from tests.conftest_s3 import free_ports

            argv = ["rclone", "serve", "restic", "--addr", f"{LOOPBACK}:{free_ports(1)[0]}", str(self.data)]
            pattern = kit._RCLONE_READY_RE
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, env=_clean_env() | {"COLUMNS": "400"})
        self.processes.append(proc)
        match = kit.wait_for_line(proc, log, pattern, " ".join(argv[:3]))
        port = int(match.group(2) if server == "bk" else match.group(1))
        self.proxy = CountingProxy(LOOPBACK, port, bucket="", depth=1, classifier=rest_classify).start()
        self.version = "bk serve (same revision as the client), fsync on" if server == "bk" else _first_line(
            ["rclone", "version"])

    def set_delay(self, seconds: float) -> None:
        self.proxy.delay = seconds

    def location(self, tool: str, repo: str) -> str:
        return f"rest:{self.proxy.endpoint}/{repo}/"

    def counts(self) -> Any:
        return self.proxy.snapshot()

    def since(self, before: Any) -> dict[str, Any]:
        got = self.proxy.since(before)
        return {"requests": got["requests"], "by_kind": got["by_kind"], "bytes_up": got["bytes_up"],
                "bytes_down": got["bytes_down"], "connections": got["connections"]}

    def remove(self, repo: str) -> None:
        shutil.rmtree(self.data / repo, ignore_errors=True)

    def stop(self) -> None:
        self.proxy.stop()
        super().stop()


class SftpBackend(Backend):
    name = "sftp"

    def __init__(self, work: Path, bk: Tool) -> None:
        super().__init__(work)
        kit = _test_kit()
        self.sftp_log = work / "sftp-server.log"
        self.sftp_log.touch()
        # sshd runs a subsystem command through the user's shell: the redirection works.
        self.server = kit.start_sshd(work / "sshd", sftp_subsystem=f"/usr/lib/openssh/sftp-server -e -l DEBUG1 "
                                                                    f"2>>{self.sftp_log}")
        self.proxy = TcpDelayProxy(LOOPBACK, self.server.port).start()
        self.repos = work / "repos"
        self.repos.mkdir()
        home = self.server.home / ".ssh"
        self.config = work / "ssh_config"
        self.known = work / "known_hosts"
        self.known.write_text(f"[{LOOPBACK}]:{self.proxy.port} {self.server.host_key_line}\n")
        self.config.write_text(
            f"Host netbench\n  HostName {LOOPBACK}\n  Port {self.proxy.port}\n  User {self.server.user}\n"
            f"  IdentityFile {home / 'id_test'}\n  IdentitiesOnly yes\n  UserKnownHostsFile {self.known}\n"
            f"  StrictHostKeyChecking yes\n  BatchMode yes\n")
        self.version = _first_line(["ssh", "-V"]) + "; sftp-server -l DEBUG1 (logging every request)"

    def set_delay(self, seconds: float) -> None:
        self.proxy.delay = seconds

    def location(self, tool: str, repo: str) -> str:
        return f"sftp:netbench:{self.repos / repo}"

    def options(self, tool: str) -> list[str]:
        if tool == "bk":
            return ["-o", f"sftp.ssh-config={self.config}", "-o", f"sftp.known-hosts={self.known}"]
        return ["-o", f"sftp.command=ssh -F {self.config} netbench -s sftp"]

    def counts(self) -> Any:
        return (self.sftp_log.stat().st_size, self.proxy.snapshot())

    def since(self, before: Any) -> dict[str, Any]:
        offset, proxy0 = before
        time.sleep(0.3)  # sftp-server logs its last lines as the session closes
        with open(self.sftp_log, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", "replace")
        out = count_sftp_log(text)
        proxy = self.proxy.snapshot()
        out.update({k: proxy[k] - proxy0[k] for k in ("connections", "bytes_up", "bytes_down")})
        return out

    def remove(self, repo: str) -> None:
        shutil.rmtree(self.repos / repo, ignore_errors=True)

    def stop(self) -> None:
        self.proxy.stop()
        self.server.stop()


class RcloneBackend(Backend):
    name = "rclone"
    delays_supported = False

    def __init__(self, work: Path) -> None:
        super().__init__(work)
        self.repos = work / "repos"
        self.repos.mkdir()
        self.version = _first_line(["rclone", "version"]) + " (local remote; bk: --addr child, restic: --stdio child)"

    def set_delay(self, seconds: float) -> None:
        assert seconds == 0

    def location(self, tool: str, repo: str) -> str:
        return f"rclone:{self.repos / repo}"

    def remove(self, repo: str) -> None:
        shutil.rmtree(self.repos / repo, ignore_errors=True)


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return ((out.stdout or out.stderr).strip().splitlines() or ["?"])[0]
    except (OSError, subprocess.SubprocessError):
        return "?"


def commands(tool: Tool, backend: Backend, repo: str, ws: Path, step: str, src: Path, target: Path) -> list[str]:
    where = backend.location(tool.name, repo)
    if tool.name == "bk":
        head = [*tool.argv, "--repo", where, "--password-file", str(ws / "password"), *backend.options("bk")]
    else:
        head = [*tool.argv, "-r", where, *backend.options("restic")]
    tail = {"init": ["init"], "backup": ["backup", str(src), "--tag", "bench"],
            "restore": ["restore", "latest", "--target", str(target)]}[step]
    return head + tail


def tool_env(tool: Tool, ws: Path) -> dict[str, str]:
    if tool.name == "bk":
        return _clean_env() | {"BK_CACHE_DIR": str(ws / "cache")}
    return _clean_env() | {"RESTIC_PASSWORD": PASSWORD, "RESTIC_CACHE_DIR": str(ws / "cache")}


class Bench:
    def __init__(self, args: argparse.Namespace, tools: dict[str, Tool], work: Path, data: DataSet) -> None:
        self.args, self.tools, self.work, self.data = args, tools, work, data
        self.rows: list[Row] = []
        self.logs = work / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def say(self, text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    def cell(self, backend: Backend, delay_ms: float, rep: int) -> None:
        backend.set_delay(delay_ms / 1000)
        order = list(self.tools.values())
        if rep % 2 == 0:
            order.reverse()
        spaces = {}
        for tool in order:
            repo = f"{tool.name}-{delay_ms:g}ms-r{rep}"
            ws = self.work / "ws" / f"{backend.name}-{repo}"
            shutil.rmtree(ws, ignore_errors=True)
            (ws / "cache").mkdir(parents=True)
            (ws / "password").write_text(PASSWORD + "\n")
            backend.remove(repo)
            spaces[tool.name] = (repo, ws)
        for step in STEPS:
            for tool in order:
                repo, ws = spaces[tool.name]
                target = ws / "restore"
                if step == "restore":
                    shutil.rmtree(target, ignore_errors=True)
                    target.mkdir()
                argv = commands(tool, backend, repo, ws, step, self.data.src, target)
                self.measure(backend, delay_ms, rep, tool, step, argv, ws, target)
        for tool in order:
            repo, ws = spaces[tool.name]
            backend.remove(repo)
            shutil.rmtree(ws, ignore_errors=True)

    def measure(self, backend: Backend, delay_ms: float, rep: int, tool: Tool, step: str, argv: list[str],
                ws: Path, target: Path) -> None:
        row = Row(backend.name, delay_ms, rep, tool.name, step, load_before=round(os.getloadavg()[0], 2))
        log = self.logs / f"{backend.name}-{delay_ms:g}ms-r{rep}-{tool.name}-{step}.log"
        log.unlink(missing_ok=True)
        before = backend.counts()
        m = measure.run_all([measure.Cmd(argv)], tool_env(tool, ws), log, self.args.timeout)
        row.requests = backend.since(before)
        row.seconds, row.cpu_seconds = round(m.wall, 3), round(m.cpu, 3)
        row.peak_rss_mib = round(m.peak_kib / 1024, 1)
        if not m.ok:
            row.status = "timeout" if m.timed_out else "failed"
            row.note = "; ".join(m.errors)[:500]
        elif step == "restore":
            v = verify.verify_tree(target, self.data.src, self.data.manifest)
            row.note = v.text
            if not v.ok:
                row.status = "wrong"
        self.rows.append(row)
        n = row.requests["requests"] if row.requests else "-"
        self.say(f"{backend.name:11} {delay_ms:4g} ms r{rep} {tool.name:6} {step:8} {row.status:7} "
                 f"{row.seconds:8.2f} s cpu {row.cpu_seconds:7.2f} req {n}  {row.note[:100]}")


# -- report ------------------------------------------------------------------------------------


def _kinds(req: dict[str, Any] | None, top: int = 5) -> str:
    if not req or not req.get("by_kind"):
        return ""
    items = sorted(req["by_kind"].items(), key=lambda kv: -kv[1])[:top]
    return " ".join(f"{k} {v}" for k, v in items)


def render(meta: dict[str, Any], rows: list[Row]) -> str:
    out = [f"# SFTP and REST benchmark, {meta['date']}", ""]
    out += [f"- {k}: {v}" for k, v in meta["summary"].items()]
    out += ["", "Seconds are wall time; `bk/restic` is bk's seconds over restic's in the same repetition "
            "(below 1: bk faster). Requests: answers the server sent (REST: counted at the proxy; "
            "SFTP: sftp-server's log), with the most frequent kinds of repetition 1.", ""]
    by = {(r.backend, r.delay_ms, r.rep, r.tool, r.step): r for r in rows}
    reps = sorted({r.rep for r in rows})
    for backend in dict.fromkeys(r.backend for r in rows):
        out += [f"## {backend}", "", "| delay | step | bk s | restic s | bk/restic | bk requests | restic requests "
                "| bk kinds (r1) | restic kinds (r1) |", "|---|---|---|---|---|---|---|---|---|"]
        for delay in sorted({r.delay_ms for r in rows if r.backend == backend}):
            for step in STEPS:
                cells: dict[str, list[Row | None]] = {t: [by.get((backend, delay, rep, t, step)) for rep in reps]
                                                      for t in ("bk", "restic")}

                def secs(rs: list[Row | None]) -> str:
                    return " / ".join("-" if r is None else (f"{r.seconds:.2f}" if r.status == "ok"
                                                             else r.status.upper()) for r in rs)

                def reqs(rs: list[Row | None]) -> str:
                    return " / ".join(str(r.requests["requests"]) if r and r.requests else "-" for r in rs)

                ratios = []
                for b, r in zip(cells["bk"], cells["restic"]):
                    ok = b and r and b.status == r.status == "ok" and r.seconds > 0
                    ratios.append(f"{b.seconds / r.seconds:.2f}" if ok else "-")
                first_b, first_r = cells["bk"][0], cells["restic"][0]
                out.append(f"| {delay:g} ms | {step} | {secs(cells['bk'])} | {secs(cells['restic'])} | "
                           f"{' / '.join(ratios)} | {reqs(cells['bk'])} | {reqs(cells['restic'])} | "
                           f"{_kinds(first_b.requests if first_b else None)} | "
                           f"{_kinds(first_r.requests if first_r else None)} |")
        out.append("")
    bad = [r for r in rows if r.status != "ok"]
    if bad:
        out += ["## Failures", ""] + [f"- {r.backend} {r.delay_ms:g} ms r{r.rep} {r.tool} {r.step}: {r.status} "
                                      f"{r.note}" for r in bad] + [""]
    if meta.get("notes"):
        out += ["## Notes", ""] + [f"- {n}" for n in meta["notes"]] + [""]
    return "\n".join(out)


def write(md: Path, meta: dict[str, Any], rows: list[Row]) -> str:
    md.parent.mkdir(parents=True, exist_ok=True)
    text = render(meta, rows)
    md.write_text(text)
    md.with_suffix(".json").write_text(json.dumps({"meta": meta, "results": [asdict(r) for r in rows]}, indent=1))
    return text


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.netbench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--scale", default="small", help="small (~50 MiB), full (~1 GiB) or MiB of the mixed set")
    ap.add_argument("--delays", default="0,20", help="added delay per request / round trip, ms, comma-separated")
    ap.add_argument("--repeat", type=int, default=2, help="repetitions of every cell")
    ap.add_argument("--backends", default="rest-bk,rest-rclone,sftp", help=f"comma-separated: {', '.join(BACKENDS)}")
    ap.add_argument("--tools", default="bk,restic")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800.0, help="seconds per command")
    ap.add_argument("--work", type=Path, default=DEFAULT_WORK / "net")
    ap.add_argument("--out", type=Path, help="Markdown file (JSON beside it)")
    ap.add_argument("--bk", help='how to start bk (default: "bk" on PATH, else the one beside this Python)')
    ap.add_argument("--bk-rev", help="run bk from this git revision (exported to WORK/bk-src)")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get install a missing restic")
    ap.add_argument("--render", type=Path, metavar="JSON", help="only re-render an earlier run's JSON")
    return ap.parse_args(argv)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    if a.render:
        doc = json.loads(a.render.read_text())
        print(write(a.out or a.render.with_suffix(".md"), doc["meta"], [Row(**r) for r in doc["results"]]))
        return 0
    names = [t for t in a.tools.split(",") if t]
    backends = [b for b in a.backends.split(",") if b]
    if unknown := set(backends) - set(BACKENDS):
        raise SystemExit(f"unknown backends {sorted(unknown)} (known: {', '.join(BACKENDS)})")
    delays = [float(d) for d in a.delays.split(",") if d]
    if not a.no_install:
        install([n for n in names if n != "bk"], log=lambda s: print(s, file=sys.stderr))
    work: Path = a.work
    work.mkdir(parents=True, exist_ok=True)
    bk_cmd, bk_rev = a.bk, None
    if a.bk_rev:
        from .s3bench import export_source

        bk_src, bk_rev = export_source(a.bk_rev, work / "bk-src")
        bk_cmd = f"env PYTHONPATH={bk_src} {sys.executable} -P -m backupkit_cli"
    elif bk_cmd is None and not shutil.which("bk") and (Path(sys.executable).parent / "bk").exists():
        bk_cmd = str(Path(sys.executable).parent / "bk")
    tools = {n: t for n, t in locate(names, bk_cmd).items() if not t.missing}
    if "bk" not in tools:
        raise SystemExit("bk was not found (it also runs the bk serve server)")
    started = dt.datetime.now(dt.timezone.utc)
    total = datagen.parse_scale(a.scale)
    scale = a.scale if a.scale in datagen.SCALES else f"{a.scale}MiB"
    data = DataSet(work / "data" / scale, work / "data" / f"{scale}.stamp",
                   {"kind": "mixed", "bytes": total, "files": datagen.default_small_files(total), "seed": a.seed,
                    "format": datagen.FORMAT})
    data.src.parent.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"machine": machine(),
                               "load average at start": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    summary["mixed set"] = f"`{data.src}`: " + data.ensure()
    for t in tools.values():
        summary[t.name] = t.version or "?"
    if bk_rev:
        summary["bk"] += f"; run from `git archive {bk_rev[:10]}`"
    summary["settings"] = ("each tool's defaults: REST bk 8 connections, restic 5 (rest.connections); SFTP bk 4 "
                           "SSH connections (paramiko), restic one `ssh` process with 5 concurrent requests "
                           "(sftp.connections); page cache kept warm (the source is read from memory)")
    summary["delay"] = ("REST: one sleep per HTTP request at the proxy, after the request is read; SFTP: every "
                        "chunk the client sends is held that long on its way to sshd (a round trip that much "
                        "longer; not a bandwidth limit); see benchmarks/netproxy.py")
    bench = Bench(a, tools, work, data)
    notes: list[str] = []
    out = a.out or HERE / "results" / f"{started.strftime('%Y-%m-%d')}-net-{scale}.md"

    def save() -> None:
        summary["load average at end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        summary["command"] = "`python -m benchmarks.netbench " + " ".join(sys.argv[1:] if argv is None else argv) + "`"
        meta = {"date": started.strftime("%Y-%m-%d %H:%M UTC"), "summary": summary, "notes": notes,
                "elapsed_s": round(time.time() - started.timestamp(), 1)}
        write(out, meta, bench.rows)

    try:
        for name in backends:
            bench.say(f"starting {name} ...")
            where = work / "servers" / name
            backend: Backend
            if name == "sftp":
                backend = SftpBackend(where, tools["bk"])
            elif name == "rclone":
                backend = RcloneBackend(where)
            else:
                backend = RestBackend(where, name.split("-", 1)[1], tools["bk"])
            summary[f"server {name}"] = backend.version
            try:
                for rep in range(1, a.repeat + 1):
                    for delay in delays:
                        if delay and not backend.delays_supported:
                            continue
                        bench.cell(backend, delay, rep)
                        save()
            finally:
                backend.stop()
    except KeyboardInterrupt:
        notes.append("interrupted: the results are partial")
    save()
    print(out.read_text())
    bench.say(f"written: {out} and {out.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
