"""The LiteRT (TFLite) runtime: which Python package provides it, interpreters, and the cpu/pi Runner.

Resolution order: ``ai_edge_litert`` -> ``tflite_runtime`` -> ``tensorflow.lite``. tflite_runtime wheels were
all built against numpy 1 and crash (or fail with an ABI error) under numpy 2, so that combination is detected
from package metadata *before* importing it. XNNPACK is LiteRT's default CPU delegate; turning it off means
choosing the op resolver without default delegates.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Sequence

import numpy as np

from edgecnn.devices.base import Runner, RunnerOptions
from edgecnn.errors import DataError, ModelLoadError, RuntimeMissingError
from edgecnn.manifest import TensorSpec

RUNTIME_ORDER = ("ai_edge_litert", "tflite_runtime", "tensorflow.lite")
INSTALL_HINT = "pip install ai-edge-litert (or: pip install 'edgecnn[device]')"
# The last tflite_runtime release (2.14, 2023) predates numpy 2; none since has been built against it.
TFLITE_RUNTIME_LAST_NUMPY1 = (2, 14)


class LiteRTRuntime(NamedTuple):
    """One importable LiteRT implementation."""

    name: str  # one of RUNTIME_ORDER
    version: str
    interpreter_cls: Any
    load_delegate: Callable[..., Any]
    op_resolver: Any  # the OpResolverType enum, or None when the package has none

    def resolver(self, use_xnnpack: bool) -> Any:
        if self.op_resolver is None:
            return None
        return self.op_resolver.AUTO if use_xnnpack else self.op_resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES


def _version_tuple(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:2]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def tflite_runtime_conflict(tflite_version: str, numpy_version: str) -> Optional[str]:
    """Why this tflite_runtime cannot run under this numpy, or None when it can."""
    if _version_tuple(numpy_version)[:1] < (2,):
        return None
    if _version_tuple(tflite_version) > TFLITE_RUNTIME_LAST_NUMPY1:
        return None
    return (f"tflite_runtime {tflite_version} was built for numpy 1 and crashes under numpy {numpy_version}")


def dist_version(name: str) -> Optional[str]:
    """The installed version of distribution ``name``, or None."""
    import importlib.metadata  # noqa: PLC0415 - a tenth of a second to import: not on the start path

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _load(name: str) -> LiteRTRuntime:
    if name == "tensorflow.lite":
        tf = importlib.import_module("tensorflow")
        lite = tf.lite
        return LiteRTRuntime(name, tf.__version__, lite.Interpreter, lite.experimental.load_delegate,
                             getattr(lite.experimental, "OpResolverType", None))
    module = importlib.import_module(f"{name}.interpreter")
    version = getattr(importlib.import_module(name), "__version__", None) or dist_version(name.replace("_", "-")) or "?"
    return LiteRTRuntime(name, version, module.Interpreter, module.load_delegate,
                         getattr(module, "OpResolverType", None))


def _module_present(name: str) -> bool:
    try:
        return importlib.util.find_spec(name.split(".")[0]) is not None
    except (ImportError, ValueError):
        return False


@functools.lru_cache(maxsize=None)
def resolve_runtime(prefer: Optional[str] = None) -> LiteRTRuntime:
    """The first LiteRT implementation that imports and can run here (``prefer`` first when given)."""
    order = ((prefer,) if prefer else ()) + tuple(n for n in RUNTIME_ORDER if n != prefer)
    problems: list[str] = []
    for name in order:
        if not _module_present(name):
            continue
        if name == "tflite_runtime":
            conflict = tflite_runtime_conflict(dist_version("tflite-runtime") or "0", np.__version__)
            if conflict:
                problems.append(conflict)
                continue
        try:
            return _load(name)
        except (ImportError, AttributeError, OSError) as exc:
            problems.append(f"{name} did not import ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
    if problems:
        raise RuntimeMissingError("no usable LiteRT runtime: " + "; ".join(problems),
                                  INSTALL_HINT + ", or pip install 'numpy<2' to keep tflite_runtime")
    raise RuntimeMissingError("no LiteRT runtime is installed (ai_edge_litert, tflite_runtime or tensorflow)",
                              INSTALL_HINT)


def default_threads() -> int:
    return os.cpu_count() or 1


def make_interpreter(model_path: Path, threads: Optional[int] = None, use_xnnpack: bool = True,
                     delegates: Sequence[Any] = (), runtime: Optional[LiteRTRuntime] = None,
                     content: Optional[bytes] = None, preserve_all_tensors: bool = False,
                     allocate: bool = True) -> Any:
    """A LiteRT Interpreter for ``model_path`` with tensors allocated; loader failures become ModelLoadError.
    The one place an Interpreter is made (runners, conversion, the MAC count's and inspect's readers).

    ``content``: the file's bytes, already read and checked (devices/modelcheck.check_file); loaded instead of
    the path, so a file replaced after its check is not what runs. ``preserve_all_tensors``: intermediate
    tensors stay readable after ``invoke`` (inspect's per-layer comparison). ``allocate=False``: only load (a
    model with a custom op allocates with its delegate)."""
    runtime = runtime or resolve_runtime()
    source = {"model_content": content} if content else {"model_path": str(model_path)}
    kwargs: dict[str, Any] = {**source, "num_threads": threads or default_threads()}
    if preserve_all_tensors:
        kwargs["experimental_preserve_all_tensors"] = True
    if delegates:
        kwargs["experimental_delegates"] = list(delegates)
    resolver = runtime.resolver(use_xnnpack)
    if resolver is not None:
        kwargs["experimental_op_resolver_type"] = resolver
    try:
        interpreter = runtime.interpreter_cls(**kwargs)
        if allocate:
            interpreter.allocate_tensors()
    except (ValueError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"{runtime.name} cannot load {model_path} ({first})",
                             "check that the file is a complete .tflite model from edgecnn convert") from None
    return interpreter


def tensor_spec(detail: dict[str, Any]) -> TensorSpec:
    """A TensorSpec from an interpreter's input/output detail; dynamic dims (-1 in the signature) stay -1."""
    shape = detail.get("shape_signature")
    if shape is None or len(shape) == 0:
        shape = detail["shape"]
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(name=str(detail["name"]), shape=tuple(int(d) for d in shape),
                      dtype=np.dtype(detail["dtype"]).name, scale=float(scale), zero_point=int(zero_point))


