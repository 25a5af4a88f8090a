"""`edgecnn deploy ARTIFACT... --host HOST` (copy to a board over SSH, print the remote paths) and the hidden
`edgecnn remote-info` a workstation calls on a board before it deploys or benches there."""
from __future__ import annotations

import json
from pathlib import Path

import click

from edgecnn.cli.app import app


@app.command("deploy")
@click.argument("models", nargs=-1, required=True)
@click.option("--host", required=True, metavar="HOST", help="ssh config alias, user@host or ssh://user@host:port.")
@click.option("--ssh-config", type=click.Path(path_type=Path), help="ssh config file (ssh -F).")
@click.option("--remote-edgecnn", metavar="PATH",
              help="The board's edgecnn (default: edgecnn on its PATH, then python3 -m edgecnn).")
@click.option("--connect-timeout", type=int, default=10, show_default=True, help="ssh connect timeout, seconds.")
def deploy_command(models, host, ssh_config, remote_edgecnn, connect_timeout) -> None:
    """Copy artifacts to a board over SSH and print their remote paths. MODEL: artifact files or convert output
    folders; each goes with its manifest to HOST's ~/.cache/edgecnn/artifacts/<sha256>/, skipped when there."""
    from edgecnn.bench.fleet import deploy  # noqa: PLC0415
    from edgecnn.bench.remote import parse_host  # noqa: PLC0415

    for path in deploy(list(models), parse_host(host, ssh_config, connect_timeout), remote_edgecnn):
        click.echo(path)


@app.command("remote-info", hidden=True)
@click.argument("checks", nargs=-1)
def remote_info_command(checks) -> None:
    """JSON on one line: this edgecnn's version and schemas, its artifact folder, which CHECKS
    (<folder>/<name>=<sha256>) it holds."""
    from edgecnn.bench.remote import board_info  # noqa: PLC0415

    click.echo(json.dumps(board_info(checks)))
