"""An ONNX model's graph on the device side, without the ``onnx`` package.

ONNX Runtime loads and runs a model but exposes no graph; the ``onnx`` package does, but a device has no reason
to install it. Both ONNX Runtime and ai-edge-litert depend on ``protobuf``, so the model is parsed here by
protobuf itself (its bounds-checked parser) against a minimal schema: the few ``onnx.proto`` messages and
fields edgecnn reads, declared with their ``onnx.proto`` field numbers (tests compare them with the onnx
package's own descriptors). Fields not declared are kept as unknown fields and written back unchanged, so a
model read here and serialized again is the same model. The schema lives in its own descriptor pool, so it
never clashes with the ``onnx`` package's messages when both are loaded.

``value_shapes`` asks ONNX Runtime for the shapes of intermediate values: it lists them as extra graph outputs
and runs the model once on zeros with a batch of 1 (shapes a static reading cannot know, such as the output of
tf2onnx's Reshape to a computed shape, are then exact).
"""
from __future__ import annotations

import functools
from typing import Any, Iterable, Optional

import numpy as np

from edgecnn.errors import ModelLoadError

_PACKAGE = "edgecnn_onnx_subset"
# message -> (field name, number, type, repeated, message type); types: "string", "int64", "int32", or a message.
SCHEMA: dict[str, tuple[tuple[str, int, str, bool], ...]] = {
    "ModelProto": (("graph", 7, "GraphProto", False), ("metadata_props", 14, "StringStringEntryProto", True)),
    "StringStringEntryProto": (("key", 1, "string", False), ("value", 2, "string", False)),
    "GraphProto": (("node", 1, "NodeProto", True), ("name", 2, "string", False),
                   ("initializer", 5, "TensorProto", True), ("input", 11, "ValueInfoProto", True),
                   ("output", 12, "ValueInfoProto", True), ("value_info", 13, "ValueInfoProto", True)),
    "NodeProto": (("input", 1, "string", True), ("output", 2, "string", True), ("name", 3, "string", False),
                  ("op_type", 4, "string", False), ("attribute", 5, "AttributeProto", True),
                  ("domain", 7, "string", False)),
    "AttributeProto": (("name", 1, "string", False), ("i", 3, "int64", False), ("ints", 8, "int64", True),
                       ("type", 20, "int32", False)),
    "TensorProto": (("dims", 1, "int64", True), ("data_type", 2, "int32", False), ("name", 8, "string", False),
                    ("data_location", 14, "int32", False)),
    "ValueInfoProto": (("name", 1, "string", False), ("type", 2, "TypeProto", False)),
    "TypeProto": (("tensor_type", 1, "TypeProtoTensor", False),),
    "TypeProtoTensor": (("elem_type", 1, "int32", False), ("shape", 2, "TensorShapeProto", False)),
    "TensorShapeProto": (("dim", 1, "Dimension", True),),
    "Dimension": (("dim_value", 1, "int64", False), ("dim_param", 2, "string", False)),
}
EXTERNAL_DATA = 1  # TensorProto.DataLocation.EXTERNAL


