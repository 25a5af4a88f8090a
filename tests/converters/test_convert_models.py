"""Model kinds and layers the converter must handle: .h5, SavedModel, augmentation/Dropout, Rescaling inside."""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.errors import ModelLoadError

RNG = np.random.default_rng(0)


def _small_cnn(keras, *front):
    layers = keras.layers
    return keras.Sequential([keras.Input((28, 28, 1), name="image"), *front,
                             layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(2), layers.Dropout(0.3),
                             layers.Flatten(), layers.Dense(10, activation="softmax")], name="small_cnn")


@pytest.fixture(scope="module")
def digits_npz(tmp_path_factory):
    """200 real MNIST digits with labels, as an .npz (the array-file input path)."""
    from edgecnn.data import mnist_sample

    val = mnist_sample("val").head(200)
    path = tmp_path_factory.mktemp("data") / "digits.npz"
    np.savez(path, x=val.images, y=val.labels)
    return path


def _convert(model_path, calib, out, formats, **kw):
    from edgecnn.converters.pipeline import ConvertOptions, convert

    return convert(model_path, calib=calib, out=out, options=ConvertOptions(formats=formats, progress=False, **kw))


def test_training_only_layers_do_not_break_conversion(tmp_path, digits_npz):
    """Random* augmentation and Dropout are identities at inference: fp32 artifacts equal Keras exactly."""
    import keras

    keras.utils.set_random_seed(1)
    aug = [keras.layers.RandomFlip("horizontal"), keras.layers.RandomRotation(0.2), keras.layers.RandomZoom(0.2),
           keras.layers.RandomContrast(0.3)]
    model = _small_cnn(keras, *aug)
    path = tmp_path / "augmented.keras"
    model.save(path)
    result = _convert(path, digits_npz, tmp_path / "out", "tflite-fp32,tflite-int8,onnx-fp32")
    for name in ("tflite-fp32", "onnx-fp32"):
        check = result.manifest.artifact(name).verification
        assert check.data == "calibration" and check.samples == 200
        assert check.agreement == 1.0 and check.max_abs_diff < 1e-5, name
    assert result.manifest.artifact("tflite-int8").verification.agreement >= 0.9
    assert result.manifest.checks["warnings"] == []  # an untrained model: no evidence, no false alarm


def test_a_rescaling_layer_is_honoured_not_applied_twice(tmp_path, digits_npz):
    import keras

    from edgecnn.preprocess import to_float

    from edgecnn.data import mnist_sample

    keras.utils.set_random_seed(3)
    model = _small_cnn(keras, keras.layers.Rescaling(1.0 / 255))
    train = mnist_sample("train")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(train.images.astype("float32"), train.labels, epochs=1, batch_size=64, verbose=0)  # raw 0..255 pixels
    path = tmp_path / "rescaling.keras"
    model.save(path)
    result = _convert(path, digits_npz, tmp_path / "out", "tflite-fp32,tflite-int8")
    prep = result.manifest.preprocessing
    assert prep.scale == 1.0 and prep.mean == (0.0,) and prep.std == (1.0,)
    pixels = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)
    assert np.array_equal(to_float(pixels, prep), pixels.astype(np.float32)), "pixels are fed at 0..255"
    assert any("Rescaling" in w for w in result.warnings)
    assert result.manifest.checks["warnings"] == [] and result.manifest.checks["data"]["labelled"]
    int8 = result.manifest.artifact("tflite-int8")
    assert int8.input.scale == pytest.approx(1.0, rel=1e-3), "the int8 input covers 0..255"
    # trained on raw pixels: with the right input scale Keras (fed through the manifest) is accurate
    assert int8.verification.keras_accuracy > 0.8
    assert int8.verification.agreement >= 0.97 and int8.verification.drop_pp <= 2.0


def test_h5_and_savedmodel_inputs(tmp_path, digits_npz):
    import keras

    from edgecnn.converters.keras_load import load_model

    keras.utils.set_random_seed(2)
    model = _small_cnn(keras)
    h5 = tmp_path / "legacy.h5"
    model.save(h5)
    savedmodel = tmp_path / "exported"
    model.export(str(savedmodel), format="tf_saved_model", verbose=False)
    x = RNG.random((4, 28, 28, 1), dtype=np.float32)
    expected = np.asarray(model(x, training=False))
    for source, kind in ((h5, "h5"), (savedmodel, "savedmodel")):
        loaded = load_model(source)
        assert loaded.kind == kind and loaded.input_shape == (28, 28, 1) and loaded.output_shape == (10,)
        np.testing.assert_allclose(loaded.predict(x), expected, atol=1e-5)
    result = _convert(savedmodel, digits_npz, tmp_path / "out", "tflite-fp32,tflite-dynamic")
    assert result.manifest.artifact("tflite-fp32").verification.agreement == 1.0
    assert result.manifest.model_name == "exported"


def test_load_errors_are_one_line(tmp_path):
    from edgecnn.converters.keras_load import load_model

    folder = tmp_path / "not-a-savedmodel"
    folder.mkdir()
    with pytest.raises(ModelLoadError, match="not a SavedModel") as caught:
        load_model(folder)
    assert "\n" not in str(caught.value)
    weights_only = tmp_path / "w.keras"
    import zipfile

    with zipfile.ZipFile(weights_only, "w") as archive:
        archive.writestr("metadata.json", "{}")
    with pytest.raises(ModelLoadError, match="no Keras config.json"):
        load_model(weights_only)


def test_a_custom_layer_is_named_in_the_error(tmp_path):
    import keras

    from edgecnn.converters.keras_load import load_model

    @keras.saving.register_keras_serializable(package="edgecnn_test")
    class Doubler(keras.layers.Layer):
        def call(self, x):
            return x * 2.0

    model = keras.Sequential([keras.Input((4,)), Doubler(name="doubler"), keras.layers.Dense(2)])
    path = tmp_path / "custom.keras"
    model.save(path)
    keras.saving.get_custom_objects().pop("edgecnn_test>Doubler", None)
    with pytest.raises(ModelLoadError, match="custom layer") as caught:
        load_model(path)
    assert "Doubler" in str(caught.value)
