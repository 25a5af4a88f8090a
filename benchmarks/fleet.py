"""`edgecnn bench --host` against a local `edgecnn bench` in the same device install: are the board's rows the
same figures?

The "board" is a real OpenSSH server on 127.0.0.1 (tests/sshd_server.py) and a device venv (the project's wheel
with the `device` and `onnx-cpu` extras, tests/device_env.py, no TensorFlow), reached with --remote-edgecnn. The
model is MobileNetV2 int8 with its manifest (the cached model of runner_overhead.py / startup.py). Per round, in
rotated order:

- local: that venv's `edgecnn bench MODEL --device cpu --threads 1 --runs N` run directly;
- fleet: the workstation's `edgecnn bench MODEL ... --host board-a` (deploy is skipped after the first round, as
  it would be), the same options forwarded to the same venv over ssh.

Figures: per round, fleet / local for the raw-inference p50 and the whole-step p50, then the median and range of
those ratios; the wall time of each whole command (the fleet's includes ssh, the probe and the copy back). The
machine is shared: the load average is recorded, and only ratios measured in one run count.

    .venv/bin/python benchmarks/fleet.py [--rounds 5] [--runs 200]

Writes benchmarks/results/fleet.json and .md. Exit status 1 when the median p50 ratio is outside 0.8..1.25.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
BOUNDS = (0.8, 1.25)


def _bench(command: list[str], out: Path) -> tuple[dict, float]:
    start = time.perf_counter()
    proc = subprocess.run(command + ["--out", str(out), "--force", "--json"], capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command[:2])} failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}")
    row = json.loads((out / "bench.json").read_text())["rows"][0]
    if row["status"] != "ok":
        raise SystemExit(f"row failed: {row['reason']}")
    return row, wall


def measure(rounds: int, runs: int) -> dict:
    sys.path[:0] = [str(ROOT / "tests"), str(HERE)]
    from device_env import device_venv
    from sshd_server import SshServer
    from startup import deploy

    venv_bin = device_venv(("device", "onnx-cpu")).parent
    with tempfile.TemporaryDirectory(prefix="edgecnn-fleet-bench-") as work:
        work = Path(work)
        (work / "models").mkdir()
        model, _ = deploy(work / "models")
        home = work / "board home"
        (home / "bin").mkdir(parents=True)
        launcher = home / "bin" / "edgecnn"
        launcher.write_text(f"#!/bin/sh\nEDGECNN_CACHE='{home / 'cache'}' exec '{venv_bin / 'edgecnn'}' \"$@\"\n")
        launcher.chmod(0o755)
        options = [str(model), "--device", "cpu", "--threads", "1", "--runs", str(runs)]
        with SshServer(work / "sshd") as server:
            local = [str(venv_bin / "edgecnn"), "bench", *options]
            fleet = [str(Path(sys.executable).parent / "edgecnn"), "bench", *options, "--host", "board-a",
                     "--ssh-config", str(server.config), "--remote-edgecnn", str(launcher)]
            _bench(fleet, work / "warm")  # deploys, and warms both paths' file caches
            records = []
            for i in range(rounds):
                order = [("local", local), ("fleet", fleet)][:: 1 if i % 2 == 0 else -1]
                got = {name: _bench(cmd, work / f"{name}{i}") for name, cmd in order}
                records.append({name: {"p50_ms": row["invoke"]["p50"], "step_p50_ms": row["step"]["p50"],
                                       "wall_s": wall, "host": row.get("host")} for name, (row, wall) in got.items()})
    return {"records": records, "venv": str(venv_bin.parent)}


def summarize(records: list[dict]) -> dict:
    def ratios(key: str) -> list[float]:
        return [r["fleet"][key] / r["local"][key] for r in records]

    out = {}
    for key in ("p50_ms", "step_p50_ms", "wall_s"):
        values = ratios(key)
        out[key] = {"median_ratio": statistics.median(values), "min_ratio": min(values), "max_ratio": max(values),
                    "local_median": statistics.median(r["local"][key] for r in records),
                    "fleet_median": statistics.median(r["fleet"][key] for r in records)}
    return out


def write(result: dict) -> None:
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "fleet.json").write_text(json.dumps(result, indent=2) + "\n")
    s = result["summary"]
    lines = ["# bench --host against a local bench in the same device venv", "",
             f"- Command: `{result['command']}`", f"- Date: {result['date']}; {result['machine']}",
             f"- Load average (1 min) {result['load_before']:.2f} before, {result['load_after']:.2f} after, on "
             f"{os.cpu_count()} logical CPUs" + (": shared machine, other work ran meanwhile"
                                                   if max(result['load_before'], result['load_after']) > 1 else ""),
             f"- MobileNetV2 int8 (static batch 1), --device cpu --threads 1 --runs {result['runs']}, "
             f"{result['rounds']} interleaved rounds; board = sshd on 127.0.0.1 + the device venv", "",
             "| figure | local median | fleet median | fleet / local, median | min | max |", "|---|---|---|---|---|---|"]
    for key, label in (("p50_ms", "raw-inference p50, ms"), ("step_p50_ms", "whole-step p50, ms"),
                       ("wall_s", "whole command, s")):
        f = s[key]
        lines.append(f"| {label} | {f['local_median']:.3f} | {f['fleet_median']:.3f} | {f['median_ratio']:.3f} | "
                     f"{f['min_ratio']:.3f} | {f['max_ratio']:.3f} |")
    lines += ["", f"Verdict: {result['verdict']}", "",
              "The rows the fleet brings back are the board's own `edgecnn bench` rows: the ratio says that driving "
              "it over ssh changes nothing in what is measured. The wall-time ratio is the cost of the drive "
              "(ssh connections, the probe, the copy back), not of the measurement."]
    (RESULTS / "fleet.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args(argv)
    load_before = os.getloadavg()[0]
    measured = measure(args.rounds, args.runs)
    summary = summarize(measured["records"])
    low, high = BOUNDS
    ratio = summary["p50_ms"]["median_ratio"]
    verdict = (f"median p50 ratio {ratio:.3f} is within {low}..{high}" if low <= ratio <= high
               else f"median p50 ratio {ratio:.3f} is OUTSIDE {low}..{high}")
    result = {"command": "python benchmarks/fleet.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{platform.machine()}, {os.cpu_count()} logical CPUs, Python {platform.python_version()}",
              "load_before": load_before, "load_after": os.getloadavg()[0], "rounds": args.rounds, "runs": args.runs,
              "summary": summary, "verdict": verdict, **measured}
    write(result)
    print((RESULTS / "fleet.md").read_text())
    return 0 if low <= ratio <= high else 1


if __name__ == "__main__":
    sys.exit(main())
