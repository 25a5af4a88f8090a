"""Third-party log noise to a file: TensorFlow, absl, the MLIR converter and tf2onnx write to the process's
file descriptors 1 and 2 from C++ (and from Python through ``logging`` and ``warnings``), so
``contextlib.redirect_stdout`` cannot catch them. ``native_log`` points descriptors 1 and 2 at a log file for
its duration, routes Python ``warnings`` and the third-party loggers there too, and keeps edgecnn's own
output (rich consoles built on :class:`TerminalStream`) on the real terminal.

This module must not import TensorFlow: it is entered before TensorFlow is imported, so that the import's
own lines ("oneDNN custom operations are on", "failed call to cuInit") land in the log.
"""
from __future__ import annotations

import contextlib
import ctypes
import io
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import IO, Iterator, Optional

# Loggers whose records go to the log while it is active (their own handlers write to stderr).
THIRD_PARTY_LOGGERS = ("absl", "tensorflow", "tf2onnx", "keras", "h5py", "onnx", "onnxruntime", "jax")


class NativeLog:
    """An active redirection: ``path`` is where the log is now (``move_to`` may change it)."""

    def __init__(self, path: Path, fd: int, terminal_out: IO[str], terminal_err: IO[str]) -> None:
        self.path = path
        self._fd = fd
        self.terminal_out = terminal_out
        self.terminal_err = terminal_err
        self.moved = False

    def move_to(self, target: Path) -> Path:
        """Continue the log at ``target`` (its text so far copied there); the old file is removed."""
        target = Path(target)
        _flush_all()
        new_fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        with open(self.path, "rb") as old:
            os.write(new_fd, old.read())
        for fd in (1, 2):
            os.dup2(new_fd, fd)
        os.close(self._fd)
        self._fd = new_fd
        _unlink(self.path)
        self.path = target
        self.moved = True
        return target

    def size(self) -> int:
        """Bytes written so far: a mark for ``text(since=...)``."""
        _flush_all()
        try:
            return os.path.getsize(self.path)
        except OSError:
            return 0

    def text(self, since: int = 0, limit: int = 200_000) -> str:
        """What was written after byte ``since`` (at most the last ``limit`` bytes of it)."""
        _flush_all()
        try:
            with open(self.path, "rb") as handle:
                handle.seek(max(since, self.size() - limit))
                return handle.read().decode("utf-8", errors="replace")
        except OSError:
            return ""


_ACTIVE: list[NativeLog] = []


def active() -> Optional[NativeLog]:
    """The innermost active log, or None."""
    return _ACTIVE[-1] if _ACTIVE else None


def terminal(stderr: bool = False) -> IO[str]:
    """Where edgecnn's own output goes: the real terminal, also while a ``native_log`` is active."""
    log = active()
    if log is None:
        return sys.stderr if stderr else sys.stdout
    return log.terminal_err if stderr else log.terminal_out


class TerminalStream(io.TextIOBase):
    """A file for ``rich.console.Console(file=...)`` that always reaches the terminal (see ``terminal``)."""

    def __init__(self, stderr: bool = False) -> None:
        super().__init__()
        self._stderr = stderr

    def _target(self) -> IO[str]:
        return terminal(self._stderr)

    def write(self, text: str) -> int:
        return self._target().write(text)

    def flush(self) -> None:
        self._target().flush()

    def isatty(self) -> bool:
        return bool(getattr(self._target(), "isatty", lambda: False)())

    def fileno(self) -> int:
        return self._target().fileno()

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return getattr(self._target(), "encoding", None) or "utf-8"


@contextlib.contextmanager
def native_log(path: Optional[Path] = None, prefix: str = "edgecnn") -> Iterator[NativeLog]:
    """Send descriptors 1 and 2, Python warnings and third-party loggers to ``path`` (default: a new file
    in the temporary folder, named ``<prefix>-*.log``) until the block ends.

    Yields a :class:`NativeLog`. Nested use is allowed (the inner one wins until it ends).
    """
    if path is None:
        fd, name = tempfile.mkstemp(prefix=f"{prefix}-", suffix=".log")
        os.close(fd)
        path = Path(name)
    path = Path(path)
    _flush_all()
    log_fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    terminal_out, terminal_err = _terminal_stream(sys.stdout, saved[1]), _terminal_stream(sys.stderr, saved[2])
    log = NativeLog(path, log_fd, terminal_out, terminal_err)
    for fd in (1, 2):
        os.dup2(log_fd, fd)
    _ACTIVE.append(log)
    try:
        with _python_logs_to(log):
            yield log
    finally:
        _ACTIVE.remove(log)
        _flush_all()
        for fd, copy in saved.items():
            os.dup2(copy, fd)
        for stream in (terminal_out, terminal_err):
            with contextlib.suppress(Exception):
                stream.flush()
        for copy in saved.values():
            os.close(copy)
        os.close(log._fd)  # noqa: SLF001


