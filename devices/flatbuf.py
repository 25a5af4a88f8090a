"""A bounds-checking walk of a TFLite flatbuffer, in pure Python (no native code touches the bytes).

It checks what a malformed or hostile file would use to make LiteRT's C++ reader read out of bounds: the
root table, every vtable, vector and string it reaches, and the indices that tie the model together
(tensor -> buffer, operator -> operator code, operator/subgraph -> tensor, metadata -> buffer, external
buffer offset/size -> file size). Field slots follow tensorflow/lite/schema/schema.fbs.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

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


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def _check(self, pos: int, width: int, what: str) -> None:
        if pos < 0 or pos + width > self.size:
            raise FlatbufferError(f"{what} at byte {pos} lies outside the {self.size}-byte file")

    def scalar(self, fmt: str, pos: int, what: str) -> int:
        width = struct.calcsize(fmt)
        self._check(pos, width, what)
        return struct.unpack_from(fmt, self.data, pos)[0]

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
        pos = self._field(slot, struct.calcsize(fmt))
        return self.r.scalar(fmt, pos, self.what) if pos else default

    def vector(self, slot: int, elem: int) -> tuple[int, int]:
        pos = self._field(slot, 4)
        return self.r.vector(pos, elem, f"{self.what} field {slot}") if pos else (0, 0)

    def ints(self, slot: int, fmt: str = "<i") -> list[int]:
        start, length = self.vector(slot, struct.calcsize(fmt))
        width = struct.calcsize(fmt)
        return [struct.unpack_from(fmt, self.r.data, start + i * width)[0] for i in range(length)]

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
