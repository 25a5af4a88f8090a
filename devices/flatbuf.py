"""The one TFLite graph reader: a bounds-checking walk of the flatbuffer, in pure Python (no native code
touches the bytes), and a read of subgraph 0 (operators with their options, tensors with shapes, types and
quantization, constant buffers) for the checks that need the graph.

The walk checks what a malformed or hostile file would use to make LiteRT's C++ reader read out of bounds:
the root table, every vtable, vector and string it reaches, and the indices that tie the model together
(tensor -> buffer, operator -> operator code, operator/subgraph -> tensor, metadata -> buffer, external
buffer offset/size -> file size). ``read_graph`` walks first, then reads through the same bounds-checked
accessors. Field slots, enum values and names follow tensorflow/lite/schema/schema.fbs; a test compares
them with the schema TensorFlow generates, so a drift fails there rather than here.
"""
from __future__ import annotations

import functools
import re
import struct
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple, Optional, Sequence

import numpy as np

MAX_DIMS = 16
MAX_TENSOR_TYPE = 32  # TensorType enum values are small; anything larger is damage


class FlatbufferError(ValueError):
    """The bytes are not a well-formed TFLite model."""


@dataclass
class ModelInfo:
    """What the walk learned: enough for the Edge TPU check and for messages."""

    version: int = 0
    subgraphs: int = 0
    tensors: int = 0
    operators: int = 0
    buffers: int = 0
    builtin_codes: set[int] = field(default_factory=set)
    custom_codes: set[str] = field(default_factory=set)
    tensor_types: set[int] = field(default_factory=set)  # of every tensor in subgraph 0
    io_types: list[int] = field(default_factory=list)  # of subgraph 0's inputs then outputs


@functools.lru_cache(maxsize=None)
def _packer(fmt: str) -> struct.Struct:
    """The compiled struct of one scalar format (a handful exist; a model has thousands of scalars)."""
    return struct.Struct(fmt)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def _check(self, pos: int, width: int, what: str) -> None:
        if pos < 0 or pos + width > self.size:
            raise FlatbufferError(f"{what} at byte {pos} lies outside the {self.size}-byte file")

    def scalar(self, fmt: str, pos: int, what: str) -> int:
        packed = _packer(fmt)
        if pos < 0 or pos + packed.size > self.size:
            self._check(pos, packed.size, what)
        return packed.unpack_from(self.data, pos)[0]

    def table(self, pos: int, what: str) -> "_Table":
        vtable = pos - self.scalar("<i", pos, what)
        vt_size = self.scalar("<H", vtable, f"{what} vtable")
        if vt_size < 4 or vt_size % 2:
            raise FlatbufferError(f"{what} has a vtable of size {vt_size}")
        self._check(vtable, vt_size, f"{what} vtable")
        obj_size = self.scalar("<H", vtable + 2, f"{what} vtable")
        self._check(pos, max(obj_size, 4), what)
        return _Table(self, pos, vtable, vt_size, obj_size, what)

    def indirect(self, pos: int, what: str) -> int:
        return pos + self.scalar("<I", pos, what)

    def vector(self, pos: int, elem: int, what: str) -> tuple[int, int]:
        start = self.indirect(pos, what)
        length = self.scalar("<I", start, what)
        self._check(start + 4, length * elem, what)
        return start + 4, length


