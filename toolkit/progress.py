"""Progress reporting owned by the caller: library loops report, the CLI decides how (or whether) to show it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Protocol


class Task(Protocol):
    def advance(self, n: int = 1, **fields: object) -> None: ...


class Reporter(Protocol):
    def task(self, description: str, total: int | None, unit: str = "it") -> contextlib.AbstractContextManager[Task]:
        ...


class _NullTask:
    def advance(self, n: int = 1, **fields: object) -> None:
        pass


class NullReporter:
    """Reports nothing: used by `--quiet`, tests and library callers that pass no reporter."""

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, unit: str = "it") -> Iterator[Task]:
        yield _NullTask()


class RichReporter:
    """Progress bars with ETA and throughput (images/s for training) on stderr."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)

    @contextlib.contextmanager
    def task(self, description: str, total: int | None, unit: str = "it") -> Iterator[Task]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        columns = [
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TaskProgressColumn(),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
        ]
        with Progress(*columns, console=self.console, transient=False) as progress:
            tid = progress.add_task(description, total=total, info="")
            yield _RichTask(progress, tid, unit)


class _RichTask:
    def __init__(self, progress, tid, unit: str) -> None:
        self.progress = progress
        self.tid = tid
        self.unit = unit

    def advance(self, n: int = 1, **fields: object) -> None:
        info = " ".join(f"{k}={_fmt(v)}" for k, v in fields.items())
        self.progress.update(self.tid, advance=n, info=info)


def _fmt(v: object) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


NULL = NullReporter()
