"""Restore into a directory planned per pack (``objects/packplan.py``): each pack span is
read once however many files share its blobs, files larger than the plan's budgets, sparse files,
hardlinks whose first name is still being written, and damage in the middle of a pack
that costs only the files using the damaged blob."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from backupkit.crypto import T_DATA_BLOB
from backupkit.managers.restore import RestoreManager, RestoreOptions
from backupkit.repo.pack import KIND_DATA, pack_name
from backupkit.tuning import Tuning
from tests.managers.lifecycle_util import backup, forged_snapshot, init_repo, local_store, open_repo, random_bytes, tree_bytes, write_files
from tests.managers.repair_util import flip
from tests.support.faulty import FaultyStore

KiB, MiB = 1024, 1024 * 1024


def _counting(path: Path) -> tuple[FaultyStore, Counter]:
    """A store over ``path`` that counts ``(op, name)`` of every call."""
    store = FaultyStore(local_store(path))
    calls: Counter = Counter()
    store.set_hook(lambda op, name: calls.update([(op, name)]))
    return store, calls


def _data_reads(calls: Counter) -> Counter:
    return Counter({name: n for (op, name), n in calls.items() if op in ("get", "get_range") and name.startswith(KIND_DATA + "/")})


def _restore(store, snap, out: Path, tuning: Tuning | None = None, **kw):
    mgr = RestoreManager(open_repo(store), tuning=tuning) if tuning else RestoreManager(open_repo(store))
    return mgr.restore(snap, RestoreOptions(target=str(out), connections=4, **kw))


def _leftovers(out: Path) -> list[str]:
    return [n for _d, _s, files in os.walk(out) for n in files if n.startswith(".bk-restore-")]


def _shared_tree(src: Path) -> dict[str, bytes]:
    """Files built from a few distinct pieces, so blobs are shared across files (and
    repeated inside one), spread over several 256 KiB packs."""
    x, y, z = random_bytes(400 * KiB, 1), random_bytes(300 * KiB, 2), random_bytes(500 * KiB, 3)
    files = {
        "a/xy": x + y,
        "a/yx": y + x,
        "b/x": x,
        "b/xx": x + x,
        "c/zyx": z + y + x,
        "c/z": z,
    }
    files.update({f"small/s{i:03d}": random_bytes(1000 + i, 100 + i) for i in range(60)})
    write_files(src, files)
    return files


def test_each_data_pack_is_read_once_though_files_share_its_blobs(tmp_path):
    src = tmp_path / "src"
    _shared_tree(src)
    store, calls = _counting(tmp_path / "repo")
    repo = init_repo(store)
    snap = backup(repo, src)
    packs = [o.name for o in store.list(KIND_DATA + "/")]
    assert len(packs) >= 4, "the blobs must spread over several packs for the test to mean anything"

    calls.clear()
    out = tmp_path / "out"
    res = _restore(store, snap, out)
    assert not res.errors, res.errors
    assert tree_bytes(out / src.relative_to("/")) == tree_bytes(src)
    reads = _data_reads(calls)
    assert set(reads) <= set(packs)
    assert reads and max(reads.values()) == 1, reads  # one range request per pack
    assert _leftovers(out) == []


def test_a_file_larger_than_the_plans_budgets_is_read_in_parts(tmp_path):
    src = tmp_path / "src"
    files = _shared_tree(src)
    write_files(src, {"big/huge": random_bytes(3 * MiB, 7)})
    files["big/huge"] = (src / "big/huge").read_bytes()
    store, calls = _counting(tmp_path / "repo")
    snap = backup(init_repo(store), src)

    tiny = Tuning(restore_pending_bytes=256 * KiB, restore_pending_refs=5, restore_open_files=3,
                  restore_read_bytes_in_flight=256 * KiB, restore_span_max=128 * KiB, restore_queued_bytes=256 * KiB)
    out = tmp_path / "out"
    res = _restore(store, snap, out, tiny)
    assert not res.errors, res.errors
    assert tree_bytes(out / src.relative_to("/")) == tree_bytes(src)
    assert res.files == len(files) and _leftovers(out) == []
    # budgets smaller than a pack: packs are read in several spans as the plan moves on
    assert sum(_data_reads(calls).values()) > len(list(store.list(KIND_DATA + "/")))


def test_sparse_files_get_holes_for_zero_blobs_and_for_holes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    zeros = src / "zeros"  # written zeros: all-zero blobs
    zeros.write_bytes(random_bytes(100 * KiB, 1) + bytes(4 * MiB) + random_bytes(100 * KiB, 2))
    holed = src / "holed"  # a real hole: an int in the content list
    with open(holed, "wb") as f:
        f.write(b"head")
        f.seek(6 * MiB)
        f.write(b"tail")
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)

    out = tmp_path / "sparse"
    res = _restore(store, snap, out)
    assert not res.errors
    got = out / src.relative_to("/")
    assert tree_bytes(got) == tree_bytes(src)
    assert os.stat(got / "zeros").st_blocks * 512 < 1 * MiB
    assert os.stat(got / "holed").st_blocks * 512 < 1 * MiB
    assert os.stat(got / "holed").st_size == 6 * MiB + 4

    out = tmp_path / "dense"
    res = _restore(store, snap, out, sparse=False)
    assert not res.errors
    got = out / src.relative_to("/")
    assert tree_bytes(got) == tree_bytes(src)
    assert os.stat(got / "zeros").st_blocks * 512 >= 4 * MiB


def test_hardlinks_are_made_once_their_first_name_is_written(tmp_path):
    src = tmp_path / "src"
    write_files(src, {"d/first": random_bytes(200 * KiB, 1), "e/other": b"x" * 10})
    os.link(src / "d/first", src / "d/second")
    os.link(src / "d/first", src / "e/third")
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)
    out = tmp_path / "out"
    # into a target where the names exist, hardlinked, with other content
    old = out / src.relative_to("/")
    write_files(old, {"d/first": b"old"})
    os.link(old / "d/first", old / "d/second")
    # one file open at a time: the first name is still being written when the others come
    res = _restore(store, snap, out, Tuning(restore_open_files=1), overwrite="always")
    assert not res.errors, res.errors
    got = out / src.relative_to("/")
    assert tree_bytes(got) == tree_bytes(src)
    inodes = {os.stat(got / n).st_ino for n in ("d/first", "d/second", "e/third")}
    assert len(inodes) == 1 and os.stat(got / "d/first").st_nlink == 3


def test_damage_in_the_middle_of_a_pack_costs_only_the_files_using_that_blob(tmp_path):
    src = tmp_path / "src"
    files = {f"f{i:02d}": random_bytes(12 * KiB, i) for i in range(40)}
    shared = random_bytes(12 * KiB, 999)
    files["share1"] = shared
    files["share2"] = shared
    write_files(src, files)
    store, calls = _counting(tmp_path / "repo")
    repo = init_repo(store)
    snap = backup(repo, src)
    bid = repo.sealer.blob_id(shared)
    loc = repo.index.lookup(bid)
    neighbours = [n for n, d in files.items() if not n.startswith("share") and repo.index.lookup(repo.sealer.blob_id(d)).pack == loc.pack]
    assert neighbours, "other files' blobs must share the damaged pack for the test to mean anything"
    flip(store.inner, pack_name(loc.pack.kind, loc.pack.id), loc.offset + loc.length // 2)

    out = tmp_path / "out"
    res = _restore(store, snap, out)
    named = sorted(p for p, _m in res.errors)
    assert named == [str(src / "share1"), str(src / "share2")], res.errors
    assert all("not restored" in m for _p, m in res.errors)
    got = out / src.relative_to("/")
    assert not (got / "share1").exists() and not (got / "share2").exists()
    want = {k: v for k, v in files.items() if not k.startswith("share")}
    assert tree_bytes(got) == want  # every other file, those of the damaged pack included
    assert _leftovers(out) == [] and res.incomplete


def test_a_truncated_pack_restores_the_blobs_before_the_cut(tmp_path):
    src = tmp_path / "src"
    files = {f"f{i:02d}": random_bytes(12 * KiB, i) for i in range(30)}
    write_files(src, files)
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    snap = backup(repo, src)
    locs = {name: repo.index.lookup(repo.sealer.blob_id(data)) for name, data in files.items()}
    pack = max({l.pack for l in locs.values()}, key=lambda p: sum(1 for l in locs.values() if l.pack == p))
    in_pack = sorted((l.offset, n) for n, l in locs.items() if l.pack == pack)
    assert len(in_pack) >= 4
    cut_at = in_pack[len(in_pack) // 2][0] + 10  # inside the middle blob of the pack
    path = tmp_path / "repo" / pack_name(pack.kind, pack.id)
    with open(path, "r+b") as f:
        f.truncate(cut_at)

    out = tmp_path / "out"
    res = _restore(store, snap, out)
    lost = {str(src / n) for off, n in in_pack if off + 10 >= cut_at or off + locs[n].length > cut_at}
    assert {p for p, _m in res.errors} == lost
    got = tree_bytes(out / src.relative_to("/"))
    assert got == {n: d for n, d in files.items() if str(src / n) not in lost}
    assert _leftovers(out) == []


def test_a_wrong_size_or_an_unindexed_blob_fails_that_file_only(tmp_path):
    store = local_store(tmp_path / "repo")
    repo = init_repo(store)
    blob = repo.add_blob(T_DATA_BLOB, b"intact\n")[0]
    f = {"t": "f", "m": 0o644, "mt": 10**18, "s": 7, "c": [blob]}
    snap = forged_snapshot(repo, {
        b"/": {"t": "d", "m": 0o755, "mt": 10**18},
        b"/ok": f,
        b"/short": {**f, "s": 9},  # the snapshot says 9 bytes, the content holds 7
        b"/gone": {**f, "c": [bytes(32)]},  # a blob no index knows
    })
    out = tmp_path / "out"
    res = _restore(store, snap, out)
    assert (out / "ok").read_bytes() == b"intact\n"
    named = dict(res.errors)
    assert set(named) == {"/short", "/gone"}
    assert "content is 7 bytes, the snapshot says 9" in named["/short"]
    assert "not in the index" in named["/gone"]
    assert not (out / "short").exists() and not (out / "gone").exists() and _leftovers(out) == []


def test_a_tree_with_more_directories_than_descriptors_restores_whole(tmp_path):
    """A directory's descriptor is closed once the walk has left it and its files are
    done (it was kept to the end: a `/usr` restore, 14,000 directories, failed with "Too
    many open files"); the directories' metadata is set at the end through reopened
    descriptors. Hardlinks across directories are linked after their first name."""
    import resource

    from tests.support.kit import diff_trees, record_tree

    src = tmp_path / "src"
    files = {f"d{i:03d}/e/f{i}": random_bytes(300 + i, i) for i in range(400)}
    files.update({f"d{i:03d}/big": random_bytes(200 * KiB, 1000 + i) for i in range(0, 400, 50)})
    write_files(src, files)
    for i in range(0, 400, 40):  # a later name in a directory the walk reaches later
        os.link(src / f"d{i:03d}/big" if i % 50 == 0 else src / f"d{i:03d}/e/f{i}", src / f"d{(i + 37) % 400:03d}/link{i}")
    for i in range(400):
        t = 1_600_000_000 + i
        os.utime(src / f"d{i:03d}/e", (t, t))
        os.utime(src / f"d{i:03d}", (t + 1, t + 1))
    store = local_store(tmp_path / "repo")
    snap = backup(init_repo(store), src)

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))  # 800 directories > 256 descriptors
    try:
        out = tmp_path / "out"
        mgr = RestoreManager(open_repo(store))
        res = mgr.restore(snap, RestoreOptions(target=str(out), connections=4))
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert not res.errors, res.errors[:3]
    assert diff_trees(record_tree(src), record_tree(out / src.relative_to("/"))) == []
    assert _leftovers(out) == []


def test_the_file_window_leaves_room_for_each_files_directory():
    """Every pending file can hold two descriptors (its own and its directory's, which
    DirFds keeps until the file is done): the plan's limit of files not yet complete
    keeps them under RLIMIT_NOFILE with 512 to spare (an old window, a third of the limit
    for the files alone, let a /usr restore run out when the writers fell behind the
    walk)."""
    import resource

    from backupkit.managers.restore_write import file_window

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    big = Tuning(restore_open_files=1 << 20)
    try:
        for limit in (1024, 4096, 20000):
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
            files = file_window(big)
            assert files * 2 + 512 <= min(limit, hard)
            assert files >= 16
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
