"""Ctrl-C that is never lost.

Native libraries call back into Python (calibration data readers, progress callbacks); a KeyboardInterrupt
raised inside such a callback can be swallowed by the library ("Exception ignored in ..."), and the work
runs on to the end as if nothing happened. ``InterruptGuard`` remembers the signal, so long work checks it
between its steps and stops there.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class InterruptGuard:
    def __init__(self) -> None:
        self.interrupted = False

    def _handle(self, signum, frame) -> None:  # noqa: ANN001 - the signal module's signature
        self.interrupted = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C came at any time since the guard was installed."""
        if self.interrupted:
            raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_guard() -> Iterator[InterruptGuard]:
    guard = InterruptGuard()
    if threading.current_thread() is not threading.main_thread():
        yield guard  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGINT, guard._handle)
    try:
        yield guard
    finally:
        signal.signal(signal.SIGINT, previous)
