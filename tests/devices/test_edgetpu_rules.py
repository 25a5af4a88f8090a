"""The documented limitations that a Keras -> TFLite conversion does not produce here (TensorFlow 2.21 folds a
reduction over a batch of 1, decomposes PReLU, never fuses an activation into Concatenation), checked on small
graphs built directly as edgecnn.devices.flatbuf.Graph values: the same rules, the same code path as a file."""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.devices.edgetpu_check import EdgeTpuOptions, check_graph
from edgecnn.devices.edgetpu_ops import MAPPED, NOT_SUPPORTED, UNSPECIFIED, UNSUPPORTED_TYPE
from edgecnn.devices.flatbuf import Graph, Operator, Tensor


def _graph(op: str, shapes: list, out_shape, options=None, constants=None, dtype="int8") -> Graph:
    """One operator reading tensors of ``shapes`` (a constant where ``constants`` has an array) into one output."""
    constants = constants or {}
    tensors, buffers = [], [b""]
    for i, shape in enumerate(shapes):
        data = constants.get(i)
        buffer = 0
        if data is not None:
            buffers.append(np.ascontiguousarray(data).tobytes())
            buffer = len(buffers) - 1
        kind = dtype if data is None else {np.dtype(np.int32): "int32", np.dtype(np.int8): "int8"}[np.asarray(data).dtype]
        tensors.append(Tensor(i, f"model/layer_{i}/t", kind, tuple(shape), tuple(shape), buffer, (0.1,), (0,)))
    tensors.append(Tensor(len(shapes), "model/out/t", dtype, tuple(out_shape), tuple(out_shape), 0, (0.1,), (0,)))
    inputs = tuple(i for i in range(len(shapes)) if i not in constants)
    operator = Operator(0, op, "", 1, tuple(range(len(shapes))), (len(shapes),), options or {})
    return Graph((operator,), tuple(tensors), inputs, (len(shapes),), 1, tuple(buffers))


def _verdict(graph: Graph, runtime: int = 14):
    return check_graph(graph, EdgeTpuOptions(runtime=runtime)).ops[0]


X = [1, 8, 8, 16]
I32 = np.int32


@pytest.mark.parametrize("case,graph,reason", [
    ("concat fused", _graph("CONCATENATION", [X, X], [1, 8, 8, 32], {"fused_activation_function": 1}),
     "CONCATENATION with a fused activation (RELU): no fused activation allowed"),
    ("pool fused", _graph("MAX_POOL_2D", [X], [1, 4, 4, 16], {"fused_activation_function": 3}),
     "MAX_POOL_2D with a fused activation (RELU6): no fused activation allowed"),
    ("concat constant not zero", _graph("CONCATENATION", [X, X], [1, 8, 8, 32], {}, {1: np.ones(X, np.int8)}),
     "CONCATENATION with a constant input that is not all zeros (only zero-padding is allowed)"),
    ("concat 3 with constant", _graph("CONCATENATION", [X, X, X], [1, 8, 8, 48], {}, {2: np.zeros(X, np.int8)}),
     "CONCATENATION of 3 inputs with a constant one: only 2 inputs are allowed then"),
    ("fc shuffled", _graph("FULLY_CONNECTED", [[1, 64], [10, 64]], [1, 10], {"weights_format": 1}),
     "FULLY_CONNECTED with shuffled weights: only the default weights format is allowed"),
    ("fc 2-D output", _graph("FULLY_CONNECTED", [[1, 4, 64], [10, 64]], [1, 4, 10]),
     "FULLY_CONNECTED output [1, 4, 10] is not one-dimensional"),
    ("mean batch", _graph("MEAN", [X, [1]], [1, 8, 8, 16], {}, {1: np.array([0], I32)}),
     "MEAN reduces over the batch dimension (axes [0])"),
    ("sum batch", _graph("SUM", [X, [2]], [1, 1, 8, 16], {}, {1: np.array([0, 1], I32)}),
     "SUM reduces over the batch dimension (axes [0, 1])"),
    ("reduce_max batch", _graph("REDUCE_MAX", [X, [1]], [8, 8, 16], {}, {1: np.array([-4], I32)}),
     "REDUCE_MAX reduces over the batch dimension (axes [0])"),
    ("reduce_min axes at run time", _graph("REDUCE_MIN", [X, [1]], [1, 8, 8, 1]),
     "REDUCE_MIN axes are computed at run time"),
    ("pack batch", _graph("PACK", [[8, 16], [8, 16]], [2, 8, 16], {"axis": 0}),
     "PACK along the batch dimension (axis 0)"),
    ("split batch", _graph("SPLIT", [[], [2, 8, 16]], [1, 8, 16], {}, {0: np.array(0, I32)}),
     "SPLIT along the batch dimension"),
    ("prelu full alpha", _graph("PRELU", [X, [8, 8, 16]], X, {}, {1: np.zeros([8, 8, 16], np.int8)}),
     "PRELU alpha of shape [8, 8, 16]: only the innermost dimension may exceed 1"),
    ("resize batch 2", _graph("RESIZE_BILINEAR", [[2, 8, 8, 16], [2]], [2, 16, 16, 16], {}, {1: np.array([16, 16], I32)}),
     "RESIZE_BILINEAR on [2, 8, 8, 16]: input and output must be 3-dimensional"),
    ("softmax 2-D", _graph("SOFTMAX", [[1, 4, 10]], [1, 4, 10]), "SOFTMAX input [1, 4, 10] is not 1-D with at most 16000 elements"),
    ("softmax large", _graph("SOFTMAX", [[1, 16001]], [1, 16001]), "SOFTMAX input [1, 16001] is not 1-D with at most 16000 elements"),
    ("strided masks", _graph("STRIDED_SLICE", [X, [4], [4], [4]], X, {"new_axis_mask": 2, "ellipsis_mask": 0},
                             {1: np.zeros(4, I32), 2: np.array(X, I32), 3: np.ones(4, I32)}),
     "STRIDED_SLICE with ellipsis_mask 0 and new_axis_mask 2: both must be 0"),
])
def test_each_documented_limitation_is_refused_with_its_reason(case, graph, reason):
    verdict = _verdict(graph)
    assert (verdict.status, verdict.reason, verdict.on_edgetpu) == (UNSPECIFIED, reason, False), case


