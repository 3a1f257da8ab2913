"""Every size and cost bound bk applies to what it reads from a repository.

A store attacker (no password) can plant any bytes under any name, and a client holding
a key can seal any plaintext; neither may make a reader hang, exhaust its memory or crash.
So every object is read only up to a maximum for its kind (checked against the store's
size before the read), every zstd payload is decompressed only up to a maximum, and the
cost parameters of key files are bounded before Argon2id runs. docs/security.md explains
the choices; the numbers are generous multiples of what bk itself ever writes.
"""

from __future__ import annotations

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

# -- key files (JSON, the only unsealed objects) -------------------------------------------
#: A key file bk writes is ~1 KiB.
KEY_FILE_MAX = 64 * KiB
#: Argon2id iterations (t). bk writes 3.
KDF_ITERATIONS_MAX = 16
#: Argon2id lanes (p). bk writes 4.
KDF_LANES_MAX = 16
#: Argon2id memory in KiB (m). bk writes 64 MiB; Argon2 needs at least 8 KiB per lane.
KDF_MEMORY_KIB_MAX = 256 * 1024
#: Bound on t x m (KiB): about 2 s of one core per GiB pass. bk writes 3 x 64 MiB.
KDF_WORK_KIB_MAX = 1024 * 1024
#: Salt bytes (bk writes 16).
KDF_SALT_MIN, KDF_SALT_MAX = 8, 64
#: Decoded ``data`` (nonce + wrapped master keys + tag; bk writes ~150 bytes).
KEY_DATA_MAX = 1 * KiB
#: Decoded ``meta`` (sealed host, user and time; bk writes ~150 bytes).
KEY_META_MAX = 4 * KiB

# -- sealed objects: the largest stored object read, per kind -------------------------------
CONFIG_MAX = 64 * KiB
LOCK_MAX = 64 * KiB
SNAPSHOT_MAX = 16 * MiB
CATALOG_MAX = 256 * MiB
INDEX_MAX = 512 * MiB
#: A pack read whole (check, prune, the metadata cache). bk writes 16 MiB packs by
#: default; ``init --pack-size`` allows at most PACK_SIZE_MAX, and a pack holds blobs of
#: up to BLOB_MAX, so this is the largest a pack can legitimately be.
PACK_SIZE_MIN = 4 * MiB  # smaller packs would let the store learn chunk sizes
PACK_SIZE_MAX = 128 * MiB
#: The largest plaintext of one blob (data chunks are at most the chunker's maximum,
#: 8 MiB by default; a HAMT node holds at most 256 entries).
BLOB_MAX = 64 * MiB
PACK_MAX = 2 * PACK_SIZE_MAX + 2 * BLOB_MAX
#: A pack header's plaintext (bk pads it to a power of two >= 4 KiB; ~70 bytes a blob).
PACK_HEADER_MAX = 64 * MiB

#: zstd's highest level (``init --compression``; 0 stores uncompressed).
COMPRESSION_MAX = 22

# -- decompressed payloads, per kind --------------------------------------------------------
#: The largest plaintext a sealed object of each kind may decompress to ...
PLAIN_MAX = {
    "config": 64 * KiB,
    "lock": 64 * KiB,
    "snapshot": 64 * MiB,
    "catalog": 512 * MiB,
    "index": 512 * MiB,
    "blob": BLOB_MAX,
}
#: ... and, whatever the kind, at most this many times its compressed size (or
#: PLAIN_FLOOR). What bk seals is mostly random ids and compresses 2-10x; a zstd bomb
#: reaches 30,000x. Blobs are bounded by the raw length the index or pack header gives.
PLAIN_RATIO_MAX = 64
PLAIN_FLOOR = 4 * MiB

def plain_max(kind: str, stored: int) -> int:
    """The largest plaintext a sealed object of ``kind`` (a PLAIN_MAX key) of ``stored``
    bytes may decompress to."""
    return min(PLAIN_MAX[kind], max(PLAIN_FLOOR, PLAIN_RATIO_MAX * stored))


# -- trie shape -----------------------------------------------------------------------------
#: Keys are 16 bytes, so a branch routes on one of nibbles 0..31: no path is deeper.
HAMT_DEPTH_MAX = 32
