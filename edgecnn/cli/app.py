"""The click group and the consoles the commands print to."""
from __future__ import annotations

import click
from rich.console import Console

from edgecnn.native_log import TerminalStream

# On the terminal also while a command sends TensorFlow's output (descriptors 1 and 2) to its log file.
console = Console(file=TerminalStream())
console_err = Console(file=TerminalStream(stderr=True), stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="edgecnn", prog_name="edgecnn")
def app() -> None:
    """Take a trained Keras CNN to the edge: verified int8 TFLite/ONNX, device runners, honest benchmarks."""
