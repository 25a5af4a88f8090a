"""Multiply-accumulates per inference, counted from the model graph (not from the Keras model).

Counted ops: convolutions (regular, depthwise, grouped, transposed), fully connected / Gemm / MatMul.
Elementwise ops, pooling and activations are left out, as MAC counts usually are. Batch dimensions
are counted as one image: the figure is MACs per single inference.

Neither format needs a converter's package or a runtime: a .tflite is read by the pure-Python flatbuffer
reader (operators and the tensor shapes stored in the file), a .onnx by protobuf against
a minimal ONNX schema with the shapes observed in ONNX Runtime (devices/onnxgraph.py); the ``onnx`` package
is not used. A model whose work cannot be counted (a custom operator such as the Edge TPU's compiled
subgraph, external weights, a dynamic image size) gets no figure and a reason: ``count_macs_noted``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.errors import EdgecnnError, ModelLoadError

_TFLITE_CONVS = {"CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "CONV_3D"}
_TFLITE_MATMULS = {"FULLY_CONNECTED", "BATCH_MATMUL"}


def count_macs(model_path: Path, input_hw: Optional[tuple[int, int]] = None) -> Optional[int]:
    """MACs of one inference of a .tflite or .onnx file; None for another format.

    Raises ModelLoadError (with the reason) when the model's work cannot be counted; RuntimeMissingError
    when the runtime that reads the format is not installed. ``input_hw``: the (height, width) an ONNX model with
    a dynamic image size is run at (the preprocessing's)."""
    suffix = Path(model_path).suffix.lower()
    if suffix in (".tflite", ".lite"):
        return count_tflite_macs(Path(model_path))
    if suffix == ".onnx":
        return count_onnx_macs(Path(model_path), input_hw)
    return None


def count_macs_noted(model_path: Path, input_hw: Optional[tuple[int, int]] = None) -> tuple[Optional[int], str]:
    """(MACs, "") or (None, why not): the MAC count is a nice-to-have, so nothing here fails a benchmark row."""
    try:
        return count_macs(model_path, input_hw), ""
    except EdgecnnError as exc:
        return None, f"MACs not counted: {exc.one_line()}"
    except Exception as exc:  # noqa: BLE001 - a runtime's own error: no figure, with the reason
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        return None, f"MACs not counted: {type(exc).__name__}: {first}".rstrip(": ")


# -- TFLite ------------------------------------------------------------------------------------------
def count_tflite_macs(path: Path) -> int:
    """Walk the operators of the flatbuffer (devices/flatbuf.py, the one TFLite reader) with the tensor shapes
    stored in it. Raises ModelLoadError for an unreadable file, a custom operator (its work is not in the graph)
    or a dynamic image size (the stored shapes are placeholders then)."""
    from edgecnn.devices.flatbuf import FlatbufferError, read_graph  # noqa: PLC0415

    try:
        graph = read_graph(Path(path).read_bytes())
    except (FlatbufferError, OSError) as exc:
        raise ModelLoadError(f"cannot read {Path(path).name} to count MACs ({exc})") from None
    custom = sorted({op.custom for op in graph.operators if op.name == "CUSTOM"})
    if custom:
        raise ModelLoadError(f"{Path(path).name} has custom operator(s) {', '.join(custom)}, whose work "
                             "cannot be counted from the graph")
    total = 0
    for op in graph.operators:
        if op.name in _TFLITE_CONVS or op.name in _TFLITE_MATMULS:
            shapes = [_tflite_shape(graph, i, path) for i in op.inputs]
            total += _tflite_op_macs(op.name, shapes, _tflite_shape(graph, op.outputs[0], path))
    return int(total)


def _tflite_shape(graph, index: int, path: Path) -> Optional[tuple[int, ...]]:
    if index < 0:
        return None  # an optional input left out (no bias)
    tensor = graph.tensors[index]
    if any(d < 0 for d in tensor.shape_signature[1:]):
        raise ModelLoadError(f"{Path(path).name} has a dynamic image size (tensor {tensor.name} is "
                             f"{list(tensor.shape_signature)}): its MACs depend on the size it is run at")
    return tuple(int(d) for d in tensor.shape)


def _tflite_op_macs(name: str, inputs: list, out: tuple[int, ...]) -> int:
    out_per_image = _prod(out[1:]) if len(out) > 1 else _prod(out)
    if name == "CONV_2D":  # filter [Cout, kh, kw, Cin/groups]
        return out_per_image * _prod(inputs[1][1:])
    if name == "CONV_3D":  # filter [kd, kh, kw, Cin, Cout]
        return out_per_image * _prod(inputs[1][:4])
    if name == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, Cout]: kh*kw per output element
        return out_per_image * _prod(inputs[1][1:3])
    if name == "TRANSPOSE_CONV":  # inputs: output_shape, filter [Cout, kh, kw, Cin], input
        data = inputs[2]
        return _prod(data[1:]) * _prod(inputs[1][:3])
    if name == "FULLY_CONNECTED":  # weights [units, in]
        return out_per_image * int(inputs[1][-1])
    if name == "BATCH_MATMUL":
        return out_per_image * int(inputs[0][-1])
    return 0