class _Table:
    def __init__(self, reader: _Reader, pos: int, vtable: int, vt_size: int, obj_size: int, what: str) -> None:
        self.r, self.pos, self.vtable, self.vt_size, self.obj_size, self.what = reader, pos, vtable, vt_size, obj_size, what

    def _field(self, slot: int, width: int) -> int:
        entry = 4 + 2 * slot
        if entry + 2 > self.vt_size:
            return 0
        offset = self.r.scalar("<H", self.vtable + entry, self.what)
        if offset and offset + width > self.obj_size:
            raise FlatbufferError(f"{self.what} field {slot} runs past its table")
        return self.pos + offset if offset else 0

    def scalar(self, slot: int, fmt: str, default: int = 0) -> int:
        pos = self._field(slot, _packer(fmt).size)
        return self.r.scalar(fmt, pos, self.what) if pos else default

    def vector(self, slot: int, elem: int) -> tuple[int, int]:
        pos = self._field(slot, 4)
        return self.r.vector(pos, elem, f"{self.what} field {slot}") if pos else (0, 0)

    def ints(self, slot: int, fmt: str = "<i") -> list[int]:
        start, length = self.vector(slot, struct.calcsize(fmt))
        # One unpack for the whole vector (its bounds were checked): a per-channel scale vector has thousands.
        return list(struct.unpack_from(f"{fmt[0]}{length}{fmt[1:]}", self.r.data, start)) if length else []

    def string(self, slot: int) -> str:
        start, length = self.vector(slot, 1)
        if not start:
            return ""
        if self.r.scalar("<B", start + length, f"{self.what} string") != 0:
            raise FlatbufferError(f"{self.what} string field {slot} is not terminated")
        return self.r.data[start:start + length].decode("utf-8", "replace")

    def table(self, slot: int, what: str) -> "_Table | None":
        pos = self._field(slot, 4)
        return self.r.table(self.r.indirect(pos, what), what) if pos else None

    def tables(self, slot: int, what: str) -> list["_Table"]:
        start, length = self.vector(slot, 4)
        return [self.r.table(self.r.indirect(start + 4 * i, what), f"{what} {i}") for i in range(length)]


