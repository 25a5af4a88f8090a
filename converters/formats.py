"""The one table of output formats, looked up by name (``--formats tflite-int8,onnx-fp32``).

Each format names the function that builds it as "module:function", imported only when that format is
built, so listing formats never imports TensorFlow or ONNX. A builder has the signature
``build(job: BuildJob) -> BuiltArtifact`` (see edgecnn.converters.steps).
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from enum import Enum
from typing import Callable

from edgecnn.registry import lookup, split_names


class IoType(str, Enum):
    """Input/output tensor type of a full-integer TFLite model (--io)."""

    INT8 = "int8"
    UINT8 = "uint8"
    FLOAT = "float"


@dataclass(frozen=True)
class FormatSpec:
    name: str          # the key users type
    family: str        # "tflite" | "onnx"
    precision: str     # fp32 | fp16 | dynamic | int8 (as recorded in the manifest)
    suffix: str        # file name suffix: "_int8.tflite"
    builder: str       # "module:function"
    needs_calibration: bool = False
    description: str = ""

    def file_name(self, model_name: str) -> str:
        return f"{model_name}{self.suffix}"

    def resolve_builder(self) -> Callable:
        module, _, func = self.builder.partition(":")
        return getattr(importlib.import_module(module), func)


_TFLITE = "edgecnn.converters.tflite:build"
_ONNX = "edgecnn.converters.onnx_step:build"

FORMATS: dict[str, FormatSpec] = {
    "tflite-fp32": FormatSpec("tflite-fp32", "tflite", "fp32", "_fp32.tflite", _TFLITE,
                              description="TFLite, float32 weights and activations"),
    "tflite-fp16": FormatSpec("tflite-fp16", "tflite", "fp16", "_fp16.tflite", _TFLITE,
                              description="TFLite, float16 weights (float compute)"),
    "tflite-dynamic": FormatSpec("tflite-dynamic", "tflite", "dynamic", "_dynamic.tflite", _TFLITE,
                                 description="TFLite dynamic-range: int8 weights, float activations"),
    "tflite-int8": FormatSpec("tflite-int8", "tflite", "int8", "_int8.tflite", _TFLITE, needs_calibration=True,
                              description="TFLite full-integer int8 (TFLITE_BUILTINS_INT8), per-channel weights"),
    "onnx-fp32": FormatSpec("onnx-fp32", "onnx", "fp32", "_fp32.onnx", _ONNX,
                            description="ONNX float32 (SavedModel + tf2onnx)"),
    "onnx-int8": FormatSpec("onnx-int8", "onnx", "int8", "_int8.onnx", _ONNX, needs_calibration=True,
                            description="ONNX int8 QDQ (ONNX Runtime quantize_static), per-channel; "
                                        "activation type per --onnx-target"),
}

DEFAULT_FORMATS = tuple(FORMATS)


def get_format(name: str) -> FormatSpec:
    return lookup(FORMATS, name, "format")


def parse_formats(text: str | None) -> tuple[FormatSpec, ...]:
    """``"tflite-int8, onnx-fp32"`` -> specs in table order, no duplicates; None or "all" -> every format."""
    if text is None or text.strip().lower() in ("", "all"):
        return tuple(FORMATS.values())
    chosen = {get_format(name).name for name in split_names(text)}
    return tuple(spec for spec in FORMATS.values() if spec.name in chosen)


def fp32_reference(family: str) -> str:
    """The format a family's sizes are compared with ("size vs fp32")."""
    return f"{family}-fp32"
