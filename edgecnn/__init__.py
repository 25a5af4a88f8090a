"""edgecnn: take a trained Keras CNN to the edge.

The Python API mirrors the CLI; heavy modules load on first use, so ``import edgecnn`` is cheap and
never imports TensorFlow (the device side runs without it).

    import edgecnn
    result = edgecnn.convert("model.keras", calib="mnist")     # -> ConvertResult
    with edgecnn.Classifier.open(result.artifact_path("tflite-int8")) as classifier:
        print(classifier.classify(bgr_frame).best)               # frame: (H, W, 3) uint8 -> Prediction
"""
from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "convert": ("edgecnn.converters.pipeline", "convert"),
    "ConvertOptions": ("edgecnn.converters.pipeline", "ConvertOptions"),
    "run": ("edgecnn.devices.live", "run"),
    "RunOptions": ("edgecnn.devices.live", "RunOptions"),
    "open_runner": ("edgecnn.devices.runners", "open_runner"),
    "Classifier": ("edgecnn.devices.classify", "Classifier"),
    # Not "bench": that name is the edgecnn.bench subpackage, which would shadow the function once imported.
    "benchmark": ("edgecnn.bench.harness", "bench"),
    "BenchOptions": ("edgecnn.bench.harness", "BenchOptions"),
    "report": ("edgecnn.bench.report", "merge_reports"),
    "inspect": ("edgecnn.converters.inspect", "inspect"),
}


def __getattr__(name: str) -> Any:
    if name in _API:
        module, attr = _API[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'edgecnn' has no attribute '{name}'")


__all__ = sorted(_API) + ["__version__"]
