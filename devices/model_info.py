"""What a model file is, read from the file itself: its input and outputs, whether it is a classifier, what its
output means, and its precision. For files without a manifest (TFLiteConverter output, a model zoo's detector, a
PyTorch-exported ONNX model), so `run` and `bench` neither ask for what the file says nor misread what it is.

Pure reading: the loaded runner's tensor specs, the .tflite graph through devices/flatbuf.py and the .onnx graph
through devices/onnxgraph.py (protobuf against a minimal schema); no TensorFlow, no ``onnx`` package.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np

from edgecnn.manifest import Manifest, OutputKind, Preprocessing, TensorSpec
from edgecnn.prepchoice import PrepChoice

SUPPORTED = "edgecnn runs image classifiers with one output of shape (1, classes) or squeezable to it"
# Ops that pass a value through unchanged in meaning: the op before them decides what the output is.
_TFLITE_PASS = {"DEQUANTIZE", "QUANTIZE", "RESHAPE", "SQUEEZE", "CAST"}
_TFLITE_LOGITS = {"FULLY_CONNECTED", "ADD", "CONV_2D", "MEAN", "BATCH_MATMUL", "SUB", "MUL"}
_ONNX_PASS = {"Identity", "Reshape", "Flatten", "Squeeze", "Cast", "DequantizeLinear", "QuantizeLinear"}
_ONNX_LOGITS = {"Gemm", "MatMul", "Add", "Conv", "ReduceMean", "GlobalAveragePool", "QLinearMatMul", "MatMulInteger"}
# ONNX TensorProto.DataType numbers
_ONNX_TYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 10: "float16", 11: "float64"}


class ModelIO(NamedTuple):
    """A loaded model's interface as its file states it."""

    name: str
    input: TensorSpec
    outputs: tuple[TensorSpec, ...]
    precision: str = "unknown"  # fp32 | fp16 | dynamic | int8 | uint8 | int16x8 | unknown
    final_op: str = ""  # the op that computes output 0 (through reshapes / dequantizes); "" when not read
    kind: Optional[OutputKind] = None  # what output 0 means, from final_op; None when the op does not say

    def outputs_text(self) -> str:
        return ", ".join(str(tuple(o.shape)) for o in self.outputs)

    def not_classifier(self) -> str:
        """Why this model is not a single-output image classifier, or "" when it is one (or may be)."""
        head = f"{self.name} is not a single-output image classifier"
        if len(self.outputs) != 1:
            return f"{head}: it has {len(self.outputs)} outputs {self.outputs_text()}"
        wide = [d for d in self.outputs[0].shape[1:] if d > 1]
        if len(wide) > 1:
            return f"{head}: its output {tuple(self.outputs[0].shape)} has spatial dimensions (a mask, a map or boxes)"
        return ""


def read_model_io(runner: Any, data: Optional[bytes] = None) -> ModelIO:
    """The ModelIO of a loaded runner; ``data``: the file's bytes when at hand (else read from its path)."""
    path = Path(runner.model_path)
    outputs = tuple(getattr(runner, "outputs", ()) or (runner.output,))
    if data is None:
        try:
            data = path.read_bytes()
        except OSError:
            data = b""
    precision, final_op = "unknown", ""
    try:
        if data[4:8] == b"TFL3":
            precision, final_op = _tflite_facts(data)
        elif data:
            precision, final_op = _onnx_facts(data, path.name)
    except Exception:  # noqa: BLE001 - an unreadable detail leaves the fact unknown; the model still runs
        pass
    units = int(np.prod([d for d in outputs[0].shape[1:] if d > 0])) if outputs[0].shape else 0
    return ModelIO(path.name, runner.input, outputs, precision, final_op, kind_of_op(final_op, units))


def kind_of_op(op: str, units: int) -> Optional[OutputKind]:
    """The output kind a final op means (Softmax: probabilities; Sigmoid: binary or multi-label; a linear op:
    logits); None for any other op."""
    name = op.upper()
    if name == "SOFTMAX":
        return OutputKind.PROBABILITIES
    if name in ("LOGISTIC", "SIGMOID"):
        return OutputKind.BINARY_SIGMOID if units == 1 else OutputKind.MULTILABEL_SIGMOID
    if name in {o.upper() for o in _TFLITE_LOGITS | _ONNX_LOGITS}:
        return OutputKind.LOGITS
    return None


