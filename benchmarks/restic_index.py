"""Generated index files for a restic repository: N random data blobs in sparse fake packs.

``benchmarks/memory.py index`` measures bk at 10M blobs; this builds the same situation for
restic, whose index has its own format, so both are measured rather than estimated.

Written from restic 0.14's sources (``internal/crypto``, ``internal/repository/index.go``,
``internal/pack/pack.go``):
    key file: ``keys/<id>``, JSON with the scrypt parameters and ``data``, the master key
        JSON sealed with the key scrypt derives from the password (32 bytes AES-256, then
        16 bytes k and 16 bytes r for the MAC);
    sealed: IV (16) || AES-256-CTR ciphertext || Poly1305-AES MAC (16) of the ciphertext,
        the one-time key r (clamped) || AES-128_k(IV);
    index file: ``{"packs": [{"id", "blobs": [{"id", "type", "offset", "length",
        "uncompressed_length"}]}]}``, sealed as plain JSON (repository v2 reads JSON
        starting with ``{`` uncompressed), stored as ``index/<sha256 of the file>``;
    pack size: the blobs, then the sealed header (37 bytes an entry, 41 with an
        uncompressed length; +32 for IV and MAC), then its length in 4 bytes. restic
        compares that with the file's size (``check``; ``prune`` for packs it keeps), so
        each fake pack is a sparse file of exactly that size. Nothing here reads a pack.

    python -m benchmarks.restic_index REPO PASSWORD --blobs 1000000
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
import random
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

IV_SIZE = 16
MAC_SIZE = 16
EXTENSION = IV_SIZE + MAC_SIZE
HEADER_LENGTH_SIZE = 4
ENTRY_PLAIN = 1 + 4 + 32  # type, length, id
ENTRY_COMPRESSED = 1 + 4 + 4 + 32  # type, length, uncompressed length, id

#: bk's generator (``memory.inject_index``) indexes every blob as 4000 bytes stored, 8000 raw
BLOB_LENGTH = 4000
BLOB_RAW_LENGTH = 8000


@dataclass(frozen=True)
class Key:
    """restic's crypto.Key: AES-256 key, and the Poly1305-AES MAC key (k, r)."""

    encrypt: bytes
    mac_k: bytes
    mac_r: bytes

    def _mac(self, iv: bytes, ciphertext: bytes) -> bytes:
        enc = Cipher(algorithms.AES(self.mac_k), modes.ECB()).encryptor()
        s = enc.update(iv) + enc.finalize()
        return Poly1305.generate_tag(self.mac_r + s, ciphertext)  # clamps r as restic masks it

    def seal(self, plaintext: bytes) -> bytes:
        iv = os.urandom(IV_SIZE)
        enc = Cipher(algorithms.AES(self.encrypt), modes.CTR(iv)).encryptor()
        ct = enc.update(plaintext) + enc.finalize()
        return iv + ct + self._mac(iv, ct)

    def open(self, sealed: bytes) -> bytes:
        iv, ct, mac = sealed[:IV_SIZE], sealed[IV_SIZE:-MAC_SIZE], sealed[-MAC_SIZE:]
        if len(sealed) < EXTENSION or not hmac.compare_digest(self._mac(iv, ct), mac):
            raise ValueError("MAC does not match: wrong password or not restic's format")
        dec = Cipher(algorithms.AES(self.encrypt), modes.CTR(iv)).decryptor()
        return dec.update(ct) + dec.finalize()


def user_key(password: str, key_file: dict) -> Key:
    """The key scrypt derives from ``password`` with a key file's parameters."""
    if key_file.get("kdf") != "scrypt":
        raise ValueError(f"unknown kdf {key_file.get('kdf')!r}")
    n, r, p = key_file["N"], key_file["r"], key_file["p"]
    # OpenSSL wants room for V (128*r*N) and B (128*r*p); Python's default cap is 32 MiB
    raw = hashlib.scrypt(password.encode(), salt=base64.b64decode(key_file["salt"]), n=n, r=r, p=p,
                         maxmem=128 * r * (n + p + 2) + (1 << 20), dklen=64)
    return Key(raw[:32], raw[32:48], raw[48:64])


