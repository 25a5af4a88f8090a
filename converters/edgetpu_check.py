"""Will the Edge TPU run this .tflite? A static check against Coral's documented model requirements.

Requirements (coral.ai/docs/edgetpu/models-intro, "Model requirements" and "Supported operations"):
tensor parameters quantized to 8 bits; tensor sizes constant at compile time (no dynamic sizes); model
parameters (bias etc.) constant; tensors of 1, 2 or 3 dimensions, or more only if just the 3 innermost
are larger than 1; only the operations of the supported-operations table, with their limitations.

The predicted partition follows the compiler's documented behaviour: it maps operations in order into one
Edge TPU subgraph; operations before the first supported one (a float input's QUANTIZE, typically) stay
on the CPU in front of it; at the first unsupported operation after it the subgraph ends, and that
operation and every one after it run on the CPU ("More than one subgraph is not supported").
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecnn.errors import InputPathError, ModelLoadError

# The supported-operations table, as TFLite builtin op names, with the limitation checked here (if any).
SUPPORTED_OPS: dict[str, str] = {
    "ADD": "", "AVERAGE_POOL_2D": "no fused activation function",
    "CONCATENATION": "no fused activation function", "CONV_2D": "", "DEPTHWISE_CONV_2D": "",
    "EXPAND_DIMS": "", "FULLY_CONNECTED": "output tensor is one-dimensional", "L2_NORMALIZATION": "",
    "LOGISTIC": "", "UNIDIRECTIONAL_SEQUENCE_LSTM": "unidirectional LSTM only", "MAXIMUM": "",
    "MAX_POOL_2D": "no fused activation function", "MEAN": "no reduction in the batch dimension", "MINIMUM": "",
    "MUL": "", "PACK": "no packing in the batch dimension", "PAD": "no padding in the batch dimension",
    "PRELU": "alpha is 1-dimensional", "QUANTIZE": "", "REDUCE_MAX": "not on the batch dimension",
    "REDUCE_MIN": "not on the batch dimension", "RELU": "", "RELU6": "", "RELU_N1_TO_1": "", "RESHAPE": "",
    "RESIZE_BILINEAR": "3-dimensional input/output", "RESIZE_NEAREST_NEIGHBOR": "3-dimensional input/output",
    "RSQRT": "", "SLICE": "", "SOFTMAX": "1-D input of at most 16,000 elements", "SPACE_TO_DEPTH": "",
    "SPLIT": "no splitting in the batch dimension", "SQUEEZE": "", "STRIDED_SLICE": "all strides equal to 1",
    "SUB": "", "SUM": "not on the batch dimension", "SQUARED_DIFFERENCE": "", "TANH": "", "TRANSPOSE": "",
    "TRANSPOSE_CONV": "",
}
NO_FUSED_ACTIVATION = ("AVERAGE_POOL_2D", "MAX_POOL_2D", "CONCATENATION")
SOFTMAX_MAX_ELEMENTS = 16000
EIGHT_BIT = ("int8", "uint8")
MAPPED = "Mapped to Edge TPU"
AFTER_SPLIT = "More than one subgraph is not supported"
COMPILER_HELP = ("install the Edge TPU compiler on x86-64 Debian/Ubuntu from Coral's apt repository "
                 "(https://coral.ai/docs/edgetpu/compiler/: apt-get install edgetpu-compiler), or run it in a Colab notebook")


@dataclass(frozen=True)
class OpVerdict:
    index: int
    op: str
    layer: str
    supported: bool           # the op itself meets the documented requirements
    reason: str               # why not (empty when supported)
    on_edgetpu: bool = False  # where the predicted partition puts it
    status: str = ""          # the compiler log's wording for this op's fate


@dataclass(frozen=True)
class EdgeTpuReport:
    model: str
    ops: tuple[OpVerdict, ...]
    problems: tuple[str, ...] = ()      # model-level (not quantized, float input/output, ...)
    source: str = "prediction"          # "prediction" | "edgetpu_compiler <version>"
    notes: tuple[str, ...] = field(default=())

    @property
    def mapped(self) -> int:
        return sum(1 for op in self.ops if op.on_edgetpu)

    @property
    def on_cpu(self) -> int:
        return len(self.ops) - self.mapped

    @property
    def first_unsupported(self) -> Optional[OpVerdict]:
        return next((op for op in self.ops if not op.supported), None)

    @property
    def fully_mapped(self) -> bool:
        return bool(self.ops) and self.on_cpu == 0

    def summary(self) -> list[tuple[str, int, str]]:
        """(operator, count, status) rows, as the compiler's log table groups them."""
        counts = Counter((op.op, op.status) for op in self.ops)
        return [(name, count, status) for (name, status), count in counts.items()]

    def to_dict(self) -> dict[str, Any]:
        from edgecnn.manifest import _to_jsonable  # noqa: PLC0415

        first = self.first_unsupported
        return dict(_to_jsonable(self), mapped=self.mapped, on_cpu=self.on_cpu, fully_mapped=self.fully_mapped,
                    first_unsupported=None if first is None else _to_jsonable(first))


