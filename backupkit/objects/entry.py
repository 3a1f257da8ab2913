"""Entry: the metadata a snapshot keeps for one path, typed, and its wire codec.

On the wire an entry is a msgpack map with short keys, sorted (equal entries give equal
bytes, so unchanged subtrees keep their ids); a field that is None is absent. The table
is the format (docs/design.md section 8)::

    key field          type                     meaning
    t   type           str                      f file, d dir, l symlink, p fifo, s socket,
                                                c char device, b block device
    m   mode           int 0..0o7777            permission bits (S_IMODE)
    u   uid            int >= 0                 owner
    g   gid            int >= 0                 group
    un  user           str                      owner's name ("" when unknown)
    gn  group          str                      group's name
    s   size           int >= 0                 size in bytes (files)
    mt  mtime          int                      mtime in ns
    ct  ctime          int                      ctime in ns
    i   inode          int >= 0
    dv  device         int >= 0
    n   nlink          int >= 0                 link count (hardlinks: equal dv, i; n > 1)
    rd  rdev           int >= 0                 device number (c, b)
    l   target         bytes                    symlink target
    x   xattrs         ((bytes, bytes), ...)    extended attributes, in wire order
    c   content        (bytes(32) | int, ...)   data blob ids and holes (that many zeros)
    cb  content_blobs  (bytes(32), ...)         metadata blobs holding a long content list

How a content list is stored (inline ``c`` or in content blobs ``cb``) is the object
layer's business (``backupkit.objects.content``); an entry only carries the fields.

``Entry.decode`` validates every field: a wrong type, a missing ``t``, an unknown key, a
mode beyond 0o7777, a blob id that is not 32 bytes, a file without ``s``, a symlink
without ``l``, a device without ``rd``, both ``c`` and ``cb`` is a :class:`FormatError`
naming the path, never a ``KeyError`` or ``TypeError`` later. ``encode(decode(raw)) == raw`` for
every entry the format allows.
"""

from __future__ import annotations

import grp
import os
import pwd
import stat
from functools import lru_cache
from typing import NamedTuple

import msgpack

from backupkit.entry import display_path
from backupkit.errors import FormatError

try:
    from backupkit._hamtleaf import entry_fields as _entry_fields
except ImportError:  # pragma: no cover - the extension is built by pip install
    _entry_fields = None

TYPE_OF_MODE = {
    stat.S_IFREG: "f",
    stat.S_IFDIR: "d",
    stat.S_IFLNK: "l",
    stat.S_IFIFO: "p",
    stat.S_IFSOCK: "s",
    stat.S_IFCHR: "c",
    stat.S_IFBLK: "b",
}
TYPE_NAMES = {"f": "file", "d": "dir", "l": "symlink", "p": "fifo", "s": "socket", "c": "chardev", "b": "blockdev"}

_U64 = 1 << 64
_I64 = 1 << 63


