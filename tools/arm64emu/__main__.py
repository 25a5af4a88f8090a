"""`bash dev.sh arm64 [check|outputs|shell|clean] ...`: the device side on emulated arm64, compared with x86.

    bash dev.sh arm64                           # the whole check; writes benchmarks/results/arm64.md + .json
    bash dev.sh arm64 --cpu cortex-a76          # as a Raspberry Pi 5 (default cortex-a72: a Pi 4)
    bash dev.sh arm64 --models mnist_cnn,dave2 --run-formats tflite-int8,onnx-int8 --results /tmp/r
    bash dev.sh arm64 outputs A_int8.onnx B.tflite --inputs pixels.npz --out arm64.npz [--x86-out x86.npz]
    bash dev.sh arm64 shell -- edgecnn doctor   # any command in the root (its venv's bin first on PATH)
    bash dev.sh arm64 fidelity DIR              # benchmarks/onnx_int8.py --fidelity-only on DIR, in the root
    bash dev.sh arm64 clean                     # delete the cached root and conversions (~/.cache/edgecnn/arm64-*)

Exit status: 0 arm64 agrees with x86, 1 it does not (or the device side failed there), 2 bad usage,
77 skipped: this machine cannot host the check (no root, binfmt_misc, mirror or package index), reason printed.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shlex
import shutil
import signal
import sys
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from rich.console import Console

from tools.arm64emu.host import CPU_PARTS, InfraSkip

PROJECT = Path(__file__).resolve().parents[2]
SKIP = 77
COMMANDS = ("check", "outputs", "shell", "fidelity", "clean")
# The terminal, kept apart from file descriptors 1 and 2, which go to the log while the check runs.
console = Console(file=os.fdopen(os.dup(2), "w", buffering=1, encoding="utf-8", closefd=True), stderr=True)


class FileLog:
    """Everything the tools print goes to one log file; the terminal shows progress only."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        self.path = path
        self.handle = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in main

    def __call__(self, text: str) -> None:
        self.handle.write(f"[{dt.datetime.now():%H:%M:%S}] {text}\n")
        self.handle.flush()


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="bash dev.sh arm64", description=__doc__.splitlines()[0],
                                  formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    sub = top.add_subparsers(dest="command")
    check = sub.add_parser("check", help="the whole arm64 vs x86 check (default)")
    check.add_argument("--models", default="mnist_cnn,mnist_mlp,cifar10_vgg,cifar10_cnn,dave2,mobilenet_v2")
    check.add_argument("--frames", type=int, default=60, help="digits in the video and the inputs")
    check.add_argument("--run-formats", default="", help="formats `edgecnn run` is compared on (default: all)")
    check.add_argument("--bench-formats", default="", help="formats `edgecnn bench` times (default: all)")
    check.add_argument("--bench-runs", type=int, default=30)
    check.add_argument("--work", type=Path, default=None, help="keep the shared folder (inputs, every output) here")
    check.add_argument("--results", type=Path, default=PROJECT / "benchmarks" / "results")
    outputs = sub.add_parser("outputs", help="raw outputs of artifacts on given inputs, emulated (and on x86)")
    outputs.add_argument("artifacts", nargs="+", help="ARTIFACT or ARTIFACT=KEY (the array of --inputs it takes)")
    outputs.add_argument("--inputs", type=Path, required=True, help=".npz of uint8 (N, H, W, C) prepared pixels")
    outputs.add_argument("--out", type=Path, required=True, help="arm64 outputs (.npz)")
    outputs.add_argument("--x86-out", type=Path, default=None, help="also keep x86's outputs here")
    shell = sub.add_parser("shell", help="run a command in the emulated root")
    shell.add_argument("argv", nargs="+")
    fidelity = sub.add_parser("fidelity", help="ONNX outputs of benchmarks/onnx_int8.py's kept artifacts, vs x86")
    fidelity.add_argument("dir", type=Path, help="the --dir of an x86 run of benchmarks/onnx_int8.py")
    fidelity.add_argument("--results", type=Path, default=PROJECT / "benchmarks" / "results")
    sub.add_parser("clean", help="delete the cached root")
    for command in (check, outputs, shell, fidelity):
        command.add_argument("--cpu", default="cortex-a72", choices=sorted(CPU_PARTS))
        command.add_argument("--mirror", default=None, help="Debian mirror (default: the one apt uses here)")
    return top


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS + ("-h", "--help"):
        argv.insert(0, "check")
    args = parser().parse_args(argv)
    # SIGTERM (CI's timeout, kill) unwinds like Ctrl-C: temporary folders are removed, the lock released.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from edgecnn.converters.zoo import cache_dir

    log = FileLog(cache_dir() / "arm64-logs" / f"{dt.datetime.now():%Y%m%d-%H%M%S}-{args.command}-{os.getpid()}.log")
    console.print(f"arm64: full log in {log.path}", highlight=False)
    try:
        with output_to(log.path) if args.command != "shell" else nullcontext():
            return dispatch(args, argv, log)
    except InfraSkip as skip:
        console.print(f"[bold yellow]SKIP[/]: the arm64 check cannot run on this machine: {skip.reason}",
                      highlight=False)
        log(f"SKIP: {skip.reason}")
        return SKIP
    finally:
        log.handle.close()


