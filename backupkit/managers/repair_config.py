"""``bk repair config``: put back a config object that is missing or does not authenticate.

restic has no such command (its config holds only the repository id, the chunker
polynomial and the version, and a lost one is restored from a copy). bk's config holds
the chunker's size parameters, which a backup must use to deduplicate against what is
stored, so losing it would otherwise lose the repository.

Two ways, tried in order, and only while the store's config is missing or does not
authenticate with the keys the password opens (anything else: nothing to do):

1. **the cached copy**: every machine that opened the repository keeps its sealed config
   under the cache root (``locations/<hash of the URL>/config``, this URL's first, then
   any other URL the same repository was opened under). A copy that authenticates with
   this repository's keys is the original, byte for byte: it is written back.
2. **rebuilt** from what the repository still has (``config_evidence`` says how, field by
   field): the chunker parameters must cut the stored data into exactly its stored
   chunks, and the repository id must come from a local cache of this repository. When
   either cannot be recovered the command refuses (a guess would silently break
   deduplication, or orphan every machine's cache) - unless ``new_id`` accepts a new
   repository id (docs/recovery.md says what that costs other machines).

The write is one atomic ``put`` (a missing config: ``put_if_absent``), made under the
exclusive lock after reading the store's config once more. Unlike other managers this
one reads the store's config itself: there is no ``Repository`` without a config (it
makes one with the planned config to read the data and to hold the lock).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field

from backupkit import limits
from backupkit.crypto import T_CONFIG, Sealer
from backupkit.errors import ConfigDamaged, IntegrityError, ObjectExists, ObjectNotFound, ObjectTooLarge
from backupkit.managers import config_evidence as ev
from backupkit.repo.config import RepoConfig
from backupkit.repo.opening import UnlockedKey, open_config, unlock_key
from backupkit.store.base import ObjectStore

#: data read to recover the chunker parameters, at most (the streams with most chunk
#: boundaries first)
READ_LIMIT = 256 * 1024 * 1024


@dataclass(frozen=True)
class RepairConfigOptions:
    """new_id: accept a new repository id when no cache holds this repository's.
    read_limit: data bytes read at most to recover the chunker parameters."""

    new_id: bool = False
    read_limit: int = READ_LIMIT


@dataclass(frozen=True)
class ConfigPlan:
    """What ``bk repair config`` found and would write.

    Attributes:
        problem: what is wrong with the store's config (None: it authenticates).
        source: "none" (nothing to do), "cache" (a cached copy) or "rebuilt".
        cache_file: the cached copy written back (source "cache").
        config: the config to write (None when nothing is to be written).
        fields: field -> where its value came from (source "rebuilt").
    """

    problem: str | None
    source: str
    cache_file: str | None = None
    config: RepoConfig | None = None
    fields: dict[str, str] = field(default_factory=dict)
    raw: bytes | None = field(default=None, repr=False)

    def to_json(self) -> dict:
        cfg = self.config
        return {
            "problem": self.problem,
            "source": self.source,
            "cache_file": self.cache_file,
            "config": None if cfg is None else {k: v for k, v in cfg.__dict__.items()},
            "fields": dict(self.fields),
        }


@dataclass(frozen=True)
class RepairConfigResult:
    plan: ConfigPlan
    written: bool

    def to_json(self) -> dict:
        return {"plan": self.plan.to_json(), "written": self.written}


class RepairConfigReporter:
    def phase(self, name: str, total: int | None) -> None: ...


class RepairConfigManager:
    """Plans from the store, the key file the password opens and the local caches; the
    caller takes the exclusive lock on ``repository(plan)`` before ``execute``."""

    def __init__(self, store: ObjectStore, password: bytes, cache_root=None, connections: int = 4, reporter=None) -> None:
        self.store = store
        self.password = password
        self.cache_root = cache_root
        self.connections = connections
        self.reporter = reporter or RepairConfigReporter()
        self._unlocked: UnlockedKey | None = None
        self._repo = None

    # -- the store's config ----------------------------------------------------------------------
    def _unlock(self) -> UnlockedKey:
        if self._unlocked is None:
            self._unlocked = unlock_key(self.store, self.password, self.cache_root)
        return self._unlocked

    def store_problem(self) -> str | None:
        """What is wrong with the store's config, or None when it authenticates."""
        sealer = Sealer(self._unlock().keys)
        try:
            raw = self.store.get("config", max_size=limits.CONFIG_MAX)
        except ObjectNotFound:
            return "config: missing"
        except ObjectTooLarge as e:
            return str(e)
        try:
            open_config(sealer, raw)
        except IntegrityError as e:
            return str(e)
        return None  # it authenticates (a FormatError would have been raised: not damage)

    # -- planning -----------------------------------------------------------------------------------
    def plan(self, opts: RepairConfigOptions = RepairConfigOptions()) -> ConfigPlan:
        """Raises ConfigDamaged naming what cannot be recovered when a rebuild must refuse."""
        self.reporter.phase("config", None)
        problem = self.store_problem()
        if problem is None:
            return ConfigPlan(None, "none")
        u = self._unlock()
        sealer = Sealer(u.keys)
        root = ev.cache_root_of(self.cache_root)
        here = u.open_cache.directory  # this location's open cache
        copies = ev.cached_configs(sealer, root, here)
        if copies:
            c = copies[0]
            return ConfigPlan(problem, "cache", c.path, c.config, {}, c.raw)
        return self._rebuild(problem, opts, root)

    def _rebuild(self, problem: str, opts: RepairConfigOptions, root) -> ConfigPlan:
        u = self._unlock()
        # a provisional config to read with (nothing read depends on it); no cache
        provisional = RepoConfig(1, "0" * 64, ev.DEFAULT_MIN, ev.DEFAULT_AVG, ev.DEFAULT_MAX, ev.DEFAULT_PACK_SIZE, 3, 0.0)
        repo = self._reader(provisional)
        if not ev.keys_open_something(repo):
            raise ConfigDamaged(
                f"{problem}; the key file that opened ({u.key_id[:10]}) opens no index object, snapshot or pack "
                "header of this repository (not its key, or all of them are damaged): nothing rebuilt"
            )
        fields: dict[str, str] = {"version": "the only format version"}
        rid, how = ev.find_repo_id(repo.sealer, root, set(repo.list_names("index")))
        if rid is None:
            if not opts.new_id:
                raise ConfigDamaged(
                    f"{problem}; no cached copy of the config, and the repository id cannot be recovered ({how}): "
                    "run bk repair config on a machine that has used this repository, or add --new-id "
                    "(every machine's cache of this repository is then rebuilt)"
                )
            rid, how = os.urandom(32).hex(), "new (--new-id): no cache holds this repository's"
        fields["repo_id"] = how
        self.reporter.phase("chunker", None)
        chunk = ev.recover_chunker(repo, opts.read_limit)
        if chunk.params is None:
            raise ConfigDamaged(f"{problem}; no cached copy, and the chunker parameters cannot be recovered: {chunk.note}")
        fields["chunker"] = chunk.note
        pack_size, fields["pack_size"] = ev.estimate_pack_size(repo)
        level, fields["compression_level"] = ev.estimate_compression(repo)
        created, fields["created"] = ev.oldest_key_time(repo)
        cfg = RepoConfig(1, rid, *chunk.params, pack_size, level, created if created is not None else time.time())
        return ConfigPlan(problem, "rebuilt", None, cfg, fields, None)

    def _reader(self, cfg: RepoConfig):
        from backupkit.repo.repository import Repository

        u = self._unlock()
        if self._repo is not None:
            self._repo.close()
        self._repo = Repository(self.store, u.keys, cfg, u.key_id, False, self.connections)
        self._repo.password = self.password
        return self._repo

    def repository(self, plan: ConfigPlan):
        """A repository with the planned config, for the exclusive lock (``execute``)."""
        cfg = plan.config or RepoConfig(1, "0" * 64, ev.DEFAULT_MIN, ev.DEFAULT_AVG, ev.DEFAULT_MAX, ev.DEFAULT_PACK_SIZE, 3, 0.0)
        return self._reader(cfg)

    # -- executing --------------------------------------------------------------------------------
    def execute(self, plan: ConfigPlan, repo=None) -> RepairConfigResult:
        """Write the planned config, if the store's still is missing or does not
        authenticate (checked again: call under the exclusive lock)."""
        if plan.config is None:
            return RepairConfigResult(plan, False)
        if repo is not None:
            repo.check_lock()
        problem = self.store_problem()
        if problem is None:
            return RepairConfigResult(plan, False)  # someone put one back meanwhile
        raw = plan.raw
        if raw is None:
            raw = self._reader(plan.config).seal_object(T_CONFIG, b"config", plan.config.encode())
        if problem == "config: missing":
            try:
                self.store.put_if_absent("config", raw)
            except ObjectExists:
                if self.store_problem() is None:
                    return RepairConfigResult(plan, False)
                self.store.put("config", raw)
        else:
            self.store.put("config", raw)
        u = self._unlock()
        u.open_cache.put("config", raw)
        return RepairConfigResult(plan, True)

    def run(self, opts: RepairConfigOptions = RepairConfigOptions(), dry_run: bool = False) -> RepairConfigResult:
        """Plan and (unless ``dry_run``) write, without a lock (tests; the CLI locks)."""
        plan = self.plan(opts)
        if dry_run:
            return RepairConfigResult(plan, False)
        return self.execute(plan)

    def close(self) -> None:
        if self._repo is not None:
            self._repo.close()
            self._repo = None
