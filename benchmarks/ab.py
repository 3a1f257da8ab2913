"""Alternate bk at several git revisions on one command, and print their figures.

    python -m benchmarks.ab --rev 12e16b4 --rev HEAD [--rounds 6] [--cold] [--fresh DIR] \\
        [--seed DIR] [--work DIR] -- --repo R --password-file P restore latest --target DIR
    python -m benchmarks.ab --rev HEAD --rev HEAD --extra "" --extra "--read-concurrency 1" \\
        --fresh R --init -- backup DATA                          # one revision, two option values
    python -m benchmarks.ab --rev HEAD --rev HEAD --tuning "" --tuning read_threads_local=4 \\
        --cold --fresh T -- --repo R --password-file P restore latest --target T   # a budget no option reaches
    BK_REPOSITORY=R BK_PASSWORD_FILE=P python -m benchmarks.ab --rev main --rev HEAD \\
        --fresh R --init [--before "SHELL"] -- backup DATA        # a first backup, each run
    RESTIC_PASSWORD_FILE=RP python -m benchmarks.ab --rev 1067a4f --rev HEAD --cold \\
        --stdout /var/tmp/out.zip --also "restic -r RR dump -a zip latest /" \\
        -- --repo R --password-file P restore latest --format zip --quiet   # a ZIP stream

Each revision is exported and built once (``s3bench.export_source``: ``git archive`` plus
its own C chunker), then every round runs the command once per revision, in the order
given, each as ``PYTHONPATH=EXPORT python -m backupkit_cli ARGS`` under
``measure.run`` (wall, CPU, peak RSS). ``--cold`` drops the page cache before every run
(root); ``--fresh DIR`` removes DIR before every run (a restore target, a scratch
repository to init); with ``--seed SRC`` it is then made a copy of SRC (``cp -a``, not
timed): a command that changes its repository, such as ``prune``, starts from the same
repository every run. ``--trash`` moves DIR aside instead and deletes what it moved only
after the last round: on ext4 without a journal a restore that comes minutes after the
deletion of another spends several times its system time creating files
(``benchmarks/run.py``); it needs the room for every run's restore. Alternating in
rounds spreads a shared machine's load over all revisions alike: compare the per-round
pairs, not only the means. ``--stdout FILE`` sends each run's standard output to FILE
(an archive stream written to a file, as a user's ``> out.zip``), removed after the run;
``--also SHELL`` (repeatable) runs that command too in every round, after the
revisions and treated alike (cold, fresh, stdout), e.g. restic on the same data.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

from benchmarks.measure import Cmd, drop_caches, run
from benchmarks.s3bench import export_source


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rev", action="append", required=True, help="a git revision (give two or more)")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--cold", action="store_true", help="drop the page cache before every run")
    ap.add_argument("--fresh", type=Path, help="a path removed before every run")
    ap.add_argument("--trash", action="store_true",
                    help="with --fresh: move DIR aside before each run, delete it after the last round")
    ap.add_argument("--seed", type=Path, help="with --fresh: copy this directory to the fresh path before every run")
    ap.add_argument("--init", action="store_true",
                    help="run the revision's `bk init` before every run (untimed, after --fresh): a first backup "
                         "into a new repository given by BK_REPOSITORY and BK_PASSWORD_FILE")
    ap.add_argument("--before", metavar="SHELL", help="a shell command run before every run (untimed, after --init: "
                    "e.g. reading the data into the page cache)")
    ap.add_argument("--extra", action="append", metavar="ARGS",
                    help="bk arguments added to the command for the revision at the same place as this "
                         "option among the --extra options (give one per --rev; \"\" for none): the same "
                         "revision twice with two option values, e.g. --read-concurrency")
    ap.add_argument("--tuning", action="append", metavar="FIELD=VALUE",
                    help="a Tuning default changed in the revision's export at the same place as this option among "
                         "the --tuning options (one per --rev; \"\" for none), for a budget no option reaches, e.g. "
                         "read_threads_local=4")
    ap.add_argument("--stdout", type=Path, metavar="FILE",
                    help="each run's standard output goes to FILE (removed after the run): an archive stream")
    ap.add_argument("--also", action="append", default=[], metavar="SHELL",
                    help="a shell command also run in every round, after the revisions (e.g. restic on the same data)")
    ap.add_argument("--work", type=Path, default=Path("/var/tmp/backupkit-ab"))
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("args", nargs=argparse.REMAINDER, help="-- then bk's arguments")
    a = ap.parse_args(argv)
    args = a.args[1:] if a.args[:1] == ["--"] else a.args
    if len(a.rev) < 2 or not args:
        ap.error("give at least two --rev and, after --, the bk command to run")
    if a.extra is not None and len(a.extra) != len(a.rev):
        ap.error("give one --extra per --rev")
    extra = [shlex.split(x) for x in a.extra] if a.extra else [[] for _ in a.rev]
    labels = [f"{rev} {x}".strip() if a.extra else rev for rev, x in zip(a.rev, a.extra or a.rev)]
    if a.seed is not None and a.fresh is None:
        ap.error("--seed needs --fresh (the path it is copied to)")
    if a.trash and a.fresh is None:
        ap.error("--trash needs --fresh (the path it moves aside)")
    if a.cold and not drop_caches():
        ap.error("--cold needs permission to write /proc/sys/vm/drop_caches (root)")
    if a.tuning is not None and len(a.tuning) != len(a.rev):
        ap.error("give one --tuning per --rev")
    exports = [export_source(rev, a.work / f"rev{i}") for i, rev in enumerate(a.rev)]
    for i, spec in enumerate(a.tuning or ()):
        if spec:
            try:
                _tune(*exports[i], spec)
            except ValueError as err:
                ap.error(str(err))
            labels[i] += f" [{spec}]"
    results: dict[int, list] = {i: [] for i in range(len(exports) + len(a.also))}
    try:
        return _rounds(a, args, extra, labels, exports, results)
    finally:
        if a.trash:
            shutil.rmtree(_trash_dir(a.fresh), ignore_errors=True)
            os.sync()


def _tune(export: Path, sha: str, spec: str) -> None:
    """Set ``FIELD=VALUE`` as the default of Tuning's field in an export of ``sha``, and
    stamp the export so that the next ``export_source`` of it makes it afresh."""
    field, sep, value = spec.partition("=")
    path = export / "backupkit" / "tuning.py"
    text = path.read_text()
    pattern = re.compile(rf"^(    {re.escape(field.strip())}: [^=\n]+= ).*$", re.MULTILINE)
    if not sep or not pattern.search(text):
        raise ValueError(f"--tuning {spec!r}: not FIELD=VALUE of a field of backupkit/tuning.py's Tuning")
    path.write_text(pattern.sub(lambda m: m.group(1) + value.strip(), text, count=1))
    (export / ".s3bench-rev").write_text(f"{sha} tuned {spec}")


def _trash_dir(fresh: Path) -> Path:
    return fresh.with_name(fresh.name + ".ab-trash")


def _rounds(a: argparse.Namespace, args: list[str], extra: list[list[str]], labels: list[str],
            exports: list[tuple[Path, str]], results: dict[int, list]) -> int:
    moved = 0
    labels = labels + [f"also{k + 1}: {shell.split()[0]}" for k, shell in enumerate(a.also)]
    runs = list(exports) + [(None, "-" * 10)] * len(a.also)
    for rnd in range(1, a.rounds + 1):
        for i, (src, sha) in enumerate(runs):
            if a.trash and os.path.lexists(a.fresh):
                _trash_dir(a.fresh).mkdir(exist_ok=True)
                a.fresh.rename(_trash_dir(a.fresh) / str(moved))
                moved += 1
            if a.fresh is not None:
                shutil.rmtree(a.fresh, ignore_errors=True)
                if a.seed is not None:
                    shutil.copytree(a.seed, a.fresh, symlinks=True)
            if src is None:  # an --also command
                shell = a.also[i - len(exports)]
                if a.cold:
                    drop_caches()
                m = run(Cmd(["sh", "-c", shell], stdout=a.stdout), dict(os.environ), a.work / "logs" / f"also{i}.log", a.timeout)
                if not _record(a, m, labels[i], sha, rnd, results[i]):
                    return 1
                continue
            env = os.environ | {"PYTHONPATH": str(src)}
            if a.init:
                subprocess.run([sys.executable, "-P", "-m", "backupkit_cli", "-q", "init"], env=env, check=True,
                               stdout=subprocess.DEVNULL)
            if a.before:
                subprocess.run(a.before, shell=True, check=True)
            if a.cold:
                drop_caches()
            m = run(Cmd([sys.executable, "-P", "-m", "backupkit_cli", *args, *extra[i]], stdout=a.stdout), env,
                    a.work / "logs" / f"rev{i}.log", a.timeout)
            if not _record(a, m, labels[i], sha, rnd, results[i]):
                return 1
    print("\nrevision       mean wall   mean CPU   peak MiB (min-max)")
    for i, rev in enumerate(labels):
        ms = results[i]
        peaks = [m.peak_kib / 1024 for m in ms]
        print(f"{rev:>12} {statistics.mean(m.wall for m in ms):9.2f} s {statistics.mean(m.cpu for m in ms):8.2f} s"
              f"   {min(peaks):.0f}-{max(peaks):.0f}")
    return 0


def _record(a: argparse.Namespace, m, label: str, sha: str, rnd: int, into: list) -> bool:
    """Print and keep one run's figures; False (said) if it failed. Removes --stdout's file."""
    if a.stdout is not None:
        a.stdout.unlink(missing_ok=True)
    if not m.ok:
        print(f"{label} failed in round {rnd}: {m.errors[-1]} (log: {a.work / 'logs'})", file=sys.stderr)
        return False
    into.append(m)
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    print(f"round {rnd} {label:>12} ({sha[:10]}): {m.wall:7.2f} s wall {m.cpu:7.2f} CPU s {m.peak_kib / 1024:7.1f} MiB"
          f"  (load {load})", flush=True)
    return True


if __name__ == "__main__":
    raise SystemExit(main())
