"""Small seed architectures through the pipeline (the large ones are in benchmarks/convert_seeds.py)."""
from __future__ import annotations

import numpy as np
import pytest

import edgecnn
from edgecnn.manifest import ColorOrder


@pytest.mark.parametrize("seed, flatten, color", [("mnist_mlp", True, ColorOrder.GRAY), ("dave2", False, ColorOrder.RGB)])
def test_seed_converts_with_int8_much_smaller(tmp_path, seed, flatten, color):
    import keras

    from edgecnn.converters.zoo import SEED_MODELS, build_seed

    keras.utils.set_random_seed(0)
    path = tmp_path / f"{seed}.keras"
    build_seed(seed).save(path)
    calib = tmp_path / "calib.npy"
    shape = (28, 28) if flatten else SEED_MODELS[seed].input_shape  # the MLP takes flattened 28x28 digits
    np.save(calib, np.random.default_rng(0).integers(0, 256, size=(64, *shape), dtype=np.uint8))
    result = edgecnn.convert(path, calib=calib, out=tmp_path / "out",
                             options=edgecnn.ConvertOptions(formats="tflite-fp32,tflite-int8", progress=False))
    prep = result.manifest.preprocessing
    assert prep.flatten is flatten and prep.color == color
    assert result.manifest.input_shape == SEED_MODELS[seed].input_shape
    sizes = {e.name: e.size_bytes for e in result.manifest.artifacts}
    assert sizes["tflite-fp32"] / sizes["tflite-int8"] >= 3.5
    fp32 = result.manifest.artifact("tflite-fp32").verification
    assert fp32.data == "calibration" and fp32.max_abs_diff < 1e-3
