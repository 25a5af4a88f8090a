"""Facts read from ONNX graphs around int8 quantization: the float head, what the quantizer wrote, what ran.

* :func:`float_head`: in the pre-processed fp32 graph, the classifier head that stays float (the final
  Softmax/Sigmoid, and the op types whose output is the logits).
* :func:`qdq_facts`: in a written QDQ model, its activation and weight types and the nodes left in float.
* :func:`fusion_report`: what ONNX Runtime really runs on this machine. The session is created with
  ``ORT_ENABLE_ALL`` and ``optimized_model_filepath``, and the optimized graph is read back: a quantized
  node either became an integer kernel (QLinearConv, QLinearAdd, QGemm, MatMulIntegerToFloat, ...) or stayed
  a float op with DequantizeLinear in front / QuantizeLinear behind it (found through the Transpose and
  NCHWc reorder nodes ONNX Runtime puts between them). The optimized graph depends on the CPU, so the
  report names the machine.
"""
from __future__ import annotations

import platform
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from edgecnn.errors import ModelLoadError

HEAD_ACTIVATIONS = ("Softmax", "LogSoftmax", "Sigmoid")
# Ops between the logits and the graph output that change layout only.
HEAD_PASS_THROUGH = ("Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Transpose", "Cast")
# Op types ONNX Runtime still fuses when their output is not quantized (QGemm / MatMulIntegerToFloat
# with a float output): leaving the logits float costs no speed.
FLOAT_OUTPUT_FUSIBLE = ("Gemm", "MatMul")
# Integer kernels that do not start with "QLinear" (NhwcMaxPool: ONNX Runtime's uint8/int8 max pooling).
FUSED_OPS = frozenset({"QGemm", "ConvInteger", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeMatMul",
                       "QAttention", "QEmbedLayerNormalization", "NhwcMaxPool"})
# Nodes ONNX Runtime puts between a DequantizeLinear and the float op it feeds (layout only).
LAYOUT_OPS = frozenset({"Transpose", "ReorderInput", "ReorderOutput", "Reshape", "Flatten", "Squeeze", "Unsqueeze",
                        "Identity"})
QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})
COMPUTE_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Sub", "Mul", "Div", "Concat",
                         "GlobalAveragePool", "AveragePool", "MaxPool", "Softmax", "LogSoftmax", "Sigmoid", "Relu",
                         "Clip", "LeakyRelu", "Elu", "HardSigmoid", "HardSwish", "Tanh", "FusedConv", "FusedGemm",
                         "Resize", "Pad"})
FLOAT = 1  # onnx.TensorProto.FLOAT
ONNX_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 10: "float16"}


@dataclass(frozen=True)
class FloatHead:
    """The head of a pre-processed fp32 graph that stays float: nodes to exclude and op types whose output
    (the logits) is not quantized."""

    nodes: tuple[str, ...] = ()
    output_op_types: tuple[str, ...] = ()


@dataclass(frozen=True)
class QdqFacts:
    """What a QDQ model holds: types of its quantized activations and weights, and its float nodes."""

    activations: tuple[str, ...]      # dtypes of activation zero points, e.g. ("uint8",)
    weights: tuple[str, ...]          # dtypes of the stored quantized weights, e.g. ("int8",)
    weights_per_channel: bool
    float_nodes: tuple[str, ...]      # "Softmax dense/Softmax": compute nodes with no quantized input
    float_outputs: tuple[str, ...]    # "Gemm dense/MatMul": quantized nodes whose output stays float


@dataclass(frozen=True)
class FusionReport:
    """Quantized nodes ONNX Runtime fused into integer kernels vs ran in float, on ``machine``."""

    model: str
    machine: str                      # "x86_64, onnxruntime 1.32.0"
    fused: dict[str, int] = field(default_factory=dict)     # op type in the optimized graph -> count
    in_float: dict[str, int] = field(default_factory=dict)  # float op type between DQ/Q -> count
    float_nodes: tuple[str, ...] = ()                       # their names (as in the optimized graph)
    qdq_left: int = 0                                       # QuantizeLinear/DequantizeLinear nodes left
    activations: tuple[str, ...] = ()                       # activation types in the model as written

    @property
    def fused_count(self) -> int:
        return sum(self.fused.values())

    @property
    def float_count(self) -> int:
        return sum(self.in_float.values())

    def summary(self) -> str:
        """'64 of 64 quantized nodes fused' or '40 of 65 fused; 15 Conv, 10 Add run in float'."""
        total = self.fused_count + self.float_count
        if total == 0:
            return "no quantized nodes"
        text = f"{self.fused_count} of {total} quantized nodes fused into integer kernels"
        if self.float_count:
            text += "; " + ", ".join(f"{n} {op}" for op, n in _by_count(self.in_float)) + " run in float"
        return text

    def hint(self) -> str:
        """What to do about float fallbacks, when the cause is known; else ''."""
        if self.float_count and "int8" in self.activations and self.machine.split(",")[0] in ("x86_64", "AMD64"):
            return ("int8 activations fuse on x86 only where a QuantizeLinear has one consumer (ops around a tensor "
                    "read twice, as at a residual branch, fall back): convert with --onnx-target x86 (uint8 "
                    "activations) for this machine")
        if self.float_count:
            return ("ONNX Runtime has no fused int8 kernel for these ops here: they run in float between "
                    "DequantizeLinear/QuantizeLinear nodes, which costs time on every inference")
        return ""