class Entry(NamedTuple):
    """One path's metadata (see the module docstring for the wire keys).

    Immutable; a named tuple rather than a frozen dataclass because a backup makes and
    compares one per path: a tuple is built in C, several times faster.
    """

    type: str
    mode: int | None = None
    uid: int | None = None
    gid: int | None = None
    user: str | None = None
    group: str | None = None
    size: int | None = None
    mtime: int | None = None
    ctime: int | None = None
    inode: int | None = None
    device: int | None = None
    nlink: int | None = None
    rdev: int | None = None
    target: bytes | None = None
    xattrs: tuple[tuple[bytes, bytes], ...] | None = None
    content: tuple[bytes | int, ...] | None = None
    content_blobs: tuple[bytes, ...] | None = None

    # -- views -----------------------------------------------------------------------------
    @property
    def is_dir(self) -> bool:
        return self.type == "d"

    @property
    def is_file(self) -> bool:
        return self.type == "f"

    @property
    def type_name(self) -> str:
        return TYPE_NAMES[self.type]

    @property
    def hardlink_key(self) -> tuple[int, int] | None:
        """(device, inode) of a file with more than one name, else None."""
        if self.type == "f" and (self.nlink or 1) > 1:
            return (self.device or 0, self.inode or 0)
        return None

    @property
    def has_content(self) -> bool:
        return self.content is not None or self.content_blobs is not None

    def replace(self, **changes) -> Entry:
        vals = list(self)
        for attr, v in changes.items():
            vals[_INDEX[attr]] = v
        return _new(Entry, vals)

    def differing_keys(self, other: Entry) -> tuple[str, ...]:
        """Wire keys whose values differ between the two entries, sorted."""
        return tuple(k for k, i in _WIRE if self[i] != other[i])

    # -- codec -----------------------------------------------------------------------------
    def to_wire(self) -> dict:
        """The msgpack map, keys sorted, None fields left out."""
        out = {}
        for key, i in _WIRE:
            v = self[i]
            if v is not None:
                out[key] = dict(v) if i == _X else v
        return out

    def encode(self) -> bytes:
        return msgpack.packb(self.to_wire())

    @staticmethod
    def decode(raw: bytes, path: bytes | None = None) -> Entry:
        """The entry stored as ``raw``; FormatError (naming ``path``) if it is malformed.
        An entry the C reader accepts (``_hamtleaf.entry_fields``: no xattrs, nothing
        unusual) is read there; anything else, and every error, here."""
        if _entry_fields is not None:
            vals = _entry_fields(raw)
            if vals is not None:
                return _new(Entry, vals)
        try:
            m = msgpack.unpackb(raw, strict_map_key=False)
        except Exception as err:  # noqa: BLE001 - msgpack raises several kinds
            raise _bad(path, f"not msgpack ({err})") from None
        return Entry.from_wire(m, path)

    @staticmethod
    def from_wire(m: object, path: bytes | None = None) -> Entry:
        """The entry of a decoded wire map, validated (see the module docstring)."""
        if type(m) is not dict:
            raise _bad(path, "not a map")
        vals: list = [None] * _NFIELDS
        for key, v in m.items():
            spec = _SPEC.get(key) if type(key) is str else None
            if spec is None:
                raise _bad(path, f"unknown field {key!r}")
            i, kind, lo, hi = spec
            tv = type(v)
            if kind is int:
                ok = tv is int and lo <= v < hi
            elif kind is str or kind is bytes:
                ok = tv is kind
            elif i == 0:  # t
                ok = tv is str and v in TYPE_NAMES
            else:
                v = _CHECK[i](v)
                ok = v is not _INVALID
            if not ok:
                raise _bad(path, f"field {key!r} has an invalid value {_short(m[key])}")
            vals[i] = v
        t = vals[0]
        if t is None:
            raise _bad(path, "no type field 't'")
        need = _REQUIRED.get(t)
        if need is not None and vals[need[0]] is None:
            raise _bad(path, f"a {TYPE_NAMES[t]} without field {need[1]!r}")
        if vals[_C] is not None and vals[_CB] is not None:
            raise _bad(path, "both 'c' and 'cb'")
        return _new(Entry, vals)


def _bad(path: bytes | None, what: str) -> FormatError:
    where = f"{display_path(path)}: " if path is not None else ""
    return FormatError(f"{where}malformed file entry: {what}")


def _short(v: object) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


_INVALID = object()


def _check_xattrs(v):
    if type(v) is not dict:
        return _INVALID
    for k, val in v.items():
        if type(k) is not bytes or type(val) is not bytes:
            return _INVALID
    return tuple(v.items())


def _check_content(v):
    if type(v) is not list:
        return _INVALID
    for item in v:
        t = type(item)
        if t is bytes:
            if len(item) != 32:
                return _INVALID
        elif t is not int or not 0 <= item < _I64:
            return _INVALID
    return tuple(v)


def _check_blob_ids(v):
    if type(v) is not list:
        return _INVALID
    for item in v:
        if type(item) is not bytes or len(item) != 32:
            return _INVALID
    return tuple(v)


