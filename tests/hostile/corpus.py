"""A corpus of hostile repositories: each SHAPE turns a copy of a good repository into one
holding a hostile object, written either without the password (a store attacker:
truncated, random, oversized or misnamed objects) or with the real keys (a malicious
client: zstd bombs, msgpack with huge declared lengths or deep nesting, lying pack headers
and index entries, duplicate and overlapping blobs, malformed tries, unsafe paths).

``python -m tests.hostile.corpus DIR`` writes every shape under DIR (one repository
each, password ``backupkit.testing.PASSWORD``) for manual runs.
"""

from __future__ import annotations

import os
import random
import shutil
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import msgpack

from backupkit.crypto import T_DATA_BLOB, T_LOCK, T_META_BLOB, T_PACK_HEADER, T_SNAPSHOT
from backupkit.repo.index_codec import decode_index
from backupkit.repo.pack import KIND_DATA, KIND_META, decode_payload
from backupkit.repo.repository import Repository
from backupkit.store.local import LocalObjectStore
from tests.support.kit import PASSWORD, cli_env, run_bk, write_file
from tests.hostile import forge

GiB = 1 << 30


@dataclass
class Ctx:
    """A copy of the good repository being made hostile."""

    dir: Path
    repo: Repository  # opened with the keys (only forged shapes use them)
    rng: random.Random

    def files(self, prefix: str) -> list[Path]:
        return sorted(p for p in (self.dir / prefix).rglob("*") if p.is_file())

    def one(self, prefix: str) -> Path:
        return self.files(prefix)[0]

    def index_rows(self) -> list[tuple]:
        """(pack id, kind, size, rows) of every pack in every index object."""
        out = []
        for p in self.files("index"):
            obj = decode_index(self.repo.open_object(5, bytes.fromhex(p.name), p.read_bytes(), p.name), p.name)
            for info, rows in obj.packs:
                out.append((info.id, info.kind, info.size, rows))
        return out


def truncate(p: Path, keep: float = 0.5) -> None:
    data = p.read_bytes()
    p.write_bytes(data[: int(len(data) * keep)])


def randomize(ctx: Ctx, p: Path) -> None:
    p.write_bytes(ctx.rng.randbytes(max(64, p.stat().st_size)))


def sparse(p: Path, size: int) -> None:
    with open(p, "wb") as f:
        f.truncate(size)


# -- without the password ---------------------------------------------------------------------

def s_truncated(prefix: str) -> Callable[[Ctx], None]:
    def f(ctx: Ctx) -> None:
        for p in ctx.files(prefix):
            truncate(p)
    return f


def s_random(prefix: str) -> Callable[[Ctx], None]:
    def f(ctx: Ctx) -> None:
        for p in ctx.files(prefix):
            randomize(ctx, p)
    return f


def s_empty(prefix: str) -> Callable[[Ctx], None]:
    def f(ctx: Ctx) -> None:
        for p in ctx.files(prefix):
            p.write_bytes(b"")
    return f


def s_huge(prefix: str, size: int) -> Callable[[Ctx], None]:
    def f(ctx: Ctx) -> None:
        target = ctx.dir / prefix if prefix in ("config", "catalog") else ctx.one(prefix)
        sparse(target, size)
    return f


def s_planted_lock_sparse(ctx: Ctx) -> None:
    sparse(ctx.dir / "locks" / ("ab" * 32), 4 * GiB)


def s_planted_key(ctx: Ctx) -> None:
    (ctx.dir / "keys" / ("00" * 32)).write_text(
        '{"version": 1, "kdf": {"name": "argon2id", "salt": "AAAAAAAAAAAAAAAAAAAAAA==", "iterations": 4294967295,'
        ' "memory_kib": 4294967295, "lanes": 0}, "data": "AA==", "meta": ""}'
    )


def s_junk_names(ctx: Ctx) -> None:
    for name in ("index/zz", "snapshots/x", "locks/readme", "keys/notakey", "data/zz/yy"):
        p = ctx.dir / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"junk")


