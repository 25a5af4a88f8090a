"""Is bench's raw-inference figure honest? Compare it with a plain perf_counter loop around interpreter.invoke().

    python benchmarks/honesty.py [--runs N] [--rounds R] [--models mnist_cnn,mobilenet_v2] [--force]

For each artifact (tflite-fp32 and tflite-int8 of each model, 1 thread), in one process and interleaved
round by round: (a) a LiteRT Interpreter created directly, its input set once, then N calls of
``interpreter.invoke()`` each timed with ``time.perf_counter()``; (b) ``edgecnn.bench.bench`` on the same
file with N runs. Each figure is the median over rounds of the per-round p50. bench's raw inference is
``Runner.invoke``: set_tensor + invoke + get_tensor, so it may exceed the bare loop by that copy.
Writes honesty.json and honesty.md into benchmarks/results/ (the goal: within 5 %).
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from edgecnn.bench.envinfo import fingerprint  # noqa: E402
from edgecnn.bench.harness import BenchOptions, bench  # noqa: E402
from edgecnn.errors import EdgecnnError  # noqa: E402
from edgecnn.fileio import refuse_overwrite, write_json_atomic, write_text_atomic  # noqa: E402

GOAL = 0.05
RESULTS = Path(__file__).resolve().parent / "results"


def plain_p50(path: Path, runs: int, warmup: int = 20) -> float:
    """p50 in ms of a bare perf_counter loop around interpreter.invoke(), input set once."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    for _ in range(warmup):
        interpreter.invoke()
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        samples.append(time.perf_counter() - start)
    return float(np.median(samples) * 1e3)


def bench_p50(path: Path, runs: int) -> float:
    options = BenchOptions(runs=runs, warmup=20, step=False, progress=False)
    row = bench([path], ["cpu"], [1], options=options).rows[0]
    if row.invoke is None:
        raise EdgecnnError(f"bench failed on {path.name}: {row.reason}")
    return row.invoke.p50


def compare(path: Path, runs: int, rounds: int) -> dict:
    plain, harness = [], []
    for _ in range(rounds):  # interleaved, so drift in machine load hits both alike
        plain.append(plain_p50(path, runs))
        harness.append(bench_p50(path, runs))
    p, h = statistics.median(plain), statistics.median(harness)
    return {"artifact": str(path), "runs": runs, "rounds": rounds, "plain_p50_ms": p, "bench_p50_ms": h,
            "difference": (h - p) / p, "within_goal": abs(h - p) / p <= GOAL,
            "plain_rounds_ms": plain, "bench_rounds_ms": harness}


def markdown(results: list[dict], env: dict, command: str, load: tuple[float, float]) -> str:
    lines = ["# Harness honesty: bench's raw-inference p50 vs a plain perf_counter loop", "",
             f"Command: `{command}`  ", f"Run {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')} on "
             f"{env['cpu_model']}, {env['cpu_cores_usable']} cores, {env.get('os_release')}, Python {env['python']}, "
             f"ai-edge-litert {env['versions'].get('ai-edge-litert')}.  ",
             f"1-minute load average {load[0]:.2f} before, {load[1]:.2f} after"
             + (" (the machine was shared with other work during the run)." if max(load) > 1.0 else "."), "",
             "Same file, same process, 1 thread, XNNPACK on both sides; interleaved rounds; each figure is the median "
             "over rounds of the per-round p50. Goal: |bench - plain| / plain <= 5 %.", "",
             "| artifact | runs x rounds | plain loop p50 ms | bench raw p50 ms | difference | within 5 % |",
             "|---|---|---|---|---|---|"]
    for r in results:
        lines.append(f"| {Path(r['artifact']).name} | {r['runs']} x {r['rounds']} | {r['plain_p50_ms']:.4f} | "
                     f"{r['bench_p50_ms']:.4f} | {r['difference'] * 100:+.1f} % | {'yes' if r['within_goal'] else 'NO'} |")
    return "\n".join(lines) + "\n"


def artifacts(models: list[str]) -> list[Path]:
    from run_suite import converted

    from edgecnn.manifest import Manifest

    paths = []
    for name in models:
        folder = converted(name)
        manifest = Manifest.read(folder / "manifest.json")
        paths += [folder / manifest.artifact(fmt).file for fmt in ("tflite-fp32", "tflite-int8")]
    return paths


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mnist_cnn,mobilenet_v2")
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    outputs = [args.out / "honesty.json", args.out / "honesty.md"]
    try:
        refuse_overwrite(outputs, args.force)
        load_before = os.getloadavg()[0]
        results = [compare(path, args.runs, args.rounds) for path in artifacts(args.models.split(","))]
    except EdgecnnError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    load = (load_before, os.getloadavg()[0])
    env = fingerprint()
    command = "python benchmarks/honesty.py " + " ".join(sys.argv[1:] if argv is None else argv)
    write_json_atomic(outputs[0], {"goal": GOAL, "command": command.strip(), "load_average": list(load),
                                   "environment": env, "results": results})
    text = markdown(results, env, command.strip(), load)
    write_text_atomic(outputs[1], text)
    print(text)
    return 0 if all(r["within_goal"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