#: the fields in declaration order, and what each wire key holds:
#: key -> (attribute, kind, low, high); kind int: an int in [low, high)
_FIELDS = {
    "t": ("type", None, 0, 0),
    "m": ("mode", int, 0, 0o10000),
    "u": ("uid", int, 0, 1 << 32),
    "g": ("gid", int, 0, 1 << 32),
    "un": ("user", str, 0, 0),
    "gn": ("group", str, 0, 0),
    "s": ("size", int, 0, _I64),
    "mt": ("mtime", int, -_I64, _I64),
    "ct": ("ctime", int, -_I64, _I64),
    "i": ("inode", int, 0, _U64),
    "dv": ("device", int, 0, _U64),
    "n": ("nlink", int, 0, _U64),
    "rd": ("rdev", int, 0, _U64),
    "l": ("target", bytes, 0, 0),
    "x": ("xattrs", None, 0, 0),
    "c": ("content", None, 0, 0),
    "cb": ("content_blobs", None, 0, 0),
}
_ATTRS = Entry._fields
_new = tuple.__new__
_NFIELDS = len(_ATTRS)
_INDEX = {a: i for i, a in enumerate(_ATTRS)}
_SPEC = {k: (_INDEX[a], kind, lo, hi) for k, (a, kind, lo, hi) in _FIELDS.items()}
_CHECK = {_INDEX["xattrs"]: _check_xattrs, _INDEX["content"]: _check_content, _INDEX["content_blobs"]: _check_blob_ids}
_X = _INDEX["xattrs"]
_C, _CB = _INDEX["content"], _INDEX["content_blobs"]
#: what each type cannot do without: (field index, wire key)
_REQUIRED = {"f": (_INDEX["size"], "s"), "l": (_INDEX["target"], "l"), "c": (_INDEX["rdev"], "rd"), "b": (_INDEX["rdev"], "rd")}
#: (wire key, field index) in wire order (keys sorted)
_WIRE = tuple((k, _INDEX[_FIELDS[k][0]]) for k in sorted(_FIELDS))
#: wire key of each attribute
WIRE_KEY = {a: k for k, (a, *_rest) in _FIELDS.items()}
assert set(_ATTRS) == set(WIRE_KEY) and _ATTRS[0] == "type"


def decode_entry(raw: bytes, path: bytes | None = None) -> Entry:
    return Entry.decode(raw, path)


def encode_entry(e: Entry) -> bytes:
    return e.encode()


@lru_cache(maxsize=2048)
def _name_by_id(db: str, num: int) -> str:
    """The name this machine gives user (``db`` "user") or group id ``num``, or ""."""
    try:
        return pwd.getpwuid(num).pw_name if db == "user" else grp.getgrgid(num).gr_name
    except KeyError:
        return ""


def user_name(uid: int) -> str:
    return _name_by_id("user", uid)


def group_name(gid: int) -> str:
    return _name_by_id("group", gid)


def entry_from_stat(st: os.stat_result, **more) -> Entry:
    """The metadata part of an entry (plus ``more`` fields: target, xattrs, content...)."""
    t = TYPE_OF_MODE.get(stat.S_IFMT(st.st_mode))
    if t is None:
        raise ValueError(f"unsupported file type {stat.S_IFMT(st.st_mode):o}")
    return Entry(
        type=t,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        user=user_name(st.st_uid),
        group=group_name(st.st_gid),
        size=st.st_size if t == "f" else None,
        mtime=st.st_mtime_ns,
        ctime=st.st_ctime_ns,
        inode=st.st_ino,
        device=st.st_dev,
        nlink=st.st_nlink,
        rdev=st.st_rdev if t in ("c", "b") else None,
        **more,
    )


__all__ = ["Entry", "TYPE_NAMES", "TYPE_OF_MODE", "WIRE_KEY", "decode_entry", "encode_entry", "entry_from_stat"]
