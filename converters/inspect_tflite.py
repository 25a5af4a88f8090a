"""TFLite per-layer int8 error through ``tf.lite.experimental.QuantizationDebugger``, and int8 models with
chosen layers kept in float (the debugger's ``denylisted_nodes``), for ``inspect`` and ``--fallback auto``.

The debugger builds a calibrated model and a debug model in which every quantized op has a NUMERIC_VERIFY
twin comparing its int8 output with the float op fed the same input. Its ``run()`` gives the default
statistics (mean squared error, scale); the per-channel statistics need the float and int8 tensors
themselves, which are read from the debug model run with all tensors preserved (the debugger's own
converter path does not preserve them, so intermediate buffers are reused and read back as garbage).
"""
from __future__ import annotations

import contextlib
import io
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edgecnn.converters.steps import export_savedmodel
from edgecnn.converters.tflite import tflite_signature
from edgecnn.converters.inspect import InspectOptions, LayerError, keras_layer_names, layer_of, tensor_metrics

_NUMERIC_VERIFY = "NumericVerify"  # a custom op: its name as the interpreter reports it


@dataclass(frozen=True)
class Calibrated:
    """A model calibrated once: quantize it again with any layers in float without re-running calibration."""

    model: bytes            # the calibrated float model (ranges recorded, nothing quantized yet)
    layers: tuple[str, ...]  # Keras layer names, to map tensor names to layers
    per_channel: bool = True

    def quantize(self, keep_float: Sequence[str] = (), io_dtype: str = "int8") -> bytes:
        """The full-integer model with the ops of ``keep_float`` layers left in float (denylisted nodes)."""
        import tensorflow as tf  # noqa: PLC0415
        from tensorflow.lite.python import convert  # noqa: PLC0415 - what the debugger's get_*_model calls

        nodes = denylist_for(self.model, keep_float, self.layers)
        dtype = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32, "float": tf.float32}[io_dtype]
        with _quiet():
            return bytes(convert.mlir_quantize(self.model, disable_per_channel=not self.per_channel,
                                               fully_quantize=True, input_data_type=dtype, output_data_type=dtype,
                                               denylisted_nodes=nodes or None))


def tflite_layer_errors(loaded: Any, samples: np.ndarray, options: InspectOptions) -> tuple[list[LayerError], list[str]]:
    """One LayerError per quantized op output, plus notes."""
    debugger, calibrated = run_debugger(loaded, samples, options.per_channel)
    rows = _rows_from_debug_model(debugger, samples, calibrated.layers)
    return rows, [f"QuantizationDebugger on {len(samples)} calibration samples, per-layer (NumericVerify)"]


def calibrate(loaded: Any, samples: np.ndarray, per_channel: bool = True) -> Calibrated:
    return run_debugger(loaded, samples, per_channel)[1]


def run_debugger(loaded: Any, samples: np.ndarray, per_channel: bool = True) -> tuple[Any, Calibrated]:
    import tensorflow as tf  # noqa: PLC0415

    def dataset():
        for i in range(len(samples)):
            yield [samples[i:i + 1]]

    with tempfile.TemporaryDirectory(prefix="edgecnn-inspect-") as work:
        saved = _savedmodel(loaded, Path(work))
        converter = tf.lite.TFLiteConverter.from_saved_model(str(saved), signature_keys=[tflite_signature(saved)])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = dataset
        if not per_channel:
            converter._experimental_disable_per_channel = True  # noqa: SLF001 - the converter's only switch
        with _quiet():
            debugger = tf.lite.experimental.QuantizationDebugger(converter=converter, debug_dataset=dataset)
            debugger.run()
    return debugger, Calibrated(bytes(debugger.calibrated_model), keras_layer_names(loaded), per_channel)


def _rows_from_debug_model(debugger: Any, samples: np.ndarray, known: Sequence[str]) -> list[LayerError]:
    import tensorflow as tf  # noqa: PLC0415

    with _quiet():
        interp = tf.lite.Interpreter(model_content=debugger.quant_model, experimental_preserve_all_tensors=True)
    ops = interp._get_ops_details()  # noqa: SLF001 - the op graph; the debugger itself reads it this way
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    verify = [op for op in ops if op["op_name"] == _NUMERIC_VERIFY]
    floats: dict[int, list] = {op["inputs"][0]: [] for op in verify}
    quants: dict[int, list] = {op["inputs"][0]: [] for op in verify}
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    for i in range(len(samples)):
        interp.set_tensor(inp["index"], encode_for(samples[i:i + 1], inp))
        interp.invoke()
        for op in verify:
            q_idx, f_idx = op["inputs"][:2]
            quants[q_idx].append(np.array(interp.get_tensor(q_idx)))
            floats[q_idx].append(np.array(interp.get_tensor(f_idx)))
    stats = debugger.layer_statistics or {}
    graph = _Graph(ops, tensors, known)
    rows = []
    for op in verify:
        q_idx = op["inputs"][0]
        scale, zero = _quant_params(tensors[q_idx])
        dq = (np.concatenate(quants[q_idx]).astype(np.float64) - zero) * scale
        metrics = tensor_metrics(np.concatenate(floats[q_idx]), dq, scale, channel_axis=-1)
        metrics["rmse_scale"] = _debugger_rmse_scale(stats, tensors[op["outputs"][0]]["name"], scale, metrics)
        rows.append(LayerError(tensor=tensors[q_idx]["name"], layer=graph.layer(q_idx), op=graph.producer_op(q_idx),
                               scale=float(scale), keep_float=graph.keep_float(q_idx), **metrics))
    return rows


