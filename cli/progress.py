"""Rich progress bars on stderr implementing the engine's reporter protocols.

Shown only when stderr is a terminal and neither -q nor --json is given; otherwise the
reporters only collect warnings for the final summary.
"""

from __future__ import annotations

import threading

from backupkit_cli.console import Console


class _Bar:
    def __init__(self, console: Console, label: str) -> None:
        self.console = console
        self.progress = None
        self.task = None
        self._lock = threading.Lock()
        if console.interactive:
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self.progress = Progress(
                TextColumn(f"[bold]{label}"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TextColumn("{task.fields[files]} files"),
                TimeRemainingColumn(),
                console=console.err,
                transient=True,
            )
            self.task = self.progress.add_task(label, total=None, files=0)

    def __enter__(self):
        if self.progress is not None:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.progress is not None:
            self.progress.stop()

    def advance(self, n: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, advance=n)

    def file(self) -> None:
        if self.progress is not None:
            with self._lock:
                t = self.progress.tasks[0]
                self.progress.update(self.task, files=t.fields["files"] + 1)

    def total(self, size: int) -> None:
        if self.progress is not None:
            self.progress.update(self.task, total=size)


class BackupProgress(_Bar):
    def __init__(self, console: Console) -> None:
        super().__init__(console, "backup")
        self.warnings: list[tuple[str, str]] = []

    def scan_total(self, files: int, size: int, done: bool) -> None:
        self.total(size)

    def file_done(self, path: str, size: int, status: str) -> None:
        self.file()
        if self.console.verbose and not self.console.json_mode:
            self.console.line(f"{status:9} {path}")

    def bytes_done(self, n: int) -> None:
        self.advance(n)

    def error(self, path: str, message: str) -> None:
        self.warnings.append((path, message))
        self.console.warn(f"{path}: {message}")


class RestoreProgress(_Bar):
    def __init__(self, console: Console) -> None:
        super().__init__(console, "restore")

    def start(self, files: int, size: int) -> None:
        self.total(size)

    def file_done(self, path: str, size: int) -> None:
        self.file()

    def bytes_done(self, n: int) -> None:
        self.advance(n)

    def error(self, path: str, message: str) -> None:
        self.console.warn(f"{path}: {message}" if path else message)