def check_edgetpu(path: str | Path) -> EdgeTpuReport:
    """The static readiness check of a .tflite file (ops and tensors read with the LiteRT interpreter)."""
    path = Path(path)
    if not path.is_file():
        raise InputPathError(f"model {path} does not exist", "give a full-int8 .tflite file")
    ops, tensors, inputs = _read_graph(path)
    fused = _fused_activations(path)
    # Activations are the tensors an op produces and the model's inputs; the rest are constant buffers
    # (weights, int32 biases, shape operands), which the requirements do not restrict to 8 bits.
    live = {i for op in ops for i in op["outputs"]} | set(inputs)
    verdicts = [_judge(i, op, tensors, live, fused.get(i, "NONE")) for i, op in enumerate(ops)]
    return EdgeTpuReport(model=str(path), ops=tuple(partition(verdicts)), problems=tuple(_model_problems(ops, tensors, inputs)))


def partition(verdicts: list[OpVerdict]) -> list[OpVerdict]:
    """Place each op: leading unsupported ops on the CPU, then one Edge TPU run up to the first unsupported op."""
    from dataclasses import replace  # noqa: PLC0415

    placed, started, ended = [], False, False
    for verdict in verdicts:
        if verdict.supported and not ended:
            started = True
            placed.append(replace(verdict, on_edgetpu=True, status=MAPPED))
        elif not verdict.supported:
            ended = ended or started
            placed.append(replace(verdict, on_edgetpu=False, status=verdict.reason))
        else:
            placed.append(replace(verdict, on_edgetpu=False, status=AFTER_SPLIT))
    return placed


def _read_graph(path: Path) -> tuple[list[dict], dict[int, dict], list[int]]:
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
    except ImportError:
        import tensorflow as tf  # noqa: PLC0415

        Interpreter = tf.lite.Interpreter  # noqa: N806
    try:
        interp = Interpreter(model_path=str(path))
    except (ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"{path} is not a readable .tflite model ({str(exc).splitlines()[0][:160]})",
                             "give a .tflite file written by the TFLite converter") from None
    ops = interp._get_ops_details()  # noqa: SLF001 - the op graph: names, input and output tensor indices
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    return ops, tensors, [d["index"] for d in interp.get_input_details()]


def _fused_activations(path: Path) -> dict[int, str]:
    """Operator index -> fused activation name, from the flatbuffer (needs TensorFlow's schema; else {})."""
    try:
        from tensorflow.lite.python import schema_py_generated as schema  # noqa: PLC0415
        from tensorflow.lite.tools import flatbuffer_utils  # noqa: PLC0415
    except ImportError:
        return {}
    names = {v: k for k, v in vars(schema.ActivationFunctionType).items() if not k.startswith("_")}
    model = flatbuffer_utils.read_model(str(path))
    found = {}
    for index, op in enumerate(model.subgraphs[0].operators):
        value = getattr(op.builtinOptions, "fusedActivationFunction", None)
        if value is not None:
            found[index] = names.get(value, str(value))
    return found


def _judge(index: int, op: dict, tensors: dict[int, dict], live: set[int], fused: str) -> OpVerdict:
    name = op["op_name"]
    named = [tensors[i]["name"] for i in op["outputs"] if i in tensors]
    if not named or "/" not in named[0]:  # "tfl.dequantize", "StatefulPartitionedCall:0": name it by its input
        named = [tensors[i]["name"] for i in op["inputs"] if i in live and i in tensors] + named
    layer = _layer(named[0] if named else name)
    reason = _reason(name, op, tensors, live, fused)
    return OpVerdict(index=index, op=name, layer=layer, supported=not reason, reason=reason)


