"""The click group and the consoles the commands print to."""
from __future__ import annotations

import click
from rich.console import Console

console = Console()
console_err = Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(package_name="edgecnn", prog_name="edgecnn")
def app() -> None:
    """Take a trained Keras CNN to the edge: verified int8 TFLite/ONNX, device runners, honest benchmarks."""
