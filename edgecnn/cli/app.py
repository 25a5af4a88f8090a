"""The click group and the consoles the commands print to.

A command's module is imported only when that command runs, and rich only when something is printed with it:
`edgecnn run` on a device starts without convert's, bench's or rich's imports (about a third of its start).
"""
from __future__ import annotations

import importlib
from typing import Any, Optional

import click

# name -> the module whose @app.command registers it
COMMAND_MODULES = {"convert": "edgecnn.cli.convert_cmd", "run": "edgecnn.cli.run_cmd",
                   "bench": "edgecnn.cli.bench_cmd", "report": "edgecnn.cli.bench_cmd",
                   "inspect": "edgecnn.cli.inspect_cmd", "doctor": "edgecnn.cli.doctor_cmd",
                   "deploy": "edgecnn.cli.fleet_cmd", "remote-info": "edgecnn.cli.fleet_cmd"}


class _LazyConsole:
    """A rich Console, made at its first use. It writes to the terminal also while a command sends
    TensorFlow's output (descriptors 1 and 2) to its log file."""

    def __init__(self, stderr: bool = False) -> None:
        self._stderr = stderr
        self._console: Optional[Any] = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console  # noqa: PLC0415

            from edgecnn.native_log import TerminalStream  # noqa: PLC0415

            self._console = Console(file=TerminalStream(stderr=self._stderr), stderr=self._stderr)
        return getattr(self._console, name)


console: Any = _LazyConsole()
console_err: Any = _LazyConsole(stderr=True)


class LazyGroup(click.Group):
    """A click group that imports a command's module when the command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, name: str) -> Optional[click.Command]:
        if name not in self.commands and name in COMMAND_MODULES:
            importlib.import_module(COMMAND_MODULES[name])
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="edgecnn", prog_name="edgecnn")
def app() -> None:
    """Take a trained Keras CNN to the edge: verified int8 TFLite/ONNX, device runners, honest benchmarks."""