@functools.lru_cache(maxsize=1)
def _classes() -> dict[str, Any]:
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory  # noqa: PLC0415

    field = descriptor_pb2.FieldDescriptorProto
    scalar = {"string": field.TYPE_STRING, "int64": field.TYPE_INT64, "int32": field.TYPE_INT32}
    proto = descriptor_pb2.FileDescriptorProto(name=f"{_PACKAGE}.proto", package=_PACKAGE, syntax="proto2")
    for message, fields in SCHEMA.items():
        described = proto.message_type.add(name=message)
        for name, number, kind, repeated in fields:
            entry = described.field.add(name=name, number=number,
                                        label=field.LABEL_REPEATED if repeated else field.LABEL_OPTIONAL)
            if kind in scalar:
                entry.type = scalar[kind]
            else:
                entry.type, entry.type_name = field.TYPE_MESSAGE, f".{_PACKAGE}.{kind}"
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    get_class = getattr(message_factory, "GetMessageClass", None)
    if get_class is None:  # protobuf < 4.22
        factory = message_factory.MessageFactory(pool)
        get_class = factory.GetPrototype
    return {name: get_class(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in SCHEMA}


def parse_model(data: bytes, name: str = "model") -> Any:
    """``data`` (an .onnx file's bytes) as a ModelProto of the minimal schema; ModelLoadError when it is not one."""
    from google.protobuf.message import DecodeError  # noqa: PLC0415

    model = _classes()["ModelProto"]()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(f"{name} is not a readable ONNX model ({exc})"[:300]) from None
    if not model.HasField("graph"):
        raise ModelLoadError(f"{name} holds no ONNX graph")
    return model


def initializer_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Name -> dims of every constant weight in the main graph."""
    return {init.name: tuple(int(d) for d in init.dims) for init in model.graph.initializer}


def has_external_data(model: Any) -> bool:
    return any(init.data_location == EXTERNAL_DATA for init in model.graph.initializer)


def value_shapes(model: Any, names: Iterable[str], providers: Optional[list[str]] = None,
                 input_hw: Optional[tuple[int, int]] = None) -> dict[str, tuple[int, ...]]:
    """The shapes the named values take when ONNX Runtime runs ``model`` once on zeros with a batch of 1.

    ``input_hw``: sizes for dynamic dimensions after the batch, in order (an image size given with --size).
    Raises ModelLoadError when an input has another dynamic dimension than the batch and no size was given
    (its size would be a guess), RuntimeMissingError without ONNX Runtime."""
    from edgecnn.devices.onnx_runtime import _ORT_TYPES, import_onnxruntime  # noqa: PLC0415

    ort = import_onnxruntime()
    graph = model.graph
    constants = {init.name for init in graph.initializer}
    inputs = [v.name for v in graph.input if v.name not in constants]
    wanted = [n for n in dict.fromkeys(names) if n and n not in constants]
    probe = type(model)()
    probe.CopyFrom(model)
    listed = {v.name for v in probe.graph.output}
    for name in wanted:
        if name not in listed and name not in inputs:
            probe.graph.output.add(name=name)  # no type: ONNX Runtime infers it
    options = ort.SessionOptions()
    options.log_severity_level = 3
    try:
        session = ort.InferenceSession(probe.SerializeToString(), sess_options=options,
                                       providers=providers or ["CPUExecutionProvider"])
        feeds = {arg.name: _zeros(arg, _ORT_TYPES, input_hw) for arg in session.get_inputs()}
        names_out = [o.name for o in session.get_outputs()]
        values = session.run(names_out, feeds)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - ORT's own Fail/InvalidGraph types
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise ModelLoadError(f"ONNX Runtime could not run the graph to read its shapes ({first[:200]})") from None
    shapes = {name: tuple(int(d) for d in np.shape(value)) for name, value in zip(names_out, values)}
    shapes.update({name: tuple(int(d) for d in feed.shape) for name, feed in feeds.items()})
    return {name: shapes[name] for name in wanted if name in shapes}


def _zeros(arg: Any, types: dict[str, str], input_hw: Optional[tuple[int, int]] = None) -> np.ndarray:
    shape = list(arg.shape or ())
    given = list(input_hw or ())
    for axis, dim in enumerate(shape):
        if not isinstance(dim, int) or dim < 0:
            if axis != 0 and given:
                shape[axis] = int(given.pop(0))
                continue
            if axis != 0:
                raise ModelLoadError(f"input {arg.name} has a dynamic dimension {axis} ({dim}); "
                                     "its size, and so the work per inference, is not fixed (dynamic H/W: give --size HxW)")
            shape[axis] = 1
    dtype = types.get(arg.type)
    if dtype is None:
        raise ModelLoadError(f"input {arg.name} has type {arg.type}, not a tensor of numbers")
    return np.zeros(shape, dtype=dtype)
