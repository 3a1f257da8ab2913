"""Nothing the store (or the local cache) holds reveals the plaintext.

Back up, through ``bk``, a tree with distinctive contents (compressible and not, one
file spanning several chunks), file and directory names (a non-UTF-8 one too), a
symlink target, an xattr value, a tag, a host name and a stdin file name. Then read
every byte of every object in the repository and in the cache directory, and every
object name, and look for each of those strings (as given and lowercased). No object
may be named by an unkeyed hash (sha256, sha1, md5) of a file or of a chunk. Key files,
the one unsealed kind of object, hold only the KDF parameters and base64 blobs.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from backupkit.chunker import Chunker
from backupkit.repo.repository import Repository
from backupkit.store.local import LocalObjectStore
from tests.support.kit import PASSWORD, cli_env, run_bk, write_file

COMPRESSIBLE = b"PlainText-Compressible-Q7f3a "
RANDOM_MARK = b"PlainText-InRandomData-M91c2"
BIG_MARK = b"PlainText-SpansChunks-Z0k8"
FILE_NAME = b"Secret-FileName-q8zW.txt"
DIR_NAME = b"Secret-DirName-k4wX"
NONUTF8_NAME = b"Secret-NonUtf8-\xff\xfe-Name"
SRC_NAME = b"Secret-SourceDir-y6uV"
LINK_TARGET = b"Secret-LinkTarget-r1tT"
XATTR_VALUE = b"Secret-XattrValue-c3pP"
TAG = "Secret-Tag-h2vY"
HOST = "Secret-Host-b7nZ"
STDIN_NAME = "Secret-StdinName-p5xQ.sql"
STDIN_DATA = b"PlainText-StdinContent-J2d9 "

MARKERS = [
    COMPRESSIBLE.strip(), RANDOM_MARK, BIG_MARK, FILE_NAME, DIR_NAME, NONUTF8_NAME, SRC_NAME,
    LINK_TARGET, XATTR_VALUE, TAG.encode(), HOST.encode(), STDIN_NAME.encode(), STDIN_DATA.strip(),
]


def _random_with_marks(n: int, mark: bytes, seed: int, every: int) -> bytes:
    data = bytearray(random.Random(seed).randbytes(n))
    for off in range(0, n - len(mark), every):
        data[off : off + len(mark)] = mark
    return bytes(data)


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory):
    base = tmp_path_factory.mktemp("noplain")
    src = os.path.join(os.fsencode(base), SRC_NAME)
    contents = {
        FILE_NAME: COMPRESSIBLE * 5000,
        DIR_NAME + b"/random.bin": _random_with_marks(300_000, RANDOM_MARK, 1, 50_000),
        DIR_NAME + b"/" + NONUTF8_NAME: b"small " + RANDOM_MARK,
        # larger than the 8 MiB maximum chunk: it spans several chunks whatever the key
        b"big.bin": _random_with_marks(9 * 2**20, BIG_MARK, 2, 256 * 1024),
        b"empty": b"",
    }
    for rel, data in contents.items():
        write_file(os.path.join(src, rel), data)
    os.symlink(LINK_TARGET, os.path.join(src, b"link"))
    os.setxattr(os.path.join(src, FILE_NAME), "user.note", XATTR_VALUE)
    repo_dir, cache_dir = base / "repo", base / "cache"
    env = cli_env(repo_dir, cache_dir)
    for args, stdin in (
        (("init",), None),
        (("backup", "--tag", TAG, "--host", HOST, src), None),
        (("backup", "--tag", TAG, "--host", HOST, "-", "--stdin-filename", STDIN_NAME), STDIN_DATA * 2000),
        (("ls", "-l", "latest"), None),  # fills the cache with what reading needs
    ):
        r = run_bk(*args, env=env, input=stdin)
        assert r.returncode == 0, r.stderr
    return repo_dir, cache_dir, contents


def _files(*roots: Path):
    for root in roots:
        for dirpath, _dirs, files in os.walk(root):
            for f in files:
                yield Path(dirpath) / f


def test_no_plaintext_in_any_object_or_name(backed_up):
    repo_dir, cache_dir, _contents = backed_up
    needles = {m for m in MARKERS} | {m.lower() for m in MARKERS}
    files = list(_files(repo_dir, cache_dir))
    assert any(p.is_relative_to(cache_dir) for p in files), "the cache was used"
    found = []
    for p in files:
        data = p.read_bytes()
        name = os.fsencode(p)
        for n in needles:
            if n in data:
                found.append(f"{p}: holds {n!r}")
            if n in name.lower():
                found.append(f"{p}: named with {n!r}")
    assert found == []


def test_no_object_named_by_an_unkeyed_hash(backed_up):
    repo_dir, cache_dir, contents = backed_up
    repo = Repository.open(LocalObjectStore(repo_dir, fsync=False), PASSWORD, cache_root=False)
    cfg = repo.config
    chunker = Chunker(repo.keys.chunker_key, cfg.chunker_min, cfg.chunker_avg, cfg.chunker_max)
    pieces = [*contents.values(), STDIN_DATA * 2000]
    chunks = []
    for data in pieces:
        view = memoryview(data)
        pos = [0]

        def read(n, view=view, pos=pos):
            b = bytes(view[pos[0] : pos[0] + n])
            pos[0] += len(b)
            return b

        chunks.extend(bytes(c) for c in chunker.chunks(read))
    assert len(chunks) > len(pieces), "the big file spans several chunks, so chunk digests are tested too"
    digests = set()
    for data in [*pieces, *chunks]:
        for algo in ("sha256", "sha1", "md5"):
            digests.add(hashlib.new(algo, data).hexdigest())
    names = [p.relative_to(root) for root in (repo_dir, cache_dir) for p in _files(root)]
    bad = [str(n) for n in names if any(part in digests or part.split(".")[0] in digests for part in n.parts)]
    assert bad == []
    # every name segment is a fixed word or hex (random or keyed ids)
    words = {"config", "keys", "data", "meta", "index", "snapshots", "catalog", "locks", "locations", "CACHEDIR.TAG"}
    for n in names:
        assert all(part in words or set(part) <= set("0123456789abcdef") for part in n.parts), n


def test_key_files_hold_only_kdf_params_and_base64(backed_up):
    repo_dir, _cache_dir, _contents = backed_up
    keys = list((repo_dir / "keys").iterdir())
    assert keys
    for k in keys:
        doc = json.loads(k.read_bytes())
        assert set(doc) == {"version", "kdf", "data", "meta"}, doc.keys()
        assert doc["version"] == 1
        assert set(doc["kdf"]) == {"name", "salt", "iterations", "memory_kib", "lanes"}
        assert doc["kdf"]["name"] == "argon2id"
        assert all(isinstance(doc["kdf"][f], int) for f in ("iterations", "memory_kib", "lanes"))
        for blob in (doc["kdf"]["salt"], doc["data"], doc["meta"]):
            assert isinstance(blob, str) and base64.b64decode(blob, validate=True)
        assert len(base64.b64decode(doc["kdf"]["salt"])) >= 16
