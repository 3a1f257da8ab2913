"""``bk mount``: a repository as a read-only file system.

- ``layout``: the directories above the snapshots (``snapshots/``, ``ids/``, ``hosts/``,
  ``tags/``, ``latest`` links).
- ``fs``: :class:`MountFS`, paths to attributes, listings, links, xattrs and reads (no FUSE).
- ``files``: :class:`OpenFile`, random access to one file with a small blob cache.
- ``fuse``: the thin mfusepy adapter (imported only when mounting).
"""