def walk_tflite(data: bytes) -> ModelInfo:
    """Walk ``data`` as a TFLite model; raise FlatbufferError at the first thing out of bounds."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise FlatbufferError("no 'TFL3' identifier at byte 4")
    reader = _Reader(data)
    model = reader.table(reader.scalar("<I", 0, "root offset"), "model")
    info = ModelInfo(version=model.scalar(0, "<I"))
    if info.version != 3:
        raise FlatbufferError(f"schema version {info.version}, expected 3")
    buffers = model.tables(4, "buffer")
    info.buffers = len(buffers)
    for buffer in buffers:
        _check_buffer(buffer, len(data))
    codes = model.tables(1, "operator code")
    for code in codes:
        builtin = max(code.scalar(0, "<b"), code.scalar(3, "<i"))
        info.builtin_codes.add(builtin)
        custom = code.string(1)
        if custom:
            info.custom_codes.add(custom)
    subgraphs = model.tables(2, "subgraph")
    if not subgraphs:
        raise FlatbufferError("the model has no subgraph")
    info.subgraphs = len(subgraphs)
    for index, subgraph in enumerate(subgraphs):
        _walk_subgraph(subgraph, index, len(codes), len(buffers), info)
    model.string(3)
    for meta in model.tables(6, "metadata"):
        meta.string(0)
        if meta.scalar(1, "<I") >= len(buffers):
            raise FlatbufferError("metadata points at a buffer that does not exist")
    _walk_signatures(model, len(subgraphs))
    return info


def _check_buffer(buffer: _Table, file_size: int) -> None:
    buffer.vector(0, 1)
    offset, size = buffer.scalar(1, "<Q"), buffer.scalar(2, "<Q")
    if offset > 1 and offset + size > file_size:
        raise FlatbufferError(f"an external buffer ({size} bytes at {offset}) lies outside the file")


def _walk_subgraph(subgraph: _Table, index: int, n_codes: int, n_buffers: int, info: ModelInfo) -> None:
    tensors = subgraph.tables(0, f"subgraph {index} tensor")
    n = len(tensors)
    for tensor in tensors:
        kind = _walk_tensor(tensor, n_buffers)
        if index == 0:
            info.tensor_types.add(kind)
    ins, outs = subgraph.ints(1), subgraph.ints(2)
    for name, values in (("input", ins), ("output", outs)):
        if any(v < 0 or v >= n for v in values):
            raise FlatbufferError(f"subgraph {index} {name} refers to a tensor that does not exist")
    if index == 0:
        info.io_types = [_tensor_type(tensors[i]) for i in ins + outs]
    operators = subgraph.tables(3, f"subgraph {index} operator")
    for op in operators:
        if op.scalar(0, "<I") >= n_codes:
            raise FlatbufferError(f"subgraph {index} has an operator with an unknown operator code")
        for slot in (1, 2, 8):
            if any(v < -1 or v >= n for v in op.ints(slot)):
                raise FlatbufferError(f"subgraph {index} has an operator that uses a tensor that does not exist")
        if op.scalar(3, "<B"):
            op.table(4, "builtin options")
        op.vector(5, 1)
    subgraph.string(4)
    info.tensors += n
    info.operators += len(operators)


def _tensor_type(tensor: _Table) -> int:
    return tensor.scalar(1, "<b")


def _walk_tensor(tensor: _Table, n_buffers: int) -> int:
    for slot in (0, 7):
        dims = tensor.ints(slot)
        if len(dims) > MAX_DIMS or any(d < -1 for d in dims):
            raise FlatbufferError(f"a tensor has an invalid shape {dims[:MAX_DIMS + 1]}")
    kind = _tensor_type(tensor)
    if kind < 0 or kind > MAX_TENSOR_TYPE:
        raise FlatbufferError(f"a tensor has an unknown type {kind}")
    if tensor.scalar(2, "<I") >= n_buffers:
        raise FlatbufferError("a tensor points at a buffer that does not exist")
    tensor.string(3)
    quant = tensor.table(4, "quantization")
    if quant is not None:
        for slot, elem in ((0, 4), (1, 4), (2, 4), (3, 8)):
            quant.vector(slot, elem)
    tensor.table(6, "sparsity")
    return kind


# -- reading the graph ----------------------------------------------------------------------------------
# schema.fbs enum BuiltinOperator, in code order (code -> name).
BUILTIN_OPERATORS: tuple[str, ...] = tuple((
    "ADD AVERAGE_POOL_2D CONCATENATION CONV_2D DEPTHWISE_CONV_2D DEPTH_TO_SPACE DEQUANTIZE EMBEDDING_LOOKUP "
    "FLOOR FULLY_CONNECTED HASHTABLE_LOOKUP L2_NORMALIZATION L2_POOL_2D LOCAL_RESPONSE_NORMALIZATION LOGISTIC "
    "LSH_PROJECTION LSTM MAX_POOL_2D MUL RELU RELU_N1_TO_1 RELU6 RESHAPE RESIZE_BILINEAR RNN SOFTMAX "
    "SPACE_TO_DEPTH SVDF TANH CONCAT_EMBEDDINGS SKIP_GRAM CALL CUSTOM EMBEDDING_LOOKUP_SPARSE PAD "
    "UNIDIRECTIONAL_SEQUENCE_RNN GATHER BATCH_TO_SPACE_ND SPACE_TO_BATCH_ND TRANSPOSE MEAN SUB DIV SQUEEZE "
    "UNIDIRECTIONAL_SEQUENCE_LSTM STRIDED_SLICE BIDIRECTIONAL_SEQUENCE_RNN EXP TOPK_V2 SPLIT LOG_SOFTMAX "
    "DELEGATE BIDIRECTIONAL_SEQUENCE_LSTM CAST PRELU MAXIMUM ARG_MAX MINIMUM LESS NEG PADV2 GREATER "
    "GREATER_EQUAL LESS_EQUAL SELECT SLICE SIN TRANSPOSE_CONV SPARSE_TO_DENSE TILE EXPAND_DIMS EQUAL NOT_EQUAL "
    "LOG SUM SQRT RSQRT SHAPE POW ARG_MIN FAKE_QUANT REDUCE_PROD REDUCE_MAX PACK LOGICAL_OR ONE_HOT LOGICAL_AND "
    "LOGICAL_NOT UNPACK REDUCE_MIN FLOOR_DIV REDUCE_ANY SQUARE ZEROS_LIKE FILL FLOOR_MOD RANGE "
    "RESIZE_NEAREST_NEIGHBOR LEAKY_RELU SQUARED_DIFFERENCE MIRROR_PAD ABS SPLIT_V UNIQUE CEIL REVERSE_V2 ADD_N "
    "GATHER_ND COS WHERE RANK ELU REVERSE_SEQUENCE MATRIX_DIAG QUANTIZE MATRIX_SET_DIAG ROUND HARD_SWISH IF "
    "WHILE NON_MAX_SUPPRESSION_V4 NON_MAX_SUPPRESSION_V5 SCATTER_ND SELECT_V2 DENSIFY SEGMENT_SUM BATCH_MATMUL "
    "PLACEHOLDER_FOR_GREATER_OP_CODES CUMSUM CALL_ONCE BROADCAST_TO RFFT2D CONV_3D IMAG REAL COMPLEX_ABS "
    "HASHTABLE HASHTABLE_FIND HASHTABLE_IMPORT HASHTABLE_SIZE REDUCE_ALL CONV_3D_TRANSPOSE VAR_HANDLE "
    "READ_VARIABLE ASSIGN_VARIABLE BROADCAST_ARGS RANDOM_STANDARD_NORMAL BUCKETIZE RANDOM_UNIFORM MULTINOMIAL "
    "GELU DYNAMIC_UPDATE_SLICE RELU_0_TO_1 UNSORTED_SEGMENT_PROD UNSORTED_SEGMENT_MAX UNSORTED_SEGMENT_SUM ATAN2 "
    "UNSORTED_SEGMENT_MIN SIGN BITCAST BITWISE_XOR RIGHT_SHIFT STABLEHLO_LOGISTIC STABLEHLO_ADD STABLEHLO_DIVIDE "
    "STABLEHLO_MULTIPLY STABLEHLO_MAXIMUM STABLEHLO_RESHAPE STABLEHLO_CLAMP STABLEHLO_CONCATENATE "
    "STABLEHLO_BROADCAST_IN_DIM STABLEHLO_CONVOLUTION STABLEHLO_SLICE STABLEHLO_CUSTOM_CALL STABLEHLO_REDUCE "
    "STABLEHLO_ABS STABLEHLO_AND STABLEHLO_COSINE STABLEHLO_EXPONENTIAL STABLEHLO_FLOOR STABLEHLO_LOG "
    "STABLEHLO_MINIMUM STABLEHLO_NEGATE STABLEHLO_OR STABLEHLO_POWER STABLEHLO_REMAINDER STABLEHLO_RSQRT "
    "STABLEHLO_SELECT STABLEHLO_SUBTRACT STABLEHLO_TANH STABLEHLO_SCATTER STABLEHLO_COMPARE STABLEHLO_CONVERT "
    "STABLEHLO_DYNAMIC_SLICE STABLEHLO_DYNAMIC_UPDATE_SLICE STABLEHLO_PAD STABLEHLO_IOTA STABLEHLO_DOT_GENERAL "
    "STABLEHLO_REDUCE_WINDOW STABLEHLO_SORT STABLEHLO_WHILE STABLEHLO_GATHER STABLEHLO_TRANSPOSE DILATE "
    "STABLEHLO_RNG_BIT_GENERATOR REDUCE_WINDOW STABLEHLO_COMPOSITE STABLEHLO_SHIFT_LEFT STABLEHLO_CBRT "
    "STABLEHLO_CASE"
).split())
# schema.fbs enum TensorType.
TENSOR_TYPES: Mapping[int, str] = {
    0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 5: "string", 6: "bool", 7: "int16",
    8: "complex64", 9: "int8", 10: "float64", 11: "complex128", 12: "uint64", 13: "resource", 14: "variant",
    15: "uint32", 16: "uint16", 17: "int4", 18: "bfloat16", 19: "int2", 20: "uint4",
}
# schema.fbs enum ActivationFunctionType.
ACTIVATIONS: Mapping[int, str] = {0: "NONE", 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH", 5: "SIGN_BIT"}
# The builtin options read for an operator: op name -> (BuiltinOptions union type, {field: (slot, format, default)}).
OPTION_FIELDS: Mapping[str, tuple[int, Mapping[str, tuple[int, str, int]]]] = {
    "CONV_2D": (1, {"fused_activation_function": (3, "<b", 0), "dilation_w_factor": (4, "<i", 1),
                    "dilation_h_factor": (5, "<i", 1)}),
    "DEPTHWISE_CONV_2D": (2, {"fused_activation_function": (4, "<b", 0), "dilation_w_factor": (5, "<i", 1),
                              "dilation_h_factor": (6, "<i", 1)}),
    "AVERAGE_POOL_2D": (5, {"fused_activation_function": (5, "<b", 0)}),
    "MAX_POOL_2D": (5, {"fused_activation_function": (5, "<b", 0)}),
    "FULLY_CONNECTED": (8, {"fused_activation_function": (0, "<b", 0), "weights_format": (1, "<b", 0)}),
    "CONCATENATION": (10, {"axis": (0, "<i", 0), "fused_activation_function": (1, "<b", 0)}),
    "STRIDED_SLICE": (32, {"begin_mask": (0, "<i", 0), "end_mask": (1, "<i", 0), "ellipsis_mask": (2, "<i", 0),
                           "new_axis_mask": (3, "<i", 0), "shrink_axis_mask": (4, "<i", 0)}),
    "PACK": (59, {"values_count": (0, "<i", 0), "axis": (1, "<i", 0)}),
    "TRANSPOSE_CONV": (49, {"fused_activation_function": (3, "<b", 0)}),
}
_NUMPY_TYPES = {"float32": "<f4", "float16": "<f2", "int32": "<i4", "uint8": "u1", "int64": "<i8", "bool": "?",
                "int16": "<i2", "int8": "i1", "float64": "<f8", "uint64": "<u8", "uint32": "<u4", "uint16": "<u2"}


def operator_name(code: int) -> str:
    """The schema name of builtin operator ``code`` ("BUILTIN_<code>" for a code newer than this table)."""
    return BUILTIN_OPERATORS[code] if 0 <= code < len(BUILTIN_OPERATORS) else f"BUILTIN_{code}"


class Tensor(NamedTuple):
    """One tensor of subgraph 0. ``shape_signature`` has -1 where a size is known only at run time."""

    index: int
    name: str
    dtype: str                     # TENSOR_TYPES name: "int8", "float32", ...
    shape: tuple[int, ...]
    shape_signature: tuple[int, ...]
    buffer: int                    # index into the model's buffers (0: no data)
    scale: tuple[float, ...] = ()
    zero_point: tuple[int, ...] = ()

    @property
    def dynamic(self) -> bool:
        return -1 in self.shape_signature


class Operator(NamedTuple):
    """One operator of subgraph 0, in execution order; -1 in ``inputs`` is an omitted optional input."""

    index: int
    name: str                      # BUILTIN_OPERATORS name, or "CUSTOM"
    custom: str                    # the custom code of a CUSTOM op ("edgetpu-custom-op", ...)
    version: int
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    options: Mapping[str, int]     # the OPTION_FIELDS of this op, when present ({} when none)

    def option(self, name: str) -> Optional[int]:
        return self.options.get(name)


class Graph(NamedTuple):
    """Subgraph 0 of a .tflite model, read by ``read_graph``."""

    operators: tuple[Operator, ...]
    tensors: tuple[Tensor, ...]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    subgraphs: int
    buffers: tuple[bytes, ...] = ()

    def __repr__(self) -> str:  # not the buffers: megabytes of weights
        return (f"Graph({len(self.operators)} operators, {len(self.tensors)} tensors, inputs={self.inputs}, "
                f"outputs={self.outputs}, subgraphs={self.subgraphs})")

    def tensor(self, index: int) -> Optional[Tensor]:
        return self.tensors[index] if 0 <= index < len(self.tensors) else None

    def constant(self, index: int) -> Optional[np.ndarray]:
        """The data of a constant tensor (weights, axes, paddings...) in its shape, or None for an activation."""
        tensor = self.tensor(index)
        if tensor is None or not 0 < tensor.buffer < len(self.buffers) or not self.buffers[tensor.buffer]:
            return None
        kind = _NUMPY_TYPES.get(tensor.dtype)
        data = self.buffers[tensor.buffer]
        if kind is None or len(data) % np.dtype(kind).itemsize:
            return None
        array = np.frombuffer(data, dtype=kind)
        return array.reshape(tensor.shape) if array.size == int(np.prod(tensor.shape, dtype=np.int64)) else array

    def activations(self) -> set[int]:
        """The tensors computed at run time: the model's inputs and every operator output."""
        return set(self.inputs) | {i for op in self.operators for i in op.outputs}

    def producers(self) -> dict[int, int]:
        """Tensor index -> index of the operator that writes it."""
        return {t: op.index for op in self.operators for t in op.outputs}