@contextmanager
def output_to(path: Path) -> Iterator[None]:
    """Third-party noise (TensorFlow's C++ logging, progress bars of child tools) into the log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    target = os.open(path, os.O_WRONLY | os.O_APPEND)
    os.dup2(target, 1)
    os.dup2(target, 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, target):
            os.close(fd)


def dispatch(args: argparse.Namespace, argv: list[str], log: FileLog) -> int:
    from tools.arm64emu.session import CheckFailed

    try:
        if args.command == "clean":
            return clean(log)
        if args.command == "shell":
            return shell(args, log)
        if args.command == "outputs":
            from tools.arm64emu.outputs import outputs_command

            return outputs_command(PROJECT, args, log, console)
        if args.command == "fidelity":
            from tools.arm64emu.fidelity import fidelity_command

            return fidelity_command(PROJECT, args, log, console, source_revision())
        return check(args, argv, log)
    except CheckFailed as failure:
        console.print(f"[bold red]FAIL[/]: {failure}", highlight=False)
        log(f"FAIL: {failure}")
        return 1


def check(args: argparse.Namespace, argv: list[str], log: FileLog) -> int:
    from tools.arm64emu import report
    from tools.arm64emu.check import CheckOptions
    from tools.arm64emu.check import check as run_check

    names = names_in(args.models) or ()
    options = CheckOptions(cpu=args.cpu, models=names, frames=args.frames, run_formats=names_in(args.run_formats),
                           bench_formats=names_in(args.bench_formats), bench_runs=args.bench_runs,
                           mirror=args.mirror, work=args.work)
    load_before = os.getloadavg()[0]
    started = dt.datetime.now()
    with console.status("arm64") as status:
        result = run_check(PROJECT, options, log, lambda text: (status.update(text), log(text)))
    result.update({"command": "bash dev.sh arm64 " + " ".join(shlex.quote(a) for a in argv[1:]),
                   "source": source_revision(),
                   "date": f"{started:%Y-%m-%d %H:%M}", "host": report.host_line(),
                   "load": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                   "wall_s": round((dt.datetime.now() - started).total_seconds(), 1)})
    md, _ = report.write(result, args.results)
    console.print(report.terminal_table(result))
    for problem in result["problems"]:
        console.print(f"  [red]{problem}[/]", highlight=False)
    verdict = "[bold green]PASS[/]" if not result["problems"] else "[bold red]FAIL[/]"
    console.print(f"{verdict}: arm64 ({args.cpu}) against x86; {md} ({result['wall_s']:.0f} s)", highlight=False)
    return 0 if not result["problems"] else 1


def source_revision() -> str:
    """The checkout's commit, marked when files differ from it: which code the figures describe."""
    import subprocess

    head = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(PROJECT), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True)
    if head.returncode != 0:
        return "unknown (not a git checkout)"
    return head.stdout.strip() + (" with uncommitted changes" if dirty.stdout.strip() else "")


def names_in(text: str) -> tuple[str, ...] | None:
    """A comma-separated list; None when empty (meaning: all)."""
    return tuple(n.strip() for n in text.split(",") if n.strip()) or None


def shell(args: argparse.Namespace, log: FileLog) -> int:
    import subprocess

    from tools.arm64emu.session import emulated_root
    from tools.arm64emu.stages import Stages

    with emulated_root(PROJECT, args.cpu, log, Stages(log), args.mirror) as (root, _):
        done = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", sys.executable, "-I",
                               str(Path(__file__).with_name("enter.py")), str(root.path), str(Path.cwd()), "--",
                               *args.argv], env=root.env(), check=False)
    return done.returncode


def clean(log: FileLog) -> int:
    from edgecnn.converters.zoo import cache_dir
    from tools.arm64emu.host import require_root
    from tools.arm64emu.rootfs import locked, remove_root

    require_root()
    cache = cache_dir()
    with locked(cache, log):
        for name in ("arm64-root", "arm64-root.building"):
            remove_root(cache / name, log)
        shutil.rmtree(cache / "arm64-seeds" / "converted", ignore_errors=True)  # plain files: no mounts there
    console.print(f"deleted the arm64 root and the converted seed models under {cache}", highlight=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
