"""The tools under comparison: how to find or install them, and each step's commands.

Vocabulary:
    Tool: one backup program (bk, restic, borg). Its methods return the commands of a
        step, never run them; ``run.py`` runs and measures them.
    Workspace: one tool's private corner of a run, for one data set: repository,
        cache and config directories, password file, and the number of snapshots taken
        (borg 1.x has no ``latest``, so archives are named b1, b2, ... by us).

Comparable settings (the brief's): restic defaults (repository v2, compression auto);
borg ``--encryption repokey-blake2`` and ``--compression zstd,3`` (borg 1.x's closest to
"encrypted + zstd level 3"; its default would be lz4); bk defaults. Passwords go in through
the environment or a file, caches into the run's work directory.

Usage: ``python -m benchmarks.tools [--install]`` prints what is found (and installs
restic and borg if missing: apt, then pip for borg).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .measure import Cmd

PASSWORD = "benchmark-password-not-secret"


@dataclass
class Workspace:
    root: Path
    snapshots: int = 0

    @property
    def repo(self) -> Path:
        return self.root / "repo"

    @property
    def cache(self) -> Path:
        return self.root / "cache"

    @property
    def password_file(self) -> Path:
        return self.root / "password"

    def create(self) -> None:
        if self.root.exists():
            shutil.rmtree(self.root)
        self.cache.mkdir(parents=True)
        self.password_file.write_text(PASSWORD + "\n")


def _clean_env(prefixes: tuple[str, ...] = ("BK_", "RESTIC_", "BORG_")) -> dict[str, str]:
    """The caller's environment without any tool's settings (so none leaks in)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


class Tool:
    name = ""
    stream_format = "zip"  # what ``stream`` writes
    stream_note = ""

    def __init__(self, argv: list[str] | None) -> None:
        self.argv = argv  # None: not found
        self.version = self._version() if argv else ""

    @property
    def missing(self) -> str | None:
        return None if self.argv else f"{self.name} not found"

    def _version(self) -> str:
        """The first line the tool prints for its version, or "" if it has no such option."""
        try:
            out = subprocess.run([*self.argv, "version" if self.name == "restic" else "--version"],
                                 capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return ""
        lines = (out.stdout or out.stderr).strip().splitlines()
        return lines[0] if out.returncode == 0 and lines else ""

    def env(self, ws: Workspace) -> dict[str, str]:
        raise NotImplementedError

    def help(self) -> list[Cmd]:
        return [Cmd([*self.argv, "--help"])]

    def init(self, ws: Workspace) -> list[Cmd]:
        raise NotImplementedError

    def backup(self, ws: Workspace, src: Path) -> list[Cmd]:
        raise NotImplementedError

    def snapshot_count(self, ws: Workspace) -> list[Cmd]:
        """A command printing JSON from which ``parse_count`` gets the number of snapshots."""
        raise NotImplementedError

    def parse_count(self, out: str) -> int:
        import json

        return len(json.loads(out))

    def restore(self, ws: Workspace, target: Path) -> list[Cmd]:
        raise NotImplementedError

    def stream(self, ws: Workspace, out: Path) -> list[Cmd]:
        raise NotImplementedError

    def check(self, ws: Workspace) -> list[Cmd]:
        raise NotImplementedError

    def forget_prune(self, ws: Workspace) -> list[Cmd]:
        raise NotImplementedError


class Bk(Tool):
    name = "bk"

    def _version(self) -> str:
        version = super()._version()
        if not version:
            try:
                from importlib.metadata import version as dist_version

                version = f"backupkit {dist_version('backupkit')}"
            except ImportError:
                version = "bk (version unknown)"
        return f"{version} (git {_git_head()})"

    def env(self, ws: Workspace) -> dict[str, str]:
        return _clean_env() | {"BK_CACHE_DIR": str(ws.cache)}

    def _g(self, ws: Workspace) -> list[str]:
        return [*self.argv, "--repo", str(ws.repo), "--password-file", str(ws.password_file)]

    def init(self, ws: Workspace) -> list[Cmd]:
        return [Cmd([*self._g(ws), "init"])]

    def backup(self, ws: Workspace, src: Path) -> list[Cmd]:
        return [Cmd([*self._g(ws), "backup", str(src), "--tag", "bench"])]

    def snapshot_count(self, ws: Workspace) -> list[Cmd]:
        return [Cmd([*self._g(ws), "--json", "snapshots"])]

    def restore(self, ws: Workspace, target: Path) -> list[Cmd]:
        return [Cmd([*self._g(ws), "restore", "latest", "--target", str(target)])]

    def stream(self, ws: Workspace, out: Path) -> list[Cmd]:
        return [Cmd([*self._g(ws), "restore", "latest", "--format", "zip"], stdout=out)]

    def check(self, ws: Workspace) -> list[Cmd]:
        return [Cmd([*self._g(ws), "check", "--read-data"])]

    def forget_prune(self, ws: Workspace) -> list[Cmd]:
        return [Cmd([*self._g(ws), "forget", "--keep-last", "1", "--prune"])]


class Restic(Tool):
    name = "restic"

    def env(self, ws: Workspace) -> dict[str, str]:
        return _clean_env() | {"RESTIC_REPOSITORY": str(ws.repo), "RESTIC_PASSWORD": PASSWORD,
                               "RESTIC_CACHE_DIR": str(ws.cache)}

    def init(self, ws: Workspace) -> list[Cmd]:
        return [Cmd([*self.argv, "init"])]

    def backup(self, ws: Workspace, src: Path) -> list[Cmd]:
        return [Cmd([*self.argv, "backup", str(src), "--tag", "bench"])]

    def snapshot_count(self, ws: Workspace) -> list[Cmd]:
        return [Cmd([*self.argv, "snapshots", "--json"])]

    def restore(self, ws: Workspace, target: Path) -> list[Cmd]:
        return [Cmd([*self.argv, "restore", "latest", "--target", str(target)])]

    def stream(self, ws: Workspace, out: Path) -> list[Cmd]:
        return [Cmd([*self.argv, "dump", "-a", "zip", "latest", "/"], stdout=out)]

    def check(self, ws: Workspace) -> list[Cmd]:
        return [Cmd([*self.argv, "check", "--read-data"])]

    def forget_prune(self, ws: Workspace) -> list[Cmd]:
        return [Cmd([*self.argv, "forget", "--keep-last", "1", "--prune"])]


class Borg(Tool):
    name = "borg"
    stream_format = "tar"
    stream_note = "borg 1.x cannot write ZIP: its row is `borg export-tar ARCHIVE -` (uncompressed TAR)"
    # borg exits 1 for warnings (e.g. a file changed while read); the data is still saved.
    _ok = (0, 1)

    def env(self, ws: Workspace) -> dict[str, str]:
        return _clean_env() | {
            "BORG_REPO": str(ws.repo), "BORG_PASSPHRASE": PASSWORD,
            "BORG_BASE_DIR": str(ws.root / "home"),  # config, keys, security dir
            "BORG_CACHE_DIR": str(ws.cache),
            "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes", "BORG_DISPLAY_PASSPHRASE": "no",
        }

    def _archive(self, ws: Workspace) -> str:
        return f"::b{ws.snapshots}"

    def init(self, ws: Workspace) -> list[Cmd]:
        return [Cmd([*self.argv, "init", "--encryption", "repokey-blake2"])]

    def backup(self, ws: Workspace, src: Path) -> list[Cmd]:
        return [Cmd([*self.argv, "create", "--compression", "zstd,3", f"::b{ws.snapshots + 1}",
                     str(src)], ok_codes=self._ok)]

    def snapshot_count(self, ws: Workspace) -> list[Cmd]:
        return [Cmd([*self.argv, "list", "--json"])]

    def parse_count(self, out: str) -> int:
        import json

        return len(json.loads(out)["archives"])

    def restore(self, ws: Workspace, target: Path) -> list[Cmd]:
        return [Cmd([*self.argv, "extract", self._archive(ws)], cwd=target, ok_codes=self._ok)]

    def stream(self, ws: Workspace, out: Path) -> list[Cmd]:
        return [Cmd([*self.argv, "export-tar", self._archive(ws), "-"], stdout=out, ok_codes=self._ok)]

    def check(self, ws: Workspace) -> list[Cmd]:
        return [Cmd([*self.argv, "check", "--verify-data"])]

    def forget_prune(self, ws: Workspace) -> list[Cmd]:
        return [Cmd([*self.argv, "prune", "--keep-last", "1"]), Cmd([*self.argv, "compact"])]


TOOLS: dict[str, type[Tool]] = {"bk": Bk, "restic": Restic, "borg": Borg}


def _git_head() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).resolve().parent, timeout=10)
        return out.stdout.strip() or "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def bk_beside_python() -> Path:
    """The bk installed beside this Python (the project's .venv, activated or not)."""
    return Path(sys.executable).with_name("bk")