def read_graph(data: bytes) -> Graph:
    """Walk ``data`` (FlatbufferError at the first thing out of bounds), then read its subgraph 0."""
    walk_tflite(data)
    reader = _Reader(data)
    model = reader.table(reader.scalar("<I", 0, "root offset"), "model")
    codes = [_operator_code(code) for code in model.tables(1, "operator code")]
    buffers = tuple(_buffer_bytes(buffer, data) for buffer in model.tables(4, "buffer"))
    subgraphs = model.tables(2, "subgraph")
    subgraph = subgraphs[0]
    tensors = tuple(_read_tensor(i, t) for i, t in enumerate(subgraph.tables(0, "tensor")))
    operators = tuple(_read_operator(i, op, codes) for i, op in enumerate(subgraph.tables(3, "operator")))
    return Graph(operators=operators, tensors=tensors, inputs=tuple(subgraph.ints(1)),
                 outputs=tuple(subgraph.ints(2)), subgraphs=len(subgraphs), buffers=buffers)


def _operator_code(code: _Table) -> tuple[str, str, int]:
    builtin = max(code.scalar(0, "<b"), code.scalar(3, "<i"))
    return operator_name(builtin), code.string(1), code.scalar(2, "<i", 1)


def _buffer_bytes(buffer: _Table, data: bytes) -> bytes:
    start, length = buffer.vector(0, 1)
    if length:
        return data[start:start + length]
    offset, size = buffer.scalar(1, "<Q"), buffer.scalar(2, "<Q")
    return data[offset:offset + size] if offset > 1 else b""


