"""The imx500 conversion step: how long `edgecnn convert --formats imx500` takes, and what it gives.

For each model (the trained RGB CNN on tinted digits, the MNIST demo CNN) this converts, in one run, to
tflite-int8 (the reference step) and to imx500, and records wall and CPU time (this process and its children:
the toolchain's Python and imxconv-tf's Java), the toolchain's own sub-step times (from the manifest notes),
host-side agreement with Keras, accuracy drop and the memory report. Also the toolchain environment's size.
The machine is shared: CPU times and the imx500 / tflite-int8 ratio of one run are what count.

    .venv/bin/python benchmarks/imx500_step.py [--models rgb,mnist]

Needs the IMX500 toolchain (bash dev.sh imx500-env). Writes benchmarks/results/imx500_step.json and .md.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RESULTS = Path(__file__).resolve().parent / "results"


def models(names: list[str], folder: Path) -> dict[str, tuple[Path, str, str]]:
    """name -> (model, calib, val); the RGB data is written as .npz (uint8 pixels + labels)."""
    from edgecnn.converters.zoo import tinted_digits, trained_mnist_cnn, trained_rgb_cnn

    chosen = {}
    if "rgb" in names:
        for split in ("train", "val"):
            x, y = tinted_digits(split)
            np.savez(folder / f"tinted_{split}.npz", x=x, y=y)
        chosen["rgb_cnn (32x32x3, tinted digits)"] = (trained_rgb_cnn(), str(folder / "tinted_train.npz"),
                                                      str(folder / "tinted_val.npz"))
    if "mnist" in names:
        chosen["mnist_cnn (28x28x1, MNIST)"] = (trained_mnist_cnn(), "mnist", "mnist")
    return chosen


def timed_convert(model: Path, calib: str, val: str, fmt: str, out: Path) -> dict:
    from edgecnn.converters.pipeline import ConvertOptions, convert

    wall, own, kids = time.perf_counter(), time.process_time(), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = convert(model, calib=calib, val=val, out=out, options=ConvertOptions(formats=fmt, progress=False, force=True))
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    entry = result.manifest.artifact(fmt)
    check = entry.verification
    return {"format": fmt, "wall_s": round(time.perf_counter() - wall, 2),
            "cpu_s": round(time.process_time() - own + (after.ru_utime + after.ru_stime)
                           - (kids.ru_utime + kids.ru_stime), 2),
            "size_bytes": entry.size_bytes, "agreement": check.agreement, "keras_accuracy": check.keras_accuracy,
            "accuracy": check.accuracy, "drop_pp": check.drop_pp, "samples": check.samples, "notes": list(entry.notes)}


def substeps(notes: list[str]) -> dict:
    text = " ".join(notes)
    found = re.search(r"rebuild ([\d.]+) s, MCT quantization ([\d.]+) s, imxconv-tf ([\d.]+) s", text)
    memory = re.search(r"memory: (\S+) of (\S+) \((\S+)\), fits in the sensor: (\w+)", text)
    return {"rebuild_s": float(found.group(1)), "quantize_s": float(found.group(2)), "imxconv_s": float(found.group(3)),
            "memory": memory.group(1), "of": memory.group(2), "utilization": memory.group(3),
            "fits": memory.group(4) == "yes"}


def toolchain_size() -> str:
    from edgecnn.converters.imx500 import toolchain_python

    venv = toolchain_python().parent.parent
    du = subprocess.run(["du", "-sh", str(venv)], capture_output=True, text=True, check=False)
    return du.stdout.split()[0] if du.returncode == 0 and du.stdout else "?"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="rgb,mnist")
    args = parser.parse_args()
    started = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()[0]
    rows = []
    with tempfile.TemporaryDirectory(prefix="edgecnn-imx500-bench-") as work:
        for name, (model, calib, val) in models(args.models.split(","), Path(work)).items():
            int8 = timed_convert(model, calib, val, "tflite-int8", Path(work) / "int8")
            imx = timed_convert(model, calib, val, "imx500", Path(work) / "imx500")
            rows.append({"model": name, "tflite_int8": int8, "imx500": imx, "imx500_substeps": substeps(imx["notes"]),
                         "cpu_ratio_imx500_vs_int8": round(imx["cpu_s"] / int8["cpu_s"], 2)})
            print(f"{name}: tflite-int8 {int8['wall_s']} s wall / {int8['cpu_s']} s CPU; imx500 {imx['wall_s']} s wall / "
                  f"{imx['cpu_s']} s CPU; agreement {imx['agreement']:.3f}", file=sys.stderr)
    load_after = os.getloadavg()[0]
    report = {"command": "python benchmarks/imx500_step.py --models " + args.models,
              "date": started.isoformat(timespec="seconds"), "machine": f"{platform.machine()}, {os.cpu_count()} cores "
              "(shared with other jobs)", "python": platform.python_version(),
              "load_average_1min": {"before": round(load_before, 2), "after": round(load_after, 2)},
              "toolchain_size": toolchain_size(), "rows": rows}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "imx500_step.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "imx500_step.md").write_text(markdown(report))
    print((RESULTS / "imx500_step.md").read_text())
    return 0


def markdown(report: dict) -> str:
    lines = ["# The imx500 conversion step (`edgecnn convert --formats imx500`)", "",
             f"Measured {report['date']} on {report['machine']}, Python {report['python']}; 1-minute load average "
             f"{report['load_average_1min']['before']} before, {report['load_average_1min']['after']} after. "
             f"IMX500 toolchain environment: {report['toolchain_size']}. CPU time counts this process and its children "
             "(the toolchain's Python, imxconv-tf's Java); on a shared machine it is the figure to compare, with the "
             "imx500 / tflite-int8 ratio of the same run.", "", f"Command: `{report['command']}`", "",
             "| model | step | wall | CPU | agreement | Keras / artifact top-1 | drop | size |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in report["rows"]:
        for key in ("tflite_int8", "imx500"):
            r = row[key]
            lines.append(f"| {row['model']} | {r['format']} | {r['wall_s']:.1f} s | {r['cpu_s']:.1f} s | "
                         f"{r['agreement'] * 100:.1f} % | {r['keras_accuracy'] * 100:.1f} % / {r['accuracy'] * 100:.1f} % | "
                         f"{r['drop_pp']:+.1f} pp | {r['size_bytes'] / 1024:.0f} KiB |")
    lines += ["", "| model | imx500 / tflite-int8 CPU | rebuild in tf.keras 2.15 | MCT quantization | imxconv-tf | "
              "sensor memory | fits in 8 MB |", "|---|---:|---:|---:|---:|---:|---|"]
    for row in report["rows"]:
        s = row["imx500_substeps"]
        lines.append(f"| {row['model']} | {row['cpu_ratio_imx500_vs_int8']:.1f}x | {s['rebuild_s']:.1f} s | "
                     f"{s['quantize_s']:.1f} s | {s['imxconv_s']:.1f} s | {s['memory']} of {s['of']} "
                     f"({s['utilization']}) | {'yes' if s['fits'] else 'no'} |")
    lines += ["", "Sub-step times are wall clock inside the toolchain's processes (TensorFlow 2.15 import included in "
              "the rebuild). Agreement: same top-1 as Keras on the validation samples, MCT's quantized model run on "
              "the host (the model imxconv-tf converted); the sensor itself is not available here.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
