"""The calibration audit on real MNIST digits and the trained default CNN: range mismatch (0-255 vs 0-1,
both ways, through convert's own preprocessing check), one image, missing classes, ranges still moving."""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.converters.calib_audit import Level, audit, check_count
from edgecnn.converters.calibration import ModelInputs
from edgecnn.converters.prep_check import check_preprocessing
from edgecnn.converters.prep_candidates import value_range
from edgecnn.manifest import ColorOrder, Preprocessing


@pytest.fixture(scope="module")
def digits():
    from edgecnn.data import mnist_sample

    train = mnist_sample("train")
    return train.images[:200], train.labels[:200]


@pytest.fixture(scope="module")
def loaded(mnist_keras_path):
    from edgecnn.converters.keras_load import load_model

    return load_model(mnist_keras_path)


@pytest.fixture(scope="module")
def model(loaded):
    return loaded.keras_model


MNIST_PREP = Preprocessing(height=28, width=28, color=ColorOrder.GRAY)


def _prep_report(loaded, arrays, prep, labels=None):
    data = ModelInputs(arrays.astype(np.float32), None, labels, "digits.npy", "calibration")
    return check_preprocessing(loaded, prep, data)


def test_expected_range_follows_preprocessing():
    assert value_range(MNIST_PREP) == pytest.approx((0.0, 1.0))
    assert value_range(Preprocessing(28, 28, ColorOrder.GRAY, scale=1.0)) == pytest.approx((0.0, 255.0))


def test_good_calibration_passes(digits, loaded, model):
    images, labels = digits
    x = images.astype(np.float32) / 255.0
    result = audit(x, labels, 10, model, _prep_report(loaded, x, MNIST_PREP, labels))
    assert result.problems == ()
    assert not result.flagged("preprocessing") and not result.flagged("classes") and not result.flagged("samples")
    assert "Keras top-1" in next(f.message for f in result.findings if f.check == "preprocessing")


def test_raw_pixels_for_a_model_trained_on_0_1_are_flagged(digits, loaded):
    images, _ = digits
    x = images.astype(np.float32)
    result = audit(x, preprocessing=_prep_report(loaded, x, MNIST_PREP))
    assert result.flagged("preprocessing")
    assert any("0..255" in f.message and "feeds the model 0..1" in f.message for f in result.problems)


def test_scaled_data_for_a_model_trained_on_0_255_is_flagged(digits, loaded):
    images, _ = digits
    x = images.astype(np.float32) / 255.0
    result = audit(x, preprocessing=_prep_report(loaded, x, Preprocessing(28, 28, ColorOrder.GRAY, scale=1.0)))
    assert result.flagged("preprocessing") and result.problems


def test_one_image_is_flagged(digits, model):
    images, labels = digits
    result = audit(images[:1].astype(np.float32) / 255.0, labels[:1], 10, model)
    assert result.flagged("samples") and result.problems[0].check == "samples"
    assert result.flagged("classes")  # nine classes missing too
    assert check_count(30).level == Level.WARNING and check_count(500).level == Level.OK


def test_missing_classes_are_named(digits):
    images, labels = digits
    keep = labels < 8
    result = audit(images[keep].astype(np.float32) / 255.0, labels[keep], 10)
    finding = next(f for f in result.findings if f.check == "classes")
    assert finding.level == Level.WARNING and "(8, 9)" in finding.message


def test_ranges_still_moving_with_few_samples(digits, model):
    images, _ = digits
    few = audit(images[:4].astype(np.float32) / 255.0, model=model)
    assert few.flagged("ranges-moving")
    assert max(few.range_growth.values()) > 0.05
    many = audit(images.astype(np.float32) / 255.0, model=model)
    assert not many.flagged("ranges-moving")
    assert max(many.range_growth.values()) < max(few.range_growth.values())