@pytest.mark.parametrize("case,graph", [
    ("concat zero padding", _graph("CONCATENATION", [X, X], [1, 8, 8, 32], {}, {1: np.zeros(X, np.int8)})),
    ("pack inner", _graph("PACK", [[8, 16], [8, 16]], [1, 2, 8, 16], {"axis": 1})),
    ("split channels", _graph("SPLIT", [[], X], [1, 8, 8, 8], {}, {0: np.array(3, I32)})),
    ("prelu shared", _graph("PRELU", [X, [1, 1, 16]], X, {}, {1: np.zeros([1, 1, 16], np.int8)})),
    ("reduce_max xy", _graph("REDUCE_MAX", [X, [2]], [1, 1, 1, 16], {}, {1: np.array([1, 2], I32)})),
    ("fc 1-D", _graph("FULLY_CONNECTED", [[1, 64], [10, 64]], [1, 10])),
])
def test_the_allowed_twin_maps(case, graph):
    verdict = _verdict(graph)
    assert (verdict.status, verdict.on_edgetpu) == (MAPPED, True), (case, verdict.reason)


def test_runtime_minimums_and_unconfirmed_ones():
    pack = _graph("PACK", [[8, 16], [8, 16]], [1, 2, 8, 16], {"axis": 1})
    assert _verdict(pack, 13).on_edgetpu and not _verdict(pack, 12).on_edgetpu
    assert _verdict(pack, 12).status == NOT_SUPPORTED
    rsqrt = _graph("RSQRT", [X], X)
    assert _verdict(rsqrt, 14).may_not_map == "" and _verdict(rsqrt, 14).on_edgetpu
    assert "minimum runtime of RSQRT is not confirmed" in _verdict(rsqrt, 12).may_not_map and _verdict(rsqrt, 12).on_edgetpu
    resize = _graph("RESIZE_NEAREST_NEIGHBOR", [X, [2]], [1, 16, 16, 16], {}, {1: np.array([16, 16], I32)})
    assert _verdict(resize).on_edgetpu and "may not be mapped to the Edge TPU to avoid loss in precision" in _verdict(resize).may_not_map


def test_types_and_unknown_ops():
    assert _verdict(_graph("ADD", [X, X], X, dtype="int16")).status == UNSUPPORTED_TYPE
    assert _verdict(_graph("ADD", [X, X], X, dtype="float32")).reason == "ADD works on float32; the Edge TPU takes only 8-bit tensors"
    assert _verdict(_graph("HARD_SWISH", [X], X)).reason == "HARD_SWISH is not in the Edge TPU's supported-operations table"