def _reason(name: str, op: dict, tensors: dict[int, dict], live: set[int], fused: str) -> str:
    if name not in SUPPORTED_OPS:
        return "Operation not supported by the Edge TPU"
    activations = [tensors[i] for i in list(op["inputs"]) + list(op["outputs"]) if i in live and i in tensors]
    wrong = [t for t in activations if np.dtype(t["dtype"]).name not in EIGHT_BIT]
    if wrong and not (name == "QUANTIZE" and _only_int8_to_int8(op, tensors)):
        kinds = sorted({np.dtype(t['dtype']).name for t in wrong})
        return f"Operation is working on an unsupported data type ({', '.join(kinds)})"
    # A -1 batch in the signature alone is compiled as batch 1; a -1 anywhere else is a size known only at
    # run time, which the Edge TPU cannot take.
    dynamic = [t for t in activations if -1 in [int(d) for d in t.get("shape_signature", t["shape"])][1:]]
    if dynamic:
        return f"Dynamic-sized tensor {_dims(dynamic[0]['shape_signature'])} (sizes must be constant at compile time)"
    too_many = [t for t in activations if len(t["shape"]) > 3 and any(int(d) > 1 for d in t["shape"][:-3])]
    if too_many:
        return f"Tensor {_dims(too_many[0]['shape'])} has more than 3 dimensions larger than 1"
    return _op_limitation(name, op, tensors, fused)


def _op_limitation(name: str, op: dict, tensors: dict[int, dict], fused: str) -> str:
    if name in NO_FUSED_ACTIVATION and fused not in ("NONE", ""):
        return f"{name} with a fused activation ({fused}) is not supported"
    if name == "FULLY_CONNECTED":
        out = tensors[op["outputs"][0]]["shape"]
        if sum(1 for d in out if int(d) > 1) > 1:
            return f"FULLY_CONNECTED output {_dims(out)} is not one-dimensional"
    if name == "SOFTMAX":
        shape = tensors[op["inputs"][0]]["shape"]
        if sum(1 for d in shape if int(d) > 1) > 1 or int(np.prod(shape)) > SOFTMAX_MAX_ELEMENTS:
            return f"SOFTMAX input {_dims(shape)} is not 1-D with at most {SOFTMAX_MAX_ELEMENTS} elements"
    return ""


def _dims(shape: Any) -> list[int]:
    return [int(d) for d in shape]


def _only_int8_to_int8(op: dict, tensors: dict[int, dict]) -> bool:
    return all(np.dtype(tensors[i]["dtype"]).name in EIGHT_BIT for i in list(op["inputs"]) + list(op["outputs"]))


def _model_problems(ops: list[dict], tensors: dict[int, dict], inputs: list[int]) -> list[str]:
    problems = []
    dtypes = {np.dtype(t["dtype"]).name for t in tensors.values()}
    if not dtypes & set(EIGHT_BIT):
        problems.append("Model not quantized: the Edge TPU runs only fully 8-bit quantized models "
                        "(convert with --formats tflite-int8)")
    signatures = [tensors[i].get("shape_signature", tensors[i]["shape"]) for i in inputs]
    if any(len(sig) and int(sig[0]) == -1 for sig in signatures):
        problems.append("the batch dimension is dynamic (-1): compile a batch-1 model "
                        "(edgecnn inspect --target edgetpu writes one)")
    floats = sorted({op["op_name"] for op in ops if op["op_name"] not in ("DEQUANTIZE", "QUANTIZE")
                     and any(np.dtype(tensors[i]["dtype"]).kind == "f" for i in op["outputs"] if i in tensors)})
    if floats:
        problems.append(f"not fully int8: {', '.join(floats)} run in float (no int8 kernel, or kept in float), "
                        "so the Edge TPU graph ends at the first of them")
    return problems


def _layer(tensor_name: str) -> str:
    from edgecnn.converters.inspect import layer_of  # noqa: PLC0415

    return layer_of(tensor_name, ())
