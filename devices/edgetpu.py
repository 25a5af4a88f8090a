"""The ``edgetpu`` target: LiteRT with the Coral Edge TPU delegate.

The Edge TPU runs only what edgetpu_compiler turned into its custom op, and the compiler takes only full-int8
models, so a float model is refused before anything loads; an int8 model that was not compiled would run
entirely on the CPU, so it is refused too unless --allow-cpu-fallback. ``load_delegate`` fails the same way
whether the library is missing or no Edge TPU is attached; we tell the two apart by looking the library up
with the dynamic loader first.
"""
from __future__ import annotations

import ctypes
import platform
from pathlib import Path
from typing import Any, Callable, Optional

from edgecnn.devices.base import RunnerOptions
from edgecnn.devices.edgetpu_ops import EDGETPU_CUSTOM_OP
from edgecnn.devices.flatbuf import TENSOR_TYPES, FlatbufferError, ModelInfo, walk_tflite
from edgecnn.errors import DeviceError, ModelLoadError, RuntimeMissingError, UsageError

LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
INSTALL_HINT = ("install the Edge TPU runtime: sudo apt-get install libedgetpu1-std "
                "(Coral apt repository, https://coral.ai/software/#debian-packages)")
# Tensor types of a full-int8 model: 8-bit activations and weights, int32 biases and shape operands, int64
# shapes, bool masks. Anything else (float, or int16 activations of a 16x8 model) is not an Edge TPU model.
FULL_INT8_TYPES = frozenset({"int8", "uint8", "int32", "int64", "bool"})


def library_name(system: Optional[str] = None) -> str:
    system = system or platform.system()
    if system not in LIBRARIES:
        raise RuntimeMissingError(f"the Edge TPU runtime is not available for {system}", "use Linux, macOS or Windows")
    return LIBRARIES[system]


def library_loadable(name: str) -> bool:
    """Whether the dynamic loader finds ``name`` (loading it does not touch an Edge TPU)."""
    try:
        ctypes.CDLL(name)
    except OSError:
        return False
    return True


def check_edgetpu_model(path: Path, allow_cpu_fallback: bool = False) -> ModelInfo:
    """Refuse a model the Edge TPU cannot run (float or 16-bit tensors; int8 but not compiled, unless fallback
    is allowed). Raises ModelLoadError (unreadable) or UsageError."""
    try:
        info = walk_tflite(Path(path).read_bytes())
    except (FlatbufferError, OSError) as exc:
        raise ModelLoadError(f"{Path(path).name} is not a readable TFLite model ({exc})") from None
    if EDGETPU_CUSTOM_OP in info.custom_codes:
        return info
    wrong = sorted({TENSOR_TYPES.get(t, f"type {t}") for t in info.tensor_types} - FULL_INT8_TYPES)
    if wrong:
        raise UsageError(f"{Path(path).name} is not a full-int8 model (it has {', '.join(wrong)} tensors) "
                         "and the Edge TPU runs only 8-bit tensors",
                         "convert with edgecnn convert --formats tflite-int8, then run edgetpu_compiler on it")
    if not allow_cpu_fallback:
        raise UsageError(f"{Path(path).name} is int8 but was not compiled for the Edge TPU, so it would run on the CPU",
                         f"run edgetpu_compiler {Path(path).name} and use the *_edgetpu.tflite it writes, "
                         "or pass --allow-cpu-fallback")
    return info


def delegate_options(options: RunnerOptions) -> dict[str, str]:
    """libedgetpu's delegate options: {'device': 'usb' | 'usb:0' | 'pci:0' | ...} when a device is chosen."""
    if not options.device:
        return {}
    device = str(options.device).strip().lower()
    kind, _, index = device.partition(":")
    if kind not in ("usb", "pci", "") or (index and not index.isdigit()):
        raise UsageError(f"Edge TPU device '{options.device}' is not understood",
                         "use usb, usb:N, pci or pci:N (N counts from 0), or :N for the Nth of any kind")
    return {"device": device}


def load_edgetpu_delegate(options: RunnerOptions, load_delegate: Callable[..., Any],
                          library: Optional[str] = None,
                          library_present: Callable[[str], bool] = library_loadable) -> Any:
    """The real load path: find the library, then ``load_delegate(library, options)``; failures become one line.

    The library is looked up first because LiteRT's Delegate, when the library is missing, fails half-built
    and prints an ignored-exception traceback when it is collected.
    """
    library = library or library_name()
    opts = delegate_options(options)
    if not library_present(library):
        raise RuntimeMissingError(f"the Edge TPU runtime library {library} is not installed "
                                  "(the dynamic loader cannot find it)", INSTALL_HINT)
    try:
        return load_delegate(library, opts)
    except (ValueError, OSError, RuntimeError) as exc:
        detail = " ".join(str(exc).split()) or type(exc).__name__
        where = opts.get("device", "any")
        raise DeviceError(f"no Edge TPU found (device {where}; {detail[:200]})",
                          "plug in the Coral accelerator (lsusb shows 1a6e:089a or 18d1:9302), check its udev "
                          "rules and that no other process holds it; edgecnn doctor lists what it sees") from None


def open_edgetpu(model_path: Path, options: RunnerOptions = RunnerOptions(),
                 load_delegate: Optional[Callable[..., Any]] = None,
                 library_present: Callable[[str], bool] = library_loadable) -> Any:
    """The edgetpu Runner. ``load_delegate``/``library_present`` are replaced only in tests (stand-ins for hardware)."""
    from edgecnn.devices.litert import LiteRTRunner, resolve_runtime

    info = check_edgetpu_model(model_path, options.allow_cpu_fallback)
    loader = load_delegate or resolve_runtime().load_delegate
    delegate = load_edgetpu_delegate(options, loader, library_present=library_present)
    compiled = EDGETPU_CUSTOM_OP in info.custom_codes
    notes = () if compiled else ("not compiled for the Edge TPU: every op runs on the CPU",)
    return LiteRTRunner(model_path, "edgetpu", options, delegates=[delegate], notes=notes)
