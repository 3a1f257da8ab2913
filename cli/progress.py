"""Progress of backup and restore: the engine's reporter protocols, rendered for people or programs.

- A terminal (stderr), without -q or --json: a rich bar in IEC units (KiB, MiB), like
  every size bk prints.
- ``--json``: restic's message stream on stdout, so a GUI can drive bk: a
  ``{"message_type": "status", ...}`` line every second (``BK_PROGRESS_FPS`` sets the
  rate, as ``RESTIC_PROGRESS_FPS`` does restic's; at most 60), then the command prints one
  ``{"message_type": "summary", ...}`` line. Per-file problems are
  ``{"message_type": "error", ...}`` lines on stderr.
- Otherwise nothing but warnings (collected for the summary too).
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time

from backupkit.entry import display_path
from backupkit_cli.console import Console
from backupkit_cli.fmt import display_name, human_bytes


def status_interval() -> float:
    """Seconds between JSON status lines (``BK_PROGRESS_FPS``: updates per second)."""
    try:
        fps = float(os.environ.get("BK_PROGRESS_FPS", ""))
    except ValueError:
        fps = 0.0
    return 1.0 / min(fps, 60.0) if fps > 0 else 1.0


class _Counts:
    """What the reporters count; read by the bar and the JSON status lines."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.total_files = 0
        self.total_bytes = 0
        self.files_done = 0
        self.bytes_done = 0
        self.errors = 0
        self.started = time.monotonic()