def s_lock(how: str) -> Callable[[Ctx], None]:
    """A planted lock object: random bytes, or a real (forged) lock cut in half."""
    def f(ctx: Ctx) -> None:
        if how == "random":
            (ctx.dir / "locks" / ("cd" * 32)).write_bytes(ctx.rng.randbytes(300))
        else:
            name = forge.put_lock(ctx.repo, forge.raw_payload(msgpack.packb({"v": 1, "host": "h", "exclusive": False})))
            truncate(ctx.dir / name)
    return f


def s_swapped_snapshots(ctx: Ctx) -> None:
    """Two snapshot objects' contents swapped (names no longer match their ids)."""
    a, b = ctx.files("snapshots")[:2]
    da, db = a.read_bytes(), b.read_bytes()
    a.write_bytes(db)
    b.write_bytes(da)
    (ctx.dir / "catalog").unlink()


def s_pack_as_index(ctx: Ctx) -> None:
    pack = ctx.one("data")
    shutil.copy(pack, ctx.dir / "index" / pack.name)


def s_flipped_pack_tail(ctx: Ctx) -> None:
    for p in ctx.files("data"):
        data = bytearray(p.read_bytes())
        data[-2] ^= 0xFF  # the header length
        p.write_bytes(bytes(data))


# -- with the keys ---------------------------------------------------------------------------

def s_bomb(where: str, declare: bool = True) -> Callable[[Ctx], None]:
    def f(ctx: Ctx) -> None:
        payload = forge.bomb(declare=declare)
        r = ctx.repo
        if where == "index":
            forge.put_index(r, None, payload=payload)
        elif where == "lock":
            forge.put_lock(r, payload)
        elif where == "catalog":
            forge.put_catalog(r, payload)
        elif where == "snapshot":
            forge.put_snapshot_plain(r, b"x", payload=payload)
        elif where in ("data", "meta"):
            bid = os.urandom(32)
            t = T_DATA_BLOB if where == "data" else T_META_BLOB
            forge.put_pack(r, KIND_DATA if where == "data" else KIND_META, [(t, bid, payload, 1000)])
            if where == "data":
                root = forge.tree_with(r, {b"/src": forge.dir_entry(), b"/src/bomb": forge.file_entry([bid], 1000)})
            else:
                root = bid
            forge.put_snapshot(r, root, time=2**62)
    return f


HUGE_ARRAY = b"\xdd\xff\xff\xff\xff"  # msgpack array32 declaring 4,294,967,295 items
HUGE_MAP = b"\xdf\xff\xff\xff\xff"
HUGE_BIN = b"\xc6\xff\xff\xff\xff"
DEEP = b"\x91" * 200_000 + b"\xc0"


def s_plain(where: str, plain: bytes) -> Callable[[Ctx], None]:
    """An object of kind ``where`` sealed with the keys whose plaintext is ``plain``."""
    def f(ctx: Ctx) -> None:
        r = ctx.repo
        if where == "index":
            forge.put_index(r, None, payload=forge.raw_payload(plain))
        elif where == "lock":
            forge.put_lock(r, forge.raw_payload(plain))
        elif where == "catalog":
            forge.put_catalog(r, forge.raw_payload(plain))
        elif where == "snapshot":
            forge.put_snapshot_plain(r, plain)
        elif where == "node":
            (nid,) = forge.put_meta_blobs(r, [plain])
            forge.put_snapshot(r, nid, time=2**62)
        elif where == "content":
            (cb,) = forge.put_meta_blobs(r, [plain])
            root = forge.tree_with(r, {b"/src": forge.dir_entry(), b"/src/f": forge.file_entry([], 10, cb=[cb])})
            forge.put_snapshot(r, root, time=2**62)
        elif where == "config":
            from backupkit.crypto import T_CONFIG

            forge.put_sealed(r, T_CONFIG, "config", b"config", forge.raw_payload(plain))
        elif where == "header":
            body = struct.pack("<I", len(plain)) + plain
            forge.put_pack(r, KIND_DATA, [(T_DATA_BLOB, os.urandom(32), forge.raw_payload(b"data"), 4)], header_plain=body)
        elif where == "entry":
            root = forge.leaf_raw(r, [(b"/src", forge.encode_entry(forge.dir_entry())), (b"/src/e", plain)])
            forge.put_snapshot(r, root, time=2**62)
    return f


