"""Which ONNX Runtime static-quantization settings onnx-int8 should use on x86: a sweep in one measured run.

Speed on MobileNetV2 (weights=None, 224x224; int8 / fp32 latency at 1 thread, interleaved rounds, plus the
calling thread's CPU time) and fidelity on the trained MNIST demo (the 1,000 held-out digits: top-1 agreement
with Keras, max |probability difference|), for each variant:

  u8s8          QDQ, uint8 activations, int8 per-channel weights, after quant_pre_process, head float (chosen)
  u8s8-int8head the same with the final Softmax and logits quantized too (--onnx-full-int8)
  (every other variant keeps the head float as u8s8 does)
  s8s8          int8 activations (before this change; the arm64 target)
  s8s8-int8ok   s8s8 run with the session option session.qdqisint8allowed=1
  u8s8-noprep   u8s8 without quant_pre_process
  u8s8-reduce   u8s8 with reduce_range (7-bit weights; the x86-avx2 target)
  u8s8-symact   u8s8 with ActivationSymmetric
  u8u8          uint8 weights too
  qop-s8s8      QOperator format, int8 activations

MobileNetV2's fp32 ONNX and calibration images come from benchmarks/onnx_int8.py's --dir (run that first).
Writes benchmarks/results/onnx_int8_settings.md and .json.

    .venv/bin/python benchmarks/onnx_int8_settings.py [--dir /tmp/edgecnn-onnx-int8] [--rounds 5]
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))
from onnx_int8 import machine_info, uptime  # noqa: E402

VARIANTS = ("u8s8", "u8s8-int8head", "s8s8", "s8s8-int8ok", "u8s8-noprep", "u8s8-reduce", "u8s8-symact", "u8u8",
            "qop-s8s8")
SESSION_INT8_OK = {"s8s8-int8ok": {"session.qdqisint8allowed": "1"}}


def quantize(variant: str, fp32: Path, calib: np.ndarray, out: Path, work: Path) -> Path:
    """Write ``variant`` of ``fp32`` to ``out``: the project's quantizer where it has the setting, else ORT's."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from edgecnn.converters.onnx_graph import float_head
    from edgecnn.converters.onnx_quant import quantize_onnx
    from edgecnn.converters.onnx_targets import onnx_settings

    project = {"u8s8": onnx_settings("x86"), "u8s8-int8head": onnx_settings("x86", full_int8=True),
               "s8s8": onnx_settings("arm64"), "s8s8-int8ok": onnx_settings("arm64"),
               "u8s8-reduce": onnx_settings("x86-avx2")}
    if variant in project:
        return quantize_onnx(fp32, calib, out, settings=project[variant])
    source = fp32
    if variant != "u8s8-noprep":
        source = work / "prepared.onnx"
        if not source.exists():
            quant_pre_process(str(fp32), str(source))
    name = _input_name(fp32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = iter([{name: calib[i:i + 8]} for i in range(0, len(calib), 8)])

        def get_next(self):
            return next(self.batches, None)

    act = QuantType.QInt8 if variant == "qop-s8s8" else QuantType.QUInt8
    weight = QuantType.QUInt8 if variant == "u8u8" else QuantType.QInt8
    fmt = QuantFormat.QOperator if variant == "qop-s8s8" else QuantFormat.QDQ
    extra: dict = {"ActivationSymmetric": True} if variant == "u8s8-symact" else {}
    head = float_head(source)  # the head stays float here too, so fidelity compares like with like
    if head.output_op_types:
        extra["OpTypesToExcludeOutputQuantization"] = list(head.output_op_types)
    quantize_static(str(source), str(out), Reader(), quant_format=fmt, per_channel=True, activation_type=act,
                    weight_type=weight, nodes_to_exclude=list(head.nodes), extra_options=extra)
    return out


def _input_name(path: Path) -> str:
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_inputs()[0].name


def session(path: Path, threads: int, config: dict[str, str]):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    for key, value in config.items():
        options.add_session_config_entry(key, value)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def median_ms(sess, feed: dict, budget_s: float) -> tuple[float, float]:
    for _ in range(3):
        sess.run(None, feed)
    start = time.perf_counter()
    sess.run(None, feed)
    runs = int(min(300, max(15, budget_s / max(time.perf_counter() - start, 1e-6))))
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.thread_time()
        sess.run(None, feed)
        cpu.append(time.thread_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def mnist_fidelity(work: Path) -> dict[str, dict[str, float]]:
    import keras

    from edgecnn.converters.onnx_export import export_onnx
    from edgecnn.converters.zoo import trained_mnist_cnn
    from edgecnn.data import mnist_sample

    model = keras.saving.load_model(trained_mnist_cnn(), safe_mode=True)
    val = mnist_sample("val")
    x = val.images.astype(np.float32) / 255.0
    expected = model.predict(x, verbose=0)
    calib = mnist_sample("train").images[:200].astype(np.float32) / 255.0
    fp32 = export_onnx(model, work / "mnist_fp32.onnx")
    rows = {}
    for variant in VARIANTS:
        path = quantize(variant, fp32, calib, work / f"mnist_{variant}.onnx", work / "mnist")
        got = session(path, 1, SESSION_INT8_OK.get(variant, {})).run(None, {_input_name(path): x})[0]
        rows[variant] = {"agreement": float((got.argmax(1) == expected.argmax(1)).mean()),
                         "accuracy": float((got.argmax(1) == val.labels).mean()),
                         "max_abs_diff": float(np.abs(got - expected).max())}
    rows["keras"] = {"accuracy": float((expected.argmax(1) == val.labels).mean())}
    return rows


def main(argv: list[str] | None = None) -> int:
    from edgecnn.converters.onnx_graph import fusion_report

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/edgecnn-onnx-int8"))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.3)
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args(argv)
    folder = args.dir / "mobilenet_v2"
    fp32 = next(folder.glob("*_fp32.onnx"))
    inputs = np.load(folder / "inputs.npy").astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="edgecnn-settings-") as tmp:
        work = Path(tmp)
        (work / "mnist").mkdir()
        fidelity = mnist_fidelity(work)
        models = {v: quantize(v, fp32, inputs, work / f"mb2_{v}.onnx", work) for v in VARIANTS}
        fusion = {v: fusion_report(p).summary() for v, p in models.items()}
        sessions = {"fp32": session(fp32, 1, {})}
        sessions.update({v: session(p, 1, SESSION_INT8_OK.get(v, {})) for v, p in models.items()})
        feed = {_input_name(fp32): inputs[:1]}
        before = uptime()
        wall = {k: [] for k in sessions}
        cpu = {k: [] for k in sessions}
        for _ in range(args.rounds):
            for key, sess in sessions.items():
                w, c = median_ms(sess, feed, args.budget)
                wall[key].append(w)
                cpu[key].append(c)
        after = uptime()
    ratio = {k: statistics.median(a / b for a, b in zip(wall[k], wall["fp32"])) for k in wall}
    cpu_ratio = {k: statistics.median(a / b for a, b in zip(cpu[k], cpu["fp32"])) for k in cpu}
    meta = {"command": "python benchmarks/onnx_int8_settings.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
            "machine": machine_info(), "load_before": before, "load_after": after, "rounds": args.rounds}
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "onnx_int8_settings.json").write_text(json.dumps(
        {"meta": meta, "wall_ms": wall, "cpu_ms": cpu, "ratio": ratio, "cpu_ratio": cpu_ratio, "fusion": fusion,
         "mnist_fidelity": fidelity}, indent=2) + "\n")
    lines = ["# ONNX Runtime int8 settings on x86: MobileNetV2 speed and MNIST fidelity, one run", "",
             f"Command: `{meta['command']}` — {meta['date']}", "",
             f"Machine: {meta['machine']['cpu']} ({meta['machine']['machine']}, {meta['machine']['cores']} cores, "
             f"VNNI {meta['machine']['vnni']}), onnxruntime {meta['machine']['onnxruntime']}; shared with other jobs.",
             f"Load before: `{before}`", f"Load after: `{after}`", "",
             f"MobileNetV2 (weights=None), 1 thread, {args.rounds} interleaved rounds; int8/fp32 per round, median. "
             "`CPU`: the same from the calling thread's CPU time. MNIST: the trained demo on the 1,000 held-out "
             f"digits (Keras top-1 {fidelity['keras']['accuracy'] * 100:.1f} %), 200 calibration digits.", "",
             "| variant | int8/fp32 | CPU | ms | ONNX Runtime fused (MobileNetV2) | MNIST agree | MNIST top-1 | "
             "max prob diff |", "|---|---:|---:|---:|---|---:|---:|---:|"]
    for v in VARIANTS:
        f = fidelity[v]
        lines.append(f"| {v} | **{ratio[v]:.2f}** | {cpu_ratio[v]:.2f} | {statistics.median(wall[v]):.2f} | {fusion[v]} | "
                     f"{f['agreement'] * 100:.1f} % | {f['accuracy'] * 100:.1f} % | {f['max_abs_diff']:.3f} |")
    lines.append(f"| fp32 | 1.00 | 1.00 | {statistics.median(wall['fp32']):.2f} | | | | |")
    (args.results / "onnx_int8_settings.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
