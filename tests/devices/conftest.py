"""Fixtures for the device tests: small real models (see device_models.py), converted once and cached."""
from __future__ import annotations

import pytest

from device_models import DeviceModels, build_device_models


@pytest.fixture(scope="session")
def device_models() -> DeviceModels:
    """MNIST CNN as full-int8 .tflite, float .tflite and float .onnx, with a manifest.json beside them."""
    return build_device_models()
