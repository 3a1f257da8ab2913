"""What a lost config held, recovered from what the repository still has (``bk repair config``).

The config (repo/config.py) holds, beside the format version:

    repo_id            32 random bytes made at init. Nothing in the store depends on it:
                       it names the local caches (``<cache root>/<repo_id>/``) of every
                       machine that opened the repository. Recoverable only from such a
                       cache directory whose sealed copies authenticate with these keys
                       (``find_repo_id``); a new one would leave every machine's cache
                       orphaned and make their cached configs differ from the store's.
    chunker min/avg/max  where files are cut into chunks; a wrong set silently breaks
                       deduplication against everything stored. Not in the key file
                       (which holds only the gear table's secret, the chunker key), but
                       it leaves its trace in the data: each stored stream (a file's
                       data between holes) was cut by exactly these parameters, so a set
                       is accepted only when it cuts the stored streams back into exactly
                       their stored chunks (``recover_chunker``). The maximum shows only
                       where a stream was cut at it (long low-entropy runs); where none
                       was, every candidate maximum re-cuts all stored data the same way.
    pack_size          the target size of new packs: nothing read depends on it. Estimated
                       from the index (most packs hold the target plus part of a blob).
    compression_level  zstd's level for new objects; frames do not record it. 3 (init's
                       default) when stored objects are compressed, else 0.
    created            the oldest key file's sealed creation time (init writes both).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from backupkit.chunker import DEFAULT_AVG, DEFAULT_MAX, DEFAULT_MIN, Chunker
from backupkit.crypto import T_DATA_BLOB, T_INDEX, T_SNAPSHOT, Sealer
from backupkit.errors import BackupkitError
from backupkit.limits import BLOB_MAX, PACK_SIZE_MIN
from backupkit.repo.cache import LOCATIONS, default_cache_root
from backupkit.repo.config import RepoConfig
from backupkit.repo.keys import key_info
from backupkit.repo.pack import read_pack_header

MiB = 1024 * 1024
#: init's defaults, used where the data cannot tell
DEFAULT_PACK_SIZE = 16 * MiB
DEFAULT_COMPRESSION = 3
_HEX64 = re.compile(r"[0-9a-f]{64}")


# -- the cached copies and the repository id ---------------------------------------------------

def cache_root_of(cache_root) -> Path | None:
    if cache_root is False:
        return None
    return default_cache_root() if cache_root in (None, True) else Path(os.fspath(cache_root))


@dataclass(frozen=True)
class CachedConfig:
    """A sealed config found in an open cache (``locations/<hash>/config``)."""

    path: str
    raw: bytes
    config: RepoConfig
    this_location: bool


def cached_configs(sealer: Sealer, root: Path | None, this_location_dir: Path | None) -> list[CachedConfig]:
    """Every cached sealed config under the cache root that authenticates with these
    keys: this location's first, then the others (the same repository opened under
    another URL), most recently written first."""
    from backupkit.repo.opening import open_config

    if root is None:
        return []
    paths = []
    try:
        paths = sorted((root / LOCATIONS).glob("*/config"), key=lambda p: -_mtime(p))
    except OSError:
        pass
    out = []
    for p in paths:
        try:
            raw = p.read_bytes()
            cfg = open_config(sealer, raw)
        except (OSError, BackupkitError):
            continue
        here = this_location_dir is not None and p.parent == this_location_dir
        out.append(CachedConfig(str(p), raw, cfg, here))
    out.sort(key=lambda c: not c.this_location)
    return out


def _mtime(p: Path) -> float:
    try:
        return p.stat().st_mtime
    except OSError:
        return 0.0


def find_repo_id(sealer: Sealer, root: Path | None, index_names: set[str]) -> tuple[str | None, str]:
    """(repository id, how it was found) from the repository caches under ``root``: a
    directory named by an id whose cached index objects (or metadata packs) authenticate
    with these keys. None when no cache holds this repository."""
    if root is None:
        return None, "no cache directory to look in (--no-cache)"
    found = []
    try:
        dirs = [d for d in root.iterdir() if _HEX64.fullmatch(d.name) and d.is_dir() and not d.is_symlink()]
    except OSError:
        dirs = []
    for d in dirs:
        hits = _authenticated_objects(sealer, d)
        if hits:
            current = len(hits & index_names)
            found.append((current, _mtime(d), d.name, len(hits)))
    if not found:
        return None, f"no repository cache under {root} holds objects of this repository"
    found.sort(reverse=True)
    current, _t, rid, n = found[0]
    more = f" (of {len(found)} that do, the one sharing most index objects with the store)" if len(found) > 1 else ""
    return rid, f"the local cache {root / rid} holds {n} objects that authenticate with this repository's keys{more}"


def _authenticated_objects(sealer: Sealer, d: Path, tries: int = 4) -> set[str]:
    """Names of cached index objects (or metadata packs) in ``d`` that authenticate."""
    hits: set[str] = set()
    failed = 0
    for p in sorted((d / "index").glob("*"))[:64]:
        if not _HEX64.fullmatch(p.name):
            continue
        try:
            sealer.open(T_INDEX, bytes.fromhex(p.name), p.read_bytes())
            hits.add(f"index/{p.name}")
        except (OSError, BackupkitError):
            failed += 1
            if failed >= tries and not hits:
                break
    if hits:
        return hits
    for p in sorted((d / "meta").glob("*/*"))[:tries]:
        if not _HEX64.fullmatch(p.name):
            continue
        try:
            data = p.read_bytes()
            read_pack_header(sealer, bytes.fromhex(p.name), data, len(data))
            hits.add(f"meta/{p.parent.name}/{p.name}")
        except (OSError, BackupkitError):
            continue
    return hits


def keys_open_something(repo, tries: int = 4) -> bool:
    """Whether the keys that opened open anything in the store (an index object, a
    snapshot object, a pack header), or the store holds none of those: a key file of
    another repository must never make ``repair config`` seal a config for it."""
    import struct

    if len(repo.index):
        return True
    anything = bool(repo.list_names("index"))
    for sid in list(repo.list_ids("snapshots"))[:tries]:
        anything = True
        try:
            repo.sealer.open(T_SNAPSHOT, sid, repo.read_raw(f"snapshots/{sid.hex()}", max_size=16 * MiB))
            return True
        except BackupkitError:
            continue
    for n, p in enumerate(repo.iter_packs()):
        if n >= tries:
            break
        anything = True
        try:
            (hlen,) = struct.unpack("<I", repo.read_raw_range(p.name, p.size - 4, 4))
            take = min(p.size, hlen + 4)
            read_pack_header(repo.sealer, p.id, repo.read_raw_range(p.name, p.size - take, take), p.size)
            return True
        except (BackupkitError, struct.error, ValueError):
            continue
    return not anything


# -- the chunker's parameters --------------------------------------------------------------------

#: (min, max) as fractions of avg, most likely first: init's defaults are (1/2, 8)
_RATIOS = ((2, 8), (2, 4), (4, 8), (4, 4), (2, 16), (4, 16), (2, 2), (8, 8), (4, 2), (8, 16), (8, 4))


def chunker_candidates() -> list[tuple[int, int, int]]:
    """Parameter sets to try, most likely first: init's defaults, then every power-of-two
    average with the usual ratios of minimum and maximum to it."""
    out = [(DEFAULT_MIN, DEFAULT_AVG, DEFAULT_MAX)]
    for min_div, max_mul in _RATIOS:
        for bits in range(7, 26):
            avg = 1 << bits
            c = (avg // min_div, avg, avg * max_mul)
            if c[0] >= 64 and c[2] <= BLOB_MAX and c not in out:
                out.append(c)
    return out


@dataclass(frozen=True)
class ChunkerEvidence:
    """What ``recover_chunker`` found.

    Attributes:
        params: (min, avg, max), or None when no candidate re-cuts the stored data.
        streams: stored streams re-cut; boundaries: chunk boundaries among them.
        bytes_read: data read for that.
        max_seen: some stream was cut at the maximum (so the maximum is certain).
        consistent: how many candidate sets re-cut every stream read.
        note: one line for the user.
    """

    params: tuple[int, int, int] | None
    streams: int
    boundaries: int
    bytes_read: int
    max_seen: bool
    consistent: int
    note: str


def _streams(repo, skipped: list[str]) -> Iterator[tuple[bytes, ...]]:
    """The data streams of every readable snapshot's files: runs of data blob ids between
    holes, each once."""
    from backupkit.snapshot import load_snapshot
    from backupkit.tree import SnapshotTree

    seen: set[tuple[bytes, ...]] = set()
    for sid in sorted(i.hex() for i in repo.list_ids("snapshots")):
        try:
            snap = load_snapshot(repo, sid)
            tree = SnapshotTree(repo, snap.root)
            entries = tree.all_entries()
            while True:
                try:
                    _p, e = next(entries)
                except StopIteration:
                    break
                if not e.is_file:
                    continue
                try:
                    items = tree.content(e)
                except BackupkitError:
                    continue
                run: list[bytes] = []
                for item in [*items, None]:
                    if isinstance(item, bytes):
                        run.append(item)
                        continue
                    if run:
                        key = tuple(run)
                        if key not in seen:
                            seen.add(key)
                            yield key
                    run = []
        except BackupkitError as err:
            skipped.append(f"snapshot {sid[:8]}: {err}")


def recover_chunker(repo, read_limit: int) -> ChunkerEvidence:
    """The chunker parameters that cut the stored streams into exactly their stored
    chunks: the streams with most chunk boundaries are read first, up to ``read_limit``
    bytes of data."""
    skipped: list[str] = []
    runs = []
    collected = 0
    for run in _streams(repo, skipped):
        locs = [repo.index.lookup(b) for b in run]
        if any(loc is None for loc in locs):
            continue  # data the index no longer has: no evidence
        runs.append((run, [loc.raw_length for loc in locs]))
        collected += sum(runs[-1][1])
        if collected >= 4 * read_limit and len(runs) >= 64:
            break  # enough to choose from: the trees of every snapshot need not be read
    runs.sort(key=lambda r: -len(r[0]))
    candidates = chunker_candidates()
    evidence: list[tuple[bytes, list[int]]] = []  # (data, chunk lengths)
    read = 0
    for run, lengths in runs:
        if read + sum(lengths) > read_limit:
            continue
        try:
            data = b"".join(repo.read_blob(b, T_DATA_BLOB) for b in run)
        except BackupkitError:
            continue  # damaged data: no evidence
        read += len(data)
        evidence.append((data, lengths))
    boundaries = sum(len(lengths) - 1 for _d, lengths in evidence)
    if not evidence:
        if runs or any(p.kind == "data" for p in repo.iter_packs()):
            why = "; ".join(skipped[:3]) or (
                f"none of {len(runs)} stored streams could be read within {read_limit} bytes" if runs
                else "no snapshot or index names the stored data: bk repair config needs readable index objects"
            )
            return ChunkerEvidence(None, 0, 0, 0, False, 0, f"nothing to learn them from ({why})")
        return ChunkerEvidence(
            (DEFAULT_MIN, DEFAULT_AVG, DEFAULT_MAX), 0, 0, 0, False, len(candidates),
            "no stored data to learn from: init's defaults (nothing stored depends on them)",
        )
    longest = max(max(lengths) for _d, lengths in evidence)
    shortest_cut = min((min(lengths[:-1]) for _d, lengths in evidence if len(lengths) > 1), default=None)
    ok = []
    for mn, avg, mx in candidates:
        if mx < longest or (shortest_cut is not None and mn >= shortest_cut):
            continue
        chunker = Chunker(repo.keys.chunker_key, mn, avg, mx)
        if all(chunker.cut_all(data, eof=True) == lengths for data, lengths in evidence):
            ok.append((mn, avg, mx))
    if not ok:
        return ChunkerEvidence(
            None, len(evidence), boundaries, read, False, 0,
            f"no known chunker parameters cut the {len(evidence)} stored streams read ({boundaries} boundaries) "
            "into their stored chunks",
        )
    mn, avg, mx = ok[0]
    max_seen = any(mx in lengths[:-1] for _d, lengths in evidence)
    others = {c[2] for c in ok if c[:2] == (mn, avg)} - {mx}
    n = len(evidence)
    note = f"{n} stored stream{'s' if n != 1 else ''} ({boundaries} chunk boundaries, {read} bytes) re-cut exactly"
    if not max_seen and others:
        note += "; no stream was cut at the maximum, so the data cannot tell it (the usual 8 x average is taken where it fits)"
    if len({c[:2] for c in ok}) > 1:
        note += f"; {len(ok)} candidate sets fit the data, the most usual taken"
    return ChunkerEvidence((mn, avg, mx), len(evidence), boundaries, read, max_seen, len(ok), note)


# -- the other fields ------------------------------------------------------------------------------

def estimate_pack_size(repo) -> tuple[int, str]:
    """(pack size, how it was estimated). A pack is closed by the first blob that takes
    its blobs to the target, so most packs hold the target plus part of one blob (and
    blobs are shuffled in a pack, so the last one added is not known): the median of the
    packs' blob bytes, rounded down to a whole MiB (4 MiB and up, as init takes it) or
    to a power of two below that."""
    area: dict[bytes, int] = {}
    for loc in repo.index.blobs():
        area[loc.pack.id] = area.get(loc.pack.id, 0) + loc.length
    if not area:
        return DEFAULT_PACK_SIZE, "no packs: init's default"
    sizes = sorted(area.values())
    median = sizes[len(sizes) // 2]
    if median >= PACK_SIZE_MIN:
        size = median // MiB * MiB
    elif max(sizes) >= PACK_SIZE_MIN:
        size = 1 << (median.bit_length() - 1)
    else:  # partly filled packs of a small repository (or a test's tiny target)
        return DEFAULT_PACK_SIZE, f"the {len(sizes)} packs are all below {PACK_SIZE_MIN // MiB} MiB: init's default"
    return size, f"estimated from {len(sizes)} packs (median {median} bytes of blobs); it only sizes new packs"


def estimate_compression(repo, tries: int = 8) -> tuple[int, str]:
    """(level, how): zstd frames do not record their level; 3 (init's default) if stored
    snapshot objects are compressed, 0 if none of them is."""
    seen = 0
    for sid in sorted(i for i in repo.list_ids("snapshots"))[:tries]:
        name = f"snapshots/{sid.hex()}"
        try:
            payload = repo.sealer.open(T_SNAPSHOT, sid, repo.read_raw(name, max_size=16 * MiB))
        except BackupkitError:
            continue
        seen += 1
        if payload[:1] == b"\x01":
            return DEFAULT_COMPRESSION, "stored objects are compressed (the level is not recorded: init's default)"
    if seen:
        return 0, f"none of {seen} snapshot objects is compressed"
    return DEFAULT_COMPRESSION, "nothing to tell: init's default"


def oldest_key_time(repo) -> tuple[float | None, str]:
    """The earliest creation time sealed in a key file (init writes the first key file
    and the config together)."""
    times = []
    for name in repo.list_names("keys"):
        key_id = name.split("/", 1)[1]
        try:
            info = key_info(key_id, repo.read_raw(name, max_size=64 * 1024), repo.sealer)
        except BackupkitError:
            continue
        if info.created > 0:
            times.append(info.created)
    if not times:
        return None, "no key file records a time: now"
    return min(times), "the oldest key file's creation time"
