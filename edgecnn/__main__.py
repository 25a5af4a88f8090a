"""``python -m edgecnn``: the `edgecnn` command, for a board where the console script is not on PATH."""
from edgecnn.cli import run

if __name__ == "__main__":
    run()
