"""Ctrl-C that is never lost, and never reported as anything else.

Native libraries call back into Python (calibration data readers, progress callbacks, tf.functions); a
KeyboardInterrupt raised inside such a callback can be swallowed by the library ("Exception ignored in
..."), so the work runs on as if nothing happened, or come back out as another exception (a SystemError
"... returned a result with an exception set", a converter error wrapping it). ``InterruptGuard`` remembers
the signal: long work checks it between its steps, and any exception that leaves the guarded block while
an interrupt is pending is raised as the KeyboardInterrupt it really is.
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator, Optional

_GUARDS: list["InterruptGuard"] = []


class InterruptGuard:
    def __init__(self) -> None:
        self.interrupted = False

    def _handle(self, signum, frame) -> None:  # noqa: ANN001 - the signal module's signature
        for guard in _GUARDS:  # an outer guard must know too: the inner one may be gone when it checks
            guard.interrupted = True
        self.interrupted = True
        raise KeyboardInterrupt

    def check(self) -> None:
        """Raise KeyboardInterrupt if Ctrl-C came at any time since the guard was installed."""
        if self.interrupted:
            raise KeyboardInterrupt


@contextlib.contextmanager
def interrupt_guard() -> Iterator[InterruptGuard]:
    """Install the guard's SIGINT handler for the block (main thread only); an exception leaving the block
    after a Ctrl-C is replaced by KeyboardInterrupt."""
    guard = InterruptGuard()
    if threading.current_thread() is not threading.main_thread():
        yield guard  # signal handlers can only be set from the main thread
        return
    previous = signal.signal(signal.SIGINT, guard._handle)
    _GUARDS.append(guard)
    try:
        yield guard
    except KeyboardInterrupt:
        raise
    except Exception as exc:
        if guard.interrupted or caused_by_interrupt(exc):
            raise KeyboardInterrupt from exc
        raise
    finally:
        _GUARDS.remove(guard)
        signal.signal(signal.SIGINT, previous)


def check_pending() -> None:
    """Raise KeyboardInterrupt if any active guard has seen a Ctrl-C: long loops and progress callbacks call
    it, so a Ctrl-C that a library swallowed still stops the work within one sample, not one step."""
    if any(guard.interrupted for guard in _GUARDS):
        raise KeyboardInterrupt


def caused_by_interrupt(exc: Optional[BaseException]) -> bool:
    """True when ``exc`` is, or was raised while handling or because of, a KeyboardInterrupt."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