class _Graph:
    """Producer/consumer lookups over the debug model's ops, mapped to Keras layer names."""

    def __init__(self, ops: list[dict], tensors: dict[int, dict], known: Sequence[str]) -> None:
        self.ops, self.tensors, self.known = ops, tensors, known
        self.producer = {t: op for op in ops for t in op["outputs"]}

    def producer_op(self, idx: int) -> str:
        op = self.producer.get(idx)
        return op["op_name"] if op else "input"

    def layer(self, idx: int, depth: int = 0) -> str:
        name = self.tensors[idx]["name"]
        found = layer_of(name, self.known)
        if found in self.known or not self.known or depth > 4:
            return found
        op = self.producer.get(idx)  # an output tensor ("StatefulPartitionedCall:0"): the layer it came from
        data_inputs = [i for i in (op or {}).get("inputs", []) if i >= 0 and i in self.tensors]
        return self.layer(data_inputs[0], depth + 1) if data_inputs else found

    def keep_float(self, idx: int) -> tuple[str, ...]:
        layers = [self.layer(idx)]
        for op in self.ops:
            if idx in op["inputs"] and op["op_name"] not in (_NUMERIC_VERIFY, "DEQUANTIZE"):
                layers += [self.layer(out) for out in op["outputs"]]
        return tuple(dict.fromkeys(layers))


def denylist_for(calibrated: bytes, keep_float: Sequence[str], known: Sequence[str]) -> list[str]:
    """Output tensor names of the calibrated model's ops that belong to the ``keep_float`` layers."""
    if not keep_float:
        return []
    import tensorflow as tf  # noqa: PLC0415

    with _quiet():
        interp = tf.lite.Interpreter(model_content=calibrated)
    graph = _Graph(interp._get_ops_details(), {t["index"]: t for t in interp.get_tensor_details()}, known)  # noqa: SLF001
    wanted = set(keep_float)
    return [graph.tensors[t]["name"] for op in graph.ops for t in op["outputs"] if graph.layer(t) in wanted]


def _debugger_rmse_scale(stats: dict, verify_name: str, scale: float, metrics: dict) -> float:
    entry = stats.get(verify_name)
    if entry and scale > 0 and "mean_squared_error" in entry:
        return float(np.sqrt(entry["mean_squared_error"]) / scale)
    return metrics["rmse_scale"]


def _quant_params(detail: dict) -> tuple[float, int]:
    params = detail.get("quantization_parameters") or {}
    scales, zeros = params.get("scales", []), params.get("zero_points", [])
    if len(scales):
        return float(scales[0]), int(zeros[0])
    scale, zero = detail.get("quantization", (0.0, 0))
    return float(scale), int(zero)


def encode_for(x: np.ndarray, detail: dict) -> np.ndarray:
    """Float model input -> an interpreter input tensor, with the shared quantizer (edgecnn.preprocess)."""
    from edgecnn.manifest import TensorSpec  # noqa: PLC0415
    from edgecnn.preprocess import encode_float  # noqa: PLC0415

    scale, zero = detail["quantization"]
    dtype = np.dtype(detail["dtype"]).name
    return encode_float(x, TensorSpec(name=str(detail.get("name", "input")), shape=(), dtype=dtype,
                                      scale=float(scale) if dtype != "float32" else 0.0, zero_point=int(zero)))


def _savedmodel(loaded: Any, work: Path) -> Path:
    target = work / "savedmodel"
    export_savedmodel(loaded, target)  # the pipeline's export: inference mode, frozen weights, static batch for TFLite
    return target


@contextlib.contextmanager
def _quiet():
    """The TFLite quantizer prints from C++ ("fully_quantize: 0, ..."): park file descriptors 1 and 2 on
    /dev/null meanwhile, so ``inspect --json`` prints only JSON. Failures still arrive as exceptions."""
    import os  # noqa: PLC0415
    import sys  # noqa: PLC0415
    import warnings  # noqa: PLC0415

    sys.stdout.flush()
    sys.stderr.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        for fd in saved:
            os.dup2(devnull, fd)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for fd, copy in saved.items():
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)
