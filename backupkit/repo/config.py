"""The repository's config: the sealed ``config`` object (format version, repository id,
chunker and pack parameters, compression level)."""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from backupkit.errors import FormatError


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
        except (ValueError, TypeError) as e:
            raise FormatError(f"config is malformed: {e}") from None
        if cfg.version != 1:
            raise FormatError(f"repository format version {cfg.version} is not supported")
        return cfg
