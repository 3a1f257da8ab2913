"""The object layer: between blobs and files.

- ``entry``: :class:`Entry`, one path's metadata, typed, with its validating wire codec.
- ``content``: content lists (inline or in content blobs), :class:`ContentWriter`
  (file or stream in, content list out) and :class:`ContentReader` (content list in,
  bytes out, read ahead).
"""