def _read_tensor(index: int, tensor: _Table) -> Tensor:
    shape = tuple(tensor.ints(0))
    scale: Sequence[float] = ()
    zero_point: Sequence[int] = ()
    quant = tensor.table(4, "quantization")
    if quant is not None:
        scale, zero_point = quant.ints(2, "<f"), quant.ints(3, "<q")
    kind = _tensor_type(tensor)
    return Tensor(index=index, name=tensor.string(3), dtype=TENSOR_TYPES.get(kind, f"type {kind}"), shape=shape,
                  shape_signature=tuple(tensor.ints(7)) or shape, buffer=tensor.scalar(2, "<I"),
                  scale=tuple(scale), zero_point=tuple(zero_point))


def _read_operator(index: int, op: _Table, codes: Sequence[tuple[str, str, int]]) -> Operator:
    name, custom, version = codes[op.scalar(0, "<I")]
    options: dict[str, int] = {}
    spec = OPTION_FIELDS.get(name)
    if spec is not None and op.scalar(3, "<B") == spec[0]:
        table = op.table(4, f"{name} options")
        if table is not None:
            options = {key: table.scalar(slot, fmt, default) for key, (slot, fmt, default) in spec[1].items()}
    return Operator(index=index, name=name, custom=custom, version=version, inputs=tuple(op.ints(1)),
                    outputs=tuple(op.ints(2)), options=options)


