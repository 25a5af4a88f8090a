"""`--fallback auto`: keep the layers int8 hurts most in float until the accuracy drop fits --max-drop.

The ranking comes from ``inspect`` (worst tensor first, with the layers that keep that tensor float: its
producer and its consumers). Step 0 is the fully quantized model; step k keeps the union of the first k
groups in float: TFLite through the QuantizationDebugger's calibrated model re-quantized with
``denylisted_nodes``, ONNX through ``quantize_onnx(..., nodes_to_exclude=...)``. Every step is
re-verified on held-out data, and its accuracy, size and measured latency are recorded. The search stops
at the first step within budget; if none is, the report is kept and AccuracyBudgetError raised.
"""
from __future__ import annotations

import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgecnn.errors import AccuracyBudgetError, UsageError
from edgecnn.fileio import write_bytes_atomic, write_json_atomic

LATENCY_RUNS = 30


@dataclass(frozen=True)
class FallbackStep:
    keep_float: tuple[str, ...]
    accuracy: float           # top-1 on the held-out data, 0..1
    drop_pp: float            # (keras - this) * 100
    size_bytes: int
    latency_ms: float         # median single-sample latency, 1 thread, this machine


@dataclass(frozen=True)
class FallbackReport:
    family: str
    max_drop: float
    keras_accuracy: float
    samples: int
    steps: tuple[FallbackStep, ...] = field(default=())

    @property
    def met(self) -> bool:
        return bool(self.steps) and self.steps[-1].drop_pp <= self.max_drop

    @property
    def kept_float(self) -> tuple[str, ...]:
        return self.steps[-1].keep_float if self.steps else ()

    def to_dict(self) -> dict[str, Any]:
        from edgecnn.manifest import _to_jsonable  # noqa: PLC0415

        return dict(_to_jsonable(self), met=self.met, kept_float=list(self.kept_float))

    def rows(self) -> list[tuple[str, ...]]:
        return [(str(i), ", ".join(s.keep_float) or "(none: full int8)", f"{s.accuracy * 100:.2f}",
                 f"{s.drop_pp:+.2f}", f"{s.size_bytes / 1024:.1f}", f"{s.latency_ms:.3f}")
                for i, s in enumerate(self.steps)]


HEADERS = ("step", "kept in float", "accuracy %", "drop pp", "size KiB", "latency ms")

Build = Callable[[tuple[str, ...], Path], None]          # write the model keeping these layers float
Measure = Callable[[Path], tuple[float, float]]         # -> (accuracy, median latency ms)


def search(build: Build, measure: Measure, groups: Sequence[Sequence[str]], max_drop: float, keras_accuracy: float,
           samples: int, family: str, work: Path, on_step: Optional[Callable[[FallbackStep], None]] = None
           ) -> tuple[FallbackReport, Path]:
    """Try full int8, then cumulatively more layers in float; return the report and the last model built."""
    steps: list[FallbackStep] = []
    last = work / "step-0"
    for index, keep in enumerate(cumulative(groups)):
        last = work / f"step-{index}"
        build(keep, last)
        accuracy, latency = measure(last)
        step = FallbackStep(keep, accuracy, round((keras_accuracy - accuracy) * 100.0, 4), last.stat().st_size, latency)
        steps.append(step)
        if on_step is not None:
            on_step(step)
        if step.drop_pp <= max_drop:
            break
    return FallbackReport(family, max_drop, keras_accuracy, samples, tuple(steps)), last


def cumulative(groups: Sequence[Sequence[str]]) -> list[tuple[str, ...]]:
    """(), then the union of the first 1, 2, ... groups, skipping groups that add nothing new."""
    sets, current = [()], []
    for group in groups:
        added = [name for name in group if name not in current]
        if added:
            current += added
            sets.append(tuple(current))
    return sets


