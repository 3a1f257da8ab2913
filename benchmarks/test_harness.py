"""The harness's own checks (no speed is asserted anywhere): ``pytest benchmarks/test_harness.py``.

Not collected by the default suite (``testpaths = ["tests"]``); each test takes a second or two.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from benchmarks import datagen, profiling, report, verify
from benchmarks import restore_pairs
from benchmarks import run as run_mod
from benchmarks.measure import Cmd, run
from benchmarks.run import main, select_steps

SCALE = 8 * datagen.MiB


def _meta(root: Path) -> dict[str, tuple[int, int, int]]:
    out = {}
    for d, dirs, files in os.walk(root):
        for name in dirs + files:
            st = (Path(d) / name).lstat()
            out[(Path(d) / name).relative_to(root).as_posix()] = (st.st_mode, st.st_mtime_ns, st.st_size)
    return out


def test_same_seed_gives_identical_tree_and_change(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    datagen.generate_mixed(a, SCALE, 300, seed=5)
    datagen.generate_mixed(b, SCALE, 300, seed=5)
    datagen.generate_mixed(c, SCALE, 300, seed=6)
    assert verify.tree_manifest(a) == verify.tree_manifest(b)
    assert _meta(a) == _meta(b)
    assert verify.tree_manifest(a) != verify.tree_manifest(c)
    before = verify.tree_manifest(a)
    datagen.apply_change(a, seed=5)
    datagen.apply_change(b, seed=5)
    assert verify.tree_manifest(a) == verify.tree_manifest(b) != before
    assert _meta(a) == _meta(b)


def test_mixed_set_has_every_kind(tmp_path: Path) -> None:
    s = datagen.generate_mixed(tmp_path / "m", SCALE, 300)
    assert abs(s.bytes - SCALE) < SCALE * 0.1
    disks = sorted((tmp_path / "m" / "vm").iterdir())
    assert len(disks) == 3
    assert any(p.stat().st_blocks * 512 < p.stat().st_size for p in disks)  # holes
    digests = [v[1] for v in verify.tree_manifest(tmp_path / "m").values()]
    assert len(digests) > len(set(digests))  # duplicate files


def test_change_touches_about_one_percent(tmp_path: Path) -> None:
    root = tmp_path / "many"
    datagen.generate_many(root, 2000)
    before = verify.tree_manifest(root)
    s = datagen.apply_change(root)
    after = verify.tree_manifest(root)
    changed = set(before) ^ set(after) | {k for k in set(before) & set(after) if before[k] != after[k]}
    assert s.files == 20 and 15 <= len(changed) <= 20


def test_verify_finds_a_flipped_byte_in_tree_and_archives(tmp_path: Path) -> None:
    src = tmp_path / "src"
    datagen.generate_many(src, 50)
    expected = verify.tree_manifest(src)
    restored = tmp_path / "r" / src.resolve().relative_to("/")  # restic's layout
    restored.parent.mkdir(parents=True)
    os.system(f"cp -a '{src}' '{restored}'")
    assert verify.verify_tree(tmp_path / "r", src, expected).ok
    with zipfile.ZipFile(tmp_path / "s.zip", "w") as zf:
        for rel in expected:
            zf.write(src / rel, src.resolve().relative_to("/").as_posix() + "/" + rel)
    assert verify.verify_archive(tmp_path / "s.zip", "zip", src, expected).ok
    with tarfile.open(tmp_path / "s.tar", "w") as tf:
        tf.add(src, arcname=src.name)
    assert verify.verify_archive(tmp_path / "s.tar", "tar", src, expected).ok
    victim = restored / sorted(expected)[7]
    victim.write_bytes(victim.read_bytes() + b"!")
    v = verify.verify_tree(tmp_path / "r", src, expected)
    assert not v.ok and "1 differ" in v.text
    assert not verify.verify_archive(tmp_path / "missing.zip", "zip", src, expected).ok


def test_measure_reports_exit_codes_and_timeouts(tmp_path: Path) -> None:
    env = dict(os.environ)
    ok = run(Cmd(["python3", "-c", "b = bytearray(64 << 20)"]), env, tmp_path / "a.log", 30)
    assert ok.ok and ok.peak_kib > 64 * 1024
    assert ok.minflt > 64 * 1024 // 4  # each 4 KiB page of the 64 MiB touched once
    bad = run(Cmd(["sh", "-c", "echo boom >&2; exit 3"]), env, tmp_path / "b.log", 30)
    assert not bad.ok and bad.rc == 3 and "boom" in bad.errors[0]
    slow = run(Cmd(["sleep", "30"]), env, tmp_path / "c.log", 0.5)
    assert slow.timed_out and not slow.ok
    # system time on its own: a loop of system calls is mostly the kernel's
    calls = run(Cmd(["python3", "-c", "import os\nfor _ in range(300000): os.stat('/')"]), env, tmp_path / "d.log", 60)
    assert calls.ok and 0 < calls.sys_cpu <= calls.cpu


#: a parent that starts a worker in a session of its own (as bk's sealing processes are)
#: and waits for it; the worker touches 96 MiB and lives a second
_WORKER_IN_ITS_OWN_SESSION = """
import subprocess, sys
child = "b = bytearray(96 << 20); b[::4096] = bytes(len(b) // 4096 + 1)[: len(b[::4096])]; import time; time.sleep(1)"
subprocess.run([sys.executable, "-c", child], start_new_session=True, check=True)
"""


def test_measure_counts_workers_in_sessions_of_their_own(tmp_path: Path) -> None:
    m = run(Cmd([sys.executable, "-c", _WORKER_IN_ITS_OWN_SESSION]), dict(os.environ), tmp_path / "w.log", 30)
    assert m.ok, m.errors
    assert m.tree_pss_kib > 96 * 1024  # the worker's 96 MiB, though /usr/bin/time sees only the parent


def test_selected_steps_bring_what_they_need() -> None:
    steps, added = select_steps("restore,many-1pct")
    assert steps == ["init", "backup", "restore", "many-backup", "many-1pct"]
    assert sorted(added) == ["backup", "init", "many-backup"]


def test_tree_steps_need_a_source() -> None:
    assert not any(s.startswith("tree") for s in select_steps(None)[0])
    assert select_steps(None, source=True)[0][-4:] == ["tree-backup", "tree-unchanged", "tree-restore",
                                                       "tree-check-read-data"]
    assert select_steps("tree-restore", source=True) == (["tree-backup", "tree-restore"], ["tree-backup"])
    with pytest.raises(SystemExit, match="need --source"):
        select_steps("tree-restore")


def test_verify_tree_leaves_out_what_a_live_source_changed(tmp_path: Path) -> None:
    src, restored = tmp_path / "src", tmp_path / "r"
    datagen.generate_many(src, 30)
    expected = verify.tree_manifest(src)
    os.system(f"cp -a '{src}' '{restored}'")
    since = time.time()
    names = sorted(expected)
    live = src / names[3]  # the system rewrote this one after the run began: not held against the restore
    live.write_bytes(b"new")
    os.utime(live, (since + 5, since + 5))
    (restored / names[3]).write_bytes(b"new")  # and the backup saw the new bytes
    (src / "new-file").write_bytes(b"x")  # appeared during the run, restored too
    (restored / "new-file").write_bytes(b"x")
    v = verify.verify_tree(restored, src, expected, changed_since=since)
    assert v.ok and "2 changed in the source" in v.text
    assert not verify.verify_tree(restored, src, expected).ok  # without the live-tree rule: extra file
    bad = restored / names[5]  # a restore that is wrong where the source did not change
    bad.write_bytes(bad.read_bytes() + b"!")
    v = verify.verify_tree(restored, src, expected, changed_since=since)
    assert not v.ok and "1 differ" in v.text


def _result(step: str, tool: str, seconds: float, cpu: float, sys: float | None = None) -> dict:
    r = {"step": step, "tool": tool, "status": "ok", "seconds": seconds, "cpu_seconds": cpu, "mb": 100.0,
         "peak_rss_mib": 50.0, "repo_bytes": 1 << 20, "note": ""}
    return r if sys is None else {**r, "sys_seconds": sys}


def test_report_merges_runs_with_cores_sets_and_borg_equivalents() -> None:
    meta = {"scale": "full", "date": "d", "tools": ["bk", "restic", "borg"], "steps": ["backup", "restore-zip"],
            "summary": {"load average at start": "1"}, "notes": [], "cache": "cold",
            "sets": {"mixed": "mixed", "many": "many"}}
    first = {"meta": meta, "results": [_result("backup", "bk", 10, 15, 3), _result("backup", "restic", 20, 30),
                                       _result("backup", "borg", 40, 36), _result("restore-zip", "borg", 5, 5)]}
    second = {"meta": {**meta, "date": "e", "steps": ["tree-backup"], "summary": {"load average at start": "2"},
                       "sets": {"tree": "`/srv`"}},
              "results": [_result("tree-backup", "bk", 30, 60), _result("tree-backup", "restic", 60, 90)]}
    doc = report.merge([first, second])
    assert doc["meta"]["steps"] == ["backup", "restore-zip", "tree-backup"]
    assert doc["meta"]["summary"]["load average at start (invocation 2, e)"] == "2"
    text = report.render(doc["meta"], doc["results"])
    # CPU s, the kernel's share of them (where measured: not in older JSON) and cores per tool
    assert "| backup | 15.0 | 20% | 1.50 | 30.0 |  | 1.50 | 36.0 |  | 0.90 |" in text
    assert "| tree-backup | `/srv` | 100 |" in text
    assert "restore-zip [1]" in text and "[1] `restore-zip`: `export-tar`" in text
    assert "Results (cold" in text
    assert "| first backup, `/srv` (issue: warm cache) | <= 0.33 | 0.50 | does not hold |" in text
    assert "cold: <= max(0.5, disk-read limit) | <= 0.50 | 0.50 | holds |" in text  # the cold row of a cold run
    warm = {**doc["meta"], "cache": "warm"}
    failed = [*doc["results"], {**_result("tree-restore", "bk", 1, 1), "status": "failed"},
              _result("tree-restore", "restic", 2, 2)]
    text = report.render({**warm, "steps": [*warm["steps"], "tree-restore"]}, failed)
    assert "| first backup, generated mixed set, warm | <= 0.33 | 0.50 | does not hold |" in text
    assert "disk-read limit" not in text
    assert "| restore to a directory, `/srv` | <= 0.60 | — | bk FAILED |" in text


def test_a_source_tree_runs_end_to_end(tmp_path: Path, monkeypatch, capsys) -> None:
    bk = Path(sys.executable).parent / "bk"
    if not (bk.exists() and shutil.which("restic")):
        pytest.skip("needs this venv's bk and restic on PATH")
    emptied = []  # what the trash held each time the run emptied it
    real_empty = run_mod.Runner.empty_trash

    def empty_trash(self) -> None:
        bin_ = self.work / "trash"
        emptied.append(sorted(os.listdir(bin_)) if bin_.exists() else [])
        real_empty(self)

    monkeypatch.setattr(run_mod.Runner, "empty_trash", empty_trash)
    src = tmp_path / "src"
    datagen.generate_many(src, 40)
    out = tmp_path / "page.md"
    assert main(["--source", str(src), "--tools", "bk,restic", "--no-install", "--work", str(tmp_path / "w"),
                 "--bk", str(bk), "--warm", "--out", str(out), *(["--profile"] if profiling.py_spy() else []),
                 "--steps", "tree-unchanged,tree-restore,tree-check-read-data"]) == 0
    doc = json.loads(out.with_suffix(".json").read_text())
    assert {(r["step"], r["tool"]): r["status"] for r in doc["results"]} == {
        (s, t): "ok" for s in ("tree-backup", "tree-unchanged", "tree-restore", "tree-check-read-data")
        for t in ("bk", "restic")}
    assert "verified 40 files" in out.read_text()
    assert doc["meta"]["floors_s"]["tree"] > 0
    # each restore was moved aside once verified and deleted only when the run ended
    assert emptied == [[], ["0-bk-tree", "1-restic-tree"]]
    assert not (tmp_path / "w" / "small" / "trash").exists()
    assert not (tmp_path / "w" / "small" / "bk" / "tree" / "restore").exists()
    # the same repositories restored beside tar -xf of the set, every target kept to the end
    assert restore_pairs.main(["--set", "tree", "--source", str(src), "--work", str(tmp_path / "w" / "small"),
                               "--rounds", "1", "--shm", str(tmp_path)]) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("round 1")]
    assert [ln.split(":")[0].split()[-1] for ln in lines] == ["-xf", "bk", "restic"]
    assert all("minor faults" in ln for ln in lines)
    assert not (tmp_path / "w" / "small" / "trash-pairs").exists()
    if profiling.py_spy():  # the profiled repetition: every tree step, with the functions bk spent its time in
        assert [p["step"] for p in doc["meta"]["profiles"]] == ["tree-backup", "tree-unchanged", "tree-restore",
                                                               "tree-check-read-data"]
        assert all(p["top"] and p["gil_held"] is not None for p in doc["meta"]["profiles"])
        assert "Where bk's time goes" in out.read_text()


def test_profile_summary_counts_own_time_and_gil_share() -> None:
    cpu = ('process 1:"bk backup";main (cli/main.py:3);walk (/x/backupkit/walk.py:10) 300\n'
           'process 1:"bk backup";main (cli/main.py:3);walk (/x/backupkit/walk.py:12) 100\n'
           'process 1:"bk backup";worker (/x/backupkit/pipe.py:5);chunk (/x/backupkit/chunk.py:7) 200\n')
    gil = ('process 1:"bk backup";main (cli/main.py:3);walk (/x/backupkit/walk.py:10) 400\n'
           'process 1:"bk backup";worker (/x/backupkit/pipe.py:5);chunk (/x/backupkit/chunk.py:7) 20\n')
    p = profiling.summarize("backup", 5.0, cpu, gil, rate=100)
    assert p["top"][0] == {"function": "walk (backupkit/walk.py)", "own_s": 4.0, "gil_share": 1.0}
    assert p["top"][1] == {"function": "chunk (backupkit/chunk.py)", "own_s": 2.0, "gil_share": 0.1}
    assert p["gil_held"] == 0.84 and p["cpu_samples_s"] == 6.0


def test_bk_is_found_beside_the_python_running_the_harness(monkeypatch):
    """``.venv/bin/python -m benchmarks.run`` without an activated venv still measures bk
    (a run that silently left bk out cost a session its first full run)."""
    from benchmarks import tools

    monkeypatch.setenv("PATH", "/nonexistent")
    argv = tools._which("bk")
    assert argv is not None and argv[0] == str(Path(sys.executable).with_name("bk"))
    assert tools._which("restic") is None


def test_walk_parts_lists_and_compares_both_ways(tmp_path: Path, capsys) -> None:
    from backupkit.managers.backup import BackupManager, BackupOptions
    from benchmarks import walk_parts
    from tests.support.kit import PASSWORD, make_test_repo

    src = tmp_path / "src"
    for i in range(30):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i}").write_bytes(b"%d" % i)
    repo = make_test_repo(tmp_path / "repo")
    BackupManager(repo).run(BackupOptions(paths=(str(src),), scan_totals=False))
    repo.close()
    (tmp_path / "pw").write_bytes(PASSWORD)
    args = ["--path", str(src), "--rounds", "1", "--repo", str(tmp_path / "repo"), "--password-file", str(tmp_path / "pw")]
    assert walk_parts.main(args) == 0
    out = capsys.readouterr().out
    assert "list, Python (listdir, lstat): 33 entries" in out
    assert "compare, Python (wire, file_unchanged): 30 of 30 files unchanged" in out
    assert "index load: " in out and "parent listings (every directory's children, the backup's caches): 33 entries" in out
    # "/", the parents of src, src, its 3 directories and 30 files
    depth = len(src.parts) - 1
    assert f"snapshot walk (every entry, as restore, ls and find walk it): {1 + depth + 33} entries" in out
    (src / "d0" / "f0").write_bytes(b"changed, and longer")
    assert walk_parts.main(args) == 0
    assert "29 of 30 files unchanged" in capsys.readouterr().out


def test_read_ahead_walks_every_entry_with_each_setting(tmp_path: Path, capsys) -> None:
    from benchmarks import read_ahead

    for i in range(12):
        (tmp_path / "t" / f"d{i % 4}" / "sub").mkdir(parents=True, exist_ok=True)
        (tmp_path / "t" / f"d{i % 4}" / f"f{i}").write_bytes(b"x")
    assert read_ahead.main(["--path", str(tmp_path / "t"), "--rounds", "2", "0:1", "8:2", "16384:4"]) == 0
    out = capsys.readouterr().out.splitlines()
    # 4 directories, each with a sub and 3 files: 4 + 4 + 12 entries, the same every way
    assert out[0] == f"{tmp_path / 't'}: 20 entries, warm"
    assert [line.split(":")[0].split() for line in out[1:]] == [["0", "entries,", "1", "threads"], ["8", "entries,", "2", "threads"], ["16384", "entries,", "4", "threads"]]
    assert all(len(line.split(":")[1].split()) == 2 for line in out[1:])


def test_a_run_with_restores_waits_for_the_last_runs_deletes(tmp_path: Path, monkeypatch) -> None:
    runner = run_mod.Runner.__new__(run_mod.Runner)
    runner.work = tmp_path
    slept, said = [], []
    monkeypatch.setattr(run_mod.time, "sleep", slept.append)
    runner.wait_after_deletes(said.append)  # no trash was ever emptied here
    assert slept == [] and said == []
    (tmp_path / "trash" / "0-bk-tree").mkdir(parents=True)
    runner.empty_trash()
    assert not (tmp_path / "trash").exists()
    runner.wait_after_deletes(said.append)
    assert len(slept) == 1 and run_mod.DELETES_SETTLE - 60 < slept[0] <= run_mod.DELETES_SETTLE
    assert "deleted" in said[0]
    old = time.time() - run_mod.DELETES_SETTLE - 5
    os.utime(tmp_path / "trash.emptied", (old, old))
    runner.wait_after_deletes(said.append)
    assert len(slept) == 1


def test_sealbench_compares_both_paths_on_every_case() -> None:
    from benchmarks import sealbench

    got = sealbench.rows(small=50, large=2, opens=3)
    assert [unit for _w, _c, _p, unit in got] == ["s", "s", "s", "us", "us", "us"]
    assert all(c > 0 and p > 0 for _w, c, p, _u in got)


def test_coldimport_lists_the_modules_a_command_imports() -> None:
    from benchmarks import coldimport

    mods = coldimport.modules_of(["--version"])
    assert "backupkit_cli.main" in mods and "typer" in mods
    assert "backupkit.managers.backup" not in mods  # --version imports no manager


def test_ab_streams_stdout_to_a_file_and_runs_also_commands(tmp_path: Path, capsys, monkeypatch) -> None:
    """``benchmarks.ab`` rounds with ``--stdout`` and ``--also`` (two 'revisions' of this
    checkout): each run's archive goes to the file (removed after), the --also command
    runs in every round, and every row is summed up."""
    import argparse
    import subprocess

    from benchmarks import ab

    root = Path(__file__).resolve().parent.parent
    env = os.environ | {"PYTHONPATH": str(root)}
    repo, pw, src = tmp_path / "repo", tmp_path / "pw", tmp_path / "src"
    pw.write_text("pw\n")
    src.mkdir()
    (src / "a").write_bytes(b"a" * 5000)
    bk = [sys.executable, "-P", "-m", "backupkit_cli", "--repo", str(repo), "--password-file", str(pw)]
    subprocess.run(bk + ["init", "--quiet"], env=env, check=True)
    subprocess.run(bk + ["backup", str(src), "--quiet"], env=env, check=True)
    out = tmp_path / "out.zip"
    seen = tmp_path / "seen"
    archives: list[list[str]] = []
    record = ab._record

    def looked_at(a, m, label, *rest):  # the run's stdout, before ``_record`` removes it
        if not label.startswith("also"):
            with zipfile.ZipFile(out) as z:
                archives.append(z.namelist())
        return record(a, m, label, *rest)

    monkeypatch.setattr(ab, "_record", looked_at)
    a = argparse.Namespace(rounds=2, trash=False, fresh=None, seed=None, init=False, before=None, cold=False,
                           timeout=120, work=tmp_path / "work", stdout=out,
                           also=[f"test -s {out} && echo yes >> {seen} || echo no >> {seen}"])
    args = ["--repo", str(repo), "--password-file", str(pw), "restore", "latest", "--format", "zip", "--quiet"]
    assert ab._rounds(a, args, [[], []], ["one", "two"], [(root, "aaaaaaaaaa"), (root, "bbbbbbbbbb")],
                      {0: [], 1: [], 2: []}) == 0
    printed = capsys.readouterr().out
    assert printed.count("round 1") == 3 and printed.count("round 2") == 3
    assert "also1: test" in printed
    assert not out.exists()  # removed after each run ...
    assert seen.read_text().split() == ["no", "no"]  # ... so the --also command saw none
    assert len(archives) == 4 and all(any(n.endswith("src/a") for n in names) for names in archives)


def test_s3client_times_the_client_both_ways() -> None:
    """``benchmarks.s3client``: a fresh process per way, each timing the import and the
    client; botocore's own way lists its ~400 model directories, the store's does not."""
    from benchmarks import s3client

    lazy, listing = (s3client.one(m, cold=False) for m in s3client.MODES)
    assert set(lazy) == set(listing) == {"import", "client", "listdirs"}
    assert lazy["client"] > 0 and listing["client"] > 0
    assert lazy["listdirs"] < 50 < 300 < listing["listdirs"]


def test_restic_index_makes_a_repository_restic_accepts(tmp_path: Path) -> None:
    """``benchmarks.restic_index``: 3 fake packs of 50 blobs in 2 index files beside a real
    snapshot. restic lists and loads them: ``check`` (no --read-data: it compares each
    pack's size with the index's, reads no pack) finds no error, and ``prune --dry-run``
    would delete exactly the 150 blobs, without a size or repair complaint. One byte more in
    a pack is an error, so the sizes are restic's, not merely tolerated."""
    import subprocess

    from benchmarks import restic_index

    restic = shutil.which("restic")
    if not restic:
        pytest.skip("needs restic on PATH")
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESTIC_")}
    env.update(RESTIC_REPOSITORY=str(tmp_path / "repo"), RESTIC_PASSWORD="pw", RESTIC_CACHE_DIR=str(tmp_path / "cache"))

    def restic_(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([restic, *args], env=env, capture_output=True, text=True, timeout=120)

    datagen.generate_many(tmp_path / "src", 20)
    assert restic_("init").returncode == 0
    assert restic_("backup", "-q", str(tmp_path / "src")).returncode == 0
    with pytest.raises(ValueError, match="no key file"):
        restic_index.master_key(tmp_path / "repo", "not-pw")
    ids = restic_index.inject(tmp_path / "repo", "pw", 150, per_pack=50, per_object=100, cache=tmp_path / "cache")
    assert len(ids) == 2
    listed = restic_("list", "index")
    assert listed.returncode == 0 and set(ids) < set(listed.stdout.split()) and len(listed.stdout.split()) == 3
    cache_ids = {p.name for p in (tmp_path / "cache").glob("*/index/*/*")}
    assert set(ids) < cache_ids  # where restic would have put them, so it reads none from the repository again
    assert restic_("snapshots").returncode == 0
    check = restic_("check")
    assert check.returncode == 0 and "no errors were found" in check.stdout, check.stdout + check.stderr
    prune = restic_("prune", "--dry-run")
    out = (prune.stdout + prune.stderr).lower()
    assert prune.returncode == 0, out
    # ("size" itself is in every plan: "unused size after prune")
    assert not any(w in out for w in ("does not match", "repair", "rebuild-index", "missing")), out
    assert "to delete:           150 blobs" in out
    pack = next(p for p in (tmp_path / "repo" / "data").glob("*/*") if p.stat().st_size > 100_000)
    assert pack.stat().st_size == restic_index.pack_size([4000] * 50, compressed=True) == 50 * (4000 + 41) + 32 + 4
    os.truncate(pack, pack.stat().st_size + 1)
    bad = restic_("check")
    assert bad.returncode != 0 and "unexpected file size" in bad.stdout + bad.stderr


def test_ab_tuning_changes_one_default_in_an_export(tmp_path: Path) -> None:
    """``benchmarks.ab --tuning FIELD=VALUE``: the export's Tuning gets that default (the
    field's line only), the export is stamped so a plain export of the revision is made
    afresh, and a name that is no field, or no '=', is refused."""
    from benchmarks import ab

    root = Path(__file__).resolve().parent.parent
    export = tmp_path / "rev0"
    (export / "backupkit").mkdir(parents=True)
    original = (root / "backupkit" / "tuning.py").read_text()
    (export / "backupkit" / "tuning.py").write_text(original)
    ab._tune(export, "f" * 40, "read_threads_local=4")
    tuned = (export / "backupkit" / "tuning.py").read_text()
    changed = [(a, b) for a, b in zip(original.splitlines(), tuned.splitlines()) if a != b]
    assert changed == [("    read_threads_local: int = 0", "    read_threads_local: int = 4")]
    assert (export / ".s3bench-rev").read_text() != "f" * 40
    for bad in ("no_such_field=1", "read_threads_local", "chunks_in_flight 4"):
        with pytest.raises(ValueError, match="not FIELD=VALUE"):
            ab._tune(export, "f" * 40, bad)


def test_pagecache_writes_new_files_per_piece_and_cleans_up(tmp_path: Path, capsys) -> None:
    """``benchmarks.pagecache``: one row per round and piece size, the files removed after
    each run; a directory with something in it is refused."""
    from benchmarks import pagecache

    d = tmp_path / "pc"
    assert pagecache.main(["--dir", str(d), "--mib", "3", "--piece", "65536", "--piece", "1048576", "--rounds", "2",
                           "--no-drop"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("| ") and ln[2].isdigit()]
    assert [r.split(" | ")[:2] for r in rows] == [["| 1", "65536"], ["| 1", "1048576"], ["| 2", "65536"], ["| 2", "1048576"]]
    assert not d.exists()
    d.mkdir()
    (d / "keep").write_bytes(b"x")
    with pytest.raises(SystemExit):
        pagecache.main(["--dir", str(d), "--no-drop"])
    assert (d / "keep").exists()


def test_primitives_by_content_times_what_shrinks_apart(tmp_path: Path, capsys) -> None:
    """``benchmarks.primitives --by-content``: zeros shrink, random bytes stay."""
    import argparse

    from benchmarks import primitives

    (tmp_path / "zeros").write_bytes(bytes(3 << 20))
    (tmp_path / "random").write_bytes(os.urandom(2 << 20))
    primitives.by_content(argparse.Namespace(dir=str(tmp_path), level=3))
    out = capsys.readouterr().out
    assert "| stay at >= 95% of their size | 2 |" in out and "| shrink | 3 |" in out, out
