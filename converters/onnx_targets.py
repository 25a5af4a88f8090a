"""Which int8 settings `onnx-int8` uses, per target CPU (``--onnx-target``), and why.

ONNX Runtime's CPU provider fuses a QDQ model's QuantizeLinear/DequantizeLinear pairs into integer kernels
(QLinearConv, QLinearAdd, QGemm, ...) where its graph transformers recognise them; what it recognises
depends on the CPU architecture and on the activation type:

* ``x86`` (the default): activations uint8 (asymmetric), weights int8 per channel (U8S8). Measured here on
  MobileNetV2 (benchmarks/results/onnx_int8.md): every Conv and residual Add fuses. With int8 activations
  (S8S8) ONNX Runtime on x86 first converts the Q/DQ pairs to uint8, but only where a QuantizeLinear has a
  single consumer: at each residual branch the Conv and the Add fall back to float between DQ/Q nodes
  (MobileNetV2: 15 convs and 10 Adds), and int8 runs at 0.8-0.9x fp32 instead of about 0.5x. Without VNNI the
  uint8 x int8 products can saturate (ONNX Runtime's documentation): that is the ``x86-avx2`` target.
* ``x86-avx2``: as ``x86`` with weights in 7 bits (``reduce_range``), which ONNX Runtime's documentation
  recommends for x86 CPUs without the VNNI instruction (before Cascade Lake / Zen 4). Not measured here
  (this machine has VNNI); verification after conversion shows its accuracy.
* ``arm64`` (Raspberry Pi 4/5, Jetson, Apple silicon): activations int8 (S8S8). ONNX Runtime's
  documentation recommends int8 activations on ARM, where S8S8 QDQ fuses directly (the single-consumer
  limit is x86's). Its speed is not measured here (no ARM CPU); its outputs can be checked under the arm64
  emulation with benchmarks/onnx_int8.py.

Whatever the target, the classifier's head stays in float unless ``full_int8`` is asked for: the final
Softmax (int8 gives probabilities in steps of 1/256) and the logits (quantizing the last Gemm/MatMul's
output adds rounding error at no speed gain: ONNX Runtime fuses it into QGemm / MatMulIntegerToFloat with
a float output). The Edge TPU's full-int8 rule applies to the TFLite Edge TPU path only.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from edgecnn.registry import lookup


class OnnxTarget(str, Enum):
    X86 = "x86"
    X86_AVX2 = "x86-avx2"
    ARM64 = "arm64"


@dataclass(frozen=True)
class OnnxInt8Settings:
    """The ONNX Runtime static-quantization settings of one onnx-int8 artifact (recorded in the manifest)."""

    target: OnnxTarget = OnnxTarget.X86
    activations: str = "uint8"       # QuantType of activations: "uint8" | "int8" (asymmetric, calibrated ranges)
    weights: str = "int8"            # QuantType of weights (symmetric)
    reduce_range: bool = False       # weights in 7 bits (x86 without VNNI)
    quant_format: str = "QDQ"        # QuantizeLinear/DequantizeLinear pairs around float ops
    float_head: bool = True          # final Softmax/Sigmoid and the logits stay float
    basis: str = ""                  # where the choice comes from

    def record(self, per_channel: bool = True) -> dict[str, Any]:
        """What the manifest says about these settings (``calibration['onnx-int8']``)."""
        return {"target": self.target.value, "format": self.quant_format, "activations": self.activations,
                "weights": self.weights, "weights_per_channel": bool(per_channel), "reduce_range": self.reduce_range,
                "float_head": self.float_head, "pre_process": "onnxruntime quant_pre_process", "basis": self.basis}

    def describe(self, per_channel: bool = True) -> str:
        """One line: 'QDQ for x86: activations uint8, weights int8 per-channel'."""
        weights = f"{self.weights} {'per-channel' if per_channel else 'per-tensor'}" + \
            (", 7-bit range" if self.reduce_range else "")
        head = "Softmax and logits in float" if self.float_head else "full int8 (head quantized too)"
        return f"{self.quant_format} for {self.target.value}: activations {self.activations}, weights {weights}; {head}"


ONNX_TARGETS: dict[str, OnnxInt8Settings] = {
    OnnxTarget.X86.value: OnnxInt8Settings(
        OnnxTarget.X86, "uint8", basis="measured here: U8S8 fuses every conv and residual Add (onnx_int8.md)"),
    OnnxTarget.X86_AVX2.value: OnnxInt8Settings(
        OnnxTarget.X86_AVX2, "uint8", reduce_range=True,
        basis="ONNX Runtime documentation: U8S8 with 7-bit weights on x86 without VNNI (not measured here)"),
    OnnxTarget.ARM64.value: OnnxInt8Settings(
        OnnxTarget.ARM64, "int8",
        basis="ONNX Runtime documentation: S8S8 fuses directly on ARM64 (speed not measured here)"),
}
DEFAULT_TARGET = OnnxTarget.X86


def onnx_settings(target: OnnxTarget | str = DEFAULT_TARGET, full_int8: bool = False) -> OnnxInt8Settings:
    """The settings for ``target`` ("x86", "x86-avx2", "arm64"); UnknownNameError with a did-you-mean."""
    name = target.value if isinstance(target, OnnxTarget) else str(target)
    settings = lookup(ONNX_TARGETS, name, "ONNX target")
    return replace(settings, float_head=False) if full_int8 else settings
