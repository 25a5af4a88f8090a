"""fp32 ONNX -> int8 QDQ ONNX with ONNX Runtime static quantization, calibrated on preprocessed samples.

QDQ keeps the graph's float32 input and output: QuantizeLinear/DequantizeLinear pairs sit around each
quantized operator, weights are int8 per output channel, activations uint8 or int8 (per target, see
edgecnn.converters.onnx_targets) with ranges from the chosen calibration method. The graph first goes
through ONNX Runtime's ``quant_pre_process`` (shape inference and fusions, as ONNX Runtime recommends:
without it MobileNetV2 keeps 17 BatchNorm Muls and its int8 model ran 1.8x slower in a trial here). The classifier head stays float unless the settings ask for full int8: the final
Softmax/Sigmoid goes to ``nodes_to_exclude`` and the logits' producer type (Gemm/MatMul) to
``OpTypesToExcludeOutputQuantization`` (every node of that type then keeps a float output: QGemm and
MatMulIntegerToFloat still fuse). ONNX Runtime's CPU provider fuses the pairs into integer kernels.
"""
from __future__ import annotations

import contextlib
import difflib
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np

from edgecnn.errors import ConversionError, DataError, OutputPathError, UnknownNameError, UsageError
from edgecnn.fileio import atomic_path
from edgecnn.registry import lookup

from .calibration_methods import CALIBRATION_METHODS, CalibrationMethod
from .onnx_export import onnx_io_specs
from .onnx_graph import FloatHead, float_head
from .onnx_targets import OnnxInt8Settings

# Calibration keeps every intermediate tensor of a batch in memory before reducing it to ranges or
# histograms, so batches are sized to hold about this many bytes of activations.
CALIB_BATCH_BYTES = 256 << 20
MAX_CALIB_BATCH = 64

Progress = Callable[[int, int], None]
# What ONNX Runtime's histogram calibrators print() per batch; dropped so the CLI's output stays a table.
ORT_CHATTER = ("Collecting tensor data", "Finding optimal threshold", "Number of tensors", "Number of histogram bins",
               "Number of quantized bins", "Percentile :")


def quantize_onnx(fp32_path: Path, calib_inputs: np.ndarray, out_path: Path,
                  method: CalibrationMethod | str = CalibrationMethod.MINMAX, per_channel: bool = True,
                  nodes_to_exclude: Sequence[str] = (), progress: Optional[Progress] = None,
                  settings: OnnxInt8Settings = OnnxInt8Settings()) -> Path:
    """Write the int8 QDQ model of ``fp32_path`` to ``out_path`` (atomically) and return ``out_path``.

    ``calib_inputs``: float model input, already preprocessed, shape (N, *input shape). ``progress`` is
    called as ``progress(samples_done, samples_total)`` while calibrating. ``nodes_to_exclude`` names
    nodes (as in the fp32 model) that stay float. ``settings``: activation/weight types and the float
    head, from ``onnx_targets.onnx_settings(target)`` (default: x86, U8S8, head in float).
    Raises DataError, UsageError/UnknownNameError, ConversionError, OutputPathError, ModelLoadError.
    """
    method = _as_method(method)
    in_spec, _ = onnx_io_specs(fp32_path)  # typed errors for a missing or unreadable model
    samples = _check_calibration(calib_inputs, in_spec.shape)
    with tempfile.TemporaryDirectory(prefix="edgecnn-ortq-") as work:
        prepared = Path(work) / "prepared.onnx"
        _pre_process(Path(fp32_path), prepared)
        excluded = _check_excluded(Path(fp32_path), prepared, nodes_to_exclude)
        head = float_head(prepared) if settings.float_head else FloatHead()
        batch = _batch_size(prepared, in_spec.shape)
        reader = _make_reader(in_spec.name, samples, batch, progress)
        try:
            with atomic_path(Path(out_path)) as tmp:
                _quantize(prepared, tmp, reader, method, per_channel, excluded, settings, head)
        except OSError as exc:
            raise OutputPathError(f"cannot write {out_path} ({exc.strerror or exc})", "choose a writable folder") from None
    return Path(out_path)