def kind_from_values(scores: np.ndarray) -> OutputKind:
    """The output kind from outputs on probe inputs (N, units), when the graph does not say: rows of values in
    [0, 1] that sum to 1 are probabilities, values in [0, 1] otherwise sigmoid scores, anything else logits."""
    values = np.asarray(scores, dtype=np.float64).reshape(len(scores), -1)
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        return OutputKind.LOGITS
    if values.shape[1] > 1 and np.allclose(values.sum(axis=1), 1.0, atol=1e-3):
        return OutputKind.PROBABILITIES
    return OutputKind.BINARY_SIGMOID if values.shape[1] == 1 else OutputKind.MULTILABEL_SIGMOID


# -- TFLite ----------------------------------------------------------------------------------------------
def _tflite_facts(data: bytes) -> tuple[str, str]:
    from edgecnn.devices.flatbuf import read_graph  # noqa: PLC0415

    graph = read_graph(data)
    return _tflite_precision(graph), _tflite_final_op(graph)


def _tflite_final_op(graph: Any) -> str:
    producers = graph.producers()
    tensor = graph.outputs[0] if graph.outputs else -1
    for _ in range(len(graph.operators)):
        index = producers.get(tensor)
        if index is None:
            return ""
        op = graph.operators[index]
        name = op.custom if op.name == "CUSTOM" else op.name
        if name not in _TFLITE_PASS:
            return name
        tensor = op.inputs[0] if op.inputs else -1
    return ""


def _tflite_precision(graph: Any) -> str:
    """From the tensors: quantized activations (int16: int16x8, int8, uint8), else float16 weights (fp16),
    int8 weights with float activations (dynamic), else fp32."""
    io = set(graph.inputs) | set(graph.outputs)
    inner = [graph.tensors[i] for i in graph.activations() - io if 0 <= i < len(graph.tensors)]
    quantized = {t.dtype for t in inner if t.scale and t.dtype in ("int8", "uint8", "int16")}
    if "int16" in quantized:
        return "int16x8"
    if "int8" in quantized:
        return "int8"
    if "uint8" in quantized:
        return "uint8"
    constants = [t for t in graph.tensors if t.index not in graph.activations() and t.buffer]
    if any(t.dtype == "float16" for t in constants):
        return "fp16"
    if any(t.dtype == "int8" and t.scale for t in constants):
        return "dynamic"
    return "fp32"


# -- ONNX ------------------------------------------------------------------------------------------------
def _onnx_facts(data: bytes, name: str) -> tuple[str, str]:
    from edgecnn.devices.onnxgraph import parse_model  # noqa: PLC0415

    graph = parse_model(data, name).graph
    return _onnx_precision(graph), _onnx_final_op(graph)


def _onnx_final_op(graph: Any) -> str:
    producers = {out: node for node in graph.node for out in node.output}
    value = graph.output[0].name if graph.output else ""
    for _ in range(len(graph.node)):
        node = producers.get(value)
        if node is None:
            return ""
        if node.op_type not in _ONNX_PASS:
            return node.op_type
        value = node.input[0] if node.input else ""
    return ""


