"""Rich progress for long steps (calibration, verification), shown on stderr; silent when disabled."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator


class ProgressReporter:
    """One rich Progress for a whole convert run; each step adds a task that completes when it ends."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._progress = None

    def __enter__(self) -> "ProgressReporter":
        if self.enabled:
            from rich.console import Console  # noqa: PLC0415
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

            from edgecnn.native_log import TerminalStream  # noqa: PLC0415 - stderr may lead to the log now

            self._progress = Progress(TextColumn("{task.description:<24}"), BarColumn(), MofNCompleteColumn(),
                                      TimeElapsedColumn(), console=Console(file=TerminalStream(stderr=True)),
                                      transient=False)
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """Yield ``advance(n)``; the task is marked complete when the block ends without error."""
        from edgecnn.interrupts import check_pending  # noqa: PLC0415

        if self._progress is None:
            yield lambda n: check_pending()
            return
        task_id = self._progress.add_task(description, total=total)

        def advance(n: int) -> None:
            check_pending()  # a Ctrl-C swallowed by a native library stops the work at the next sample
            self._progress.advance(task_id, n)

        yield advance
        self._progress.update(task_id, completed=total)

    @contextlib.contextmanager
    def status(self, description: str) -> Iterator[None]:
        """A one-step task for work without a count (a float conversion)."""
        with self.task(description, 1):
            yield

    @staticmethod
    def as_fraction(advance: Callable[[int], None]) -> Callable[[int, int], None]:
        """Adapt ``advance(n)`` to callbacks that report ``(done, total)``."""
        seen = [0]

        def report(done: int, total: int) -> None:
            if done > seen[0]:
                advance(done - seen[0])
                seen[0] = done

        return report
