"""Will the Edge TPU compiler map this .tflite? A static check of every operation against Coral's documented
requirements (devices/edgetpu_ops.py says where each comes from), on the real tensors, and the partition the
compiler would make. Pure flatbuffer reading (devices/flatbuf.py): no TensorFlow, no interpreter.

Per operation, in this order: is it in the table; does the target runtime (edgetpu_compiler ``-m``) have it;
are its activations 8-bit; are their sizes constant; do at most the 3 innermost dimensions exceed 1; does it
meet its own limitations. The partition: by default the compiler makes one Edge TPU subgraph, so an
operation runs on the Edge TPU only when it is supported and no path from an Edge TPU operation through a
CPU operation leads to it (walked on the graph, so a branch that never meets the unsupported operation stays
mapped); the others are "More than one subgraph is not supported". With ``-a`` every supported operation is
mapped, in as many Edge TPU subgraphs as the graph needs. The prediction is an upper bound: the compiler can
still refuse an operation for reasons the documentation does not give.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgecnn.devices import edgetpu_ops as ops
from edgecnn.devices.flatbuf import ACTIVATIONS, FlatbufferError, Graph, Operator, layer_of, read_graph
from edgecnn.errors import InputPathError, ModelLoadError, UsageError


@dataclass(frozen=True)
class EdgeTpuOptions:
    """What the compiler is asked for: ``runtime`` is its ``-m``, ``multiple_subgraphs`` its ``-a``."""

    runtime: int = ops.DEFAULT_RUNTIME
    multiple_subgraphs: bool = False

    def __post_init__(self) -> None:
        if self.runtime not in ops.RUNTIMES:
            raise UsageError(f"Edge TPU runtime {self.runtime} is not one the compiler targets",
                             f"pass --edgetpu-runtime {ops.RUNTIMES[0]} to {ops.RUNTIMES[-1]} "
                             f"(edgetpu_compiler {ops.DEFAULT_COMPILER} targets {ops.DEFAULT_RUNTIME})")

    def compiler_args(self) -> list[str]:
        return ["-m", str(self.runtime)] + (["-a"] if self.multiple_subgraphs else [])


@dataclass(frozen=True)
class OpVerdict:
    index: int
    op: str
    layer: str
    supported: bool           # the operation itself meets the documented requirements
    reason: str = ""          # why not, in our words (empty when supported)
    on_edgetpu: bool = False  # where the predicted partition puts it
    status: str = ""          # the compiler log's wording for its fate
    may_not_map: str = ""     # a documented "may not map" that no rule decides: mapped here, but maybe not


@dataclass(frozen=True)
class EdgeTpuReport:
    model: str
    ops: tuple[OpVerdict, ...]
    problems: tuple[str, ...] = ()      # model-level (not quantized, 16-bit, dynamic batch, ...)
    runtime: int = ops.DEFAULT_RUNTIME
    multiple_subgraphs: bool = False
    subgraphs: int = 0                  # Edge TPU subgraphs in the predicted partition
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

    @property
    def caveats(self) -> tuple[OpVerdict, ...]:
        return tuple(op for op in self.ops if op.on_edgetpu and op.may_not_map)

    def assumption(self) -> str:
        """Which compiler run the prediction stands for, and that it is an upper bound."""
        mode = "multiple Edge TPU subgraphs (-a)" if self.multiple_subgraphs else "one Edge TPU subgraph"
        return (f"predicted for Edge TPU runtime {self.runtime} (edgetpu_compiler -m {self.runtime}), {mode}; "
                "an upper bound: the compiler may map fewer")

    def summary(self) -> list[tuple[str, int, str]]:
        """(operator, count, status) rows, grouped as the compiler's log table groups them."""
        counts = Counter((op.op, op.status) for op in self.ops)
        return [(name, count, status) for (name, status), count in counts.items()]

    def to_dict(self) -> dict[str, Any]:
        from edgecnn.manifest import _to_jsonable  # noqa: PLC0415 - the one dataclass -> JSON walker

        first = self.first_unsupported
        return dict(_to_jsonable(self), mapped=self.mapped, on_cpu=self.on_cpu, fully_mapped=self.fully_mapped,
                    assumption=self.assumption(), summary=[list(row) for row in self.summary()],
                    first_unsupported=None if first is None else _to_jsonable(first))


