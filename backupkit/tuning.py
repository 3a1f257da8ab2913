"""Tuning: every budget of the backup and restore pipelines, in one place.

A budget bounds how much work (or memory) one stage may have outstanding before it
waits for the next stage; together they keep memory flat and every thread busy. They
are fields of :class:`Tuning` so that a benchmark or a test can change one without
patching a module global; the defaults are what the benchmarks were run with
(docs/benchmarks.md). Process-level tuning (malloc, the garbage collector) is a different
thing: ``backupkit_cli.tuning``.

Backup (walk -> read files -> chunk -> hash/compress/seal -> pack -> upload):

    small_file                  files up to this size go to the reader threads in batches
                                (a hand-off per file costs more than the read) ...
    small_files_per_job         ... of this many (or what one directory has)
    small_reads_ahead           a reader thread opens this many files of its batch ahead
                                of the one it reads and asks the kernel for their data
                                (posix_fadvise WILLNEED): the disk's queue depth for tiny
                                files, without more threads (each holds that many
                                descriptors)
    seal_processes              processes that read, hash, compress and seal batches of
                                small files (``objects/sealprocs.py``): each has its own
                                GIL, so tiny files use every core (a thread per file step
                                gives the GIL up and takes it back five times); default:
                                one per core this process may use but one (the walk's):
                                none on one core
    small_files_before_processes
                                small files a backup meets before it starts them (a short
                                backup never pays their start-up, 0.08-0.10 s and ~25 MiB:
                                ``/usr/bin/time python -P -m backupkit.objects.sealworker
                                < /dev/null``)
    sealed_batches_in_flight    batches per sealing process handed over and not yet taken
                                by a reader thread; beyond it the walk waits for the oldest
                                job (the answers hold sealed blobs: a process ahead of the
                                readers would otherwise fill memory)
    files_in_flight             larger files queued on the reader threads before the walk
                                waits for the oldest
    walk_read_ahead             entries a thread lists and lstats ahead of the backup walk
                                and holds for it (``dirscan.read_ahead``: on a cold cache
                                the disk works while the walk compares), at most; 0: none
    walk_read_ahead_age         seconds a listing read ahead stays good: an older one is
                                read again by the walk (bounds how early an lstat is taken)
    walk_read_ahead_threads     threads reading ahead (reads in flight on a cold cache);
                                those past the first two read only while under a
                                quarter of ``walk_read_ahead`` is held (the walk is close
                                behind: a cold cache), so warm they leave the CPU alone
    files_in_flight_after_dir   after each directory the walk waits until at most this
                                many files are still in flight (keeps the queue short
                                without a hand-off per file)
    chunks_in_flight            chunks of one file handed to the sealing pool before the
                                reader waits, until half of them are stored (one wake-up
                                per half window: a wake-up per chunk cost ~2 s of GIL on
                                `/usr`); they are views of the reader's buffers: the
                                buffers bound the memory
    chunk_buffers_per_reader    chunker read buffers (max chunk size + 2 MiB each) a reader
                                thread keeps and reuses; it refills one only once all its
                                chunks are stored, so while the sealers work on one the
                                reader fills another
    packs_in_flight_over_connections
                                full packs being uploaded or waiting for a connection,
                                beyond one per store connection
    parent_node_cache           the parent snapshot's trie nodes kept decoded, counted in
                                entries (a node weighs 1 + its entries or children): the
                                walk asks for each directory's children by a key prefix,
                                and a leaf holds the children of several directories far
                                apart in the walk, so a cache smaller than the tree reads
                                leaves again (`/usr`, 15.6k directories: 9.8k node reads
                                of 4.8k nodes at 1 << 16 with no plaintext cache)
    parent_node_plain           behind that, the plaintext of the parent's nodes already
                                read, in bytes: about half the memory of the same nodes
                                decoded, and a hit is one msgpack decode instead of a blob
                                read. 1 << 13 decoded + 24 MiB plain reads 5.2k nodes for
                                `/usr` (1 << 16 decoded alone: 9.8k) in the same peak
                                memory (docs/performance-limits.md, section 2.3)

    index_checkpoint_packs      the repository writes an index object for the packs uploaded
                                so far after this many packs ...
    index_checkpoint_seconds    ... or when a pack completes this long after the last index
                                object (restic writes full indexes every 5 minutes): what a
                                kill -9 or a power cut can lose from the index is bounded
                                by both (the packs stay, a prune removes them)
    index_checkpoint_blobs      ... or once the packs not yet indexed hold this many blobs:
                                their entries are kept in memory until then (16 MiB packs of
                                tiny files hold ~60k blobs each)

Restore (walk the snapshot -> read ahead content -> write files):

    readahead_per_connection    bytes of file content read ahead of the writer per store
                                connection: enough to keep every connection busy with
                                ~1 MiB blobs, little enough to stay small
    readahead_min_connections   the read-ahead budget counts at least this many connections
    readahead_entries           most entries held between the writer and the read-ahead
                                front (directories and small files cost little)
    join_max_span               a joined range read of blobs of one pack spans at most this
    join_held                   bytes of joined-read blobs held for a later read, at most

Restore to a directory, planned per pack (``objects/packplan.py``): files are created in
order and their blobs gathered by pack; a pack is read once the plan has moved past it,
its wanted span with one request, and each blob written with ``pwrite`` by the read pool:

    restore_pack_idle_files     a pack is read once no new blob of it was wanted in this
    restore_pack_idle_bytes     many files and this many bytes of new blobs planned since:
                                a backup fills packs in the order a restore walks files, so
                                by then a full restore wants all of the pack and reads it
                                with one request. Measured on the mixed sets (256 MiB and
                                1.1 GB): consecutive new blobs of one pack came at most
                                16 files and 32 MiB apart (either alone: 4,096 files, or
                                64 MiB). Larger is safer but reads later, files open longer
    restore_pending_bytes       distinct blob bytes of packs not yet read, at most (the least
                                recently wanted pack is read first); memory is the plan
                                only (~300 bytes per blob)
    restore_pending_refs        blob references of packs not yet read, at most (plan memory)
    restore_open_files          files planned and not yet complete, at most: each holds an
                                open descriptor until its last blob is written (capped by
                                RLIMIT_NOFILE: ``restore_write.file_window``)
    restore_queued_bytes        bytes of pack spans submitted to the read pool and not yet
                                written; the planner waits beyond it
    restore_join_gap            unwanted bytes of a pack read between two wanted blobs to
                                save a request (restic: 1 MiB); in a full restore every
                                blob of a pack is wanted, so gaps are what a partial
                                restore leaves out
    restore_span_max            one range request spans at most this (a pack is 16-18 MiB)
    restore_span_max_local      the same where a request costs nothing (a store whose
                                ``request_bytes`` is 0: a local directory): a pack is read
                                in several spans, by several workers at once
    restore_read_bytes_in_flight
                                bytes of fetched spans held at once (the reads' memory).
                                A store that streams a span's ranges (S3) is charged one
                                group of ``restore_open_bytes`` a span, so the read pool's
                                workers (``--connections``) read that many packs at once;
                                other remote stores hold whole packs of 16-18 MiB, one or
                                two at once (48 MiB was 0-0.9 s faster on S3 before the
                                streaming, and peaked higher)
    restore_open_bytes          plaintext one call of ``Repository.open_blobs`` decodes at
                                once from a span read (then writes, then the next): more
                                blobs per call hand the GIL over less often, more bytes
                                are held decoded
    restore_create_threads      threads creating files ahead of their first write (a
                                create waits on the disk's metadata, 1-3 ms when cold);
                                one: with 8, files created at once in the same directories
                                contended in ext4, and a `/usr` restore's system time swung
                                from 10 to 45 s between runs (docs/performance-limits.md)
    restore_create_batch        files handed to that thread at once: one hand-off per file
                                woke it (and passed the GIL) 20k times for a 20k-file
                                restore; a file whose write comes first creates itself
    read_threads_local          the read pool's threads where a request costs nothing (a
                                local directory), 0 for one per core: its work is CPU
                                (open, decompress, verify, write), and threads beyond the
                                cores only contend for the GIL (a futex wake per hand-off)

check --read-data (``managers/check.py``):

    check_span_max_local        where a request costs nothing (a local directory) a pack
                                is read and verified in ranges of at most this many bytes
                                (``packverify.pack_spans``), one range held per reader
                                instead of the whole pack; elsewhere packs are read whole
                                (one request each, as restic reads them)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

KiB = 1024
MiB = 1024 * KiB


def _cores() -> int:
    """The cores this process may run on (its affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Tuning:
    # backup
    small_file: int = 64 * KiB
    small_files_per_job: int = 64
    small_reads_ahead: int = 64
    seal_processes: int = field(default_factory=lambda: _cores() - 1)
    small_files_before_processes: int = 4096
    sealed_batches_in_flight: int = 8
    files_in_flight: int = 256
    walk_read_ahead: int = 8192
    walk_read_ahead_age: float = 5.0
    walk_read_ahead_threads: int = 4
    files_in_flight_after_dir: int = 64
    chunks_in_flight: int = 4
    chunk_buffers_per_reader: int = 2
    packs_in_flight_over_connections: int = 1
    parent_node_cache: int = 1 << 13
    parent_node_plain: int = 24 * MiB
    index_checkpoint_packs: int = 64
    index_checkpoint_seconds: float = 300.0
    index_checkpoint_blobs: int = 100_000
    # restore in order (archives, dump, mount)
    readahead_per_connection: int = 4 * MiB
    readahead_min_connections: int = 4
    readahead_entries: int = 4096
    join_max_span: int = 16 * MiB
    join_held: int = 64 * MiB
    # restore into a directory, planned per pack
    restore_pack_idle_files: int = 64
    restore_pack_idle_bytes: int = 64 * MiB
    restore_pending_bytes: int = 256 * MiB
    restore_pending_refs: int = 65536
    restore_open_files: int = 16384
    restore_queued_bytes: int = 128 * MiB
    restore_join_gap: int = 128 * KiB
    restore_span_max: int = 32 * MiB
    restore_span_max_local: int = 4 * MiB
    restore_read_bytes_in_flight: int = 32 * MiB
    restore_open_bytes: int = 1 * MiB
    restore_create_threads: int = 1
    restore_create_batch: int = 16
    read_threads_local: int = 0
    # check --read-data
    check_span_max_local: int = 4 * MiB

    def readahead_bytes(self, connections: int) -> int:
        return max(self.readahead_min_connections, connections) * self.readahead_per_connection


DEFAULT_TUNING = Tuning()

__all__ = ["DEFAULT_TUNING", "Tuning"]
