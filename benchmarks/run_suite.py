"""The standing benchmark suite: the seed models and MobileNetV2 in every format, CPU 1 and 2 threads, ONNX on the CPU.

    python benchmarks/run_suite.py [--duration S] [--models a,b] [--out benchmarks/results] [--force]

Each seed model of edgecnn.converters.zoo is converted with edgecnn.converters.pipeline.convert (cached
under $EDGECNN_CACHE/suite, reused while the source is unchanged): the MNIST CNN is the trained default,
calibrated and evaluated on the bundled digits; the others have random weights (seeded) and random
calibration images, so their rows measure speed, not accuracy. Writes suite.json, suite.md and
suite.html (edgecnn.bench.report) into --out.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from edgecnn.bench.harness import BenchOptions, bench  # noqa: E402
from edgecnn.bench.report import output_paths, write_reports  # noqa: E402
from edgecnn.errors import EdgecnnError  # noqa: E402
from edgecnn.fileio import refuse_overwrite  # noqa: E402

SUITE_MODELS = ("mnist_cnn", "mnist_mlp", "cifar10_vgg", "cifar10_cnn", "dave2", "mobilenet_v2")
TRAINED = {"mnist_cnn"}  # real weights and labelled held-out data: accuracy is meaningful
CALIB_SAMPLES = 32
RESULTS = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(SUITE_MODELS), help="comma-separated seed models")
    parser.add_argument("--duration", type=float, default=1.5, help="seconds of timed inferences per row and mode")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--force", action="store_true", help="overwrite existing suite results")
    parser.add_argument("--note", action="append", default=[], help="a note recorded with the results")
    return parser.parse_args(argv)


def suite_dir() -> Path:
    from edgecnn.converters.zoo import cache_dir

    path = cache_dir() / "suite"
    path.mkdir(parents=True, exist_ok=True)
    return path


def keras_file(name: str) -> Path:
    """The seed model as a .keras file: the trained default for mnist_cnn, else seeded random weights."""
    from edgecnn.converters.zoo import build_seed, trained_mnist_cnn

    if name == "mnist_cnn":
        return trained_mnist_cnn()
    path = suite_dir() / f"{name}-seed0.keras"
    if not path.exists():
        import keras

        keras.utils.set_random_seed(0)
        model = build_seed(name)
        tmp = path.with_suffix(".partial.keras")
        model.save(str(tmp))
        os.replace(tmp, path)
    return path


def calibration(name: str) -> str:
    """'mnist' for the MNIST models; a seeded random-image .npz at the model's input size for the others."""
    import numpy as np

    from edgecnn.converters.zoo import SEED_MODELS

    if name.startswith("mnist"):
        return "mnist"
    path = suite_dir() / f"{name}-calib.npz"
    if not path.exists():
        shape = SEED_MODELS[name].input_shape
        images = np.random.default_rng(0).integers(0, 256, size=(CALIB_SAMPLES, *shape), dtype=np.uint8)
        np.savez(path, x=images)
    return str(path)


def converted(name: str) -> Path:
    """The convert output folder of a seed model, converted once and reused while its source is unchanged."""
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.fileio import sha256_of
    from edgecnn.manifest import Manifest

    source = keras_file(name)
    out = suite_dir() / f"{name}-convert"
    manifest = out / "manifest.json"
    if manifest.is_file():
        try:
            if Manifest.read(manifest).source_sha256 == sha256_of(source):
                return out
        except EdgecnnError:
            pass
    calib = calibration(name)
    val = "mnist" if name in TRAINED else None
    options = ConvertOptions(calib_samples=CALIB_SAMPLES if calib != "mnist" else 200, force=True, progress=True)
    convert(source, calib=calib, val=val, out=out, options=options)
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    try:
        refuse_overwrite(list(output_paths(args.out, "suite").values()), args.force)
    except EdgecnnError as exc:
        print(f"error: {exc.one_line()}", file=sys.stderr)
        return 2
    started = time.time()
    load_before = os.getloadavg()[0]
    options = BenchOptions(duration_s=args.duration, warmup=20)
    rows, notes, first = [], list(args.note), None
    for name in names:
        try:
            folder = converted(name)
            data = "mnist" if name in TRAINED else None
            result = bench([folder], ["cpu", "onnx-cpu"], args.threads.split(","), data, options,
                           command=f"edgecnn bench {folder} --device cpu,onnx-cpu --threads {args.threads} "
                                   f"--duration {args.duration} --warmup 20" + (f" --data {data}" if data else ""))
        except EdgecnnError as exc:
            notes.append(f"{name}: {exc.one_line()}")
            print(f"{name}: {exc.one_line()}", file=sys.stderr)
            continue
        first = first or result
        rows += result.rows
        notes += [n for n in result.notes if n not in notes]
    if first is None:
        print("error: no model could be benchmarked", file=sys.stderr)
        return 1
    notes += suite_notes(rows, load_before, time.time() - started)
    command = "python benchmarks/run_suite.py " + " ".join(sys.argv[1:] if argv is None else argv)
    result = dataclasses.replace(first, rows=tuple(rows), notes=tuple(notes), command=command.strip(),
                                 data="mnist:val (mnist_cnn only)")
    paths = write_reports(result.to_dict(), args.out, force=args.force, stem="suite")
    for line in notes:
        print(f"note: {line}")
    print("results: " + ", ".join(str(p) for p in paths.values()))
    return 0


def suite_notes(rows, load_before: float, seconds: float) -> list[str]:
    notes = [f"suite ran {seconds / 60:.1f} min; 1-minute load average {load_before:.2f} before, "
             f"{os.getloadavg()[0]:.2f} after, on {os.cpu_count()} logical CPUs"]
    if max(load_before, os.getloadavg()[0]) > 1.0:
        notes.append("the machine was not idle (load average above 1): other work may have shared the CPUs")
    goal = mobilenet_ratio(rows)
    if goal is not None:
        verdict = "met" if goal <= 0.5 else "NOT met"
        notes.append(f"goal: MobileNetV2 tflite-int8 p50 / tflite-fp32 p50 at 1 thread = {goal:.2f}x "
                     f"(goal <= 0.50x): {verdict}")
    unstable = [r for r in rows if r.invoke is not None and r.invoke.unstable]
    if unstable:
        notes.append(f"{len(unstable)} of {len(rows)} rows flagged unstable (block medians vary > 10 %)")
    random = sorted({r.model for r in rows if r.model not in TRAINED})
    if random:
        notes.append(f"random weights and random calibration (speed only, no accuracy): {', '.join(random)}")
    return notes


def mobilenet_ratio(rows) -> float | None:
    for row in rows:
        if row.model.startswith("mobilenet") and row.format == "tflite-int8" and row.threads == 1 \
                and row.target == "cpu" and row.p50_vs_fp32 is not None:
            return row.p50_vs_fp32
    return None


if __name__ == "__main__":
    sys.exit(main())