def node_names(path: Path) -> list[str]:
    """The node names of an ONNX model, for choosing ``nodes_to_exclude``."""
    import onnx  # noqa: PLC0415

    return [node.name for node in onnx.load(str(path), load_external_data=False).graph.node]


# -- checks ----------------------------------------------------------------------------------------
def _as_method(method: CalibrationMethod | str) -> CalibrationMethod:
    if isinstance(method, CalibrationMethod):
        return method
    return lookup(CALIBRATION_METHODS, str(method), "calibration method")


def _check_calibration(calib_inputs: Any, input_shape: tuple[int, ...]) -> np.ndarray:
    """The calibration samples as a float32 array of the model's input shape, or a DataError."""
    if not isinstance(calib_inputs, np.ndarray):
        raise DataError(f"calibration data is a {type(calib_inputs).__name__}, not a numpy array",
                        "pass preprocessed float32 samples as one array")
    if calib_inputs.ndim == 0 or calib_inputs.shape[0] == 0:
        raise DataError("calibration data holds no samples", "give at least one preprocessed sample")
    if calib_inputs.dtype.kind != "f":
        raise DataError(f"calibration data has dtype {calib_inputs.dtype}, not float",
                        "preprocess the images into float32 model input first")
    expected = tuple(input_shape[1:])
    got = tuple(calib_inputs.shape[1:])
    if len(got) != len(expected) or any(e > 0 and e != g for e, g in zip(expected, got)):
        shown = tuple("?" if e < 0 else e for e in expected)
        raise DataError(f"calibration samples have shape {got} but the model takes {shown}",
                        "preprocess them to the model's input size")
    samples = np.ascontiguousarray(calib_inputs, dtype=np.float32)
    if not np.all(np.isfinite(samples)):
        raise DataError("calibration data contains NaN or infinite values", "clean the data first")
    return samples


def _check_excluded(fp32: Path, prepared: Path, names: Sequence[str]) -> list[str]:
    """The pre-processed graph's names for the nodes to exclude, or a typed error saying why not.

    Pre-processing fuses some nodes (MatMul + Add becomes a Gemm named ``<MatMul name>/MatMulAddFusion``),
    so a name from the fp32 model maps to the fused nodes derived from it.
    """
    wanted = [names] if isinstance(names, str) else [str(name) for name in names]
    if not wanted:
        return []
    present = node_names(prepared)
    original = set(node_names(fp32))
    resolved: list[str] = []
    for name in wanted:
        derived = [node for node in present if node == name or node.startswith(name + "/")]
        if derived:
            resolved += derived
        elif name in original:
            raise UsageError(f"node '{name}' was fused into another during ONNX pre-processing",
                             "exclude the node it was fused into (often the MatMul before an Add)")
        else:
            close = difflib.get_close_matches(name, sorted(original), n=1, cutoff=0.5)
            hint = f"did you mean '{close[0]}'?" if close else "list the model's nodes with onnx_quant.node_names()"
            raise UnknownNameError(f"the ONNX model has no node '{name}' to exclude from quantization", hint)
    return resolved


# -- steps -----------------------------------------------------------------------------------------
def _pre_process(fp32: Path, prepared: Path) -> None:
    """Shape inference and graph optimisation that ONNX Runtime recommends before quantization."""
    from onnxruntime.quantization.shape_inference import quant_pre_process  # noqa: PLC0415

    try:
        quant_pre_process(str(fp32), str(prepared))
    except Exception as exc:  # noqa: BLE001 - onnx/onnxruntime raise many types
        raise ConversionError(f"ONNX pre-processing for quantization failed ({type(exc).__name__}: "
                              f"{_first_line(str(exc))})") from None


