"""A device install as a user gets it: the project's wheel, installed non-editable with only the `device` and
`onnx-cpu` extras into a fresh venv (tests/device_env.py), used from the checkout's root and from another folder.

In that venv: `doctor`; `run` of the int8 .tflite and .onnx on a real video of MNIST digits written with OpenCV,
top-1 equal frame for frame to the same artifact's run here (the workstation venv); `bench` of an int8 TFLite and
an int8 ONNX row (MACs counted without the `onnx` package); `inspect --target edgetpu` of the .tflite (without
TensorFlow). Each start uses an empty probe cache, so the probe child really runs from each folder. TensorFlow and
`onnx` must be absent from that venv. The venv is cached by the wheel's content (about a minute to build once).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from device_env import ROOT, device_venv, installed
from edgecnn.devices.live import Display, RunOptions, run
from fixtures.video import digit_frames, write_video

EXTRAS = ("device", "onnx-cpu")
MNIST_CNN_MACS = 24 * 24 * 32 * 5 * 5 * 1 + 12 * 12 * 32 * 128 + 128 * 10
ARTIFACTS = {"tflite": ("tflite-int8", "cpu"), "onnx": ("onnx-int8", "onnx-cpu")}
FRAMES = 40


@pytest.fixture(scope="module")
def venv_bin():
    return device_venv(EXTRAS).parent


@pytest.fixture(scope="module")
def deployed(mnist_convert, tmp_path_factory):
    """The int8 artifacts with their manifest.json, copied as they would be to a device, and a digit video."""
    folder = tmp_path_factory.mktemp("device")
    artifacts = {}
    for family, (name, _) in ARTIFACTS.items():
        source = mnist_convert.artifact_path(name)
        artifacts[family] = folder / source.name
        shutil.copy2(source, artifacts[family])
    shutil.copy2(mnist_convert.out_dir / "manifest.json", folder / "manifest.json")
    frames, labels = digit_frames(FRAMES, size=96)
    video = write_video(frames, folder / "digits.avi", fps=10.0)
    return artifacts, video, labels


@pytest.fixture(scope="module")
def workstation_top1(deployed):
    """Per-frame top-1 of the same artifacts run in this (editable, TensorFlow-carrying) venv."""
    artifacts, video, _ = deployed
    out = {}
    for family, (_, target) in ARTIFACTS.items():
        records = []
        run(artifacts[family], target, str(video), RunOptions(display=Display.HIDE, print_every=0),
            on_frame=records.append)
        out[family] = [r["top_k"][0]["index"] for r in records]
    return out


def _edgecnn(venv_bin: Path, args: list[str], cwd: Path, probe_cache: Path, timeout: float = 300):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(EDGECNN_PROBE_CACHE=str(probe_cache), TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([str(venv_bin / "edgecnn"), *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"edgecnn {' '.join(args)} in {cwd}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
    return proc


def test_the_device_venv_holds_the_wheel_without_tensorflow_or_onnx(venv_bin):
    python = venv_bin / "python"
    for absent in ("tensorflow", "tensorflow-cpu", "tf-keras", "keras", "onnx", "tf2onnx"):
        assert not installed(python, absent), f"{absent} is installed in the device venv"
    for present in ("edgecnn", "ai-edge-litert", "onnxruntime", "opencv-python-headless"):
        assert installed(python, present), f"{present} is missing from the device venv"
    code = ("import importlib.util as u, edgecnn, sys; "
            "print(edgecnn.__file__); sys.exit(any(u.find_spec(m) for m in ('tensorflow', 'onnx', 'keras')))")
    proc = subprocess.run([str(python), "-c", code], cwd=venv_bin, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "site-packages" in proc.stdout and str(ROOT) not in proc.stdout  # not editable, not the checkout


@pytest.mark.parametrize("where", ["checkout", "elsewhere"])
def test_device_commands_from_any_folder(venv_bin, deployed, workstation_top1, tmp_path, where):
    artifacts, video, labels = deployed
    cwd = ROOT if where == "checkout" else tmp_path
    cache = tmp_path / "probed"  # empty: every model is probed in a child started from ``cwd``

    doctor = json.loads(_edgecnn(venv_bin, ["doctor", "--json"], cwd, cache).stdout)
    by_name = {c["name"]: c for c in doctor["checks"]}
    assert by_name["ONNX Runtime"]["status"] == "ok"
    assert any(c["name"].startswith("LiteRT") and c["status"] == "ok" for c in doctor["checks"])

    for family, (_, target) in ARTIFACTS.items():
        proc = _edgecnn(venv_bin, ["run", str(artifacts[family]), "--device", target, "--source", str(video),
                                   "--jsonl", "-", "--no-show"], cwd, cache)
        records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
        top1 = [r["top_k"][0]["index"] for r in records]
        assert len(top1) == FRAMES and top1 == workstation_top1[family], family
        assert np.mean(np.asarray(top1) == labels) >= 0.9  # and they are right: real digits, a trained model

    out = tmp_path / "bench"
    _edgecnn(venv_bin, ["bench", str(artifacts["tflite"]), str(artifacts["onnx"]), "--device", "cpu,onnx-cpu",
                        "--runs", "30", "--out", str(out)], cwd, cache)
    rows = json.loads((out / "bench.json").read_text())["rows"]
    assert {(r["family"], r["target"]) for r in rows} == {("tflite", "cpu"), ("onnx", "onnx-cpu")}
    for row in rows:
        assert row["status"] == "ok", row["reason"]
        assert row["macs"] == MNIST_CNN_MACS, (row["family"], row["notes"])
    assert "No plots" in (out / "bench.html").read_text()  # no matplotlib on a device: said, not failed

    report = json.loads(_edgecnn(venv_bin, ["inspect", str(artifacts["tflite"]), "--target", "edgetpu",
                                            "--out", str(tmp_path / "edgetpu"), "--json"], cwd, cache).stdout)
    assert report["edgetpu"]["prediction"]["fully_mapped"] is True
    assert len(list(cache.glob("*.json"))) == 2  # both artifacts were probed (in a child started from cwd)
