"""The gpu target: ONNX Runtime with TensorRT/CUDA, never silently on the CPU.

This machine has no GPU and the CPU-only onnxruntime. The real path is tested up to that; the doubles
stand in for onnxruntime-gpu sessions on a GPU machine: CudaLoadFailedSession (CUDA provider failed to load,
ORT quietly kept only the CPU provider) and CudaSession (the CUDA provider loaded). Both wrap a real CPU
InferenceSession so the model really runs.
"""
from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from edgecnn.data import mnist_sample
from edgecnn.devices.base import RunnerOptions
from edgecnn.devices.onnx_runtime import GPU_PROVIDERS, open_gpu
from edgecnn.devices.runners import open_runner
from edgecnn.errors import DeviceError, RuntimeMissingError
from edgecnn.manifest import ColorOrder, Preprocessing
from edgecnn.preprocess import InputEncoder


class CudaLoadFailedSession:
    """Stands in for an onnxruntime-gpu session whose CUDA/TensorRT providers failed to load."""

    reported = ["CPUExecutionProvider"]

    def __init__(self, path, sess_options=None, providers=None):
        self.requested = providers
        self._real = ort.InferenceSession(path, sess_options=sess_options, providers=["CPUExecutionProvider"])
        type(self).last = self

    def get_providers(self):
        return list(self.reported)

    def __getattr__(self, name):
        return getattr(self._real, name)


class CudaSession(CudaLoadFailedSession):
    """Stands in for an onnxruntime-gpu session that really got the CUDA provider."""

    reported = ["CUDAExecutionProvider", "CPUExecutionProvider"]


@pytest.mark.skipif(bool(set(ort.get_available_providers()) & set(GPU_PROVIDERS)), reason="GPU providers present")
def test_cpu_only_onnxruntime_says_to_install_onnxruntime_gpu(device_models):
    with pytest.raises(RuntimeMissingError, match="no GPU execution provider .*pip install onnxruntime-gpu"):
        open_runner(device_models.onnx, "gpu")


def test_silent_cpu_fallback_is_refused(device_models):
    with pytest.raises(DeviceError, match="could not start TensorrtExecutionProvider or CUDAExecutionProvider .*"
                                          "--allow-cpu-fallback"):
        open_gpu(device_models.onnx, RunnerOptions(device="1"), session_factory=CudaLoadFailedSession)
    requested = CudaLoadFailedSession.last.requested
    assert [p[0] if isinstance(p, tuple) else p for p in requested] == list(GPU_PROVIDERS) + ["CPUExecutionProvider"]
    assert requested[0][1] == {"device_id": 1}


def test_cpu_fallback_when_asked_runs_and_says_so(device_models):
    digits = mnist_sample("val").head(16)
    prep = Preprocessing(height=28, width=28, color=ColorOrder.GRAY)
    with open_gpu(device_models.onnx, RunnerOptions(allow_cpu_fallback=True), session_factory=CudaLoadFailedSession) as gpu, \
            open_runner(device_models.onnx, "onnx-cpu") as cpu:
        assert gpu.describe()["providers"] == ["CPUExecutionProvider"]
        x = InputEncoder.build(prep, cpu.input)(digits.images)
        np.testing.assert_array_equal(gpu.invoke(x), cpu.invoke(x))


def test_a_session_with_cuda_is_accepted(device_models):
    with open_gpu(device_models.onnx, RunnerOptions(), session_factory=CudaSession) as gpu:
        assert gpu.target == "gpu" and gpu.describe()["providers"][0] == "CUDAExecutionProvider"
        assert gpu.invoke(np.zeros((3, 28, 28, 1), np.float32)).shape == (3, 10)