def s_index_lie(how: str) -> Callable[[Ctx], None]:
    """An index object re-describing an existing pack with one lie."""
    def f(ctx: Ctx) -> None:
        pid, kind, size, rows = next(x for x in ctx.index_rows() if x[1] == KIND_DATA)
        rows = [list(r) for r in rows]
        if how == "offset past the end":
            rows[0][1] = size + 10
        elif how == "huge length":
            rows[0][2] = 1 << 40
        elif how == "huge raw length":
            rows[0][3] = 1 << 40
        elif how == "negative offset":
            rows[0][1] = -5
        elif how == "overlapping blobs":
            rows.append([os.urandom(32), rows[0][1] + 1, rows[0][2], rows[0][3]])
        elif how == "huge pack size":
            size = 1 << 50
        elif how == "string id":
            rows[0][0] = "not bytes"
        elif how == "wrong kind":
            kind = KIND_META
        forge.put_index(ctx.repo, {"v": 1, "packs": [[pid, kind, size, rows]], "supersedes": []})
        (ctx.dir / "catalog").unlink(missing_ok=True)
    return f


def s_duplicate_blob(ctx: Ctx) -> None:
    """A second pack claiming an existing blob id with other (valid-looking) content."""
    pid, kind, size, rows = next(x for x in ctx.index_rows() if x[1] == KIND_DATA)
    bid = rows[0][0]
    forge.put_pack(ctx.repo, KIND_DATA, [(T_DATA_BLOB, bid, forge.raw_payload(b"other content"), 13)])


def s_header_lie(how: str) -> Callable[[Ctx], None]:
    """A pack whose header disagrees with its index entry."""
    def f(ctx: Ctx) -> None:
        bid = os.urandom(32)
        payload = forge.raw_payload(b"data")
        if how == "rows past the end":
            hdr = [[T_DATA_BLOB, bid, 1 << 40, 100, 4]]
            forge.put_pack(ctx.repo, KIND_DATA, [(T_DATA_BLOB, bid, payload, 4)], header_rows=hdr)
        elif how == "huge header length":
            forge.put_pack(ctx.repo, KIND_DATA, [(T_DATA_BLOB, bid, payload, 4)], tail=b"\x00" * 100 + struct.pack("<I", 0xFFFFFFF0))
        elif how == "header is a bomb":
            body = forge.bomb()
            forge.put_pack(ctx.repo, KIND_DATA, [(T_DATA_BLOB, bid, payload, 4)], header_plain=struct.pack("<I", len(body)) + body)
        elif how == "header sealed for another pack":
            hdr = ctx.repo.sealer.seal(T_PACK_HEADER, os.urandom(32), struct.pack("<I", 3) + msgpack.packb([1, []]))
            forge.put_pack(ctx.repo, KIND_DATA, [(T_DATA_BLOB, bid, payload, 4)], tail=hdr + struct.pack("<I", len(hdr)))
        elif how == "overlapping rows":
            b2 = forge.raw_payload(b"more")
            pid, rows = forge.put_pack(ctx.repo, KIND_DATA, [(T_DATA_BLOB, bid, payload, 4), (T_DATA_BLOB, os.urandom(32), b2, 4)], index=False)
            over = [[T_DATA_BLOB, r[0], rows[0][1], rows[0][2] + rows[1][2], 4] for r in rows]
            forge.put_pack(ctx.repo, KIND_DATA, [(T_DATA_BLOB, bid, payload, 4), (T_DATA_BLOB, os.urandom(32), b2, 4)], header_rows=over)
        elif how == "one blob listed twice":
            pid, rows = forge.put_pack(ctx.repo, KIND_DATA, [(T_DATA_BLOB, bid, payload, 4)], index=False)
            twice = [[T_DATA_BLOB, bid, rows[0][1], rows[0][2], 4]] * 2
            forge.put_pack(ctx.repo, KIND_DATA, [(T_DATA_BLOB, bid, payload, 4)], header_rows=twice, index_rows=[rows[0], rows[0]])
        elif how == "header rows of the wrong type":
            forge.put_pack(ctx.repo, KIND_DATA, [(T_DATA_BLOB, bid, payload, 4)], header_rows=[["x", 1, 2]])
    return f


