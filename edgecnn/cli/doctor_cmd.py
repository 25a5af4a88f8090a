"""`edgecnn doctor`: runtimes, accelerators, cameras and Pi health, each with what to install when missing."""
from __future__ import annotations

import json

import click

from edgecnn.cli.app import app, console


@app.command("doctor")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON instead of a table.")
def doctor(as_json: bool) -> None:
    """Show what this machine can run: LiteRT/XNNPACK, Edge TPU, ONNX Runtime providers, cameras, Pi state."""
    from edgecnn.devices.doctor import render, run_checks, to_json

    checks = run_checks()
    if as_json:
        click.echo(json.dumps(to_json(checks), indent=2))
    else:
        console.print(render(checks))