# -- ONNX --------------------------------------------------------------------------------------------
_ONNX_COUNTED = {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "Gemm", "MatMul", "MatMulInteger",
                 "QLinearMatMul"}


def count_onnx_macs(path: Path, input_hw: Optional[tuple[int, int]] = None) -> int:
    """Walk the main graph with weight shapes from the file and activation shapes observed in ONNX Runtime
    (batch 1); QDQ graphs count their float Conv/MatMul like any other."""
    from edgecnn.devices.onnxgraph import has_external_data, initializer_shapes, parse_model, value_shapes  # noqa: PLC0415

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path} to count MACs ({exc.strerror or exc})") from None
    model = parse_model(data, Path(path).name)
    if has_external_data(model):
        raise ModelLoadError(f"{Path(path).name} keeps its weights in external data files")
    nodes = [node for node in model.graph.node if node.op_type in _ONNX_COUNTED]
    shapes = initializer_shapes(model)
    wanted = [name for node in nodes for name in (*node.input, *node.output) if name and name not in shapes]
    shapes.update(value_shapes(model, wanted, input_hw=input_hw))
    return int(sum(_onnx_node_macs(node, shapes) for node in nodes))


def _onnx_node_macs(node, shapes: dict[str, tuple[int, ...]]) -> int:
    op = node.op_type
    if op in ("Conv", "ConvInteger", "QLinearConv"):
        weight = node.input[3] if op == "QLinearConv" else node.input[1]
        out = shapes.get(node.output[0])
        kernel = shapes.get(weight)
        if out is None or kernel is None:
            return 0
        return _prod(out[1:]) * _prod(kernel[1:])  # W: [Cout, Cin/groups, kh, kw]
    if op == "ConvTranspose":
        data, kernel = shapes.get(node.input[0]), shapes.get(node.input[1])
        if data is None or kernel is None:
            return 0
        return _prod(data[1:]) * _prod(kernel[1:])  # W: [Cin, Cout/groups, kh, kw]
    if op in ("Gemm", "MatMul", "MatMulInteger", "QLinearMatMul"):
        return _onnx_matmul_macs(node, shapes)
    return 0


def _onnx_matmul_macs(node, shapes: dict[str, tuple[int, ...]]) -> int:
    """K x N per row from the weight's shape (an initializer, always known), rows per image from the output.

    tf2onnx's Flatten is a Reshape to a computed shape, so the activation's shape is often unknown;
    the weight's is not.
    """
    op = node.op_type
    b_name = node.input[3] if op == "QLinearMatMul" else node.input[1]
    b = shapes.get(b_name)
    out = shapes.get(node.output[0]) or ()
    if b is None or len(b) < 2:
        a = shapes.get(node.input[0])
        return _prod(out[1:]) * int(a[-1]) if a and len(out) > 1 else 0
    if op == "Gemm":
        trans_b = any(attr.name == "transB" and attr.i for attr in node.attribute)
        k, n = (b[1], b[0]) if trans_b else (b[0], b[1])
        return int(k) * int(n)
    rows = _prod(out[1:-1]) if len(out) > 2 else 1
    return rows * int(b[-2]) * int(b[-1])


def _prod(values) -> int:
    return int(np.prod(np.asarray(values, dtype=np.int64))) if values is not None and len(values) else 1


def gmacs_per_s(macs: Optional[int], latency_ms: Optional[float]) -> Optional[float]:
    """Achieved GMAC/s at a latency: MACs / seconds / 1e9."""
    if not macs or not latency_ms or latency_ms <= 0:
        return None
    return macs / (latency_ms / 1000.0) / 1e9
