"""ONNX Runtime runners: ``onnx-cpu`` and ``gpu`` (TensorRT or CUDA execution provider).

The gpu target never falls back to the CPU silently: ONNX Runtime drops an execution provider it cannot
load (missing CUDA/cuDNN/TensorRT libraries, no GPU) with only a warning, so after creating the session
we check ``session.get_providers()`` and raise DeviceError unless the user passed --allow-cpu-fallback.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgecnn.devices.base import Runner, RunnerOptions
from edgecnn.errors import DataError, DeviceError, ModelLoadError, RuntimeMissingError
from edgecnn.manifest import TensorSpec

GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")
CPU_PROVIDER = "CPUExecutionProvider"
_ORT_TYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
              "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
              "tensor(int32)": "int32", "tensor(int64)": "int64"}


def import_onnxruntime() -> Any:
    try:
        import onnxruntime  # noqa: PLC0415 - heavy, only for ONNX targets
    except ImportError:
        raise RuntimeMissingError("ONNX Runtime is not installed",
                                  "pip install 'edgecnn[onnx-cpu]' (CPU) or 'edgecnn[gpu]' (CUDA/TensorRT)") from None
    return onnxruntime


def gpu_package() -> Optional[str]:
    """The installed ONNX Runtime distribution that carries GPU providers, if any."""
    import importlib.metadata  # noqa: PLC0415 - slow to import; only the gpu target and doctor ask

    for name in ("onnxruntime-gpu", "onnxruntime-gpu-cuda12", "onnxruntime-training-gpu"):
        try:
            importlib.metadata.version(name)
            return name
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or ()))
    return TensorSpec(name=str(arg.name), shape=shape, dtype=_ORT_TYPES.get(arg.type, str(arg.type)))


class OnnxRunner(Runner):
    """A .onnx model in an ONNX Runtime InferenceSession with the given execution providers."""

    def __init__(self, model_path: Path, target: str, providers: Sequence[Any], options: RunnerOptions = RunnerOptions(),
                 session_factory: Optional[Callable[..., Any]] = None) -> None:
        ort = import_onnxruntime()
        self.target = target
        self.model_path = Path(model_path)
        self.version = ort.__version__
        self.threads = options.threads
        session_options = ort.SessionOptions()
        session_options.log_severity_level = 3
        if options.threads:
            session_options.intra_op_num_threads = options.threads
        factory = session_factory or ort.InferenceSession
        try:
            self._session = factory(str(self.model_path), sess_options=session_options, providers=list(providers))
        except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidGraph/RuntimeError types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"ONNX Runtime cannot load {self.model_path.name} ({first[:300]})",
                                 "check that the file is a complete .onnx model from edgecnn convert") from None
        self.providers = list(self._session.get_providers())
        inputs, outputs = self._session.get_inputs(), self._session.get_outputs()
        if len(inputs) != 1 or not outputs:
            raise ModelLoadError(f"{self.model_path.name} has {len(inputs)} inputs and {len(outputs)} outputs",
                                 "edgecnn runs single-input classification models")
        self.input, self.output = _spec(inputs[0]), _spec(outputs[0])
        self.outputs = tuple(_spec(o) for o in outputs)
        self._in_name, self._out_names = inputs[0].name, [outputs[0].name]
        self._in_dtype = np.dtype(self.input.dtype)
        self._input_hw = options.input_hw
        self._warm_up()

    def _warm_up(self) -> None:
        """One run on zeros at load time, so a damaged model fails here as a ModelLoadError, not on a frame.

        A model with a dynamic height/width runs at RunnerOptions.input_hw (from --size); without it dynamic
        sizes are tried at 1, and a failure then says so instead of calling the file damaged."""
        dynamic = any(d < 0 for d in self.input.shape[1:])
        given = list(self._input_hw or ())
        shape = [1 if not self.input.shape or self.input.shape[0] < 0 else self.input.shape[0]]
        for d in self.input.shape[1:]:
            shape.append(d if d >= 0 else (given.pop(0) if given else 1))
        sample_shape = self._input_hw
        try:
            self._session.run(self._out_names, {self._in_name: np.zeros(shape, dtype=self._in_dtype)})
        except Exception as exc:  # noqa: BLE001 - ORT's Fail/InvalidArgument/RuntimeException types
            first = " ".join(str(exc).split())[:300] or type(exc).__name__
            if dynamic and sample_shape is None:
                raise ModelLoadError(f"ONNX Runtime cannot run {self.model_path.name} at input {tuple(shape)}: its "
                                     f"input {self.input.shape} has a dynamic size ({first[:150]})",
                                     "dynamic H/W: give --size HxW") from None
            raise ModelLoadError(f"ONNX Runtime cannot run {self.model_path.name} at input {tuple(shape)} ({first})",
                                 "the file is damaged or uses what this runtime does not support; re-convert it") from None

    def invoke(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != self._in_dtype:
            raise DataError(f"batch dtype {batch.dtype} does not match the model input {self._in_dtype}",
                            "encode it with edgecnn.preprocess.InputEncoder")
        if self.input.shape and self.input.shape[0] == 1 and batch.shape[0] != 1:
            # A fixed batch of one: run sample by sample.
            return np.concatenate([self.invoke(batch[i:i + 1]) for i in range(batch.shape[0])])
        try:
            return self._session.run(self._out_names, {self._in_name: batch})[0]
        except Exception as exc:  # noqa: BLE001 - ORT's InvalidArgument etc. are not importable types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DataError(f"batch of shape {batch.shape} was refused by the model ({first[:200]})") from None

    def embedded_manifest(self) -> Optional[str]:
        """The manifest JSON in the model's ``metadata_props``, as ONNX Runtime reports it (no ``onnx`` package)."""
        from edgecnn.manifest import EMBEDDED_KEY  # noqa: PLC0415

        try:
            return self._session.get_modelmeta().custom_metadata_map.get(EMBEDDED_KEY)
        except Exception:  # noqa: BLE001 - ORT's own error types; no metadata is the answer then
            return None

    def describe(self) -> dict[str, Any]:
        return {"target": self.target, "runtime": "onnxruntime", "version": self.version, "providers": self.providers,
                "threads": self.threads, "model": str(self.model_path), "input": self.input.shape,
                "input_dtype": self.input.dtype}

    def close(self) -> None:
        self._session = None


