"""Frames and images as the field delivers them: empty, grey or colour, any size, 16-bit, float, NaN.
Each is classified (when it is a picture) or refused with a one-line DataError, through the real
Classifier on the converted default (LiteRT) and through data loading."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgecnn.data import load_dataset, mnist_sample
from edgecnn.errors import DataError, EdgecnnError
from edgecnn.manifest import ColorOrder


@pytest.fixture(scope="module")
def classifier(artifacts):
    from edgecnn.devices.classify import Classifier

    with Classifier.open(artifacts["tflite-int8"], "cpu") as clf:
        yield clf


@pytest.fixture(scope="module")
def digit():
    sample = mnist_sample("val")
    return sample.images[0, :, :, 0], int(sample.labels[0])


def scores_of(result) -> dict[int, float]:
    return {p.index: p.score for p in result.top}


def test_grey_and_colour_versions_of_a_frame_classify_the_same(classifier, digit):
    grey, label = digit
    as_grey = classifier.classify(grey)
    assert as_grey.best.index == label
    for frame in (grey[:, :, None], cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR),
                  cv2.cvtColor(grey, cv2.COLOR_GRAY2BGRA)):
        assert scores_of(classifier.classify(frame)) == scores_of(as_grey)
    rgb = cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)
    assert scores_of(classifier.classify(rgb, source_color=ColorOrder.RGB)) == scores_of(as_grey)


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 640, 3), (480, 1, 3), (2160, 3840, 3), (29, 27), (7, 5, 4)])
def test_frames_of_any_size_are_resized_and_classified(classifier, shape):
    frame = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    result = classifier.classify(frame)
    assert len(result.top) == 5 and 0 <= result.best.index < 10
    scores = [p.score for p in result.top]
    assert all(0.0 <= s <= 1.0 for s in scores) and scores == sorted(scores, reverse=True)


@pytest.mark.parametrize("frame,words", [
    (np.zeros((0, 0, 3), np.uint8), "empty"),
    (np.zeros((0, 640, 3), np.uint8), "empty"),
    (np.zeros((480, 640, 3), np.uint16), "uint16"),
    (np.full((28, 28), 0.5, np.float32), "float32"),
    (np.full((28, 28, 3), np.nan, np.float64), "float64"),
    (np.zeros((28, 28, 2), np.uint8), "neither grey nor colour"),
    (np.zeros((1, 28, 28, 3), np.uint8), "neither grey nor colour"),
    (np.zeros(784, np.uint8), "neither grey nor colour"),
    (np.zeros((28, 28), bool), "bool"),
    (None, "NoneType"),
    ([[0, 1], [2, 3]], "list"),
])
def test_frames_that_are_not_8_bit_pictures_are_refused_in_one_line(classifier, frame, words):
    with pytest.raises(DataError) as exc:
        classifier.classify(frame)
    assert words in str(exc.value) and "\n" not in str(exc.value)


def test_batch_paths_refuse_wrong_shapes_and_empty_batches(classifier, digit):
    grey, label = digit
    assert classifier.classify_images([grey, cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB)]).argmax(axis=1).tolist() \
        == [label, label]
    for bad in (np.zeros((2, 32, 32, 1), np.uint8), np.zeros((28, 28, 1), np.uint8)):
        with pytest.raises(DataError, match="expected"):
            classifier.scores(bad)
    with pytest.raises(DataError):
        classifier.classify_images([])


def test_16_bit_image_files_are_scaled_and_classified_like_8_bit(classifier, digit, tmp_path):
    grey, label = digit
    cv2.imwrite(str(tmp_path / "digit16.png"), grey.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "digit8.png"), grey)
    deep, flat = load_dataset(tmp_path / "digit16.png"), load_dataset(tmp_path / "digit8.png")
    assert np.array_equal(deep.images, flat.images)
    assert classifier.classify_images(deep.images).argmax() == label


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_npy_data_is_refused_before_any_model_sees_it(tmp_path, bad):
    x = np.random.default_rng(0).random((4, 28, 28, 1)).astype(np.float32)
    x[2, 3, 4, 0] = bad
    np.save(tmp_path / "x.npy", x)
    with pytest.raises(DataError, match="NaN or infinite"):
        load_dataset(tmp_path / "x.npy")


def test_a_corrupt_image_in_a_folder_is_named(tmp_path):
    cv2.imwrite(str(tmp_path / "good.png"), np.zeros((8, 8), np.uint8))
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(30))
    with pytest.raises(EdgecnnError, match="broken.png"):
        load_dataset(tmp_path)
