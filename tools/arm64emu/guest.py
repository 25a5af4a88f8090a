"""Run artifacts on prepared pixels and save their raw outputs: the one program both sides of the arm64 check
execute (the emulated root's venv and the workstation's venv), so the two .npz files compare like with like.

    python -I guest.py --inputs pixels.npz --out outputs.npz [--tflite-target pi] A.tflite B.onnx=digits ...

Inputs: ``pixels.npz`` holding uint8 arrays (N, H, W, C) of prepared pixels (edgecnn.preprocess.prepare_batch);
an artifact takes the array named after '=' (default "pixels"). Each artifact is opened with its manifest
(sidecar manifest.json, or the one its file embeds) through edgecnn.devices.classify.Classifier: the encoder
and runner `edgecnn run` uses, one image per invoke.

Output ``outputs.npz``, per artifact (keyed by its path as given): "<path>|raw" the raw output tensors
(N, ...) in the model's output dtype, "<path>|scores" float32 (N, classes) as decoded for top-k,
"<path>|describe" the runner's describe() as JSON text; "__machine__" is platform.machine() of the side that
ran them (aarch64 in the root). Only numpy and the installed edgecnn are imported.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np


def run_artifact(path: Path, pixels: np.ndarray, tflite_target: str, threads: int | None) -> dict[str, np.ndarray]:
    from edgecnn.devices.base import RunnerOptions
    from edgecnn.devices.classify import Classifier
    from edgecnn.preprocess import decode_output

    target = tflite_target if path.suffix.lower() == ".tflite" else "onnx-cpu"
    # No child-process probe (probe=False): these are the check's own artifacts, and under emulation each
    # probe is one more interpreter start-up; `edgecnn run` and `edgecnn bench` still probe.
    with Classifier.open(path, target, RunnerOptions(threads=threads, probe=False)) as classifier:
        raws, scores = [], []
        for i in range(pixels.shape[0]):
            raw = np.array(classifier.runner.invoke(classifier.encoder(pixels[i:i + 1])), copy=True)
            raws.append(raw)
            scores.append(decode_output(raw, classifier.runner.output, classifier.output_kind))
        describe = json.dumps(classifier.describe(), default=str)
    return {"raw": np.concatenate(raws), "scores": np.concatenate(scores).astype(np.float32),
            "describe": np.array(describe)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifacts", nargs="+", help="PATH or PATH=INPUT_KEY")
    parser.add_argument("--inputs", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tflite-target", default="cpu", help="cpu or pi (.onnx always runs on onnx-cpu)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    from edgecnn.fileio import atomic_path

    with np.load(args.inputs) as data:
        inputs = {key: data[key] for key in data.files}
    arrays: dict[str, np.ndarray] = {"__machine__": np.array(platform.machine())}
    for spec in args.artifacts:
        path, _, key = spec.partition("=")
        key = key or "pixels"
        if key not in inputs:
            print(f"guest: {args.inputs} has no array '{key}' (it has {sorted(inputs)})", file=sys.stderr)
            return 2
        started = time.perf_counter()
        for name, value in run_artifact(Path(path), inputs[key], args.tflite_target, args.threads).items():
            arrays[f"{path}|{name}"] = value
        print(f"guest: {path}: {inputs[key].shape[0]} inputs, {time.perf_counter() - started:.1f} s",
              file=sys.stderr, flush=True)
    with atomic_path(args.out) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return 0


if __name__ == "__main__":
    sys.exit(main())
