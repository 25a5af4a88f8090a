"""Acceptance benchmark: every seed architecture converts to every format; int8 TFLite >= 3.5x smaller than fp32.

The MNIST CNN is the trained embedded default, calibrated on MNIST digits and verified on the 1,000
held-out ones. The other seeds are random-initialised (their accuracy means nothing) and calibrated and
verified on seeded random images of their input size; their agreement figures only show that the
artifacts compute what Keras computes, roughly, on inputs the weights were never fitted to.

    .venv/bin/python benchmarks/convert_seeds.py                 # all six (MobileNetV2 takes minutes)
    .venv/bin/python benchmarks/convert_seeds.py --seeds mnist_mlp,dave2

Writes benchmarks/results/convert_seeds.json and .md (the --results folder).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
MIN_RATIO = 3.5


def random_images(shape: tuple[int, ...], count: int, seed: int = 0) -> np.ndarray:
    """uint8 images for an input shape; a flat input (the MLP) gets square grey images."""
    if len(shape) == 1:
        side = int(round(shape[0] ** 0.5))
        shape = (side, side, 1)
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


def convert_seed(name: str, work: Path, samples: int) -> dict:
    import keras

    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.converters.zoo import SEED_MODELS, build_seed, trained_mnist_cnn

    seed = SEED_MODELS[name]
    if name == "mnist_cnn":
        model_path, calib, val = trained_mnist_cnn(), "mnist", "mnist"
    else:
        keras.utils.set_random_seed(0)
        model = build_seed(name)
        model_path = work / f"{name}.keras"
        model.save(model_path)
        calib = work / f"{name}_calib.npy"
        np.save(calib, random_images(seed.input_shape, samples))
        val = None
    started = time.perf_counter()
    result = convert(model_path, calib=calib, val=val, out=work / name,
                     options=ConvertOptions(calib_samples=samples, force=True))
    seconds = time.perf_counter() - started
    sizes = {e.name: e.size_bytes for e in result.manifest.artifacts}
    return {
        "seed": name, "description": seed.description, "input_shape": list(seed.input_shape),
        "params": int(keras.models.load_model(model_path).count_params()), "convert_s": round(seconds, 1),
        "formats": [e.name for e in result.manifest.artifacts], "sizes": sizes,
        "tflite_int8_ratio": round(sizes["tflite-fp32"] / sizes["tflite-int8"], 2),
        "onnx_int8_ratio": round(sizes["onnx-fp32"] / sizes["onnx-int8"], 2),
        "agreement": {e.name: e.verification.agreement for e in result.manifest.artifacts},
        "drop_pp": {e.name: e.verification.drop_pp for e in result.manifest.artifacts},
        "verified_on": result.manifest.artifacts[0].verification.data,
    }


def write_results(rows: list[dict], folder: Path, command: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"command": command, "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.platform()}",
            "min_ratio": MIN_RATIO}
    (folder / "convert_seeds.json").write_text(json.dumps({"meta": meta, "seeds": rows}, indent=2) + "\n")
    lines = ["# Seed architectures: conversion to every format", "", f"Command: `{command}`", "",
             f"Machine: {meta['machine']}", "",
             "| seed | params | formats | tflite fp32 | tflite int8 | int8 vs fp32 | onnx int8 vs fp32 | "
             "int8 agreement (tflite / onnx) | data | convert s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['params']:,} | {len(r['formats'])} | {r['sizes']['tflite-fp32']:,} B | "
                     f"{r['sizes']['tflite-int8']:,} B | {r['tflite_int8_ratio']}x | {r['onnx_int8_ratio']}x | "
                     f"{r['agreement']['tflite-int8']:.3f} / {r['agreement']['onnx-int8']:.3f} | {r['verified_on']} | "
                     f"{r['convert_s']} |")
    ok = all(len(r["formats"]) == 6 and r["tflite_int8_ratio"] >= MIN_RATIO for r in rows)
    lines += ["", f"All converted to all 6 formats with int8 TFLite >= {MIN_RATIO}x smaller: **{'yes' if ok else 'NO'}**.",
              "", "Non-MNIST seeds are random-initialised and verified on random images: their agreement only "
              "shows the artifacts track Keras, not accuracy."]
    (folder / "convert_seeds.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    from rich.console import Console
    from rich.table import Table

    from edgecnn.converters.zoo import SEED_MODELS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default=",".join(SEED_MODELS))
    parser.add_argument("--samples", type=int, default=100, help="calibration images per seed")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgecnn-seeds-") as work:
        for name in [s.strip() for s in args.seeds.split(",") if s.strip()]:
            rows.append(convert_seed(name, Path(work), args.samples))
    command = "python benchmarks/convert_seeds.py " + " ".join(argv if argv is not None else sys.argv[1:])
    write_results(rows, args.results, command.strip())
    table = Table(title="seed conversions")
    for column in ("seed", "formats", "tflite int8 vs fp32", "onnx int8 vs fp32", "convert s"):
        table.add_column(column)
    for r in rows:
        table.add_row(r["seed"], str(len(r["formats"])), f"{r['tflite_int8_ratio']}x", f"{r['onnx_int8_ratio']}x",
                      str(r["convert_s"]))
    Console().print(table)
    return 0 if all(r["tflite_int8_ratio"] >= MIN_RATIO for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