def s_tree(how: str) -> Callable[[Ctx], None]:
    def f(ctx: Ctx) -> None:
        r = ctx.repo
        entry_leaf = forge.leaf(r, {b"/": forge.dir_entry()})
        k = entry_leaf[1][0][0]
        (child,) = forge.put_meta_blobs(r, [msgpack.packb(entry_leaf)])
        plains = []
        if how == "repeated child":
            for depth in range(7, -1, -1):
                plains.append(msgpack.packb([1, 16 ** (8 - depth), depth, k, [[s, child, 16 ** (7 - depth)] for s in range(16)]]))
                child = r.sealer.blob_id(plains[-1])
        elif how == "5000-deep chain":
            for _ in range(5000):
                plains.append(msgpack.packb([1, 1, 0, k, [[k[0] >> 4, child, 1]]]))
                child = r.sealer.blob_id(plains[-1])
        elif how == "self loop":
            plains.append(msgpack.packb([1, 1, 0, k, [[k[0] >> 4, b"\x00" * 32, 1]]]))
            child = r.sealer.blob_id(plains[-1])
        elif how == "data blob as root":
            pid, kind, size, rows = next(x for x in ctx.index_rows() if x[1] == KIND_DATA)
            child = rows[0][0]
        if plains:
            forge.put_meta_blobs(r, plains)
        forge.put_snapshot(r, child, time=2**62)
    return f


def s_entries(entries: dict[bytes, dict]) -> Callable[[Ctx], None]:
    def f(ctx: Ctx) -> None:
        root = forge.tree_with(ctx.repo, entries)
        forge.put_snapshot(ctx.repo, root, time=2**62)
    return f


def s_reused_name(ctx: Ctx) -> None:
    """10.7: /src/a a file with two names, /src/a again a symlink to outside, /src/b the
    second name of /src/a (paths repeat only under forged keys)."""
    r = ctx.repo
    keyer = forge.Keyer(r.sealer.keyed_hash)
    bid = r.add_blob(T_DATA_BLOB, b"first")[0]
    r.flush()
    a = forge.file_entry([bid], 5, n=2, i=7)
    rows = [
        (keyer.key(b"/"), b"/", forge.encode_entry(forge.dir_entry())),
        (keyer.key(b"/src"), b"/src", forge.encode_entry(forge.dir_entry())),
        (keyer.key(b"/src/a"), b"/src/a", forge.encode_entry(a)),
        (keyer.dir_prefix(b"/src") + b"\xff" * 8, b"/src/a",
         forge.encode_entry({**forge.dir_entry(), "t": "l", "m": 0o777, "l": b"/tmp/bk-corpus-outside"})),
        (keyer.key(b"/src/b"), b"/src/b", forge.encode_entry(a)),
    ]
    (nid,) = forge.put_meta_blobs(r, [msgpack.packb([0, sorted(rows)])])
    forge.put_snapshot(r, nid, time=2**62)


def s_config_repo_id(ctx: Ctx) -> None:
    from backupkit.crypto import T_CONFIG

    doc = dict(ctx.repo.config.__dict__, repo_id="../../../../tmp/bk-escaped-cache")
    forge.put_sealed(ctx.repo, T_CONFIG, "config", b"config", forge.raw_payload(msgpack.packb(doc)))


def s_lock_plain(ctx: Ctx) -> None:
    forge.put_lock(ctx.repo, forge.raw_payload(msgpack.packb({"v": 1, "exclusive": "yes", "time": "x", "pid": -1})))