def auto_fallback(loaded: Any, family: str, calib: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                  max_drop: float, out_path: Path, io: str = "int8", per_channel: bool = True,
                  calib_method: str = "minmax", inspect_samples: int = 100,
                  on_step: Optional[Callable[[FallbackStep], None]] = None, onnx: Any = None) -> FallbackReport:
    """The pipeline's one call: write the int8 artifact of ``family`` at ``out_path`` within ``max_drop``.

    ``onnx``: the onnx-int8 settings (edgecnn.converters.onnx_targets.OnnxInt8Settings; None: the default).
    Writes ``<out_path>.fallback.json`` (the report) in every case; raises AccuracyBudgetError (with the
    report as ``.report``) when even the last step misses the budget. ``val_x`` is float model input.
    """
    if family not in ("tflite", "onnx"):
        raise UsageError(f"--fallback auto does not apply to family '{family}'", "it applies to tflite-int8 and onnx-int8")
    if val_y is None:
        raise UsageError("--fallback auto needs labelled validation data", "pass --val with labels")
    keras_accuracy = float(np.mean(_top1(loaded.predict(val_x)) == val_y))
    with tempfile.TemporaryDirectory(prefix="edgecnn-fallback-") as tmp:
        work = Path(tmp)
        build, groups = _tflite_plan(loaded, calib, io, per_channel, inspect_samples) if family == "tflite" else \
            _onnx_plan(loaded, calib, calib_method, per_channel, inspect_samples, work, onnx)
        measure = _tflite_measure(val_x, val_y) if family == "tflite" else _onnx_measure(val_x, val_y)
        report, last = search(build, measure, groups, max_drop, keras_accuracy, len(val_x), family, work, on_step)
        write_bytes_atomic(Path(out_path), last.read_bytes())
    write_json_atomic(report_path(out_path), report.to_dict())
    if not report.met:
        error = AccuracyBudgetError(
            f"{family} int8 still loses {report.steps[-1].drop_pp:.2f} pp with {len(report.kept_float)} layer(s) in float, "
            f"more than --max-drop {max_drop:g}", f"report kept in {report_path(out_path)}")
        error.report = report
        raise error
    return report


def fallback_artifact(job: Any, verify_data: Any, max_drop: float) -> tuple[Any, FallbackReport]:
    """The convert pipeline's hook: rebuild ``job`` (an int8 BuildJob over budget) at ``job.out_path`` with the
    fewest harmful layers kept in float that meets ``max_drop``; return the BuiltArtifact and the report.

    A budget that cannot be met is not raised here: the last (most float) step is kept, and the pipeline's
    own --max-drop check fails after the manifest is written, as for any artifact over budget.
    """
    from edgecnn.converters.steps import BuiltArtifact, embed_metadata  # noqa: PLC0415

    family = job.fmt.family
    try:
        report = auto_fallback(job.model, family, job.calib_inputs, verify_data.inputs, verify_data.labels, max_drop,
                               Path(job.out_path), io=str(getattr(job.io, "value", job.io)), per_channel=job.per_channel,
                               calib_method=job.calib_method, onnx=job.onnx)
    except AccuracyBudgetError as exc:
        report = exc.report
    notes = embed_metadata(family, Path(job.out_path), job.metadata) if job.metadata else ()
    if family == "onnx":
        from edgecnn.converters.onnx_step import int8_notes  # noqa: PLC0415

        notes = int8_notes(Path(job.out_path), job) + notes
    inp, out = _io_specs(family, Path(job.out_path))
    kept = ", ".join(report.kept_float) or "none"
    summary = (f"--fallback auto: {len(report.steps) - 1} step(s), kept in float: {kept}; "
               f"{'within' if report.met else 'NOT within'} --max-drop {max_drop:g} "
               f"(report {report_path(job.out_path).name})")
    return BuiltArtifact(fmt=job.fmt, path=Path(job.out_path), input=inp, output=out, notes=(summary, *notes)), report


def _io_specs(family: str, path: Path) -> tuple[Any, Any]:
    if family == "tflite":
        from edgecnn.converters.tflite import tflite_io_specs  # noqa: PLC0415

        return tflite_io_specs(path)
    from edgecnn.converters.onnx_export import onnx_io_specs  # noqa: PLC0415

    return onnx_io_specs(path)


def report_path(out_path: Path) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + ".fallback.json")