def layer_of(name: str, known: Sequence[str] = (), innermost: bool = False) -> str:
    """The Keras layer a TFLite tensor or ONNX node belongs to ("model_1/hidden_1/MatMul;..." -> "hidden");
    with ``innermost``, the deepest known layer of a nested model ("m_1/body_1/conv_1/Conv2D" -> "conv")."""
    first = name.split(";")[0]
    parts = [p for p in first.split("/") if p and p != "StatefulPartitionedCall"]
    known_set = set(known)
    for part in (parts[-2::-1] if innermost else parts[1:] + parts[:1]):
        base = part.split(":")[0]
        if base in known_set:
            return base
        trimmed = re.sub(r"_\d+$", "", base)
        if trimmed in known_set:
            return trimmed
    if len(parts) >= 2:
        return re.sub(r"_\d+$", "", parts[1].split(":")[0])
    return parts[0].split(":")[0] if parts else name


def _walk_signatures(model: _Table, n_subgraphs: int) -> None:
    for signature in model.tables(7, "signature"):
        for slot in (0, 1):
            for tensor_map in signature.tables(slot, "signature tensor"):
                tensor_map.string(0)
        signature.string(2)
        if signature.scalar(4, "<I") >= n_subgraphs:
            raise FlatbufferError("a signature points at a subgraph that does not exist")


def read_metadata(data: bytes, name: str) -> "bytes | None":
    """The bytes of the model's metadata entry ``name`` (its buffer's data, inline or at its external offset),
    or None when the model has no such entry. Bounds-checked like the walk; FlatbufferError on damage."""
    if len(data) < 8 or data[4:8] != b"TFL3":
        raise FlatbufferError("no 'TFL3' identifier at byte 4")
    reader = _Reader(data)
    model = reader.table(reader.scalar("<I", 0, "root offset"), "model")
    for meta in model.tables(6, "metadata"):
        if meta.string(0) != name:
            continue
        buffers = model.tables(4, "buffer")
        index = meta.scalar(1, "<I")
        if index >= len(buffers):
            raise FlatbufferError("metadata points at a buffer that does not exist")
        buffer = buffers[index]
        start, length = buffer.vector(0, 1)
        if start:
            return data[start:start + length]
        offset, size = buffer.scalar(1, "<Q"), buffer.scalar(2, "<Q")
        if offset > 1 and offset + size <= len(data):
            return data[offset:offset + size]
        return b""
    return None
