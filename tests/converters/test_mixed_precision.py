"""A digit CNN trained under keras.mixed_precision "mixed_float16" (float32 softmax) converts: it is rebuilt
in float32 with its float32 weights copied, a warning says so, and int8 agrees >= 99 % (before: "TFLite fp32
conversion failed ... may use an op TFLite does not support" after ~40 lines of converter dump)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import ConversionError


@pytest.fixture(autouse=True)
def float32_policy():
    import keras

    yield
    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture(scope="module")
def mixed_keras(mixed_digit_cnn, tmp_path_factory):
    path = tmp_path_factory.mktemp("mixed") / "mixed_digits.keras"
    mixed_digit_cnn.save(path)
    return path


def test_the_rebuilt_model_is_float32_and_computes_what_the_mixed_one_does(mixed_digit_cnn):
    from edgecnn.converters.diagnose import as_float32, mixed_precision_layers
    from edgecnn.data import mnist_sample

    assert [name for name, dtype in mixed_precision_layers(mixed_digit_cnn) if dtype == "float16"]
    rebuilt = as_float32(mixed_digit_cnn)
    assert mixed_precision_layers(rebuilt) == []
    assert all(str(w.dtype) == "float32" for w in rebuilt.weights)
    for mine, theirs in zip(rebuilt.get_weights(), mixed_digit_cnn.get_weights()):
        np.testing.assert_array_equal(mine, theirs)
    x = mnist_sample("val").images.astype("float32") / 255.0
    float32_out = np.asarray(rebuilt(x, training=False))
    mixed_out = np.asarray(mixed_digit_cnn(x, training=False), dtype=np.float32)
    assert np.mean(float32_out.argmax(1) == mixed_out.argmax(1)) >= 0.99
    assert np.max(np.abs(float32_out - mixed_out)) < 0.05  # float16 rounding, nothing more


def test_a_nested_mixed_model_is_rebuilt_whole():
    import keras

    from edgecnn.converters.diagnose import as_float32, mixed_precision_layers

    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    inner = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3), keras.layers.Flatten()], name="body")
    inputs = keras.Input((8, 8, 1))
    outputs = keras.layers.Activation("softmax", dtype="float32")(keras.layers.Dense(3)(inner(inputs)))
    model = keras.Model(inputs, outputs)
    keras.mixed_precision.set_global_policy("float32")
    names = {name for name, _ in mixed_precision_layers(model)}
    assert "body" in names and inner.layers[0].name in names, names
    rebuilt = as_float32(model)
    assert mixed_precision_layers(rebuilt) == []
    x = np.random.default_rng(0).random((4, 8, 8, 1), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(rebuilt(x)), np.asarray(model(x), dtype=np.float32), atol=0.02)


def test_a_mixed_precision_model_converts_with_a_note(mixed_keras, tmp_path):
    from edgecnn.converters.pipeline import ConvertOptions, convert

    result = convert(mixed_keras, calib="mnist", val="mnist", out=tmp_path / "out",
                     options=ConvertOptions(formats="tflite-fp32,tflite-int8,onnx-fp32", progress=False))
    assert any("mixed-precision" in w and "float32" in w for w in result.warnings), result.warnings
    for entry in result.manifest.artifacts:
        check = entry.verification
        assert check.agreement >= 0.99, (entry.name, check.agreement)
        assert check.keras_accuracy > 0.8
    assert result.manifest.artifact("tflite-int8").input.dtype == "int8"


def test_a_mixed_precision_savedmodel_folder_is_named_as_such(mixed_digit_cnn, tmp_path):
    """A SavedModel cannot be rebuilt from its config: its float16 graph is named, with the fix."""
    from edgecnn.converters.pipeline import ConvertOptions, convert

    folder = tmp_path / "mixed_savedmodel"
    mixed_digit_cnn.export(str(folder), format="tf_saved_model", verbose=False)
    with pytest.raises(ConversionError, match="computes in float16") as caught:
        convert(folder, calib="mnist", out=tmp_path / "out", options=ConvertOptions(formats="tflite-fp32", progress=False))
    message = str(caught.value)
    assert "set_global_policy('float32')" in message and "\n" not in message
    assert "convert log: " in message
    log = Path(message.rpartition("convert log: ")[2].strip())
    try:
        assert "Conv2D" in log.read_text(encoding="utf-8"), "the converter's own dump is in the log"
    finally:
        log.unlink()
