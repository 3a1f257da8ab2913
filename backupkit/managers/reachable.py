"""Reachability: every blob a set of snapshots references (HAMT nodes, content blobs,
data blobs), shared by prune (mark) and check (what is missing, and who is affected).

Each distinct HAMT node is visited once across all snapshots, so marking N snapshots that
share most of their trees costs about the size of their union, not N times one tree.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import msgpack

from backupkit.crypto import T_META_BLOB
from backupkit.entry import decode_entry
from backupkit.hamt import Hamt
from backupkit.repo.repository import Repository
from backupkit.snapshot import Snapshot
from backupkit.tree import make_hamt


@dataclass
class Reachable:
    """Blob ids in use, split by kind, and problems met on the way."""

    meta: set[bytes] = field(default_factory=set)
    data: set[bytes] = field(default_factory=set)
    #: (snapshot id, path or "", message) for nodes/blobs that could not be read
    problems: list[tuple[str, str, str]] = field(default_factory=list)

    @property
    def all(self) -> set[bytes]:
        return self.meta | self.data


def mark(
    repo: Repository,
    snapshots: Iterable[Snapshot],
    on_node: Callable[[], None] | None = None,
    strict: bool = True,
) -> Reachable:
    """Collect every blob reachable from ``snapshots``.

    With ``strict`` an unreadable node or content blob raises (prune must fail closed);
    otherwise it is recorded in ``problems`` and marking goes on (check).
    """
    hamt: Hamt = make_hamt(repo, cache_size=256)
    out = Reachable()
    for snap in snapshots:
        stack = [snap.root]
        while stack:
            nid = stack.pop()
            if nid in out.meta:
                continue
            out.meta.add(nid)
            if on_node is not None:
                on_node()
            try:
                n = hamt.node(nid)
            except Exception as e:  # noqa: BLE001 - recorded or re-raised below
                if strict:
                    raise
                out.problems.append((snap.id, "", f"tree node {nid.hex()[:16]}: {e}"))
                continue
            if n[0] == 1:
                stack.extend(cid for _s, cid, _c in n[4])
                continue
            for _k, path, raw in n[1]:
                e = decode_entry(raw)
                for item in e.get("c", ()):
                    if isinstance(item, bytes):
                        out.data.add(item)
                for cb in e.get("cb", ()):
                    if cb in out.meta:
                        continue
                    out.meta.add(cb)
                    try:
                        items = msgpack.unpackb(repo.read_blob(cb, T_META_BLOB))
                    except Exception as err:  # noqa: BLE001
                        if strict:
                            raise
                        out.problems.append((snap.id, path.decode("utf-8", "backslashreplace"), f"content blob {cb.hex()[:16]}: {err}"))
                        continue
                    out.data.update(i for i in items if isinstance(i, bytes))
    return out
