"""Accuracy guard figures: inspect names the guilty layer, --fallback auto recovers the accuracy.

On the broken-by-int8 model (tests/fixtures/broken_model.py: the MNIST CNN with two outlier units in its
hidden layer, trained on the 4,000 bundled training digits) and, for contrast, the healthy embedded
default: per-layer int8 error (TFLite QuantizationDebugger, ONNX Runtime qdq_loss_debug) on 100
calibration digits, the fallback search for TFLite and ONNX within 0.5 pp on the 1,000 held-out digits
(accuracy, size, median 1-thread latency of every step), and the calibration audit's verdicts.

    .venv/bin/python benchmarks/inspect_fallback.py

Writes benchmarks/results/inspect.json and inspect.md.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # fixtures: real-digit videos, the outlier model

MAX_DROP = 0.5


def timed(call):
    start = time.perf_counter()
    value = call()
    return value, round(time.perf_counter() - start, 2)


def main() -> int:
    from fixtures.broken_model import trained_outlier_cnn
    from edgecnn.converters.calib_audit import audit
    from edgecnn.converters.calibration import ModelInputs
    from edgecnn.converters.fallback import auto_fallback
    from edgecnn.converters.inspect import Family, InspectOptions, inspect
    from edgecnn.converters.keras_load import load_model
    from edgecnn.converters.prep_check import check_preprocessing
    from edgecnn.converters.zoo import trained_mnist_cnn
    from edgecnn.data import mnist_sample
    from edgecnn.manifest import ColorOrder, Preprocessing

    broken, healthy = load_model(trained_outlier_cnn()), load_model(trained_mnist_cnn())
    train, val = mnist_sample("train"), mnist_sample("val")
    calib = train.images[:200].astype(np.float32) / 255.0
    val_x = val.images.astype(np.float32) / 255.0
    out: dict = {"inspect": {}, "fallback": {}, "audit": {}}
    for label, model in (("broken", broken), ("healthy", healthy)):
        for family in (Family.TFLITE, Family.ONNX):
            result, seconds = timed(lambda: inspect(model, calib, options=InspectOptions(family=family)))
            out["inspect"][f"{label}/{family.value}"] = {"seconds": seconds, "top": [
                {"layer": r.layer, "op": r.op, "rmse_scale": round(r.rmse_scale, 3), "sqnr_db": round(r.sqnr_db, 1),
                 "channel_sqnr_db": round(r.channel_sqnr_db, 1), "range": [round(r.float_min, 3), round(r.float_max, 3)],
                 "keep_float": list(r.keep_float)} for r in result.layers[:3]]}
    with tempfile.TemporaryDirectory() as tmp:
        for family in ("tflite", "onnx"):
            report, seconds = timed(lambda: auto_fallback(broken, family, calib, val_x, val.labels, MAX_DROP,
                                                          Path(tmp) / f"broken.{family}"))
            out["fallback"][family] = dict(report.to_dict(), seconds=seconds)
    prep = Preprocessing(28, 28, ColorOrder.GRAY)
    for label, data in (("200 digits, 0-1", calib), ("200 digits, 0-255", calib * 255.0), ("1 digit", calib[:1])):
        labels = train.labels[:len(data)]
        checked = check_preprocessing(healthy, prep, ModelInputs(data, None, labels, label, "calibration"))
        result = audit(data, labels, 10, healthy.keras_model, checked)
        out["audit"][label] = [f"{f.check}: {f.level.value}" for f in result.findings]
    out["meta"] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared), Python {platform.python_version()}",
                   "command": "python benchmarks/inspect_fallback.py"}
    results = Path(__file__).parent / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / "inspect.json").write_text(json.dumps(out, indent=2) + "\n")
    (results / "inspect.md").write_text(markdown(out))
    print(markdown(out))
    return 0


def markdown(out: dict) -> str:
    meta = out["meta"]
    lines = ["# inspect and --fallback auto on the broken-by-int8 MNIST model", "",
             f"Measured {meta['date']} on {meta['machine']}; command: `{meta['command']}`. "
             "Held-out data: the 1,000 validation digits; calibration: the first 200 training digits; "
             "inspect compares on the first 100.", "", "## Worst layers (inspect)", "",
             "| model / format | seconds | #1 layer (op) | rmse/scale | SQNR dB | channel SQNR dB | float range | #2 layer |",
             "|---|---|---|---|---|---|---|---|"]
    for key, item in out["inspect"].items():
        top = item["top"]
        first = top[0]
        second = f"{top[1]['layer']} ({top[1]['channel_sqnr_db']} dB)" if len(top) > 1 else "—"
        lines.append(f"| {key} | {item['seconds']} | {first['layer']} ({first['op']}) | {first['rmse_scale']} | "
                     f"{first['sqnr_db']} | {first['channel_sqnr_db']} | {first['range']} | {second} |")
    lines += ["", f"## --fallback auto, --max-drop {MAX_DROP}", "",
              "| format | step | kept in float | accuracy % | drop pp | size KiB | latency ms (median, 1 thread) |",
              "|---|---|---|---|---|---|---|"]
    for family, report in out["fallback"].items():
        for index, step in enumerate(report["steps"]):
            lines.append(f"| {family} | {index} | {', '.join(step['keep_float']) or 'none (full int8)'} | "
                         f"{step['accuracy'] * 100:.1f} | {step['drop_pp']:+.2f} | {step['size_bytes'] / 1024:.1f} | "
                         f"{step['latency_ms']:.3f} |")
        lines.append(f"| {family} | | Keras accuracy {report['keras_accuracy'] * 100:.1f} %, met: {report['met']}, "
                     f"search {report['seconds']} s | | | | |")
    lines += ["", "## Calibration audit", ""]
    for label, findings in out["audit"].items():
        lines.append(f"- {label}: " + "; ".join(findings))
    lines += ["", "## Edge TPU readiness", "",
              "See edgetpu_readiness.md (benchmarks/edgetpu_readiness.py): the six seed models as compiler-ready "
              "full-int8 batch-1 models, a dynamic-batch model and a LeakyReLU model."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
