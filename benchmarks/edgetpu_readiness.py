"""Edge TPU readiness of every seed model, and of the two models that must be flagged.

Each seed architecture (random weights: readiness does not depend on them) is written as the
compiler-ready full-int8, batch-1 .tflite (8 seeded random calibration images of its input size) and
checked statically against Coral's documented requirements. Two more rows must be flagged at the right
layer: the MNIST CNN converted the way the convert pipeline does it (SavedModel with a dynamic batch, so
Flatten computes its shape at run time), and a small CNN with a LeakyReLU (an operation the Edge TPU table
does not list). ``edgetpu_compiler`` is run too when it is on PATH.

    .venv/bin/python benchmarks/edgetpu_readiness.py                    # all (MobileNetV2 takes ~1 min)
    .venv/bin/python benchmarks/edgetpu_readiness.py --seeds mnist_cnn,dave2

Writes benchmarks/results/edgetpu_readiness.json and .md.
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


def calib(shape: tuple[int, ...], count: int = 8) -> np.ndarray:
    return np.random.default_rng(0).uniform(0, 1, (count, *shape)).astype(np.float32)


def seed_row(name: str, work: Path) -> dict:
    from edgecnn.converters import zoo
    from edgecnn.converters.edgetpu_compiler import compiler_ready_model

    start = time.perf_counter()
    path = compiler_ready_model(zoo.build_seed(name), calib(zoo.SEED_MODELS[name].input_shape), work / f"{name}.tflite")
    built = time.perf_counter() - start
    return row(name, readiness(path, work), built)


def dynamic_row(work: Path) -> dict:
    from edgecnn.converters import zoo
    from edgecnn.converters.tflite import convert_bytes

    start = time.perf_counter()
    saved = work / "mnist_savedmodel"
    zoo.build_seed("mnist_cnn").export(str(saved), format="tf_saved_model", verbose=False)
    path = work / "mnist_cnn_dynamic_int8.tflite"
    path.write_bytes(convert_bytes(saved, "int8", calib((28, 28, 1))))
    return row("mnist_cnn, dynamic batch (a plain model.export SavedModel)", readiness(path, work),
               time.perf_counter() - start)


def leaky_row(work: Path) -> dict:
    import keras

    from edgecnn.converters.edgetpu_compiler import compiler_ready_model

    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, name="conv"),
                              keras.layers.LeakyReLU(name="leaky"), keras.layers.Conv2D(8, 3, name="conv_after"),
                              keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(4, name="head")])
    start = time.perf_counter()
    path = compiler_ready_model(model, calib((16, 16, 3)), work / "leaky.tflite")
    return row("small CNN with LeakyReLU", readiness(path, work), time.perf_counter() - start)


def readiness(path: Path, work: Path):
    from edgecnn.converters.edgetpu_compiler import EdgeTpuRequest, edgetpu_readiness

    return edgetpu_readiness(path, request=EdgeTpuRequest(out_dir=work / "compiled"))


def row(name: str, result, build_s: float) -> dict:
    report = result.prediction
    first = report.first_unsupported
    return {"model": name, "ops": len(report.ops), "on_edgetpu": report.mapped, "on_cpu": report.on_cpu,
            "first_unsupported": None if first is None else f"{first.op} in {first.layer}: {first.reason}",
            "problems": list(report.problems), "summary": report.summary(), "build_s": round(build_s, 2),
            "subgraphs": report.subgraphs, "assumption": report.assumption(), "ready": result.ready_line(),
            "may_not_map": sorted({op.op for op in report.caveats}),
            "compiler": None if result.compiler is None else result.to_dict()["compiler"],
            "notes": list(result.notes)}


def markdown(rows: list[dict], meta: dict) -> str:
    lines = ["# Edge TPU readiness (static check against Coral's documented requirements)", "",
             f"Measured {meta['date']} on {meta['machine']}; command: `{meta['command']}`.",
             f"edgetpu_compiler on PATH: {meta['compiler']}. {rows[0]['assumption'] if rows else ''}.", "",
             "| model | ops | on Edge TPU | on CPU | first op not mapped | notes |", "|---|---|---|---|---|---|"]
    for r in rows:
        notes = "; ".join(r["problems"] + ([f"may not map: {', '.join(r['may_not_map'])}"] if r["may_not_map"] else []))
        lines.append(f"| {r['model']} | {r['ops']} | {r['on_edgetpu']} | {r['on_cpu']} | "
                     f"{r['first_unsupported'] or '—'} | {notes} |")
    lines += ["", "Per operator (op, count, status):", ""]
    for r in rows:
        lines.append(f"- {r['model']}: " + ", ".join(f"{op}×{n} ({status})" for op, n, status in r["summary"]))
    lines += ["", "Compiler-ready model per row:", ""] + [f"- {r['model']}: {r['ready']}" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="mnist_cnn,mnist_mlp,cifar10_vgg,cifar10_cnn,dave2,mobilenet_v2")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    from edgecnn.converters.edgetpu_compiler import find_compiler

    rows = []
    with tempfile.TemporaryDirectory(prefix="edgetpu-bench-") as tmp:
        work = Path(tmp)
        for name in [n.strip() for n in args.seeds.split(",") if n.strip()]:
            rows.append(seed_row(name, work))
            print(json.dumps({k: rows[-1][k] for k in ("model", "ops", "on_edgetpu", "on_cpu", "first_unsupported")}))
        for extra in (dynamic_row, leaky_row):
            rows.append(extra(work))
            print(json.dumps({k: rows[-1][k] for k in ("model", "ops", "on_edgetpu", "on_cpu", "first_unsupported")}))
    meta = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": f"{platform.machine()}, "
            f"{os.cpu_count()} cores, Python {platform.python_version()}", "compiler": find_compiler() or "no",
            "command": "python benchmarks/edgetpu_readiness.py " + " ".join(sys.argv[1:])}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "edgetpu_readiness.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    (args.results / "edgetpu_readiness.md").write_text(markdown(rows, meta))
    return 0


if __name__ == "__main__":
    sys.exit(main())
