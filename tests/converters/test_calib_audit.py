"""The calibration audit on real MNIST digits and the trained default CNN: range mismatch (0-255 vs 0-1,
both ways), one image, missing classes, ranges still moving."""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.converters.calib_audit import Level, audit, check_count, expected_input_range
from edgecnn.manifest import ColorOrder, Preprocessing


@pytest.fixture(scope="module")
def digits():
    from edgecnn.data import mnist_sample

    train = mnist_sample("train")
    return train.images[:200], train.labels[:200]


@pytest.fixture(scope="module")
def model(mnist_keras_path):
    import keras

    return keras.models.load_model(mnist_keras_path, compile=False)


MNIST_PREP = Preprocessing(height=28, width=28, color=ColorOrder.GRAY)


def test_expected_range_follows_preprocessing():
    assert expected_input_range(MNIST_PREP) == pytest.approx((0.0, 1.0))
    assert expected_input_range(Preprocessing(28, 28, ColorOrder.GRAY, scale=1.0)) == pytest.approx((0.0, 255.0))


def test_good_calibration_passes(digits, model):
    images, labels = digits
    result = audit(images.astype(np.float32) / 255.0, expected_input_range(MNIST_PREP), labels, 10, model)
    assert result.problems == ()
    assert not result.flagged("input-range") and not result.flagged("classes") and not result.flagged("samples")


def test_raw_pixels_for_a_model_trained_on_0_1_are_flagged(digits):
    images, _ = digits
    result = audit(images.astype(np.float32), expected_input_range(MNIST_PREP))
    assert result.flagged("input-range")
    assert any("divide by 255" in f.message for f in result.problems)


def test_scaled_data_for_a_model_trained_on_0_255_is_flagged(digits):
    images, _ = digits
    expected = expected_input_range(Preprocessing(28, 28, ColorOrder.GRAY, scale=1.0))
    result = audit(images.astype(np.float32) / 255.0, expected)
    assert result.flagged("input-range") and result.problems


def test_one_image_is_flagged(digits, model):
    images, labels = digits
    result = audit(images[:1].astype(np.float32) / 255.0, expected_input_range(MNIST_PREP), labels[:1], 10, model)
    assert result.flagged("samples") and result.problems[0].check == "samples"
    assert result.flagged("classes")  # nine classes missing too
    assert check_count(30).level == Level.WARNING and check_count(500).level == Level.OK


def test_missing_classes_are_named(digits):
    images, labels = digits
    keep = labels < 8
    result = audit(images[keep].astype(np.float32) / 255.0, None, labels[keep], 10)
    finding = next(f for f in result.findings if f.check == "classes")
    assert finding.level == Level.WARNING and "(8, 9)" in finding.message


def test_ranges_still_moving_with_few_samples(digits, model):
    images, _ = digits
    few = audit(images[:4].astype(np.float32) / 255.0, None, model=model)
    assert few.flagged("ranges-moving")
    assert max(few.range_growth.values()) > 0.05
    many = audit(images.astype(np.float32) / 255.0, None, model=model)
    assert not many.flagged("ranges-moving")
    assert max(many.range_growth.values()) < max(few.range_growth.values())
