"""Pure pieces of convert (no TensorFlow): the formats table, preprocessing choice, calibration subsets, summary."""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.converters.calibration import PrepRequest, build_preprocessing, choose_calibration, model_inputs
from edgecnn.converters.formats import FORMATS, parse_formats
from edgecnn.data import Dataset
from edgecnn.errors import DataError, UnknownNameError, UsageError
from edgecnn.manifest import ColorOrder


def test_formats_parse_in_table_order_without_duplicates():
    assert [f.name for f in parse_formats("onnx-int8, tflite-fp32,onnx-int8")] == ["tflite-fp32", "onnx-int8"]
    assert [f.name for f in parse_formats(None)] == list(FORMATS)
    with pytest.raises(UnknownNameError, match="did you mean 'onnx-fp32'"):
        parse_formats("onnx-fp23")
    assert {f.name for f in FORMATS.values() if f.needs_calibration} == {"tflite-int8", "onnx-int8"}


def test_preprocessing_follows_the_model_input():
    prep, notes = build_preprocessing((32, 32, 3), PrepRequest())
    assert (prep.height, prep.width, prep.color, prep.flatten) == (32, 32, ColorOrder.RGB, False)
    assert prep.scale == pytest.approx(1 / 255) and notes == ()
    flat, _ = build_preprocessing((784,), PrepRequest())
    assert (flat.height, flat.width, flat.color, flat.flatten) == (28, 28, ColorOrder.GRAY, True)
    rescaled, notes = build_preprocessing((28, 28, 1), PrepRequest(), ("Rescaling", "Conv2D"))
    assert rescaled.scale == 1.0 and "Rescaling" in notes[0]
    bgr, _ = build_preprocessing((8, 8, 3), PrepRequest(color=ColorOrder.BGR, scale=1 / 127.5, mean=(1.0,)))
    assert bgr.color == ColorOrder.BGR and bgr.mean == (1.0,)


@pytest.mark.parametrize("shape, request_, match", [
    ((28, 28, 1), PrepRequest(color=ColorOrder.RGB), "3 channel"),
    ((28, 28, 3), PrepRequest(mean=(0.1, 0.2)), "mean has 2 values"),
    ((28, 28), PrepRequest(color=ColorOrder.RGB), "no channel axis"),
    ((3, 28, 28), PrepRequest(), "channels_first"),
    ((10, 10, 10, 3), PrepRequest(), "not an image"),
])
def test_preprocessing_refuses_what_cannot_match(shape, request_, match):
    with pytest.raises(UsageError, match=match):
        build_preprocessing(shape, request_)


def test_calibration_subset_is_seeded_and_warns_when_tiny():
    prep, _ = build_preprocessing((8, 8, 1), PrepRequest())
    images = np.random.default_rng(1).integers(0, 256, (300, 8, 8, 1), dtype=np.uint8)
    data = model_inputs(Dataset(images, np.arange(300) % 10, None, "test"), prep, (8, 8, 1), "calibration")
    assert data.inputs.dtype == np.float32 and data.inputs.max() <= 1.0
    a, warn_a = choose_calibration(data, 100, seed=3)
    b, _ = choose_calibration(data, 100, seed=3)
    assert len(a) == 100 and np.array_equal(a.inputs, b.inputs) and warn_a == ()
    small, warnings = choose_calibration(data.__class__(data.inputs[:10], data.pixels[:10], None, "t", "calibration"), 100)
    assert len(small) == 10 and "only 10 calibration samples" in warnings[0]


def test_float_arrays_must_match_the_model_input():
    prep, _ = build_preprocessing((8, 8, 1), PrepRequest())
    good = Dataset(np.zeros((4, 8, 8, 1), np.float32), None, None, "f", preprocessed=True)
    assert model_inputs(good, prep, (8, 8, 1), "validation").pixels is None
    bad = Dataset(np.zeros((4, 8, 8), np.float32), None, None, "f", preprocessed=True)
    with pytest.raises(DataError, match=r"shape \(8, 8\) per sample"):
        model_inputs(bad, prep, (8, 8, 1), "validation")