OUTSIDE = b"/../../../outside"
SHAPES: dict[str, Callable[[Ctx], None]] = {
    # store attacker
    "config truncated": s_truncated("config"),
    "config random": s_random("config"),
    "config 2 GiB": s_huge("config", 2 * GiB),
    "keys truncated": s_truncated("keys"),
    "keys empty": s_empty("keys"),
    "key planted with huge KDF costs": s_planted_key,
    "index truncated": s_truncated("index"),
    "index random": s_random("index"),
    "index 1 GiB": s_huge("index", GiB),
    "snapshots truncated": s_truncated("snapshots"),
    "snapshots random": s_random("snapshots"),
    "snapshots swapped": s_swapped_snapshots,
    "catalog random": s_random("catalog"),
    "catalog 3 GiB": s_huge("catalog", 3 * GiB),
    "data packs truncated": s_truncated("data"),
    "data packs random": s_random("data"),
    "data pack 3 GiB": s_huge("data", 3 * GiB),
    "meta packs truncated": s_truncated("meta"),
    "meta packs random": s_random("meta"),
    "pack header length flipped": s_flipped_pack_tail,
    "lock 4 GiB": s_planted_lock_sparse,
    "junk names": s_junk_names,
    "a pack copied as an index": s_pack_as_index,
    # key holder
    "bomb index": s_bomb("index"),
    "bomb index, no declared size": s_bomb("index", declare=False),
    "bomb lock": s_bomb("lock"),
    "bomb catalog": s_bomb("catalog"),
    "bomb snapshot": s_bomb("snapshot"),
    "bomb data blob": s_bomb("data"),
    "bomb tree node": s_bomb("meta"),
    "index msgpack huge array": s_plain("index", HUGE_ARRAY),
    "index msgpack deep": s_plain("index", DEEP),
    "index not a map": s_plain("index", msgpack.packb([1, 2, 3])),
    "snapshot msgpack huge map": s_plain("snapshot", HUGE_MAP),
    "snapshot msgpack deep": s_plain("snapshot", DEEP),
    "snapshot root an int": s_plain("snapshot", msgpack.packb(forge.snapshot_doc(10**12))),
    "snapshot fields of the wrong type": s_plain("snapshot", msgpack.packb(forge.snapshot_doc(b"\x00" * 32, paths=5, tags=[1], host=[]))),
    "catalog msgpack huge bin": s_plain("catalog", HUGE_BIN),
    "catalog entries of the wrong type": s_plain("catalog", msgpack.packb({"v": 1, "snapshots": {"ab": 5, 3: []}})),
    "lock msgpack deep": s_plain("lock", DEEP),
    "lock fields of the wrong type": s_lock_plain,
    "node msgpack huge array": s_plain("node", HUGE_ARRAY),
    "node msgpack deep": s_plain("node", DEEP),
    "content blob deep": s_plain("content", DEEP),
    "content blob huge array": s_plain("content", HUGE_ARRAY),
    "index lie: offset past the end": s_index_lie("offset past the end"),
    "index lie: huge length": s_index_lie("huge length"),
    "index lie: huge raw length": s_index_lie("huge raw length"),
    "index lie: negative offset": s_index_lie("negative offset"),
    "index lie: overlapping blobs": s_index_lie("overlapping blobs"),
    "index lie: huge pack size": s_index_lie("huge pack size"),
    "index lie: string id": s_index_lie("string id"),
    "index lie: wrong kind": s_index_lie("wrong kind"),
    "duplicate blob in a second pack": s_duplicate_blob,
    "header lie: rows past the end": s_header_lie("rows past the end"),
    "header lie: huge header length": s_header_lie("huge header length"),
    "header lie: header is a bomb": s_header_lie("header is a bomb"),
    "header lie: rows of the wrong type": s_header_lie("header rows of the wrong type"),
    "tree: repeated child": s_tree("repeated child"),
    "tree: 5000-deep chain": s_tree("5000-deep chain"),
    "tree: missing child": s_tree("self loop"),
    "tree: a data blob as root": s_tree("data blob as root"),
    "entries: unsafe paths": s_entries({
        b"/..": forge.dir_entry(), OUTSIDE: forge.file_entry([], 0), b"/src": forge.dir_entry(),
        b"/src/../../x": forge.file_entry([], 0), b"/src/a\x00b": forge.file_entry([], 0),
    }),
    "entries: symlink then file through it": s_entries({
        b"/src": forge.dir_entry(), b"/src/l": {**forge.dir_entry(), "t": "l", "l": b"/tmp"},
        b"/src/l/x": forge.file_entry([], 0),
    }),
    "entries: content of a missing blob": s_entries({b"/src": forge.dir_entry(), b"/src/f": forge.file_entry([b"\x01" * 32], 5)}),
    "config repo_id escapes the cache": s_config_repo_id,
    # added: truncated and random bytes for every kind, msgpack bombs in every decoder
    "keys random": s_random("keys"),
    "catalog truncated": s_truncated("catalog"),
    "lock random": s_lock("random"),
    "lock truncated": s_lock("truncated"),
    "config msgpack huge map": s_plain("config", HUGE_MAP),
    "config msgpack deep": s_plain("config", DEEP),
    "catalog msgpack deep": s_plain("catalog", DEEP),
    "lock msgpack huge map": s_plain("lock", HUGE_MAP),
    "node random bytes": s_plain("node", random.Random(7).randbytes(3000)),
    "content blob random bytes": s_plain("content", random.Random(8).randbytes(3000)),
    "header msgpack huge array": s_plain("header", HUGE_ARRAY),
    "header msgpack deep": s_plain("header", DEEP),
    "header lie: sealed for another pack": s_header_lie("header sealed for another pack"),
    "header lie: overlapping rows": s_header_lie("overlapping rows"),
    "header lie: one blob listed twice": s_header_lie("one blob listed twice"),
    "entry msgpack huge map": s_plain("entry", HUGE_MAP),
    "entry msgpack deep": s_plain("entry", DEEP),
    "entry random bytes": s_plain("entry", random.Random(9).randbytes(200)),
    "entries: malformed fields": s_entries({
        b"/src": forge.dir_entry(),
        b"/src/huge-mode": forge.file_entry([], 0, m=1 << 40),
        b"/src/link-without-target": {**forge.dir_entry(), "t": "l"},
        b"/src/string-blob-id": forge.file_entry(["not an id"], 4),
        b"/src/string-nlink": forge.file_entry([], 0, n="two"),
        b"/src/negative-size": forge.file_entry([], -1),
        b"/src/device-without-rdev": {**forge.dir_entry(), "t": "c"},
        b"/src/ok": forge.file_entry([], 0),
    }),
    "entries: a name reused (tar through a symlink)": s_reused_name,
    "entries: setuid sticky root owned by another user": s_entries({b"/": forge.dir_entry(m=0o7777, u=4321, g=4321), b"/src": forge.dir_entry()}),
}


