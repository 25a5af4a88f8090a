"""Shared fixtures: the trained default MNIST CNN and its conversion to every format, built once per session.

Converting takes TensorFlow + tf2onnx + ONNX Runtime about half a minute on two cores, so every test
that needs real artifacts shares one conversion (``mnist_convert``); build your own only to test
options that change the artifacts.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest


def pytest_configure(config):
    """Ctrl-C tests need Python's own SIGINT handling. A suite started in the background by a non-interactive
    shell (`bash .ci/run &`) inherits SIGINT ignored, and so would every process it starts."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session", autouse=True)
def _session_probe_cache(tmp_path_factory):
    """Probe passes (devices/probecache.py) kept for this session only: tests start with an empty record, as the
    probe did before passes were kept, and leave nothing in the user's cache (child processes inherit it)."""
    os.environ["EDGECNN_PROBE_CACHE"] = str(tmp_path_factory.mktemp("probed"))
    yield


_SESSION_CACHE: dict[str, object] = {}


@pytest.fixture(scope="session")
def mnist_keras_path() -> Path:
    """The cached trained MNIST CNN (.keras), trained on first use (about a minute) and kept in $EDGECNN_CACHE."""
    if "keras" not in _SESSION_CACHE:
        from edgecnn.converters.zoo import trained_mnist_cnn

        _SESSION_CACHE["keras"] = trained_mnist_cnn()
    return _SESSION_CACHE["keras"]


@pytest.fixture(scope="session")
def mnist_convert(tmp_path_factory, mnist_keras_path):
    """ConvertResult of the trained MNIST CNN converted to every format and verified on the 1,000 held-out
    digits. Exposes ``.out_dir``, ``.manifest`` (edgecnn.manifest.Manifest) and ``.artifact_path(name)``
    for names tflite-fp32, tflite-fp16, tflite-dynamic, tflite-int8, onnx-fp32, onnx-int8.
    Treat the folder as read-only: copy files before changing them."""
    if "convert" not in _SESSION_CACHE:
        from edgecnn.converters.pipeline import ConvertOptions, convert

        out = tmp_path_factory.mktemp("mnist_convert")
        _SESSION_CACHE["convert"] = convert(mnist_keras_path, calib="mnist", val="mnist", out=out,
                                            options=ConvertOptions(progress=False))
    return _SESSION_CACHE["convert"]