def load_graph(path: str | Path) -> Graph:
    """The graph of a .tflite file; InputPathError / ModelLoadError (one line) when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise InputPathError(f"model {path} does not exist", "give a full-int8 .tflite file")
    try:
        return read_graph(path.read_bytes())
    except (FlatbufferError, OSError) as exc:
        raise ModelLoadError(f"{path.name} is not a readable .tflite model ({exc})",
                             "give a .tflite file written by the TFLite converter") from None


def check_edgetpu(path: str | Path, options: EdgeTpuOptions = EdgeTpuOptions()) -> EdgeTpuReport:
    """The static readiness check of a .tflite file for ``options`` (runtime, -a): one verdict per operation."""
    return check_graph(load_graph(path), options, str(path))


def check_graph(graph: Graph, options: EdgeTpuOptions = EdgeTpuOptions(), model: str = "") -> EdgeTpuReport:
    """The readiness check of a graph read by ``read_graph`` (``model`` names it in the report)."""
    live = graph.activations()
    verdicts = [_judge(graph, op, live, options.runtime) for op in graph.operators]
    producers = graph.producers()
    parents = [tuple(sorted({producers[t] for t in op.inputs if t in producers})) for op in graph.operators]
    placed = partition(verdicts, parents, options.multiple_subgraphs)
    notes = () if graph.subgraphs == 1 else (f"the model has {graph.subgraphs} TFLite subgraphs; only the first "
                                             "(the main graph) is checked",)
    return EdgeTpuReport(model=model, ops=tuple(placed), problems=tuple(model_problems(graph)),
                         runtime=options.runtime, multiple_subgraphs=options.multiple_subgraphs,
                         subgraphs=count_subgraphs(placed, parents), notes=notes)


# -- partition ---------------------------------------------------------------------------------------
def partition(verdicts: Sequence[OpVerdict], parents: Optional[Sequence[Sequence[int]]] = None,
              multiple_subgraphs: bool = False) -> list[OpVerdict]:
    """Place each operation. ``parents[i]``: the operations whose outputs operation i reads (default: a
    chain, each reading the one before). One subgraph: a supported operation is mapped unless a path from a
    mapped operation through a CPU operation reaches it; operations in front of the first mapped one stay on
    the CPU before it. ``multiple_subgraphs``: every supported operation is mapped."""
    parents = parents if parents is not None else [(i - 1,) if i else () for i in range(len(verdicts))]
    placed: list[OpVerdict] = []
    reached: list[bool] = []   # a mapped operation lies on or upstream of it
    split: list[bool] = []     # a mapped -> CPU path lies upstream of it (or through it)
    for verdict, ups in zip(verdicts, parents):
        blocked = any(split[p] or (reached[p] and not placed[p].on_edgetpu) for p in ups)
        on = verdict.supported and (multiple_subgraphs or not blocked)
        status = ops.MAPPED if on else (verdict.status if not verdict.supported else ops.AFTER_SPLIT)
        placed.append(replace(verdict, on_edgetpu=on, status=status))
        reached.append(on or any(reached[p] for p in ups))
        split.append(blocked)
    return placed


def count_subgraphs(placed: Sequence[OpVerdict], parents: Sequence[Sequence[int]]) -> int:
    """Edge TPU subgraphs a partition needs: mapped operations separated by a mapped -> CPU -> mapped path
    cannot share one: the count is the number of levels of such crossings among mapped operations."""
    level: list[int] = []
    for verdict, ups in zip(placed, parents):
        level.append(max((level[p] + int(placed[p].on_edgetpu and not verdict.on_edgetpu) for p in ups), default=0))
    return len({level[i] for i, op in enumerate(placed) if op.on_edgetpu})


# -- one operation -----------------------------------------------------------------------------------
def _judge(graph: Graph, op: Operator, live: set[int], runtime: int) -> OpVerdict:
    status, reason = _verdict(graph, op, live, runtime)
    rule = ops.rule_for(op.name)
    caveat = rule.may_not_map if rule else ""
    if not status and op.name in ops.UNCONFIRMED_RUNTIME and runtime < ops.DEFAULT_RUNTIME:
        caveat = f"the minimum runtime of {op.name} is not confirmed; with runtime {runtime} it may not map"
    return OpVerdict(index=op.index, op=op.name, layer=_layer(graph, op, live), supported=not status,
                     reason=reason, status=status or ops.MAPPED, may_not_map=caveat if not status else "")


def _verdict(graph: Graph, op: Operator, live: set[int], runtime: int) -> tuple[str, str]:
    """(compiler status, our reason) for an operation that cannot map; ("", "") when it can."""
    if op.name == "CUSTOM" and op.custom == ops.EDGETPU_CUSTOM_OP:
        return "", ""
    rule = ops.rule_for(op.name)
    if rule is None:
        what = f"custom operation '{op.custom}'" if op.name == "CUSTOM" else op.name
        return ops.NOT_SUPPORTED, f"{what} is not in the Edge TPU's supported-operations table"
    if rule.min_runtime > runtime:
        return ops.NOT_SUPPORTED, f"{op.name} needs Edge TPU runtime {rule.min_runtime} or later (-m {runtime})"
    activations = [graph.tensors[i] for i in op.inputs + op.outputs if i in live]
    wrong = sorted({t.dtype for t in activations if t.dtype not in ops.EIGHT_BIT})
    if wrong:
        kind = "16-bit activations (a 16x8 model)" if "int16" in wrong else ", ".join(wrong)
        return ops.UNSUPPORTED_TYPE, f"{op.name} works on {kind}; the Edge TPU takes only 8-bit tensors"
    dynamic = [t for t in activations if -1 in t.shape_signature[1:]]
    if dynamic:
        return ops.UNSPECIFIED, (f"dynamic-sized tensor {list(dynamic[0].shape_signature)}: sizes must be constant "
                                 "at compile time")
    # The operation's own limitation first: a Pad or Pack on the batch also makes a batch > 1 (a rank problem),
    # but the limitation is what to change.
    check = LIMITS.get(op.name)
    reason = check(graph, op, runtime) if check else ""
    if reason:
        return ops.UNSPECIFIED, reason
    too_many = [t for t in activations if any(d > 1 for d in t.shape[:-3])]
    if too_many:
        return ops.UNSUPPORTED_RANK, f"tensor {list(too_many[0].shape)} has more than 3 dimensions larger than 1"
    return "", ""


def _layer(graph: Graph, op: Operator, live: set[int]) -> str:
    # A model output is named "StatefulPartitionedCall:0" and a converter-made tensor "tfl.dequantize": then
    # the weights ("model/conv_1/convolution") or the input name the layer.
    outputs = [graph.tensors[i].name for i in op.outputs if i >= 0]
    weights = [graph.tensors[i].name for i in op.inputs if i >= 0 and i not in live]
    inputs = [graph.tensors[i].name for i in op.inputs if i in live]
    named = [n for n in outputs + weights + inputs if "/" in n] or outputs + inputs
    return layer_of(named[0]) if named else op.name


# -- the documented limitations ------------------------------------------------------------------------
def _fused(graph: Graph, op: Operator, runtime: int) -> str:
    fused = op.option("fused_activation_function") or 0
    if fused:
        return f"{op.name} with a fused activation ({ACTIVATIONS.get(fused, fused)}): no fused activation allowed"
    return ""


def _concatenation(graph: Graph, op: Operator, runtime: int) -> str:
    fused = _fused(graph, op, runtime)
    constants = [(i, graph.constant(i)) for i in op.inputs if graph.constant(i) is not None]
    if fused or not constants:
        return fused
    if len(op.inputs) != 2:
        return f"CONCATENATION of {len(op.inputs)} inputs with a constant one: only 2 inputs are allowed then"
    index, data = constants[0]
    zero = graph.tensors[index].zero_point[0] if graph.tensors[index].zero_point else 0
    if np.any(data.astype(np.int64) != zero):
        return "CONCATENATION with a constant input that is not all zeros (only zero-padding is allowed)"
    return ""


def _dilation(graph: Graph, op: Operator, runtime: int) -> str:
    h, w = op.option("dilation_h_factor") or 1, op.option("dilation_w_factor") or 1
    return f"{op.name} with dilation {h}x{w} (height x width): x and y must use the same dilation" if h != w else ""


def _fully_connected(graph: Graph, op: Operator, runtime: int) -> str:
    if op.option("weights_format"):
        return "FULLY_CONNECTED with shuffled weights: only the default weights format is allowed"
    out = graph.tensors[op.outputs[0]].shape
    if sum(1 for d in out if d > 1) > 1:
        return f"FULLY_CONNECTED output {list(out)} is not one-dimensional"
    return ""


def _axes(graph: Graph, op: Operator, position: int, rank: int) -> Optional[list[int]]:
    data = graph.constant(op.inputs[position]) if len(op.inputs) > position else None
    return None if data is None else sorted({int(a) % rank for a in np.ravel(data)}) if rank else []


def _reduce(graph: Graph, op: Operator, runtime: int) -> str:
    shape = graph.tensors[op.inputs[0]].shape
    axes = _axes(graph, op, 1, len(shape))
    if axes is None:
        return f"{op.name} axes are computed at run time"
    if 0 in axes and len(shape) > 1:
        return f"{op.name} reduces over the batch dimension (axes {axes})"
    if op.name == "MEAN" and runtime <= ops.LEGACY_RUNTIME and any(a not in _xy(len(shape)) for a in axes):
        return f"MEAN over axes {axes}: runtime {runtime} reduces along x and/or y only"
    z = len(shape) - 1
    if op.name == "MEAN" and z in axes and shape[z] % 4:
        return f"MEAN reduces over z of size {shape[z]}: a z-reduction needs z a multiple of 4"
    return ""


def _xy(rank: int) -> tuple[int, ...]:
    return (rank - 3, rank - 2) if rank >= 3 else ()


def _pack(graph: Graph, op: Operator, runtime: int) -> str:
    rank = len(graph.tensors[op.outputs[0]].shape)
    axis = (op.option("axis") or 0) % rank if rank else 0
    return "PACK along the batch dimension (axis 0)" if axis == 0 and rank > 1 else ""


def _pad(graph: Graph, op: Operator, runtime: int) -> str:
    paddings = graph.constant(op.inputs[1]) if len(op.inputs) > 1 else None
    if paddings is None:
        return "PAD paddings are computed at run time"
    padded = [i for i, row in enumerate(np.reshape(paddings, (-1, 2))) if np.any(row)]
    if 0 in padded and paddings.shape[0] > 1:
        return f"PAD pads the batch dimension (paddings {np.reshape(paddings, (-1, 2)).tolist()})"
    rank = paddings.shape[0]
    if runtime <= ops.LEGACY_RUNTIME and any(i not in _xy(rank) for i in padded):
        return f"PAD along dimensions {padded}: runtime {runtime} pads along x and/or y only"
    return ""


def _prelu(graph: Graph, op: Operator, runtime: int) -> str:
    alpha = graph.tensors[op.inputs[1]].shape
    if any(d > 1 for d in alpha[:-1]):
        return f"PRELU alpha of shape {list(alpha)}: only the innermost dimension may exceed 1"
    return ""


def _resize(graph: Graph, op: Operator, runtime: int) -> str:
    for index in (op.inputs[0], op.outputs[0]):
        shape = graph.tensors[index].shape
        if any(d > 1 for d in shape[:-3]):
            return f"{op.name} on {list(shape)}: input and output must be 3-dimensional"
    return ""


def _softmax(graph: Graph, op: Operator, runtime: int) -> str:
    shape = graph.tensors[op.inputs[0]].shape
    if sum(1 for d in shape if d > 1) > 1 or int(np.prod(shape)) > ops.SOFTMAX_MAX_ELEMENTS:
        return f"SOFTMAX input {list(shape)} is not 1-D with at most {ops.SOFTMAX_MAX_ELEMENTS} elements"
    return ""


def _split(graph: Graph, op: Operator, runtime: int) -> str:
    rank = len(graph.tensors[op.inputs[1]].shape)
    axes = _axes(graph, op, 0, rank)
    if axes is None:
        return "SPLIT axis is computed at run time"
    return "SPLIT along the batch dimension" if 0 in axes and rank > 1 else ""


def _strided_slice(graph: Graph, op: Operator, runtime: int) -> str:
    strides = graph.constant(op.inputs[3]) if len(op.inputs) > 3 else None
    if strides is None:
        return "STRIDED_SLICE strides are computed at run time"
    if np.any(strides != 1):
        return f"STRIDED_SLICE with strides {np.ravel(strides).tolist()}: all strides must be 1"
    if op.option("ellipsis_mask") or op.option("new_axis_mask"):
        return (f"STRIDED_SLICE with ellipsis_mask {op.option('ellipsis_mask')} and new_axis_mask "
                f"{op.option('new_axis_mask')}: both must be 0")
    return ""


LIMITS: dict[str, Callable[[Graph, Operator, int], str]] = {
    "AVERAGE_POOL_2D": _fused, "MAX_POOL_2D": _fused, "CONCATENATION": _concatenation, "CONV_2D": _dilation,
    "DEPTHWISE_CONV_2D": _dilation, "FULLY_CONNECTED": _fully_connected, "MEAN": _reduce, "SUM": _reduce,
    "REDUCE_MAX": _reduce, "REDUCE_MIN": _reduce, "PACK": _pack, "PAD": _pad, "PRELU": _prelu,
    "RESIZE_BILINEAR": _resize, "RESIZE_NEAREST_NEIGHBOR": _resize, "SOFTMAX": _softmax, "SPLIT": _split,
    "STRIDED_SLICE": _strided_slice,
}


# -- the whole model ---------------------------------------------------------------------------------
def model_problems(graph: Graph) -> list[str]:
    """Model-level findings, each a line a user can act on."""
    if any(op.custom == ops.EDGETPU_CUSTOM_OP for op in graph.operators):
        return ["already compiled for the Edge TPU (it holds an edgetpu-custom-op): check the model it was "
                "compiled from"]
    live = [graph.tensors[i] for i in sorted(graph.activations())]
    kinds = {t.dtype for t in live}
    problems = []
    if not kinds & (ops.EIGHT_BIT | {"int16"}):
        problems.append("Model not quantized: the Edge TPU runs only fully 8-bit quantized models "
                        "(convert with --formats tflite-int8)")
    if "int16" in kinds:
        problems.append("16-bit activations (a 16x8 model): the Edge TPU runs only 8-bit tensors; convert with "
                        "full int8 (--formats tflite-int8)")
    if any(graph.tensors[i].shape_signature[:1] == (-1,) for i in graph.inputs):
        problems.append("the batch dimension is dynamic (-1): compile a batch-1 model "
                        "(edgecnn inspect MODEL.keras --target edgetpu writes one)")
    floats = sorted({op.name for op in graph.operators if op.name not in ("DEQUANTIZE", "QUANTIZE")
                     and any(graph.tensors[i].dtype.startswith("float") for i in op.outputs if i >= 0)})
    if floats and kinds & ops.EIGHT_BIT:
        problems.append(f"not fully int8: {', '.join(floats)} run in float (no int8 kernel, or kept in float), "
                        "so no Edge TPU subgraph can include them")
    return problems


def ready_as_is(graph: Graph) -> tuple[bool, str]:
    """Whether a .tflite can go to the compiler unchanged (full int8, static shapes), and why not."""
    problems = model_problems(graph)
    blocking = [p for p in problems if not p.startswith("not fully int8")]
    if blocking:
        return False, blocking[0]
    dynamic = [t for t in graph.tensors if t.dynamic]
    if dynamic:
        return False, f"tensor {dynamic[0].name} has a size known only at run time ({list(dynamic[0].shape_signature)})"
    return True, ""
