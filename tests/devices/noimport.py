"""Run Python with some top-level packages made unimportable (a meta-path blocker), for tests.

    python noimport.py tensorflow,tflite_runtime -c "code"
    python noimport.py tensorflow -m edgecnn.cli ARGS...     (edgecnn.cli: calls edgecnn.cli.main)

At exit it prints ``NOIMPORT-OK`` to stderr when none of the blocked packages is in sys.modules, and
``NOIMPORT-LEAK name,...`` when one got in anyway.
"""
from __future__ import annotations

import atexit
import importlib.abc
import runpy
import sys


class Blocker(importlib.abc.MetaPathFinder):
    def __init__(self, names: set[str]) -> None:
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".")[0] in self.names:
            raise ImportError(f"No module named '{fullname}' (blocked for this test)")
        return None


def report(names: set[str]) -> None:
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in names)
    sys.stderr.write(("NOIMPORT-LEAK " + ",".join(leaked) if leaked else "NOIMPORT-OK") + "\n")


def main() -> None:
    names = {n for n in sys.argv[1].split(",") if n}
    sys.meta_path.insert(0, Blocker(names))
    atexit.register(report, names)
    mode, rest = sys.argv[2], sys.argv[3:]
    if mode == "-c":
        sys.argv = ["-c"] + rest[1:]
        exec(compile(rest[0], "<noimport>", "exec"), {"__name__": "__main__"})
    elif mode == "-m" and rest[0] == "edgecnn.cli":
        from edgecnn.cli import main as cli_main

        sys.exit(cli_main(rest[1:]))
    else:
        sys.argv = rest
        runpy.run_module(rest[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
