"""``json_fields``: the fields of a result dataclass as a JSON object, for ``to_json``.

Most of a result's fields go into its JSON as they are, under their own names; a
``to_json`` then says only what differs (a path shown for people, a rounded time, an
extra key) instead of listing every field again, and a result with nothing to say
inherits ``JsonFields``. A snapshot in a result is named by its id; ``replaced_ids`` is
the one way a result names a snapshot and the one written in its place (tag, rewrite).
"""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from backupkit.snapshot import Snapshot


def json_value(value: Any) -> Any:
    """A value as JSON holds it: a snapshot as its id (a result names the snapshots it
    speaks of; ``bk snapshots`` shows them whole), a result's ``to_json()``, a tuple or
    list as a list of such values; anything else as it is."""
    if isinstance(value, Snapshot):
        return value.id
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, (tuple, list)):
        return [json_value(v) for v in value]
    return value


def json_fields(result: Any, *names: str, **given: Any) -> dict:
    """``{name: json_value(result.name)}`` for ``names`` in order (none: every field of
    the dataclass ``result`` that its repr shows, in their order); a name in ``given``
    takes the value given instead, and the other keys of ``given`` follow."""
    keys = names or tuple(f.name for f in fields(result) if f.repr)
    out = {k: given.pop(k) if k in given else json_value(getattr(result, k)) for k in keys}
    out.update(given)
    return out


class JsonFields:
    """A result whose JSON is its fields as ``json_fields`` gives them, nothing else."""

    def to_json(self) -> dict:
        return json_fields(self)


def replaced_ids(old: Any, new: Any | None) -> dict:
    """``old_snapshot_id`` and ``new_snapshot_id``: the snapshot a verb replaced and the
    one it wrote instead (None: nothing written, a dry run)."""
    return {"old_snapshot_id": old.id, "new_snapshot_id": new.id if new is not None else None}