def _which(name: str) -> list[str] | None:
    """The command on PATH; for bk, else ``bk_beside_python()``."""
    path = shutil.which(name)
    if path is None and name == "bk" and os.access(bk_beside_python(), os.X_OK):
        path = str(bk_beside_python())
    return [path] if path else None


def install(names: list[str], log=print) -> None:
    """Install restic and borg if missing: Debian packages, then pip for borg."""
    want = {"restic": "restic", "borg": "borgbackup"}
    missing = [n for n in names if n in want and not shutil.which(n)]
    if not missing:
        return
    if shutil.which("apt-get") and os.geteuid() == 0:
        log(f"installing {', '.join(want[n] for n in missing)} with apt-get")
        env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], env=env, check=False)
        subprocess.run(["apt-get", "install", "-y", "-qq", *(want[n] for n in missing)], env=env,
                       check=False, stdout=subprocess.DEVNULL)
    if "borg" in missing and not shutil.which("borg"):
        log("installing borgbackup with pip")
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "borgbackup"], check=False)


def locate(names: list[str], bk_cmd: str | None = None) -> dict[str, Tool]:
    """A Tool per name; ``bk_cmd`` overrides how bk is started (e.g. "python -m ...")."""
    tools: dict[str, Tool] = {}
    for name in names:
        if name not in TOOLS:
            raise SystemExit(f"unknown tool {name!r} (known: {', '.join(TOOLS)})")
        argv = shlex.split(bk_cmd) if name == "bk" and bk_cmd else _which(name)
        tools[name] = TOOLS[name](argv)
    return tools


def main() -> int:
    names = list(TOOLS)
    if "--install" in sys.argv[1:]:
        install(names)
    for name, tool in locate(names).items():
        print(f"{name:7} {tool.argv[0] if tool.argv else '-':28} {tool.version or tool.missing}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