def discard(log: NativeLog) -> None:
    """Remove the log file (an interrupted run leaves nothing behind)."""
    _unlink(log.path)


@contextlib.contextmanager
def command_log(command: str) -> Iterator[NativeLog]:
    """``native_log`` for one command, started in the temporary folder (the command moves it beside its
    outputs with ``move_to``). When the command fails with a ConversionError or an unexpected exception, the
    log is kept and named in the error's hint (or note); other errors (bad options, data or model files,
    refused before any conversion) and Ctrl-C remove a log that was not moved, so nothing is left behind."""
    from edgecnn.interrupts import caused_by_interrupt  # noqa: PLC0415

    with native_log(prefix=f"edgecnn-{command}") as log:
        try:
            yield log
        except KeyboardInterrupt:
            if not log.moved:
                discard(log)
            raise
        except Exception as exc:
            if caused_by_interrupt(exc):  # a Ctrl-C that came back out of native code as another error
                if not log.moved:
                    discard(log)
                raise KeyboardInterrupt from exc
            _keep_or_discard(exc, log, command)
            raise


def _keep_or_discard(exc: Exception, log: NativeLog, command: str) -> None:
    from edgecnn.errors import ConversionError, EdgecnnError  # noqa: PLC0415

    if not isinstance(exc, EdgecnnError):
        exc.add_note(f"{command} log: {log.path}")
    elif isinstance(exc, ConversionError) or log.moved:
        _name_log(exc, log, command)
    else:
        discard(log)


def _name_log(exc: Exception, log: NativeLog, command: str) -> None:
    if not log.path.exists():
        return
    if log.size() == 0:  # refused before any library wrote a line: nothing to point at
        discard(log)
        return
    extra = f"{command} log: {log.path}"
    exc.hint = f"{exc.hint}; {extra}" if exc.hint else extra  # type: ignore[attr-defined]
    exc.args = (exc.one_line(),)  # type: ignore[attr-defined]


def _terminal_stream(stream: IO[str], saved_fd: int) -> IO[str]:
    """A text stream on the saved copy of the terminal's descriptor when ``stream`` writes to descriptor
    1 or 2 (which now lead to the log); else ``stream`` itself (a pytest capture, a StringIO)."""
    try:
        attached = stream.fileno() in (1, 2)
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        attached = False
    if not attached:
        return stream
    return open(saved_fd, "w", encoding=getattr(stream, "encoding", None) or "utf-8", errors="replace",  # noqa: SIM115
                closefd=False, buffering=1)


@contextlib.contextmanager
def _python_logs_to(log: NativeLog) -> Iterator[None]:
    """Python warnings and the third-party loggers write to the log file (whatever sys.stderr is)."""
    handler = _LogFileHandler(log)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    saved = []
    for name in THIRD_PARTY_LOGGERS:
        logger = logging.getLogger(name)
        saved.append((logger, list(logger.handlers), logger.propagate))
        logger.handlers = [handler]
        logger.propagate = False
    previous_show = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):  # noqa: ANN001 - warnings' signature
        handler.write_text(warnings.formatwarning(message, category, filename, lineno, line))

    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = previous_show
        for logger, handlers, propagate in saved:
            logger.handlers = handlers
            logger.propagate = propagate


class _LogFileHandler(logging.Handler):
    """Writes records to the log's current file (it may move while the block runs)."""

    def __init__(self, log: NativeLog) -> None:
        super().__init__()
        self._log = log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.write_text(self.format(record) + "\n")
        except Exception:  # noqa: BLE001 - logging must never break the conversion
            self.handleError(record)

    def write_text(self, text: str) -> None:
        os.write(self._log._fd, text.encode("utf-8", errors="replace"))  # noqa: SLF001


def _flush_all() -> None:
    """Flush Python's and C's stdio buffers, so buffered text lands where it was written, not later."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        ctypes.CDLL(None).fflush(None)


def _unlink(path: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)