def _onnx_precision(graph: Any) -> str:
    """From the nodes and initializers: dynamic quantization, QDQ / QLinear with int8, uint8 or int16 zero
    points, float16 weights, else fp32."""
    ops = {node.op_type for node in graph.node}
    if "DynamicQuantizeLinear" in ops:
        return "dynamic"
    types = {init.name: _ONNX_TYPES.get(init.data_type, "") for init in graph.initializer}
    if ops & {"QuantizeLinear", "QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}:
        points = {types.get(node.input[2], "") for node in graph.node
                  if node.op_type == "QuantizeLinear" and len(node.input) > 2}
        if "int16" in points:
            return "int16x8"
        return "uint8" if points == {"uint8"} else "int8"
    weights = [t for t in types.values() if t in ("float32", "float16")]
    if weights and weights.count("float16") > len(weights) / 2:
        return "fp16"
    return "fp32"


# -- preprocessing, labels and output kind of a loaded model ---------------------------------------------
class ModelSetup(NamedTuple):
    """How a loaded model is fed and read: from its manifest, or from the file + the options given + guesses."""

    prep: Preprocessing
    labels: tuple[str, ...]
    kind: OutputKind
    info: Optional[ModelIO] = None  # read from the file (only for a model without a manifest)
    guessed: tuple[str, ...] = ()  # preprocessing values assumed: neither given nor read from the file
    notices: tuple[str, ...] = ()  # one line each: what was guessed or read from the file
    problem: str = ""  # why the model is not a single-output classifier ("" when it is)


def resolve_setup(runner: Any, manifest: Optional[Manifest], prep: Union[Preprocessing, PrepChoice, None] = None,
                  labels: Union[Sequence[str], Path, str, None] = None, output_kind: Optional[OutputKind] = None,
                  data: Optional[bytes] = None) -> ModelSetup:
    """Preprocessing, labels and output kind for ``runner``: the manifest's (options given override it), else
    read from the file, completed by the options given and, for the rest, assumed (``guessed``, with a notice).

    A model that is not a single-output classifier gets its preprocessing (it can still be timed) and
    ``problem``; it is the caller's to refuse it. Raises UsageError for an ambiguous layout or a dynamic size
    without --size, ManifestError for options that contradict the file."""
    from edgecnn.devices.classify import read_labels  # noqa: PLC0415 - classify imports this module

    given_labels = _given_labels(labels, read_labels)
    if manifest is not None:
        chosen = prep if isinstance(prep, Preprocessing) else (
            prep.over(manifest.preprocessing) if isinstance(prep, PrepChoice) and prep.given() else manifest.preprocessing)
        kind = OutputKind(output_kind or manifest.output_kind)
        return ModelSetup(chosen, given_labels or tuple(manifest.labels), kind)
    info = read_model_io(runner, data)
    name = info.name
    if isinstance(prep, Preprocessing):
        chosen, guessed = prep, ()
    else:
        chosen, guessed = (prep or PrepChoice()).resolve(tuple(runner.input.shape[1:]), name)
    notices = []
    if guessed:
        notices.append(f"{name} has no manifest: preprocessing assumed ({', '.join(guessed)}); give --color "
                       "--scale --mean --std --resize as the model was trained, or its accuracy may be wrong")
    problem = info.not_classifier()
    if problem:
        return ModelSetup(chosen, given_labels, output_kind or OutputKind.PROBABILITIES, info, guessed,
                          tuple(notices), problem)
    kind = output_kind
    if kind is None and info.kind is not None:
        kind = info.kind
        notices.append(f"output kind {kind.value}, read from the final op {info.final_op}")
    if kind is None:
        kind = kind_from_values(_probe_outputs(runner, chosen))
        notices.append(f"output kind {kind.value}, judged from the outputs on probe inputs (the final op "
                       f"{info.final_op or '?'} does not say); give --output-kind if it is not")
    units = int(np.prod([d for d in runner.output.shape[1:] if d > 0])) if runner.output.shape else 0
    from edgecnn.preprocess import class_count  # noqa: PLC0415

    names = given_labels or tuple(str(i) for i in range(class_count(kind, units) if units else 0))
    return ModelSetup(chosen, names, kind, info, guessed, tuple(notices))


def _given_labels(labels: Union[Sequence[str], Path, str, None], read_labels: Any) -> tuple[str, ...]:
    if isinstance(labels, (str, Path)):
        return read_labels(Path(labels))
    return tuple(str(label) for label in labels) if labels is not None else ()


def _probe_outputs(runner: Any, prep: Preprocessing) -> np.ndarray:
    """Dequantized outputs (N, units) on a few seeded random images, for judging the output kind."""
    from edgecnn.preprocess import InputEncoder, dequantize  # noqa: PLC0415

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(4, prep.height, prep.width, prep.channels), dtype=np.uint8)
    raw = runner.invoke(InputEncoder.build(prep, runner.input)(pixels))
    return dequantize(np.asarray(raw), runner.output).reshape(len(pixels), -1)
