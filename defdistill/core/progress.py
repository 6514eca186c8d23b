"""Progress reporting that the library calls and the command line renders.

The library never prints: it asks a reporter for a task and advances it. `SILENT` does
nothing (tests, notebooks, --quiet); `RichProgress` draws rich progress bars.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Protocol


class ProgressReporter(Protocol):
    """Anything that can show a task of `total` steps advancing."""

    def task(self, description: str, total: int) -> contextlib.AbstractContextManager[Callable[[int], None]]:
        """Context manager yielding `advance(steps)`."""
        ...


class SilentProgress:
    """A reporter that shows nothing."""

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        def advance(steps: int = 1) -> None:
            pass

        yield advance


SILENT = SilentProgress()


class RichProgress:
    """rich progress bars on stderr, one per task, removed once the task ends."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            transient=True,
        ) as bar:
            task_id = bar.add_task(description, total=total)

            def advance(steps: int = 1) -> None:
                bar.advance(task_id, steps)

            yield advance