def float_head(prepared: Path) -> FloatHead:
    """Walk back from each graph output through head activations and layout ops to the logits' producer."""
    graph = _load(prepared).graph
    producer = {out: node for node in graph.node for out in node.output}
    nodes: list[str] = []
    types: list[str] = []
    for output in graph.output:
        node = producer.get(output.name)
        while node is not None and node.op_type in HEAD_ACTIVATIONS + HEAD_PASS_THROUGH:
            if node.op_type in HEAD_ACTIVATIONS:
                nodes.append(node.name)
            node = producer.get(node.input[0]) if node.input else None
        if node is not None and node.op_type in FLOAT_OUTPUT_FUSIBLE:
            types.append(node.op_type)
    return FloatHead(tuple(dict.fromkeys(nodes)), tuple(dict.fromkeys(types)))


def qdq_facts(path: Path) -> QdqFacts:
    """Read a QDQ model: its quantized types and which nodes stayed float."""
    import onnx  # noqa: PLC0415

    graph = onnx.shape_inference.infer_shapes(_load(path)).graph
    inits = {init.name: init for init in graph.initializer}
    elem = {v.name: v.type.tensor_type.elem_type for v in (*graph.value_info, *graph.input, *graph.output)}
    elem.update({name: init.data_type for name, init in inits.items()})
    producer = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph.node)
    weights, per_channel = set(), False
    for node in graph.node:
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            weights.add(ONNX_DTYPES.get(inits[node.input[0]].data_type, "?"))
            scale = inits.get(node.input[1])
            per_channel |= scale is not None and len(scale.dims) == 1 and scale.dims[0] > 1
    float_nodes, float_outputs = [], []
    for node in graph.node:
        if node.op_type not in COMPUTE_OPS or not node.input or elem.get(node.input[0]) != FLOAT:
            continue  # shape arithmetic (int64 Concat/Add) is not a float layer
        fed = any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in node.input)
        if not fed:
            float_nodes.append(f"{node.op_type} {short_name(node.name)}")
        elif node.op_type in FLOAT_OUTPUT_FUSIBLE and not any(
                c.op_type == "QuantizeLinear" for out in node.output for c in consumers[out]):
            float_outputs.append(f"{node.op_type} {short_name(node.name)}")
    return QdqFacts(activation_types(path), tuple(sorted(weights - {"int32"})), per_channel,
                    tuple(float_nodes), tuple(float_outputs))


def fusion_report(path: Path) -> FusionReport:
    """Optimize ``path`` with ONNX Runtime (ORT_ENABLE_ALL, CPU provider) and count fused vs float nodes.

    Raises ModelLoadError when ONNX Runtime cannot load the model.
    """
    import onnxruntime as ort  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="edgecnn-ortopt-") as work:
        optimized = Path(work) / "optimized.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(optimized)
        options.log_severity_level = 3  # the "hardware specific optimizations" warning is the point here
        options.intra_op_num_threads = 1
        try:
            ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph types
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
            raise ModelLoadError(f"ONNX Runtime cannot load {Path(path).name} ({first})",
                                 "check that the file is a complete .onnx model") from None
        graph = _load(optimized).graph
    fused, in_float, names = _classify(graph.node)
    qdq_left = sum(1 for node in graph.node if node.op_type in QDQ_OPS)
    return FusionReport(Path(path).name, f"{platform.machine()}, onnxruntime {ort.__version__}", dict(fused),
                        dict(in_float), tuple(names), qdq_left, activation_types(path))


def activation_types(path: Path) -> tuple[str, ...]:
    """The zero-point types of a QDQ model's QuantizeLinear nodes: ("uint8",), ("int8",), () for a float model."""
    graph = _load(path).graph
    inits = {init.name: init.data_type for init in graph.initializer}
    return tuple(sorted({ONNX_DTYPES.get(inits[node.input[2]], "?") for node in graph.node
                         if node.op_type == "QuantizeLinear" and len(node.input) > 2 and node.input[2] in inits}))


def _classify(nodes: Iterable[Any]) -> tuple[Counter, Counter, list[str]]:
    nodes = list(nodes)
    producer = {out: node for node in nodes for out in node.output}
    consumers = _consumers(nodes)

    def source(tensor: str) -> Any:
        node = producer.get(tensor)
        while node is not None and node.op_type in LAYOUT_OPS and node.input:
            node = producer.get(node.input[0])
        return node

    def sinks(tensor: str) -> list[Any]:
        found = []
        for node in consumers[tensor]:
            found += [s for out in node.output for s in sinks(out)] if node.op_type in LAYOUT_OPS else [node]
        return found

    fused, in_float, names = Counter(), Counter(), []
    for node in nodes:
        if node.op_type.startswith("QLinear") or node.op_type in FUSED_OPS:
            fused[node.op_type] += 1
        elif node.op_type in COMPUTE_OPS and (
                any(getattr(source(i), "op_type", "") == "DequantizeLinear" for i in node.input if i)
                or any(s.op_type == "QuantizeLinear" for out in node.output for s in sinks(out))):
            in_float[node.op_type] += 1
            names.append(node.name)
    return fused, in_float, names


def _consumers(nodes: Iterable[Any]) -> defaultdict:
    found: defaultdict = defaultdict(list)
    for node in nodes:
        for name in node.input:
            found[name].append(node)
    return found


def _by_count(counts: dict[str, int]) -> list[tuple[str, int]]:
    return sorted(counts.items(), key=lambda item: (-item[1], item[0]))


def short_name(name: str) -> str:
    """'StatefulPartitionedCall/mnist_cnn_1/dense_1/MatMul' -> 'dense_1/MatMul' (tf2onnx's prefix dropped)."""
    parts = name.split("/")
    if len(parts) > 2 and parts[0] == "StatefulPartitionedCall":
        return "/".join(parts[2:])
    return name


def _load(path: Path) -> Any:
    import onnx  # noqa: PLC0415

    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf's DecodeError and OSError
        raise ModelLoadError(f"cannot read ONNX model {Path(path).name} ({type(exc).__name__})",
                             "check that the file is a complete .onnx model") from None
