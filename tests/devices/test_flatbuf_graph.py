"""The one TFLite graph reader (devices/flatbuf.py read_graph): its schema tables agree with the schema
TensorFlow generates, it reads a real converted model as LiteRT does, and a damaged file is a FlatbufferError."""
from __future__ import annotations

import inspect
import re

import numpy as np
import pytest

from edgecnn.devices import flatbuf
from edgecnn.devices.flatbuf import FlatbufferError, read_graph


@pytest.fixture(scope="module")
def schema():
    from tensorflow.lite.python import schema_py_generated

    return schema_py_generated


def _enum(cls) -> dict[int, str]:
    return {value: name for name, value in vars(cls).items() if not name.startswith("_")}


def test_operator_names_tensor_types_and_activations_match_tensorflows_schema(schema):
    ops = _enum(schema.BuiltinOperator)
    assert {code: flatbuf.operator_name(code) for code in ops} == ops
    assert flatbuf.operator_name(100000) == "BUILTIN_100000"
    assert {code: name.lower() for code, name in _enum(schema.TensorType).items()} == dict(flatbuf.TENSOR_TYPES)
    assert _enum(schema.ActivationFunctionType) == dict(flatbuf.ACTIVATIONS)


def _slot(schema, options_class: str, accessor: str) -> int:
    source = inspect.getsource(getattr(getattr(schema, options_class), accessor))
    return (int(re.search(r"self\._tab\.Offset\((\d+)\)", source).group(1)) - 4) // 2


OPTION_CLASSES = {"CONV_2D": "Conv2DOptions", "DEPTHWISE_CONV_2D": "DepthwiseConv2DOptions",
                  "AVERAGE_POOL_2D": "Pool2DOptions", "MAX_POOL_2D": "Pool2DOptions",
                  "FULLY_CONNECTED": "FullyConnectedOptions", "CONCATENATION": "ConcatenationOptions",
                  "STRIDED_SLICE": "StridedSliceOptions", "PACK": "PackOptions", "TRANSPOSE_CONV": "TransposeConvOptions"}


@pytest.mark.parametrize("op", sorted(flatbuf.OPTION_FIELDS))
def test_option_slots_match_tensorflows_schema(schema, op):
    union, fields = flatbuf.OPTION_FIELDS[op]
    assert getattr(schema.BuiltinOptions, OPTION_CLASSES[op]) == union
    for name, (slot, _, _) in fields.items():
        accessor = "".join(part.capitalize() for part in name.split("_"))
        assert _slot(schema, OPTION_CLASSES[op], accessor) == slot, (op, name)


def test_read_graph_agrees_with_litert(device_models):
    from edgecnn.devices.litert import make_interpreter

    graph = read_graph(device_models.int8.read_bytes())
    interpreter = make_interpreter(device_models.int8)
    details = {d["index"]: d for d in interpreter.get_tensor_details()}
    assert len(graph.tensors) == len(details) and graph.subgraphs == 1
    for tensor in graph.tensors:
        detail = details[tensor.index]
        assert (tensor.name, tensor.dtype, tensor.shape) == (detail["name"], np.dtype(detail["dtype"]).name,
                                                             tuple(int(d) for d in detail["shape"]))
        if tensor.scale:
            assert detail["quantization_parameters"]["scales"].tolist() == pytest.approx(list(tensor.scale))
    assert [graph.tensors[i].dtype for i in graph.inputs + graph.outputs] == ["int8", "int8"]
    conv = next(op for op in graph.operators if op.name == "CONV_2D")
    assert conv.option("dilation_h_factor") == conv.option("dilation_w_factor") == 1
    weights = graph.constant(conv.inputs[1])
    assert weights.dtype == np.int8 and weights.shape == graph.tensors[conv.inputs[1]].shape
    np.testing.assert_array_equal(weights, interpreter.get_tensor(conv.inputs[1]))
    assert graph.constant(graph.inputs[0]) is None


def test_a_damaged_graph_is_a_flatbuffer_error_not_a_crash(device_models):
    data = bytearray(device_models.int8.read_bytes())
    offset = len(data) - 256
    struct_bad = (len(data) * 4).to_bytes(4, "little")
    damaged = 0
    for pos in range(offset, len(data) - 4, 4):
        trial = bytes(data[:pos]) + struct_bad + bytes(data[pos + 4:])
        try:
            read_graph(trial)
        except FlatbufferError:
            damaged += 1
    assert damaged > 0