def open_onnx_cpu(model_path: Path, options: RunnerOptions = RunnerOptions()) -> OnnxRunner:
    return OnnxRunner(model_path, "onnx-cpu", [CPU_PROVIDER], options)


def gpu_providers(options: RunnerOptions) -> list[Any]:
    """TensorRT first (fastest where its engine builds), then CUDA, then the CPU for unsupported nodes."""
    device = {"device_id": int(options.device)} if options.device and str(options.device).isdigit() else {}
    return [(name, dict(device)) for name in GPU_PROVIDERS] + [CPU_PROVIDER]


def open_gpu(model_path: Path, options: RunnerOptions = RunnerOptions(),
             session_factory: Optional[Callable[..., Any]] = None) -> OnnxRunner:
    """The gpu target; ``session_factory`` replaces ort.InferenceSession only in tests (a stand-in for the GPU)."""
    ort = import_onnxruntime()
    available = set(ort.get_available_providers())
    if session_factory is None and not available.intersection(GPU_PROVIDERS):
        raise RuntimeMissingError(
            f"ONNX Runtime {ort.__version__} here has no GPU execution provider (it has {', '.join(sorted(available))})",
            "pip uninstall onnxruntime && pip install onnxruntime-gpu (needs CUDA 12 and cuDNN 9)")
    runner = OnnxRunner(model_path, "gpu", gpu_providers(options), options, session_factory)
    used = [p for p in runner.providers if p in GPU_PROVIDERS]
    if not used and not options.allow_cpu_fallback:
        runner.close()
        raise DeviceError(f"ONNX Runtime could not start {' or '.join(GPU_PROVIDERS)} and would run on the CPU "
                          f"(session providers: {', '.join(runner.providers)})",
                          "check the NVIDIA driver, CUDA 12 and cuDNN 9 (edgecnn doctor), or pass --allow-cpu-fallback")
    return runner
