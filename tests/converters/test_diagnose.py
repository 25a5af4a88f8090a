"""A failed conversion names its real cause, with the fix, in one line: an op TFLite builtins lack (with the
Keras layer that produced it), unknown dimensions, a channels-first layout. Real small models throughout."""
from __future__ import annotations

import pytest

from edgecnn.errors import ConversionError, ModelLoadError


def _save(model, folder, name="model.keras"):
    path = folder / name
    model.save(path)
    return path


def _convert(path, out, formats="tflite-fp32"):
    from edgecnn.converters.pipeline import ConvertOptions, convert

    return convert(path, calib="mnist", out=out, options=ConvertOptions(formats=formats, progress=False))


@pytest.mark.parametrize("interpolation,op", [("bicubic", "ResizeBicubic"), ("lanczos3", "ScaleAndTranslate")])
def test_an_unsupported_op_names_its_layer(tmp_path, interpolation, op):
    import keras

    body = keras.Sequential([keras.layers.Resizing(32, 32, interpolation=interpolation, name="upsize"),
                             keras.layers.Conv2D(4, 3)], name="body")
    model = keras.Sequential([keras.Input((28, 28, 1)), body, keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(10, activation="softmax")])
    with pytest.raises(ConversionError) as caught:
        _convert(_save(model, tmp_path), tmp_path / "out")
    message = str(caught.value)
    assert f"layer 'upsize' (Resizing) produces TF op '{op}' that TFLite builtins do not support" in message
    assert "\n" not in message and "--formats" in message
    log = message.rpartition("convert log: ")[2]
    assert op in open(log, encoding="utf-8").read()
    __import__("os").unlink(log)


def test_the_same_error_text_without_a_model_still_names_the_op():
    from edgecnn.converters.diagnose import conversion_error

    text = ('error: loc(callsite(fused["ResizeBicubic:", "sequential_1/upsize_1/resize/ResizeBicubic@__inference_f_1"]'
            " at x)): 'tf.ResizeBicubic' op is neither a custom op nor a flex op\nTF Select ops: ResizeBicubic\n")
    error = conversion_error(RuntimeError(text), "TFLite fp32")
    assert "TF op 'ResizeBicubic'" in str(error) and "upsize" in str(error)


@pytest.mark.parametrize("shape,named", [((None, None, 1), "unknown height (dimension 1) and width (dimension 2)"),
                                         ((28, None, 1), "unknown width (dimension 2)"),
                                         ((None, 28, 1), "unknown height (dimension 1)")])
def test_unknown_dimensions_are_named(tmp_path, shape, named):
    import keras

    model = keras.Sequential([keras.Input(shape), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    with pytest.raises(ModelLoadError, match="fixed input size") as caught:
        _convert(_save(model, tmp_path), tmp_path / "out")
    assert named in str(caught.value)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("layer", ["Conv2D", "MaxPooling2D", "GlobalAveragePooling2D"])
def test_a_channels_first_layer_is_refused(tmp_path, layer):
    import keras

    make = {"Conv2D": lambda: keras.layers.Conv2D(4, 3, data_format="channels_first", name="cf"),
            "MaxPooling2D": lambda: keras.layers.MaxPooling2D(2, data_format="channels_first", name="cf"),
            "GlobalAveragePooling2D": lambda: keras.layers.GlobalAveragePooling2D(data_format="channels_first",
                                                                                  name="cf")}[layer]
    model = keras.Sequential([keras.Input((1, 28, 28)), make(), keras.layers.Flatten(), keras.layers.Dense(10)])
    with pytest.raises(ModelLoadError, match="channels_first") as caught:
        _convert(_save(model, tmp_path), tmp_path / "out")
    assert f"layer 'cf' ({layer})" in str(caught.value)
    assert "channels_last" in str(caught.value) and "set_image_data_format" in str(caught.value)


@pytest.mark.parametrize("shape,refused", [((1, 28, 28), True), ((3, 32, 32), True), ((3, 224, 224), True),
                                           ((28, 28, 1), False), ((32, 32, 3), False), ((3, 32, 3), False),
                                           ((1, 4, 28), False)])
def test_a_channels_first_input_shape_is_refused(tmp_path, shape, refused):
    """Channels-last layers on a (C, H, W) input (a PyTorch-style export): refused by its shape alone."""
    import keras

    from edgecnn.converters.keras_load import load_model

    model = keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(10)])
    path = _save(model, tmp_path)
    if refused:
        with pytest.raises(ModelLoadError, match=r"channels_first \(C, H, W\).*channels_last"):
            load_model(path)
    else:
        assert load_model(path).input_shape == shape


def test_a_channels_first_savedmodel_folder_is_refused(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((3, 16, 16)), keras.layers.Flatten(), keras.layers.Dense(4)])
    folder = tmp_path / "nchw"
    model.export(str(folder), format="tf_saved_model", verbose=False)
    from edgecnn.converters.keras_load import load_model

    with pytest.raises(ModelLoadError, match="channels_first"):
        load_model(folder)
