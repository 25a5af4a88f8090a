"""edgecnn.native_log: what native code writes to descriptors 1 and 2, Python warnings and third-party
loggers go to the log file; edgecnn's own consoles still reach the terminal. Each case runs in a child
process so the real descriptors 1 and 2 (not pytest's capture) are observed."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

CHILD_PRELUDE = """
import ctypes, logging, os, sys, warnings
from pathlib import Path
from rich.console import Console
from edgecnn.native_log import TerminalStream, command_log, native_log
libc = ctypes.CDLL(None)
console = Console(file=TerminalStream(stderr=True), force_terminal=False)
"""


def _child(body: str, tmp_path: Path) -> subprocess.CompletedProcess:
    script = CHILD_PRELUDE + textwrap.dedent(body)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=60)


def test_native_and_python_noise_goes_to_the_log_and_edgecnn_output_to_the_terminal(tmp_path):
    done = _child("""
        with native_log(Path("run.log")) as log:
            os.write(1, b"native stdout line\\n")
            os.write(2, b"native stderr line\\n")
            libc.printf(b"buffered C printf line\\n")   # stays in C's stdio buffer until flushed
            print("python print line")
            warnings.warn("a python warning line")
            logging.getLogger("absl").warning("an absl logger line")
            logging.getLogger("tensorflow").error("a tensorflow logger line")
            console.print("edgecnn progress line")
        print("after the block")
        console.print("edgecnn after line")
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    log = (tmp_path / "run.log").read_text()
    for line in ("native stdout line", "native stderr line", "buffered C printf line", "python print line",
                 "a python warning line", "an absl logger line", "a tensorflow logger line"):
        assert line in log, line
        assert line not in done.stdout + done.stderr, line
    assert "edgecnn progress line" in done.stderr and "edgecnn progress line" not in log
    assert "after the block" in done.stdout and "edgecnn after line" in done.stderr


def test_the_log_moves_and_keeps_what_was_written(tmp_path):
    done = _child("""
        Path("out").mkdir()
        with native_log(Path("first.log")) as log:
            os.write(2, b"before the move\\n")
            log.move_to(Path("out/convert.log"))
            os.write(2, b"after the move\\n")
            mark = log.size()
            os.write(1, b"only this\\n")
            assert log.text(since=mark) == "only this\\n", log.text(since=mark)
        print(Path("first.log").exists())
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
    assert (tmp_path / "out" / "convert.log").read_text() == "before the move\nafter the move\nonly this\n"


@pytest.mark.parametrize("raised,kept", [("ConversionError('TFLite fp32 conversion failed', 'leave it out')", True),
                                         ("UsageError('--calib-samples 0 must be positive')", False),
                                         ("KeyboardInterrupt()", False),
                                         ("SystemError('returned a result with an exception set')", True)])
def test_a_failed_command_keeps_its_log_only_when_it_explains_the_failure(tmp_path, raised, kept):
    done = _child(f"""
        import tempfile
        from edgecnn.errors import ConversionError, UsageError
        try:
            with command_log("convert") as log:
                os.write(2, b"converter dump\\n")
                raise {raised}
        except BaseException as exc:
            print(type(exc).__name__, "|", exc, "|", log.path.exists(), "|", log.path)
    """, tmp_path)
    assert done.returncode == 0, done.stderr
    name, message, exists, path = (part.strip() for part in done.stdout.split("|"))
    assert exists == str(kept)
    if kept:
        assert "converter dump" in Path(path).read_text()
        Path(path).unlink()
    if name == "ConversionError":
        assert message.endswith(f"convert log: {path}")


def test_a_keyboard_interrupt_surfacing_as_another_error_removes_the_log(tmp_path):
    done = _child("""
        try:
            with command_log("convert") as log:
                try:
                    raise KeyboardInterrupt
                except KeyboardInterrupt as interrupt:
                    raise SystemError("returned a result with an exception set") from interrupt
        except BaseException as exc:
            print(type(exc).__name__, log.path.exists())
    """, tmp_path)
    assert done.stdout.split() == ["KeyboardInterrupt", "False"], done.stdout + done.stderr


def test_native_log_imports_no_tensorflow():
    done = subprocess.run([sys.executable, "-c", "import sys, edgecnn.native_log, edgecnn.cli.app; "
                           "print('tensorflow' in sys.modules)"], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr
