"""The public Python API mirrors the CLI and stays cheap to import (no TensorFlow until a converter is used)."""
from __future__ import annotations

import subprocess
import sys


def test_import_edgecnn_loads_no_heavy_library():
    code = ("import sys, edgecnn; heavy = [m for m in ('tensorflow', 'onnx', 'onnxruntime', 'cv2') if m in sys.modules];"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    assert out == ""


def test_api_names_resolve_to_the_library_functions():
    import edgecnn
    from edgecnn.bench.harness import bench
    from edgecnn.devices.live import run
    from edgecnn.devices.classify import Classifier
    from edgecnn.devices.runners import open_runner

    assert edgecnn.benchmark is bench and edgecnn.run is run and edgecnn.open_runner is open_runner
    assert edgecnn.Classifier is Classifier and "Classifier" in edgecnn.__all__
    assert callable(edgecnn.convert) and callable(edgecnn.inspect) and callable(edgecnn.report)
    try:
        edgecnn.not_a_thing  # noqa: B018
    except AttributeError as exc:
        assert "not_a_thing" in str(exc)
    else:
        raise AssertionError("unknown attribute did not raise")