def make_base(dest: Path) -> Path:
    """A good repository with two snapshots (for diff) of a few files; returns it."""
    src = dest / "src"
    write_file(src / "a.txt", b"alpha\n")
    write_file(src / "sub" / "b.bin", random.Random(1).randbytes(1_500_000))
    env = cli_env(dest / "repo", dest / "cache")
    for args in (["init"], ["backup", src]):
        r = run_bk(*args, env=env)
        assert r.returncode == 0, r.stderr
    write_file(src / "c.txt", b"gamma\n")
    r = run_bk("backup", src, env=env)
    assert r.returncode == 0, r.stderr
    return dest / "repo"


def make(shape: str, base: Path, dest: Path, seed: int = 0) -> Path:
    """A copy of ``base`` at ``dest`` made hostile by ``shape``."""
    shutil.copytree(base, dest)
    repo = Repository.open(LocalObjectStore(dest, fsync=False), PASSWORD, cache_root=False)
    SHAPES[shape](Ctx(dest, repo, random.Random(seed)))
    return dest


def main(out: str) -> None:
    root = Path(out)
    base = make_base(root / "_base")
    for i, name in enumerate(SHAPES):
        make(name, base, root / name.replace(" ", "_").replace(":", "").replace("/", "_"), seed=i)
        print(name)


if __name__ == "__main__":
    main(sys.argv[1])


_ = (T_LOCK, T_SNAPSHOT, decode_payload)
