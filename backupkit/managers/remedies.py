"""What to run after ``bk check``: one table from finding kind to repair steps.

Vocabulary:
    step     one command of the recovery sequence. Steps always run in this order,
             whatever findings asked for them: put back the config, rebuild the index, salvage damaged packs,
             put back snapshot objects the catalog still has (before a backup would
             reconcile the catalog with the listing and drop them), back up the same
             sources again (data still on disk is written again and older snapshots
             that share it become whole), then rewrite the snapshots that still miss
             data. docs/recovery.md shows the same table (a
             test compares them).
    remedy   the steps one finding kind needs; ``()`` when nothing is to be run (a
             remark, or damage bk cannot repair: then ``NO_REPAIR`` says what to do).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

#: put back the config (a cached copy, else one rebuilt from the data)
CONFIG = "bk repair config"
INDEX = "bk repair index"
PACKS = "bk repair packs {packs}"
BACKUP = "bk backup <the same paths as before>"
SNAPSHOTS = "bk repair snapshots --forget"
#: put back snapshot objects from the catalog's copies (and rewrite the catalog)
CATALOG = "bk repair snapshots {snapshots}"
#: rewrite the catalog from the snapshot objects
LISTING = "bk snapshots"
PRUNE = "bk prune"
KEY_REMOVE = "bk key remove {key}"

#: Steps in the order they must run.
ORDER = (CONFIG, INDEX, PACKS, CATALOG, LISTING, BACKUP, SNAPSHOTS, PRUNE, KEY_REMOVE)

#: finding kind -> the steps it needs (see docs/recovery.md for what each kind means).
REMEDIES: dict[str, tuple[str, ...]] = {
    "config_unreadable": (CONFIG,),
    "config_mismatch": (),
    "key_malformed": (KEY_REMOVE,),
    "key_damaged": (KEY_REMOVE,),
    "key_meta_unauthenticated": (),
    "snapshot_unreadable": (SNAPSHOTS,),
    "snapshot_missing": (CATALOG,),
    "catalog_unreadable": (LISTING,),
    "catalog_stale": (CATALOG,),
    "catalog_mismatch": (CATALOG,),
    "index_unreadable": (INDEX,),
    "index_conflict": (INDEX,),
    "index_missing": (INDEX,),
    "index_entry_out_of_range": (INDEX, PACKS, BACKUP, SNAPSHOTS),
    "pack_missing": (INDEX, BACKUP, SNAPSHOTS),
    "pack_missing_redundant": (INDEX,),
    "pack_size": (INDEX, PACKS, BACKUP, SNAPSHOTS),
    "pack_header": (PACKS,),
    "pack_unreadable": (INDEX, PACKS, BACKUP, SNAPSHOTS),
    "pack_unreferenced": (PRUNE,),
    "blob_missing": (INDEX, BACKUP, SNAPSHOTS),
    "blob_wrong_kind": (INDEX, BACKUP, SNAPSHOTS),
    "blob_corrupt": (PACKS, BACKUP, SNAPSHOTS),
    "tree_unreadable": (PACKS, BACKUP, SNAPSHOTS),
    "entry_malformed": (SNAPSHOTS,),
    "read_retry_ok": (),
    "foreign_object": (),
}

#: kinds bk cannot repair, and what to do instead
NO_REPAIR = {
    "config_mismatch": "no repair command: if the store's config is the right one, run once with --no-cache "
    "(or remove the local cache); otherwise put back the config object from a copy",
}

_PACK = re.compile(r"\b(?:data|meta)/[0-9a-f]{2}/([0-9a-f]{64})\b")


def _packs_of(finding) -> list[str]:
    return _PACK.findall(f"{finding.object} {finding.message}")


def remedies(findings: Iterable) -> list[str]:
    """The commands to run, in order, for ``findings`` (check's Finding values)."""
    findings = list(findings)
    steps: set[str] = set()
    snapshots: list[str] = []
    packs: list[str] = []
    keys: list[str] = []
    for f in findings:
        kind_steps = REMEDIES.get(f.kind, ())
        if f.kind == "pack_unreferenced" and any(g.severity == "error" for g in findings if g is not f):
            continue  # an unindexed pack among damage: repair index decides
        if CATALOG in kind_steps:
            if not f.snapshots:
                kind_steps = tuple(LISTING if s == CATALOG else s for s in kind_steps)
            snapshots += [i for i in f.snapshots if i not in snapshots]
        steps.update(kind_steps)
        if PACKS in kind_steps:
            for p in _packs_of(f):
                if p not in packs:
                    packs.append(p)
        if KEY_REMOVE in kind_steps:
            keys.append(f.object.split("/", 1)[-1])
    if SNAPSHOTS in steps and BACKUP not in steps:
        steps -= {CATALOG, LISTING}  # repair snapshots --forget does their work too
    if CATALOG in steps:
        steps.discard(LISTING)
    if PACKS in steps and not packs:
        steps.discard(PACKS)  # the packs were gone, not damaged: repair index dropped them
    out = []
    for s in ORDER:
        if s not in steps:
            continue
        if s == PACKS:
            out.append(s.format(packs=" ".join(packs)))
        elif s == CATALOG:
            out.append(s.format(snapshots=" ".join(i[:8] for i in snapshots)))
        elif s == KEY_REMOVE:
            out += [s.format(key=k[:10]) for k in keys]
        else:
            out.append(s)
    return out


__all__ = ["NO_REPAIR", "REMEDIES", "remedies"]