class _Bar:
    def __init__(self, console: Console, label: str, during: str, status_keys: tuple[str, str]) -> None:
        self.console = console
        self.counts = _Counts()
        self.progress = None
        self.task = None
        self._during = during
        self._status_keys = status_keys
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._statuses = 0  # JSON status lines printed
        if console.interactive:
            from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeRemainingColumn
            from rich.text import Text

            class Sizes(ProgressColumn):
                def render(self, task) -> Text:
                    done = human_bytes(task.completed)
                    return Text(f"{done} / {human_bytes(task.total)}" if task.total else done)

            class Speed(ProgressColumn):
                def render(self, task) -> Text:
                    speed = task.finished_speed or task.speed
                    return Text(f"{human_bytes(speed)}/s" if speed else "")

            self.progress = Progress(
                TextColumn(label, style="bold", markup=False),
                BarColumn(),
                Sizes(),
                Speed(),
                TextColumn("{task.fields[files]} files", markup=False),
                TimeRemainingColumn(),
                console=console.err,
                transient=True,
            )
            self.task = self.progress.add_task(label, total=None, files=0)

    @property
    def streams_json(self) -> bool:
        return self.console.json_mode

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        elif self.streams_json:
            self._thread = threading.Thread(target=self._status_loop, name="bk-status", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
            # a run that printed status lines ends with one more, showing where it ended
            # (100% when whole); a run too short for any prints only its summary
            if exc[0] is None and self._statuses:
                self._write_status()

    # -- counting ------------------------------------------------------------------------
    def advance(self, n: int) -> None:
        with self.counts.lock:
            self.counts.bytes_done += n
        if self.progress is not None:
            self.progress.update(self.task, advance=n)

    def file(self, n: int = 1) -> None:
        with self.counts.lock:
            self.counts.files_done += n
            done = self.counts.files_done
        if self.progress is not None:
            self.progress.update(self.task, files=done)

    def total(self, files: int, size: int) -> None:
        with self.counts.lock:
            self.counts.total_files, self.counts.total_bytes = files, size
        if self.progress is not None:
            self.progress.update(self.task, total=size)

    def problem(self, path: str, message: str) -> None:
        """One file could not be read or written: a warning line, or a JSON error line."""
        with self.counts.lock:
            self.counts.errors += 1
        if self.console.json_mode:  # also while an archive streams to stdout
            self.console.error(message, item=path or None, during=self._during)
        else:
            self.console.warn(message, item=path or None)

    # -- JSON status lines ---------------------------------------------------------------
    def status(self) -> dict:
        c = self.counts
        with c.lock:
            elapsed = time.monotonic() - c.started
            files_key, bytes_key = self._status_keys
            doc = {
                "message_type": "status",
                "seconds_elapsed": int(elapsed),
                "percent_done": min(1.0, c.bytes_done / c.total_bytes) if c.total_bytes else 0.0,
                "total_files": c.total_files,
                files_key: c.files_done,
                "total_bytes": c.total_bytes,
                bytes_key: c.bytes_done,
                "error_count": c.errors,
            }
            if c.total_bytes and c.bytes_done:
                doc["seconds_remaining"] = int(elapsed * (c.total_bytes - c.bytes_done) / c.bytes_done)
        return doc

    def _status_loop(self) -> None:
        interval = status_interval()
        while not self._stop.wait(interval):
            if not self._write_status():
                return

    def _write_status(self) -> bool:
        self._statuses += 1
        try:
            sys.stdout.write(json.dumps(self.status()) + "\n")
            sys.stdout.flush()
        except (BrokenPipeError, ValueError):
            return False
        return True


class BackupProgress(_Bar):
    def __init__(self, console: Console) -> None:
        super().__init__(console, "backup", "archival", ("files_done", "bytes_done"))
        self.warnings: list[tuple[str, str]] = []

    def scan_total(self, files: int, size: int, done: bool) -> None:
        self.total(files, size)

    def file_done(self, path: str, size: int, status: str) -> None:
        self.file()
        if self.console.verbose and not self.console.json_mode:
            self.console.line(f"{status:9} {display_name(path)}")

    def unchanged_done(self, files: list[tuple[bytes, int]]) -> None:
        self.file(len(files))
        if self.console.verbose and not self.console.json_mode:
            for path, _size in files:
                self.console.line(f"{'unchanged':9} {display_name(display_path(path))}")

    def bytes_done(self, n: int) -> None:
        self.advance(n)

    def error(self, path: str, message: str) -> None:
        self.warnings.append((path, message))
        self.problem(path, message)


class RestoreProgress(_Bar):
    def __init__(self, console: Console, stdout_free: bool = True, dry_run: bool = False) -> None:
        super().__init__(console, "restore", "restore", ("files_restored", "bytes_restored"))
        self._stdout_free = stdout_free  # False while an archive streams to stdout
        self._dry_run = dry_run

    @property
    def streams_json(self) -> bool:
        return self.console.json_mode and self._stdout_free

    def start(self, files: int, size: int) -> None:
        self.total(files, size)

    def file_done(self, path: str, size: int) -> None:
        self.file()

    def file_skipped(self, path: str, size: int) -> None:
        """Not written (unchanged, or left by --overwrite): done all the same."""
        self.advance(size)
        self.file()

    def bytes_done(self, n: int) -> None:
        self.advance(n)

    def deleted(self, path: str) -> None:
        """--delete removed ``path``: a line with -v, and always in a dry run (as restic's
        verbose_status with --json)."""
        if not (self._dry_run or self.console.verbose):
            return
        verb = "would delete" if self._dry_run else "deleted"
        if self.console.json_mode:
            if self._stdout_free:
                doc = {"message_type": "verbose_status", "action": "deleted", "item": path, "dry_run": self._dry_run}
                with self.counts.lock:
                    sys.stdout.write(json.dumps(doc) + "\n")
                    sys.stdout.flush()
        else:
            self.console.line(f"{verb} {path}")

    def error(self, path: str, message: str) -> None:
        self.problem(path, message)


class PhaseProgress:
    """One rich progress line per phase on stderr (prune's and check's reporter protocols).

    Hidden unless stderr is a terminal and neither -q nor --json is given.
    """

    def __init__(self, console) -> None:
        self.console = console
        self.progress = None
        self.task = None

    #: phases whose units are bytes (the others count objects or nodes)
    BYTE_PHASES = frozenset({"repack", "read data"})

    def __enter__(self):
        if self.console.interactive:
            from rich.progress import BarColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn
            from rich.text import Text

            class Count(ProgressColumn):
                def render(self, task) -> Text:
                    if task.fields.get("bytes"):
                        done = human_bytes(task.completed)
                        return Text(f"{done} / {human_bytes(task.total)}" if task.total else done)
                    return Text(f"{int(task.completed)}" + (f"/{int(task.total)}" if task.total else ""))

            self.progress = Progress(
                TextColumn("[bold]{task.description}"), BarColumn(), Count(), TimeElapsedColumn(),
                console=self.console.err, transient=True,
            )
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def phase(self, name: str, total: int | None) -> None:
        if self.progress is None:
            return
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(name, total=total, bytes=name in self.BYTE_PHASES)

    def advance(self, n: int = 1) -> None:
        if self.progress is not None and self.task is not None:
            self.progress.update(self.task, advance=n)

    def finding(self, finding) -> None:  # check's protocol; findings are printed at the end
        pass
