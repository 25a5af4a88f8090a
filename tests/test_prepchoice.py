"""Preprocessing for files without a manifest (edgecnn.prepchoice), the pad_right resize, the shared CLI options."""
from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edgecnn.cli.prep_options import number, numbers, prep_choice
from edgecnn.errors import ManifestError, UsageError
from edgecnn.manifest import ColorOrder, Layout, Manifest, Preprocessing, ResizeMode
from edgecnn.prepchoice import PrepChoice, describe_prep, detect_layout
from edgecnn.preprocess import resize_image


@pytest.mark.parametrize("shape,layout", [
    ((3, 224, 224), Layout.NCHW), ((1, 28, 28), Layout.NCHW), ((3, -1, -1), Layout.NCHW), ((3, 48, -1), Layout.NCHW),
    ((224, 224, 3), Layout.NHWC), ((28, 28, 1), Layout.NHWC), ((-1, -1, 3), Layout.NHWC), ((96, 160, 1), Layout.NHWC),
    ((3, 3, 3), None), ((1, 5, 1), None), ((5, 5, 5), None), ((28, 28), Layout.HW), ((784,), Layout.FLAT),
    ((1, 3, 8, 8), None)])
def test_layout_from_the_input_shape(shape, layout):
    assert detect_layout(shape) == layout


def test_resolve_reads_size_and_channels_and_names_what_it_assumed():
    prep, guessed = PrepChoice().resolve((3, 64, 96), "m.onnx")
    assert (prep.height, prep.width, prep.layout, prep.color) == (64, 96, Layout.NCHW, ColorOrder.RGB)
    assert guessed == ("color rgb", "scale 1/255, mean 0, std 1", "resize stretch")
    prep, guessed = PrepChoice(scale=1 / 127.5, mean=(1.0,), resize=ResizeMode.STRETCH).resolve((28, 28, 1))
    assert prep.color == ColorOrder.GRAY and guessed == ()  # one channel: grey is not a guess
    assert prep.input_shape() == (28, 28, 1)


@pytest.mark.parametrize("choice,shape,error,text", [
    (PrepChoice(), (3, 3, 3), UsageError, "--layout"),
    (PrepChoice(), (3, -1, -1), UsageError, "dynamic H/W: give --size HxW"),
    (PrepChoice(size=(32, 32)), (3, 64, 64), ManifestError, "--size 32x32 given but"),
    (PrepChoice(color=ColorOrder.GRAY), (64, 64, 3), ManifestError, "3 channel"),
    (PrepChoice(layout=Layout.NCHW), (64, 64, 5), ManifestError, "64 channels as nchw"),
    (PrepChoice(layout=Layout.NHWC), (784,), ManifestError, "--layout nhwc given"),
])
def test_resolve_refuses_what_contradicts_the_file(choice, shape, error, text):
    with pytest.raises(error, match=text.replace("(", r"\(")):
        choice.resolve(shape, "m")


def test_dynamic_size_and_ambiguous_layout_are_settled_by_options():
    prep, _ = PrepChoice(size=(48, 192)).resolve((3, -1, -1))
    assert prep.input_shape() == (3, 48, 192)
    prep, _ = PrepChoice(layout=Layout.NCHW).resolve((3, 3, 3))
    assert prep.layout == Layout.NCHW


def test_options_override_a_manifest():
    base = Preprocessing(28, 28, ColorOrder.GRAY)
    over = PrepChoice(scale=1 / 127.5, mean=(1.0,)).over(base)
    assert (over.scale, over.mean, over.height, over.color) == (1 / 127.5, (1.0,), 28, ColorOrder.GRAY)
    assert PrepChoice().over(base) == base


def rapidocr_pad_right(img, height, width, pad):
    """PaddleOCR / RapidOCR's resize_norm_img geometry (text_cls.py), in pixels."""
    h, w = img.shape[:2]
    resized_w = width if math.ceil(height * w / h) > width else int(math.ceil(height * w / h))
    out = np.full((height, width, img.shape[2]), pad, np.uint8)
    out[:, :resized_w] = cv2.resize(img, (resized_w, height)).reshape(height, resized_w, -1)
    return out


@pytest.mark.parametrize("h,w", [(30, 300), (48, 100), (60, 40), (20, 900), (48, 192), (100, 384), (7, 13)])
def test_pad_right_is_paddleocr_geometry(h, w):
    img = np.random.default_rng(h * w).integers(0, 256, (h, w, 3), dtype=np.uint8)
    for pad in (0, 128):
        ours = resize_image(img, 48, 192, ResizeMode.PAD_RIGHT, pad_value=pad)
        expected = img if (h, w) == (48, 192) else rapidocr_pad_right(img, 48, 192, pad)
        np.testing.assert_array_equal(ours, expected)


def test_pad_value_and_pad_right_round_trip_through_the_manifest(tmp_path):
    prep = Preprocessing(48, 192, ColorOrder.BGR, ResizeMode.PAD_RIGHT, scale=1 / 255, mean=(0.5,), std=(0.5,),
                         layout=Layout.NCHW, pad_value=128)
    manifest = Manifest("m", "0" * 64, prep.input_shape(), prep, ("0", "180"))
    assert Manifest.from_dict(manifest.to_dict()).preprocessing == prep
    with pytest.raises(ManifestError, match="pad_value 300"):
        Preprocessing(8, 8, pad_value=300).validate()
    assert describe_prep(prep) == "48x192 bgr pad_right pad 128, (x*1/255 - 0.5) / 0.5, nchw"


def test_cli_option_values():
    assert number("1/127.5", "--scale") == pytest.approx(1 / 127.5)
    assert numbers("0.485, 0.456,0.406", "--mean") == (0.485, 0.456, 0.406)
    for bad in ("1/0", "x", "nan", "inf"):
        with pytest.raises(UsageError):
            number(bad, "--scale")
    choice = prep_choice({"size": "48x192", "scale": "1/255", "layout": "nchw", "resize": "pad_right", "pad_value": 128})
    assert choice == PrepChoice(size=(48, 192), scale=1 / 255, layout=Layout.NCHW, resize=ResizeMode.PAD_RIGHT,
                                pad_value=128)
    assert not prep_choice({"size": None}).given()
