"""The harness's own checks (no speed is asserted anywhere): ``pytest benchmarks/test_harness.py``.

Not collected by the default suite (``testpaths = ["tests"]``); each test takes a second or two.
"""

from __future__ import annotations

import os
import tarfile
import zipfile
from pathlib import Path

from benchmarks import datagen, verify
from benchmarks.measure import Cmd, run
from benchmarks.run import select_steps

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
    bad = run(Cmd(["sh", "-c", "echo boom >&2; exit 3"]), env, tmp_path / "b.log", 30)
    assert not bad.ok and bad.rc == 3 and "boom" in bad.errors[0]
    slow = run(Cmd(["sleep", "30"]), env, tmp_path / "c.log", 0.5)
    assert slow.timed_out and not slow.ok


def test_selected_steps_bring_what_they_need() -> None:
    steps, added = select_steps("restore,many-1pct")
    assert steps == ["init", "backup", "restore", "many-backup", "many-1pct"]
    assert sorted(added) == ["backup", "init", "many-backup"]
