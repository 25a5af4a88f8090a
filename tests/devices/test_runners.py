"""The target table and open_runner on real LiteRT and ONNX Runtime with real converted models."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.data import mnist_sample
from edgecnn.devices.base import RunnerOptions
from edgecnn.devices.litert import LiteRTRunner, resolve_runtime, tflite_runtime_conflict
from edgecnn.devices.runners import TARGETS, get_target, open_runner
from edgecnn.errors import DataError, InputPathError, RuntimeMissingError, UnknownNameError, UsageError
from edgecnn.manifest import ColorOrder, Preprocessing
from edgecnn.preprocess import InputEncoder

HERE = Path(__file__).parent
PREP = Preprocessing(height=28, width=28, color=ColorOrder.GRAY)


@pytest.fixture(scope="module")
def digits():
    return mnist_sample("val").head(64)


def test_table_has_every_target_and_suggests_close_names():
    assert set(TARGETS) == {"cpu", "pi", "edgetpu", "gpu", "onnx-cpu", "imx500"}
    assert get_target("PI").name == "pi"
    with pytest.raises(UnknownNameError, match="did you mean 'onnx-cpu'"):
        get_target("onnx_cpu")


def test_int8_tflite_on_cpu_reports_its_quantized_input(device_models):
    with open_runner(device_models.int8, "cpu") as runner:
        assert isinstance(runner, LiteRTRunner)
        assert runner.input.dtype == "int8" and runner.input.quantized
        assert runner.input.shape[1:] == (28, 28, 1)
        assert runner.output.shape[-1] == 10
        info = runner.describe()
        assert info["runtime"] == resolve_runtime().name == "ai_edge_litert"
        assert info["threads"] == os.cpu_count()
        assert info["xnnpack"] is True


def test_batches_equal_sample_by_sample(device_models, digits):
    with open_runner(device_models.int8, "cpu") as runner:
        batch = InputEncoder.build(PREP, runner.input)(digits.images[:7])
        together = runner.invoke(batch)
        one_by_one = np.concatenate([runner.invoke(batch[i:i + 1]) for i in range(7)])
    assert together.shape == (7, 10)
    np.testing.assert_array_equal(together, one_by_one)


def test_int8_runner_classifies_real_digits(device_models, digits):
    with open_runner(device_models.int8, "cpu", RunnerOptions(threads=1)) as runner:
        assert runner.describe()["threads"] == 1
        raw = runner.invoke(InputEncoder.build(PREP, runner.input)(digits.images))
    assert np.mean(raw.argmax(axis=1) == digits.labels) >= 0.9


def test_xnnpack_off_gives_the_same_classes(device_models, digits):
    outs = []
    for xnnpack in (True, False):
        with open_runner(device_models.fp32, "cpu", RunnerOptions(use_xnnpack=xnnpack)) as runner:
            assert runner.describe()["xnnpack"] is xnnpack
            outs.append(runner.invoke(InputEncoder.build(PREP, runner.input)(digits.images)))
    np.testing.assert_array_equal(outs[0].argmax(1), outs[1].argmax(1))
    np.testing.assert_allclose(outs[0], outs[1], atol=1e-4)


def test_pi_is_cpu_with_at_most_four_threads(device_models):
    with open_runner(device_models.int8, "pi") as runner:
        assert runner.target == "pi"
        assert runner.describe()["threads"] == min(4, os.cpu_count())


def test_onnx_on_onnx_cpu_matches_tflite_fp32(device_models, digits):
    with open_runner(device_models.onnx, "onnx-cpu") as onnx, open_runner(device_models.fp32, "cpu") as tfl:
        assert onnx.describe()["providers"] == ["CPUExecutionProvider"]
        assert onnx.input.shape[0] == -1  # dynamic batch
        x = InputEncoder.build(PREP, onnx.input)(digits.images)
        np.testing.assert_allclose(onnx.invoke(x), tfl.invoke(x), atol=1e-4)


@pytest.mark.parametrize("model,target,suggested", [("onnx", "cpu", "onnx-cpu"), ("int8", "onnx-cpu", "cpu"),
                                                     ("fp32", "gpu", "cpu"), ("onnx", "edgetpu", "gpu")])
def test_format_and_target_mismatch_is_a_clear_error(device_models, model, target, suggested):
    with pytest.raises(UsageError, match=f"--device {target} runs .* use --device .*{suggested}"):
        open_runner(getattr(device_models, model), target)


def test_missing_file_and_folder_are_path_errors(tmp_path):
    with pytest.raises(InputPathError, match="does not exist"):
        open_runner(tmp_path / "nope.tflite")
    with pytest.raises(InputPathError, match="is a folder"):
        open_runner(tmp_path)


def test_wrong_dtype_batch_is_refused(device_models):
    with open_runner(device_models.int8, "cpu") as runner:
        with pytest.raises(DataError, match="does not match the model input int8"):
            runner.invoke(np.zeros((1, 28, 28, 1), np.float32))
        with pytest.raises(DataError, match="does not fit"):
            runner.invoke(np.zeros((1, 27, 28, 1), np.int8))


def test_keras_file_is_not_a_device_artifact(device_models, tmp_path):
    target = tmp_path / "model.keras"
    shutil.copy(device_models.keras, target)
    with pytest.raises(UsageError, match="keras model"):
        open_runner(target, "cpu")


@pytest.mark.parametrize("tfl,npy,conflict", [("2.14.0", "2.1.0", True), ("2.11.0", "2.4.1", True),
                                              ("2.14.0", "1.26.4", False), ("2.20.0", "2.1.0", False)])
def test_tflite_runtime_numpy2_conflict_rule(tfl, npy, conflict):
    message = tflite_runtime_conflict(tfl, npy)
    assert (message is not None) == conflict
    if conflict:
        assert "numpy 1" in message and npy in message


def test_an_installed_tflite_runtime_under_numpy2_is_never_imported(monkeypatch):
    """Stand-in for an installed tflite_runtime 2.14 wheel (not installable next to numpy 2 here): the
    resolver must refuse it from its metadata and say what to install, without importing it."""
    import edgecnn.devices.litert as litert

    monkeypatch.setattr(litert, "_module_present", lambda name: name == "tflite_runtime")
    monkeypatch.setattr(litert, "dist_version", lambda name: "2.14.0" if name == "tflite-runtime" else None)
    monkeypatch.setattr(litert, "_load", lambda name: pytest.fail(f"{name} was imported"))
    litert.resolve_runtime.cache_clear()
    try:
        with pytest.raises(RuntimeMissingError, match="tflite_runtime 2.14.0 was built for numpy 1.*pip install ai-edge-litert"):
            litert.resolve_runtime()
    finally:
        litert.resolve_runtime.cache_clear()


def test_no_litert_runtime_at_all_says_what_to_install(device_models):
    code = ("from edgecnn.devices.base import RunnerOptions\n"
            "from edgecnn.devices.runners import open_runner\n"
            "from edgecnn.errors import RuntimeMissingError\n"
            f"try:\n    open_runner({str(device_models.int8)!r}, 'cpu', RunnerOptions(probe=False))\n"
            "except RuntimeMissingError as exc:\n    print('ERR', exc)\n")
    proc = subprocess.run([sys.executable, str(HERE / "noimport.py"), "ai_edge_litert,tflite_runtime,tensorflow", "-c", code],
                          capture_output=True, text=True, timeout=120)
    assert "ERR no LiteRT runtime is installed" in proc.stdout, proc.stderr
    assert "pip install ai-edge-litert" in proc.stdout
    assert "NOIMPORT-OK" in proc.stderr
