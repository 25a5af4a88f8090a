"""The `edgecnn` command: thin. Each subcommand parses, calls one library function, prints, and exits
through ``main``'s one error path (one line on stderr, exit code from the error type, no traceback)."""
from __future__ import annotations

import os
import sys

from edgecnn.cli.app import app, console_err  # commands load on first use (edgecnn.cli.app.COMMAND_MODULES)


def main(argv: list[str] | None = None, *, process: bool = False) -> int:
    """Run one command; returns its exit code. ``process``: this process ends when main returns (the console
    command), so what a command set up to last the process (edgecnn run's frozen start-up objects) is left as
    it is; an in-process caller gets it undone."""
    import click

    from edgecnn.errors import EdgecnnError

    try:
        result = app.main(args=argv if argv is not None else sys.argv[1:], prog_name="edgecnn",
                          standalone_mode=False, obj={"process": process})
        code = result if isinstance(result, int) else 0
    except (KeyboardInterrupt, click.exceptions.Abort):
        code = _interrupted()
    except EdgecnnError as exc:
        from edgecnn.interrupts import caused_by_interrupt  # noqa: PLC0415 - signal handling: not on the start path

        if caused_by_interrupt(exc):  # a converter error that wraps a Ctrl-C is the Ctrl-C
            return _interrupted()
        console_err.print(f"[bold red]error:[/] {_escape(exc.one_line())}", highlight=False, soft_wrap=True)
        code = exc.exit_code
    except click.ClickException as exc:
        console_err.print(f"[bold red]error:[/] {_escape(exc.format_message())}", highlight=False, soft_wrap=True)
        code = 2
    except Exception as exc:  # noqa: BLE001 - the last line of defence: one line, not a traceback
        from edgecnn.interrupts import caused_by_interrupt  # noqa: PLC0415

        if caused_by_interrupt(exc):  # Ctrl-C inside a native callback surfaces as SystemError
            return _interrupted()
        if os.environ.get("EDGECNN_DEBUG"):
            raise
        console_err.print(f"[bold red]internal error:[/] {type(exc).__name__}: {_escape(str(exc))} "
                          "(set EDGECNN_DEBUG=1 for the traceback and please report it)", highlight=False, soft_wrap=True)
        code = 70
    return code


def _escape(text: str) -> str:
    """Text printed through rich markup: "pip install 'edgecnn[device]'" must keep its [device]."""
    from rich.markup import escape  # noqa: PLC0415

    return escape(text)


def _interrupted() -> int:
    console_err.print("interrupted")
    return 130


def run() -> None:
    sys.exit(main(process=True))
