"""The repository's config: the sealed ``config`` object (format version, repository id,
chunker and pack parameters, compression level)."""

from __future__ import annotations

from dataclasses import dataclass

import re

import msgpack

from backupkit.errors import FormatError
from backupkit.limits import BLOB_MAX

_REPO_ID = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class RepoConfig:
    """The sealed ``config`` object."""

    version: int
    repo_id: str
    chunker_min: int
    chunker_avg: int
    chunker_max: int
    pack_size: int
    compression_level: int
    created: float

    def encode(self) -> bytes:
        return msgpack.packb(self.__dict__)

    @classmethod
    def decode(cls, data: bytes) -> RepoConfig:
        try:
            d = msgpack.unpackb(data)
            cfg = cls(**d)
        except (ValueError, TypeError, RecursionError) as e:
            raise FormatError(f"config is malformed: {e}") from None
        if type(cfg.version) is not int or cfg.version != 1:
            raise FormatError(f"repository format version {cfg.version!r} is not supported")
        ints = (cfg.chunker_min, cfg.chunker_avg, cfg.chunker_max, cfg.pack_size, cfg.compression_level)
        if (
            not isinstance(cfg.repo_id, str)
            or not _REPO_ID.fullmatch(cfg.repo_id)  # it names the cache directory
            or not all(type(v) is int for v in ints)
            or not 0 < cfg.chunker_min <= cfg.chunker_avg <= cfg.chunker_max <= BLOB_MAX
            or not 0 <= cfg.pack_size <= 1 << 40
            or not isinstance(cfg.created, (int, float))
        ):
            raise FormatError("config is malformed: a field is of the wrong type or out of range")
        return cfg