def master_key(repo: Path, password: str) -> Key:
    """The repository's master key, from the first key file the password opens."""
    for path in sorted((repo / "keys").iterdir()):
        kf = json.loads(path.read_bytes())
        try:
            plain = user_key(password, kf).open(base64.b64decode(kf["data"]))
        except ValueError:
            continue
        mk = json.loads(plain)
        return Key(base64.b64decode(mk["encrypt"]), base64.b64decode(mk["mac"]["k"]), base64.b64decode(mk["mac"]["r"]))
    raise ValueError(f"no key file in {repo / 'keys'} opens with this password")


def pack_size(lengths: list[int], compressed: bool) -> int:
    """The size restic computes for a pack holding blobs of ``lengths`` (pack.Size)."""
    entry = ENTRY_COMPRESSED if compressed else ENTRY_PLAIN
    return sum(lengths) + len(lengths) * entry + EXTENSION + HEADER_LENGTH_SIZE


def repo_id(repo: Path, key: Key) -> str:
    """The repository's id (the name of its directory in restic's cache)."""
    return json.loads(key.open((repo / "config").read_bytes()))["id"]


def write_index(repo: Path, key: Key, packs: list[tuple[str, list[str]]], cached: Path | None = None) -> str:
    """Seal and store one index file naming ``packs`` (pack id, its blob ids), and put a copy
    in ``cached`` (the repository's cache directory) if given; returns its id."""
    tail = f'","type":"data","offset":%d,"length":{BLOB_LENGTH},"uncompressed_length":{BLOB_RAW_LENGTH}}}'
    parts = []
    for pack_id, blob_ids in packs:
        blobs = ",".join('{"id":"' + b + tail % (BLOB_LENGTH * i) for i, b in enumerate(blob_ids))
        parts.append(f'{{"id":"{pack_id}","blobs":[{blobs}]}}')
    sealed = key.seal(('{"packs":[' + ",".join(parts) + "]}").encode())
    name = hashlib.sha256(sealed).hexdigest()
    tmp = repo / "index" / (name + ".tmp")
    tmp.write_bytes(sealed)
    tmp.rename(repo / "index" / name)
    if cached is not None:  # the cache's layout: index/<first two hex digits>/<id>
        (cached / "index" / name[:2]).mkdir(parents=True, exist_ok=True)
        (cached / "index" / name[:2] / name).write_bytes(sealed)
    return name


def inject(repo: Path, password: str, blobs: int, per_pack: int = 2000, per_object: int = 100_000,
           seed: int = 13, cache: Path | None = None) -> list[str]:
    """Write index files naming ``blobs`` random data blobs, ``per_pack`` to a sparse fake
    pack and ``per_object`` to an index file; returns the index files' ids.

    ``cache``: restic's cache directory (RESTIC_CACHE_DIR). If restic has made this
    repository's there, the index files go in it too, as if restic had loaded them once:
    bk's generator fills bk's cache the same way, so both are measured warm."""
    key = master_key(repo, password)
    cached = cache / repo_id(repo, key) if cache is not None else None
    if cached is not None and not cached.exists():
        cached = None
    rng = random.Random(seed)
    done = 0
    ids = []
    while done < blobs:
        packs: list[tuple[str, list[str]]] = []
        in_object = 0
        while done < blobs and in_object < per_object:
            n = min(per_pack, blobs - done, per_object - in_object)
            pack_id = rng.randbytes(32).hex()
            packs.append((pack_id, [rng.randbytes(32).hex() for _ in range(n)]))
            path = repo / "data" / pack_id[:2] / pack_id
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(path, "wb") as f:
                f.truncate(pack_size([BLOB_LENGTH] * n, compressed=True))
            done += n
            in_object += n
        ids.append(write_index(repo, key, packs, cached))
    return ids


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("repo", type=Path, help="a local repository made by restic init")
    ap.add_argument("password")
    ap.add_argument("--blobs", type=int, default=1_000_000)
    ap.add_argument("--per-pack", type=int, default=2000)
    ap.add_argument("--per-object", type=int, default=100_000)
    ap.add_argument("--cache", type=Path, help="restic's cache directory, to put the index files in too")
    args = ap.parse_args(argv)
    try:
        ids = inject(args.repo, args.password, args.blobs, args.per_pack, args.per_object, cache=args.cache)
    except (OSError, ValueError) as err:  # no repository there, or not this password
        print(f"restic_index: {err}", file=sys.stderr)
        return 2
    print(f"{len(ids)} index files, {args.blobs} blobs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
