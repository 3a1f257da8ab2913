"""``tree_manifest``: what a restore must give back of a tree, as JSON-able data (the
format fixture's manifest is written with it and restores are compared with it)."""

from __future__ import annotations

import hashlib
import os
import stat


def tree_manifest(root: bytes) -> dict:
    """{path below ``root`` (str, surrogateescape; ``.`` for ``root``): its type, mode,
    owners, mtime, and per kind its content hash and size, hard-link group, link target
    or extended attributes}."""
    out = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in [*dirnames, *filenames, *([b"."] if dirpath == root else [])]:
            p = os.path.normpath(os.path.join(dirpath, n))
            rel = os.path.relpath(p, root).decode("utf-8", "surrogateescape")
            st = os.lstat(p)
            r = {
                "type": stat.S_IFMT(st.st_mode),
                "mode": stat.S_IMODE(st.st_mode),
                "uid": st.st_uid,
                "gid": st.st_gid,
                "mtime_ns": st.st_mtime_ns,
            }
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    r["sha256"] = hashlib.sha256(f.read()).hexdigest()
                r["size"] = st.st_size
                if st.st_nlink > 1:
                    r["link_group"] = inodes.setdefault(st.st_ino, rel)
            if stat.S_ISLNK(st.st_mode):
                r["target"] = os.readlink(p).decode("utf-8", "surrogateescape")
            else:
                r["xattrs"] = {k: os.getxattr(p, k).hex() for k in sorted(os.listxattr(p))}
            out[rel] = r
    return out
