"""The one table of device targets, and ``open_runner``: a model file + a target name -> a loaded Runner.

A .tflite runs on cpu / pi / edgetpu (LiteRT), a .onnx on onnx-cpu / gpu (ONNX Runtime). Every file is
checked by devices/modelcheck.py before a native loader sees it, so a corrupt or hostile file gives a
one-line ModelLoadError instead of a crash. The file is read once: LiteRT loads the very bytes that were
checked, and the runner keeps their SHA-256 (``Runner.sha256``) for the manifest's hash check.
"""
from __future__ import annotations

import dataclasses
import importlib
import os
from pathlib import Path
from typing import NamedTuple, Optional

from edgecnn.devices.base import Runner, RunnerOptions
from edgecnn.devices.modelcheck import ModelFormat, check_file
from edgecnn.errors import InputPathError, UsageError
from edgecnn.registry import lookup


class Target(NamedTuple):
    """One device target: the model format it runs and the runner that opens it."""

    name: str
    format: ModelFormat  # the model format this target runs
    module: str  # devices module holding ``open_<kind>`` (imported only when the target is used)
    opener: str
    description: str
    default_threads: Optional[int] = None  # None: the machine's cores
    in_camera: bool = False  # the camera runs the network on its own image: it is the frame source too


def _pi_threads() -> int:
    # A Pi 4/5 has 4 cores; more threads than cores only adds contention.
    return min(4, os.cpu_count() or 1)


TARGETS: dict[str, Target] = {
    "cpu": Target("cpu", ModelFormat.TFLITE, "edgecnn.devices.litert", "LiteRTRunner",
                  "LiteRT interpreter on the CPU with XNNPACK"),
    "pi": Target("pi", ModelFormat.TFLITE, "edgecnn.devices.litert", "LiteRTRunner",
                 "Raspberry Pi CPU: LiteRT with XNNPACK, at most 4 threads", default_threads=_pi_threads()),
    "edgetpu": Target("edgetpu", ModelFormat.TFLITE, "edgecnn.devices.edgetpu", "open_edgetpu",
                      "Coral Edge TPU through the LiteRT Edge TPU delegate (full-int8 model)"),
    "onnx-cpu": Target("onnx-cpu", ModelFormat.ONNX, "edgecnn.devices.onnx_runtime", "open_onnx_cpu",
                       "ONNX Runtime on the CPU"),
    "gpu": Target("gpu", ModelFormat.ONNX, "edgecnn.devices.onnx_runtime", "open_gpu",
                  "ONNX Runtime with the TensorRT or CUDA execution provider (no silent CPU fallback)"),
    "imx500": Target("imx500", ModelFormat.RPK, "edgecnn.devices.imx500", "open_imx500",
                     "Raspberry Pi AI Camera: the Sony IMX500 sensor runs the network (.rpk) on its own image "
                     "(picamera2); edgecnn run only", in_camera=True),
}


# The CPU target of each model format: where verification and the reference accuracy run an artifact.
CPU_TARGET = {ModelFormat.TFLITE: "cpu", ModelFormat.ONNX: "onnx-cpu"}


def cpu_target(family: str) -> str:
    """The CPU target for a model family ("tflite" -> "cpu", "onnx" -> "onnx-cpu")."""
    return CPU_TARGET[ModelFormat(family)]


def get_target(name: str) -> Target:
    return lookup(TARGETS, name, "device")


def targets_for(fmt: ModelFormat) -> list[str]:
    return [name for name, target in TARGETS.items() if target.format == fmt]


def open_runner(model_path: Path | str, target: str = "cpu", options: RunnerOptions = RunnerOptions()) -> Runner:
    """Check ``model_path`` (a .tflite or .onnx file: sniffed, walked, probed in a child process) and load it on
    ``target`` ("cpu", "pi", "edgetpu", "onnx-cpu", "gpu"). Returns a Runner (a context manager): ``input`` and
    ``output`` TensorSpecs, ``invoke(batch)`` taking the input tensor's dtype and shape, (N, ...) -> the raw
    output (N, ...). Raises UnknownNameError (a target name, with the valid ones), InputPathError, ModelLoadError
    (a damaged or unsupported file), RuntimeMissingError (the runtime or delegate is not installed) or
    DeviceError (the accelerator is absent or would not really be used)."""
    spec = get_target(target)
    path = Path(model_path)
    if not path.exists():
        raise InputPathError(f"model file {path} does not exist", "give the path of a .tflite, .onnx or .rpk artifact")
    if path.is_dir():
        raise InputPathError(f"{path} is a folder, not a model file", "give the path of a .tflite or .onnx artifact")
    checked = check_file(path, probe=options.probe)
    fmt = checked.format
    if fmt not in (ModelFormat.TFLITE, ModelFormat.ONNX, ModelFormat.RPK):
        raise UsageError(f"{path.name} is a {fmt.value} model, not a device artifact",
                         f"convert it first: edgecnn convert {path}")
    if fmt != spec.format:
        suited = ", ".join(targets_for(fmt)) or "none"
        raise UsageError(f"--device {spec.name} runs {spec.format.value} models but {path.name} is a {fmt.value} model",
                         f"use --device {suited}, or convert the model to {spec.format.value}")
    if spec.default_threads and options.threads is None:
        options = dataclasses.replace(options, threads=spec.default_threads)
    opener = getattr(importlib.import_module(spec.module), spec.opener)
    if spec.opener == "LiteRTRunner":
        # The probe's child already invoked these bytes with this runtime: the load-time warm-up would only repeat it.
        warm_up = options.warm_up if options.warm_up is not None else checked.probe not in ("known", "child")
        runner = opener(path, spec.name, options, content=checked.data, warm_up=warm_up)
    elif fmt == ModelFormat.TFLITE:
        runner = opener(path, options, content=checked.data)
    else:
        runner = opener(path, options)
    runner.sha256 = checked.sha256
    return runner
