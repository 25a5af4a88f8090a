"""What the Edge TPU compiler maps: Coral's supported-operations table, the runtime version each operation
needs, and the compiler's own words for an operation's fate.

Sources (read 2026-11-30 through stored copies; no live page could be fetched here):

* Coral, "TensorFlow models on the Edge TPU" (https://coral.ai/docs/edgetpu/models-intro/), sections "Model
  requirements" and "Supported operations". The stored copy of the page holds its opening only; the rows of
  the table (operation names and "Known limitations" text) were read in Axis's copy of Coral's table for the
  ARTPEC-7 DLPU, an Edge TPU (developer.axis.com/computer-vision/on-device/system-on-chip/artpec-7/
  supported-ops/), up to ResizeBilinear, and in an older copy of Coral's table (Mean and Pad "along x- and/or
  y-dimensions only", which ``LEGACY_RUNTIME`` applies). The rows after ResizeBilinear are the ones this
  project listed before; their limitation texts could not be re-read.
* The "Runtime version" column could not be read. Minimum runtimes here come from: the lead's reading of the
  page (ExpandDims, Pack, Quantize, Sum, TransposeConv: 13); maintainers in google-coral/edgetpu (#193,
  2021-08-03: "Compiler version 16 supports 'Transpose'"; #156, 2021-07-29: the latest compiler supports
  unidirectional LSTM) with compiler 16 producing runtime-14 models (#435, 2021-08-07: "Package requires runtime
  version (14)"), so 14 for both; a published compiler-14.1 log that maps REDUCE_MAX (maxbbraun/thermal-face#2),
  so at most 13 for ReduceMax/ReduceMin; PReLU, suggested by a maintainer in 2020 (#147), 13. Where the minimum
  is not confirmed (``UNCONFIRMED_RUNTIME``) the prediction keeps the operation and says it may not map.
* Coral, "Edge TPU Compiler" (https://coral.ai/docs/edgetpu/compiler/): ``-m/--min_runtime_version``,
  ``-a/--enable_multiple_subgraphs``, ``-s/--show_operations``; compiler 16 targets runtime 14 by default.
* The status wording is the compiler's, as printed in its published logs (google-coral/edgetpu #317, #342, #461;
  maxbbraun/thermal-face#2; rajansaini691/retinanet-model-tflite tiny_yolo_edgetpu.log).

Where the documentation says an operation "may not map" (large reshapes; resizes that would lose precision)
without saying when, the operation is predicted mapped with a "may not map" caveat: the prediction is an
upper bound.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

# The compiler's status column.
MAPPED = "Mapped to Edge TPU"
NOT_SUPPORTED = "Operation not supported"
AFTER_SPLIT = "More than one subgraph is not supported"
UNSUPPORTED_RANK = "Tensor has unsupported rank (up to 3 innermost dimensions mapped)"
UNSUPPORTED_TYPE = "Operation is working on an unsupported data type"
UNSPECIFIED = "Operation is otherwise supported, but not mapped due to some unspecified limitation"
STATUSES = (MAPPED, NOT_SUPPORTED, AFTER_SPLIT, UNSUPPORTED_RANK, UNSUPPORTED_TYPE, UNSPECIFIED)

ALL_RUNTIMES = 10          # "All" in the table: every runtime the compiler can target
LEGACY_RUNTIME = 12        # runtimes before 13 read Mean and Pad with the older, x/y-only limitation
DEFAULT_RUNTIME = 14       # what edgetpu_compiler 16 targets without -m
RUNTIMES = tuple(range(ALL_RUNTIMES, DEFAULT_RUNTIME + 1))
DEFAULT_COMPILER = "16.0"
MAY_NOT_MAP_RESHAPE = "Certain reshapes might not be mapped for large tensor sizes (no size is documented)"
MAY_NOT_MAP_RESIZE = ("Depending on input/output size, this operation may not be mapped to the Edge TPU to avoid "
                      "loss in precision (no size is documented)")


@dataclass(frozen=True)
class OpRule:
    """One row of Coral's table: the TFLite builtin, Coral's name, the runtime it needs, its limitations."""

    op: str
    doc_name: str
    min_runtime: int = ALL_RUNTIMES
    limitation: str = ""
    may_not_map: str = ""


_ROWS = (
    OpRule("ADD", "Add"),
    OpRule("AVERAGE_POOL_2D", "AveragePool2d", limitation="No fused activation function."),
    OpRule("CONCATENATION", "Concatenation", limitation="No fused activation function. If any input is a "
           "compile-time constant tensor, there must be only 2 inputs, and this constant tensor must be all "
           "zeroes (effectively, a zero-padding op)."),
    OpRule("CONV_2D", "Conv2d", limitation="Must use the same dilation in x and y dimensions."),
    OpRule("DEPTHWISE_CONV_2D", "DepthwiseConv2d", limitation="Must use the same dilation in x and y dimensions."),
    OpRule("EXPAND_DIMS", "ExpandDims", 13),
    OpRule("FULLY_CONNECTED", "FullyConnected", limitation="Only the default format is supported for "
           "fully-connected weights. Output tensor is one-dimensional."),
    OpRule("L2_NORMALIZATION", "L2Normalization"),
    OpRule("LOGISTIC", "Logistic"),
    OpRule("UNIDIRECTIONAL_SEQUENCE_LSTM", "LSTM", 14, "Unidirectional LSTM only."),
    OpRule("MAXIMUM", "Maximum"),
    OpRule("MAX_POOL_2D", "MaxPool2d", limitation="No fused activation function."),
    OpRule("MEAN", "Mean", limitation="No reduction in batch dimension. If a z-reduction, the z-dimension must be "
           "multiple of 4."),
    OpRule("MINIMUM", "Minimum"),
    OpRule("MUL", "Mul"),
    OpRule("PACK", "Pack", 13, "No packing in batch dimension."),
    OpRule("PAD", "Pad", limitation="No padding in batch dimension."),
    OpRule("PRELU", "PReLU", 13, "Alpha must be 1-dimensional (only the innermost dimension can be >1 size)."),
    OpRule("QUANTIZE", "Quantize", 13),
    OpRule("REDUCE_MAX", "ReduceMax", 13, "Cannot operate on the batch dimension."),
    OpRule("REDUCE_MIN", "ReduceMin", 13, "Cannot operate on the batch dimension."),
    OpRule("RELU", "ReLU"),
    OpRule("RELU6", "ReLU6"),
    OpRule("RELU_N1_TO_1", "ReLUN1To1"),
    OpRule("RESHAPE", "Reshape", may_not_map=MAY_NOT_MAP_RESHAPE),
    OpRule("RESIZE_BILINEAR", "ResizeBilinear", limitation="Input/output is a 3-dimensional tensor.",
           may_not_map=MAY_NOT_MAP_RESIZE),
    OpRule("RESIZE_NEAREST_NEIGHBOR", "ResizeNearestNeighbor", limitation="Input/output is a 3-dimensional tensor.",
           may_not_map=MAY_NOT_MAP_RESIZE),
    OpRule("RSQRT", "Rsqrt"),
    OpRule("SLICE", "Slice"),
    OpRule("SOFTMAX", "Softmax", limitation="Supports only 1-D input tensor with a max of 16,000 elements."),
    OpRule("SPACE_TO_DEPTH", "SpaceToDepth"),
    OpRule("SPLIT", "Split", limitation="No splitting in batch dimension."),
    OpRule("SQUEEZE", "Squeeze"),
    OpRule("SQUARED_DIFFERENCE", "SquaredDifference"),
    OpRule("STRIDED_SLICE", "StridedSlice", limitation="Supported only when all strides are equal to 1, and with "
           "ellipsis-axis-mask == 0, and new-axis-mask == 0."),
    OpRule("SUB", "Sub"),
    OpRule("SUM", "Sum", 13, "Cannot operate on the batch dimension."),
    OpRule("TANH", "Tanh"),
    OpRule("TRANSPOSE", "Transpose", 14),
    OpRule("TRANSPOSE_CONV", "TransposeConv", 13),
)
RULES: Mapping[str, OpRule] = {rule.op: rule for rule in _ROWS}
# Operations whose minimum runtime could not be read: kept (upper bound) with a caveat below runtime 14.
UNCONFIRMED_RUNTIME = frozenset({"RSQRT", "SQUARED_DIFFERENCE", "L2_NORMALIZATION", "SQUEEZE", "SLICE",
                                 "SPACE_TO_DEPTH", "SPLIT", "MAXIMUM", "MINIMUM"})
SOFTMAX_MAX_ELEMENTS = 16000
EIGHT_BIT = frozenset({"int8", "uint8"})
EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
COMPILER_HELP = ("install the Edge TPU compiler on x86-64 Debian/Ubuntu from Coral's apt repository "
                 "(https://coral.ai/docs/edgetpu/compiler/: apt-get install edgetpu-compiler), or run it in a Colab "
                 "notebook")


def rule_for(op: str) -> OpRule | None:
    """The table row of TFLite builtin ``op`` ("CONV_2D"), or None when the Edge TPU does not list it."""
    return RULES.get(op)
