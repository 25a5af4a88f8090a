"""Frames encoded straight into LiteRT's input tensor: the same bytes as the reference path, and no view of the
interpreter's memory left alive (LiteRT refuses to invoke or reallocate while one is).

Small colour models (int8 in/out, uint8 in/out, float) converted here with edgecnn's own TFLite converter.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.devices.base import RunnerOptions
from edgecnn.devices.classify import Classifier
from edgecnn.errors import DataError
from edgecnn.manifest import ColorOrder, Interpolation, Preprocessing, ResizeMode

SIDE = 16


@pytest.fixture(scope="module")
def colour_models(tmp_path_factory):
    import keras

    from edgecnn.converters.formats import IoType
    from edgecnn.converters.steps import export_savedmodel
    from edgecnn.converters.tflite import convert_bytes

    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((SIDE, SIDE, 3)), keras.layers.Conv2D(4, 3, activation="relu"),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(5, activation="softmax")])
    folder = tmp_path_factory.mktemp("colour")
    saved = folder / "saved"
    export_savedmodel(model, saved)
    calib = np.random.default_rng(0).uniform(-1, 1, (16, SIDE, SIDE, 3)).astype(np.float32)
    paths = {}
    for name, precision, io in (("int8", "int8", IoType.INT8), ("uint8", "int8", IoType.UINT8),
                                ("fp32", "fp32", IoType.INT8)):
        paths[name] = folder / f"{name}.tflite"
        paths[name].write_bytes(convert_bytes(saved, precision, calib, io))
    return paths


def _frames():
    rng = np.random.default_rng(7)
    return {"vga": rng.integers(0, 256, (480, 640, 3), dtype=np.uint8),
            "same size": rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8),
            "smaller, odd": rng.integers(0, 256, (9, 13, 3), dtype=np.uint8),
            "tall": rng.integers(0, 256, (300, 40, 3), dtype=np.uint8),
            "sliced (not contiguous)": rng.integers(0, 256, (120, 200, 3), dtype=np.uint8)[::2, 10:150],
            "grey": rng.integers(0, 256, (50, 70), dtype=np.uint8),
            "bgra": rng.integers(0, 256, (40, 60, 4), dtype=np.uint8)}


@pytest.mark.parametrize("kind", ["int8", "uint8", "fp32"])
@pytest.mark.parametrize("resize", list(ResizeMode))
@pytest.mark.parametrize("interpolation", list(Interpolation))
@pytest.mark.parametrize("color", [ColorOrder.RGB, ColorOrder.BGR])
def test_in_place_input_equals_the_reference_encoding(colour_models, kind, resize, interpolation, color):
    prep = Preprocessing(SIDE, SIDE, color, resize, interpolation, scale=1 / 127.5, mean=(1.0,), std=(1.0,))
    with Classifier.open(colour_models[kind], "cpu", RunnerOptions(threads=1), prep=prep, top_k=3) as clf:
        runner = clf.runner
        assert runner.input_view() is not None  # this test is about the in-place path
        for name, frame in _frames().items():
            sources = [ColorOrder.GRAY] if frame.ndim == 2 else [ColorOrder.BGR, ColorOrder.RGB]
            for source in sources:
                result = clf.classify(frame, source)
                written = runner._interpreter.get_tensor(runner._in_index)  # noqa: SLF001
                expected = clf.encoder(clf.prepare(frame, source)[None])
                assert written.dtype == expected.dtype
                np.testing.assert_array_equal(written, expected, err_msg=f"{name} from {source.value}")
                # The same output as the copying path (set_tensor of the encoder's batch).
                reference = clf.top_predictions(_scores(clf, expected))
                assert [p.index for p in result.top] == [p.index for p in reference], name


def _scores(clf, batch):
    from edgecnn.preprocess import decode_output

    return decode_output(clf.runner.invoke(batch), clf.runner.output, clf.output_kind)[0]


def test_no_view_outlives_a_frame(colour_models):
    prep = Preprocessing(SIDE, SIDE, ColorOrder.RGB, scale=1 / 127.5, mean=(1.0,), std=(1.0,))
    frame = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    with Classifier.open(colour_models["int8"], "cpu", RunnerOptions(threads=1), prep=prep) as clf:
        first = clf.classify(frame)
        clf.runner._interpreter.allocate_tensors()  # noqa: SLF001 - raises while a numpy view of a tensor lives
        batch = np.stack([clf.prepare(frame)] * 3)
        assert clf.scores(batch).shape == (3, 5)  # the batch path (sample by sample) between frames
        for bad in (np.zeros((10, 10, 3), np.float32), np.zeros((0, 5, 3), np.uint8), np.zeros((4, 4, 2), np.uint8)):
            with pytest.raises(DataError):
                clf.classify(bad)  # refused before any view of the tensor exists
        again = clf.classify(frame)
        assert [p.index for p in again.top] == [p.index for p in first.top]
        assert again.top[0].score == pytest.approx(first.top[0].score)


@pytest.fixture(scope="module")
def layout_models(tmp_path_factory):
    """int8 models whose input is not (H, W, C): a flattened colour image, a grey (H, W) image, and (C, H, W)."""
    import keras

    from edgecnn.converters.steps import export_savedmodel
    from edgecnn.converters.tflite import convert_bytes
    from edgecnn.manifest import Layout

    keras.utils.set_random_seed(5)
    head = [keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(5, activation="softmax")]
    specs = {Layout.FLAT: (ColorOrder.RGB, (SIDE * SIDE * 3,), [keras.layers.Dense(5, activation="softmax")]),
             Layout.HW: (ColorOrder.GRAY, (SIDE, SIDE), [keras.layers.Reshape((SIDE, SIDE, 1)), *head]),
             Layout.NCHW: (ColorOrder.RGB, (3, SIDE, SIDE), [keras.layers.Permute((2, 3, 1))])}
    folder = tmp_path_factory.mktemp("layouts")
    out = {}
    for layout, (color, shape, layers) in specs.items():
        if layout == Layout.NCHW:
            layers = layers + [keras.layers.Conv2D(4, 3, activation="relu"), keras.layers.GlobalAveragePooling2D(),
                               keras.layers.Dense(5, activation="softmax")]
        model = keras.Sequential([keras.Input(shape), *layers])
        saved = folder / f"{layout.value}-saved"
        export_savedmodel(model, saved)
        calib = np.random.default_rng(0).uniform(-1, 1, (16, *shape)).astype(np.float32)
        path = folder / f"{layout.value}.tflite"
        path.write_bytes(convert_bytes(saved, "int8", calib))
        out[layout] = (path, color)
    return out


@pytest.mark.parametrize("layout", ["flat", "hw", "nchw"])
def test_every_input_layout_gets_the_reference_encoding(layout_models, layout):
    # The in-place path (flat, hw: the tensor is the (H, W, C) bytes under another shape) and the transposing path
    # (nchw: encoded in (H, W, C) order, then transposed) must both feed exactly what InputEncoder produces.
    from edgecnn.manifest import Layout

    path, color = layout_models[Layout(layout)]
    prep = Preprocessing(SIDE, SIDE, color, scale=1 / 127.5, mean=(1.0,), std=(1.0,), layout=Layout(layout))
    with Classifier.open(path, "cpu", RunnerOptions(threads=1), prep=prep, top_k=3) as clf:
        runner = clf.runner
        assert runner.input_view() is not None  # LiteRT offers the view; only nchw declines it (a transpose)
        for name, frame in _frames().items():
            source = ColorOrder.GRAY if frame.ndim == 2 else ColorOrder.BGR
            result = clf.classify(frame, source)
            written = runner._interpreter.get_tensor(runner._in_index)  # noqa: SLF001
            expected = clf.encoder(clf.prepare(frame, source)[None])
            assert written.shape == expected.shape == (1, *prep.input_shape())
            np.testing.assert_array_equal(written, expected, err_msg=f"{name}, layout {layout}")
            reference = clf.top_predictions(_scores(clf, expected))
            assert [p.index for p in result.top] == [p.index for p in reference], name