def _batch_size(prepared: Path, input_shape: tuple[int, ...]) -> int:
    """Samples per calibration batch: fixed by the model, else what fits CALIB_BATCH_BYTES of activations."""
    if input_shape and input_shape[0] > 0:
        return input_shape[0]
    per_sample = max(1, _activation_bytes_per_sample(prepared))
    return int(max(1, min(MAX_CALIB_BATCH, CALIB_BATCH_BYTES // per_sample)))


def _activation_bytes_per_sample(prepared: Path) -> int:
    """Bytes of every intermediate tensor for one sample, from the shapes inference recorded."""
    import onnx  # noqa: PLC0415

    graph = onnx.load(str(prepared), load_external_data=False).graph
    total = 0
    for value in list(graph.value_info) + list(graph.output):
        dims = value.type.tensor_type.shape.dim
        total += 4 * int(np.prod([d.dim_value if d.HasField("dim_value") else 1 for d in dims], dtype=np.int64))
    return total


def _make_reader(input_name: str, samples: np.ndarray, batch: int, progress: Optional[Progress]) -> Any:
    from onnxruntime.quantization import CalibrationDataReader  # noqa: PLC0415

    class BatchReader(CalibrationDataReader):
        """Batches of ``samples``; ``set_range`` (in batches) lets ONNX Runtime reduce batch by batch."""

        def __init__(self) -> None:
            self.count = -(-len(samples) // batch)
            self.next_index, self.end = 0, self.count
            self.done = 0

        def __len__(self) -> int:
            return self.count

        def set_range(self, start_index: int, end_index: int) -> None:
            self.next_index, self.end = start_index, min(end_index, self.count)

        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            if self.next_index >= self.end:
                return None
            chunk = samples[self.next_index * batch:(self.next_index + 1) * batch]
            self.next_index += 1
            self.done += len(chunk)
            if progress is not None:
                progress(self.done, len(samples))
            return {input_name: chunk}

    return BatchReader()


def _quantize(prepared: Path, out: Path, reader: Any, method: CalibrationMethod, per_channel: bool,
              excluded: list[str], settings: OnnxInt8Settings, head: FloatHead) -> None:
    from onnxruntime.quantization import CalibrationMethod as OrtMethod  # noqa: PLC0415
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static  # noqa: PLC0415

    ort_method = {CalibrationMethod.MINMAX: OrtMethod.MinMax, CalibrationMethod.ENTROPY: OrtMethod.Entropy,
                  CalibrationMethod.PERCENTILE: OrtMethod.Percentile}[method]
    types = {"uint8": QuantType.QUInt8, "int8": QuantType.QInt8}
    # A stride of one batch makes the calibrator reduce each batch to ranges/histograms and drop its
    # activations before the next, so memory stays at one batch whatever the sample count.
    extra: dict[str, Any] = {"CalibStridedMinMax": 1}
    if head.output_op_types:
        extra["OpTypesToExcludeOutputQuantization"] = list(head.output_op_types)
    excluded = list(dict.fromkeys([*excluded, *head.nodes]))
    fmt = {"QDQ": QuantFormat.QDQ, "QOperator": QuantFormat.QOperator}[settings.quant_format]
    try:
        with _quiet_ort_prints():
            quantize_static(str(prepared), str(out), reader, quant_format=fmt, per_channel=per_channel,
                            reduce_range=settings.reduce_range, activation_type=types[settings.activations],
                            weight_type=types[settings.weights], nodes_to_exclude=excluded or None,
                            calibrate_method=ort_method, extra_options=extra)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises many types
        raise ConversionError(f"ONNX Runtime static quantization ({method.value}) failed "
                              f"({type(exc).__name__}: {_first_line(str(exc))})") from None
    if not out.is_file():
        raise ConversionError("ONNX Runtime quantization wrote no model")


class _ChatterFilter:
    """A stdout stand-in that forwards whole lines except ONNX Runtime's calibration chatter."""

    def __init__(self, stream: Any) -> None:
        self._stream, self._pending = stream, ""

    def write(self, text: str) -> int:
        self._pending += text
        *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if not line.startswith(ORT_CHATTER):
                self._stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        if self._pending and not self._pending.startswith(ORT_CHATTER):
            self._stream.write(self._pending)
        self._pending = ""
        self._stream.flush()

    def __getattr__(self, name: str) -> Any:  # isatty, encoding, rich's proxied file...
        return getattr(self._stream, name)


@contextlib.contextmanager
def _quiet_ort_prints() -> Iterator[None]:
    chatter = _ChatterFilter(sys.stdout)
    with contextlib.redirect_stdout(chatter):
        try:
            yield
        finally:
            chatter.flush()


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0][:300] if stripped else "no message"