class LiteRTRunner(Runner):
    """A .tflite model in the LiteRT interpreter (cpu, pi, and, with its delegate, edgetpu)."""

    def __init__(self, model_path: Path, target: str, options: RunnerOptions = RunnerOptions(),
                 delegates: Sequence[Any] = (), notes: Sequence[str] = (), content: Optional[bytes] = None,
                 warm_up: bool = True) -> None:
        self.target = target
        self.model_path = Path(model_path)
        self.runtime = resolve_runtime()
        self.threads = options.threads or default_threads()
        self.use_xnnpack = options.use_xnnpack and not delegates
        self._delegates = list(delegates)
        self._notes = tuple(notes)
        self._content = content
        self._interpreter = make_interpreter(self.model_path, self.threads, self.use_xnnpack, self._delegates,
                                             self.runtime, content)
        try:
            inputs = self._interpreter.get_input_details()
            outputs = self._interpreter.get_output_details()
        except (UnicodeDecodeError, ValueError, RuntimeError) as exc:  # e.g. a tensor name that is not UTF-8
            raise self._load_error(exc) from None
        if len(inputs) != 1 or not outputs:
            raise ModelLoadError(f"{self.model_path.name} has {len(inputs)} inputs and {len(outputs)} outputs",
                                 "edgecnn runs single-input classification models")
        self.input = tensor_spec(inputs[0])
        self.output = tensor_spec(outputs[0])
        self.outputs = tuple(tensor_spec(o) for o in outputs)
        self._in_index = inputs[0]["index"]
        self._out_index = outputs[0]["index"]
        self._in_dtype = np.dtype(inputs[0]["dtype"])
        self._batch = int(inputs[0]["shape"][0])
        self._resizable = bool(self.input.shape) and self.input.shape[0] == -1
        self._in_tensor = self._interpreter.tensor(self._in_index)  # a function: hold it, never the view it returns
        if warm_up:
            self._warm_up(inputs[0])

    def _warm_up(self, detail: dict[str, Any]) -> None:
        """One invoke on zeros at load time: LiteRT applies XNNPACK lazily at the first invoke, and a damaged
        model can fail only there; better now, as a ModelLoadError, than on the first camera frame."""
        try:
            self._interpreter.set_tensor(self._in_index, np.zeros(detail["shape"], dtype=self._in_dtype))
            self._interpreter.invoke()
        except (ValueError, RuntimeError, MemoryError) as exc:
            error = self._load_error(exc)
            if any(d < 0 for d in self.input.shape[1:]):
                error = ModelLoadError(f"{error.message}; its input {self.input.shape} has a dynamic size",
                                       "dynamic H/W: give --size HxW")
            raise error from None

    def _load_error(self, exc: BaseException) -> ModelLoadError:
        first = " ".join(str(exc).split())[:300] or type(exc).__name__
        return ModelLoadError(f"{self.runtime.name} cannot run {self.model_path.name} ({first})",
                              "the file is damaged or uses what this runtime does not support; re-convert it")

    def invoke(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != self._in_dtype:
            raise DataError(f"batch dtype {batch.dtype} does not match the model input {self._in_dtype}",
                            "encode it with edgecnn.preprocess.InputEncoder")
        n = batch.shape[0]
        if n == self._batch:
            return self._invoke_once(batch)
        if self._resizable:
            self._resize(n)
            return self._invoke_once(batch)
        # A fixed batch size (often 1): run sample by sample.
        return np.concatenate([self._invoke_once(batch[i:i + self._batch]) for i in range(0, n, self._batch)])

    def _invoke_once(self, batch: np.ndarray) -> np.ndarray:
        interpreter = self._interpreter
        try:
            interpreter.set_tensor(self._in_index, batch)
        except ValueError as exc:
            raise DataError(f"batch of shape {batch.shape} does not fit the model input {self.input.shape} ({exc})") from None
        try:
            interpreter.invoke()
        except RuntimeError as exc:
            raise self._load_error(exc) from None
        return interpreter.get_tensor(self._out_index)

    def input_view(self) -> Optional[np.ndarray]:
        """A fresh writable numpy view of the one-sample input tensor's memory (what pycoral's ``set_input``
        writes into), or None when the model's batch is fixed at another size. Drop every reference to it
        before ``invoke_in_place``: LiteRT refuses to invoke, or reallocate, while a view of its memory lives."""
        if self._batch != 1:
            if not self._resizable:
                return None
            self._resize(1)
        return self._in_tensor()

    def invoke_in_place(self) -> np.ndarray:
        """Invoke on what was written into ``input_view()``; returns the raw output (a copy)."""
        try:
            self._interpreter.invoke()
        except RuntimeError as exc:
            raise self._load_error(exc) from None
        return self._interpreter.get_tensor(self._out_index)

    def embedded_manifest(self) -> Optional[str]:
        """The manifest JSON written into the model's metadata at conversion, read with the pure-Python flatbuffer
        reader (no TensorFlow), or None when there is none."""
        from edgecnn.devices.flatbuf import FlatbufferError, read_metadata  # noqa: PLC0415
        from edgecnn.manifest import EMBEDDED_KEY  # noqa: PLC0415

        try:
            data = self._content if self._content is not None else self.model_path.read_bytes()
            raw = read_metadata(data, EMBEDDED_KEY)
        except (FlatbufferError, OSError):
            return None
        return None if raw is None else raw.decode("utf-8", "replace")

    def _resize(self, n: int) -> None:
        shape = [n] + [int(d) for d in self._interpreter.get_input_details()[0]["shape"][1:]]
        self._interpreter.resize_tensor_input(self._in_index, shape)
        self._interpreter.allocate_tensors()
        self._batch = n

    def describe(self) -> dict[str, Any]:
        return {"target": self.target, "runtime": self.runtime.name, "version": self.runtime.version,
                "threads": self.threads, "xnnpack": self.use_xnnpack, "delegates": len(self._delegates),
                "model": str(self.model_path), "input": self.input.shape, "input_dtype": self.input.dtype,
                "notes": list(self._notes)}

    def close(self) -> None:
        # Drop the interpreter before its delegates: LiteRT requires that order.
        self._in_tensor = None
        self._interpreter = None
        self._delegates = []