# -- TFLite ----------------------------------------------------------------------------------------
def _tflite_plan(loaded: Any, calib: np.ndarray, io: str, per_channel: bool, samples: int) -> tuple[Build, list]:
    from edgecnn.converters.inspect import rank  # noqa: PLC0415
    from edgecnn.converters.inspect_tflite import _rows_from_debug_model, run_debugger  # noqa: PLC0415

    subset = np.ascontiguousarray(calib[:samples], dtype=np.float32)
    debugger, calibrated = run_debugger(loaded, np.ascontiguousarray(calib, dtype=np.float32), per_channel)
    groups = [row.keep_float for row in rank(_rows_from_debug_model(debugger, subset, calibrated.layers))]

    def build(keep: tuple[str, ...], path: Path) -> None:
        path.write_bytes(calibrated.quantize(keep, io_dtype=str(getattr(io, "value", io))))

    return build, groups


def _tflite_measure(val_x: np.ndarray, val_y: np.ndarray) -> Measure:
    def measure(path: Path) -> tuple[float, float]:
        from edgecnn.converters.inspect_tflite import encode_for  # noqa: PLC0415
        from edgecnn.converters.tflite import make_interpreter  # noqa: PLC0415

        from edgecnn.devices.base import RunnerOptions  # noqa: PLC0415
        from edgecnn.devices.runners import open_runner  # noqa: PLC0415

        # The runner handles static batch-1 models (edgecnn's TFLite export) by running sample by sample.
        with open_runner(path, "cpu", RunnerOptions(threads=1, probe=False)) as runner:
            interp = make_interpreter(path, threads=1)
            inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
            raw = runner.invoke(encode_for(val_x, inp))
        accuracy = float(np.mean(_top1(_decode(raw, out)) == val_y))
        single = make_interpreter(path, threads=1)
        sin = single.get_input_details()[0]
        one = encode_for(val_x[:1], sin)
        return accuracy, _median_ms(lambda: (single.set_tensor(sin["index"], one), single.invoke()))

    return measure


# -- ONNX ------------------------------------------------------------------------------------------
def _onnx_plan(loaded: Any, calib: np.ndarray, method: str, per_channel: bool, samples: int,
               work: Path, onnx: Any = None) -> tuple[Build, list]:
    from edgecnn.converters.inspect import keras_layer_names, rank  # noqa: PLC0415
    from edgecnn.converters.inspect_onnx import prepared_graph, qdq_rows  # noqa: PLC0415
    from edgecnn.converters.onnx_export import export_onnx  # noqa: PLC0415
    from edgecnn.converters.onnx_quant import quantize_onnx  # noqa: PLC0415
    from edgecnn.converters.onnx_targets import onnx_settings  # noqa: PLC0415

    settings = onnx if onnx is not None else onnx_settings()
    fp32 = work / "fp32.onnx"
    export_onnx(loaded.keras_model if loaded.keras_model is not None else loaded.path, fp32)
    graph = prepared_graph(fp32, keras_layer_names(loaded), work)
    full = work / "inspect-int8.onnx"
    quantize_onnx(fp32, calib, full, method=method, per_channel=per_channel, settings=settings)
    subset = np.ascontiguousarray(calib[:samples], dtype=np.float32)
    groups = [row.keep_float for row in rank(qdq_rows(fp32, full, subset, graph, work))]

    def build(keep: tuple[str, ...], path: Path) -> None:
        quantize_onnx(fp32, calib, path, method=method, per_channel=per_channel, nodes_to_exclude=graph.nodes_of(keep),
                      settings=settings)

    return build, groups


def _onnx_measure(val_x: np.ndarray, val_y: np.ndarray) -> Measure:
    def measure(path: Path) -> tuple[float, float]:
        import onnxruntime as ort  # noqa: PLC0415

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        accuracy = float(np.mean(_top1(session.run(None, {name: val_x})[0]) == val_y))
        one = val_x[:1]
        return accuracy, _median_ms(lambda: session.run(None, {name: one}))

    return measure


# -- helpers ---------------------------------------------------------------------------------------
def _median_ms(call: Callable[[], Any]) -> float:
    call()  # warm-up
    times = []
    for _ in range(LATENCY_RUNS):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def _top1(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores).reshape(len(scores), -1)
    return (scores[:, 0] > 0).astype(np.int64) if scores.shape[1] == 1 else scores.argmax(axis=1)


def _decode(raw: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero = detail["quantization"]
    if np.dtype(detail["dtype"]).kind == "f" or not scale:
        return raw.astype(np.float32)
    return (raw.astype(np.float32) - zero) * scale
