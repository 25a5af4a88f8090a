"""Keras -> fp32 ONNX with real TensorFlow, tf2onnx and ONNX Runtime, checked on real MNIST digits."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from edgecnn.converters.onnx_export import (  # noqa: E402
    INPUT_NAME, MANIFEST_KEY, OUTPUT_NAME, embed_metadata, export_onnx, onnx_io_specs, read_metadata)
from edgecnn.data import mnist_sample  # noqa: E402
from edgecnn.errors import ConversionError, InputPathError, ModelLoadError  # noqa: E402

TRAINING_ONLY_OPS = {"RandomUniform", "RandomNormal", "RandomUniformLike", "RandomNormalLike", "Multinomial",
                     "Dropout"}


def run_onnx(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: x})[0]


def op_types(path):
    import onnx

    return {node.op_type for node in onnx.load(str(path)).graph.node}


def leftovers(folder):
    return [p.name for p in folder.iterdir() if ".partial-" in p.name or ".old-" in p.name]


@pytest.fixture(scope="module")
def digits():
    return mnist_sample("val").images[:300]


@pytest.fixture(scope="module")
def mnist_model():
    import keras

    from edgecnn.converters.zoo import trained_mnist_cnn

    return keras.saving.load_model(trained_mnist_cnn(), safe_mode=True)


@pytest.fixture(scope="module")
def mnist_onnx(mnist_model, tmp_path_factory):
    return export_onnx(mnist_model, tmp_path_factory.mktemp("mnist") / "mnist_fp32.onnx")


@pytest.fixture(scope="module")
def augmented_model():
    """Dropout and the Random* augmentation layers real training scripts carry: a nested augmentation
    block inside a functional CNN, as in the Keras tutorials."""
    import keras

    keras.utils.set_random_seed(1)
    layers = keras.layers
    augment = keras.Sequential([layers.RandomFlip("horizontal"), layers.RandomRotation(0.2),
                                layers.RandomZoom(0.2), layers.RandomContrast(0.3)], name="augment")
    inputs = keras.Input((28, 28, 1), name="pixels")
    x = augment(inputs)
    x = layers.Conv2D(8, 3, activation="relu")(x)
    x = layers.Dropout(0.5)(layers.MaxPooling2D(2)(x))
    outputs = layers.Dense(10, activation="softmax")(layers.Flatten()(x))
    return keras.Model(inputs, outputs, name="augmented")


@pytest.fixture(scope="module")
def rescaling_model():
    """Rescaling and Normalization inside the model: it takes raw 0..255 pixels."""
    import keras

    keras.utils.set_random_seed(2)
    layers = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1), name="raw"),
        layers.Rescaling(1.0 / 255.0), layers.Normalization(mean=0.13, variance=0.095),
        layers.Conv2D(8, 3, activation="relu"), layers.Flatten(), layers.Dense(10),
    ], name="rescaling")


def test_fp32_onnx_matches_keras_on_real_digits(mnist_model, mnist_onnx, digits):
    x = digits.astype(np.float32) / 255.0
    expected = mnist_model.predict(x, verbose=0)
    got = run_onnx(mnist_onnx, x)
    assert got.shape == expected.shape == (len(x), 10)
    assert np.abs(got - expected).max() < 1e-4
    assert np.array_equal(got.argmax(1), expected.argmax(1))


def test_io_specs_report_stable_names_nhwc_and_dynamic_batch(mnist_onnx, digits):
    spec_in, spec_out = onnx_io_specs(mnist_onnx)
    assert (spec_in.name, spec_in.shape, spec_in.dtype) == (INPUT_NAME, (-1, 28, 28, 1), "float32")
    assert (spec_out.name, spec_out.shape, spec_out.dtype) == (OUTPUT_NAME, (-1, 10), "float32")
    x = digits.astype(np.float32) / 255.0
    one, seven = run_onnx(mnist_onnx, x[:1]), run_onnx(mnist_onnx, x[:7])
    assert one.shape == (1, 10) and seven.shape == (7, 10)
    np.testing.assert_allclose(seven[:1], one, atol=1e-6)


def test_training_only_layers_are_dropped_and_outputs_match_inference(augmented_model, digits, tmp_path):
    out = export_onnx(augmented_model, tmp_path / "augmented.onnx")
    assert not op_types(out) & TRAINING_ONLY_OPS
    x = digits[:64].astype(np.float32) / 255.0
    expected = np.asarray(augmented_model(x, training=False))
    got = run_onnx(out, x)
    # Deterministic: inference mode applies no augmentation, so two runs and Keras all agree.
    np.testing.assert_allclose(got, run_onnx(out, x), atol=0)
    assert np.abs(got - expected).max() < 1e-5
    assert leftovers(tmp_path) == []


def test_rescaling_inside_the_model_is_applied_once_from_a_saved_model_folder(rescaling_model, digits, tmp_path):
    saved = tmp_path / "saved"
    rescaling_model.export(str(saved), format="tf_saved_model", verbose=False)
    out = export_onnx(saved, tmp_path / "rescaling.onnx", opset=15)
    raw = digits[:64].astype(np.float32)  # 0..255: the model scales them itself
    expected = np.asarray(rescaling_model(raw, training=False))
    got = run_onnx(out, raw)
    assert np.abs(got - expected).max() < 1e-4
    # Feeding pre-scaled pixels gives different logits: the Rescaling really is in the graph.
    assert np.abs(run_onnx(out, raw / 255.0) - got).max() > 0.1
    assert "Mul" in op_types(out) or "Div" in op_types(out)


def test_metadata_round_trip_keeps_the_model_working(mnist_onnx, digits, tmp_path):
    import shutil

    path = tmp_path / "with_meta.onnx"
    shutil.copy(mnist_onnx, path)
    x = digits[:16].astype(np.float32) / 255.0
    before = run_onnx(path, x)
    manifest_json = '{"model_name": "mnist_cnn", "labels": ["0", "1"]}'
    embed_metadata(path, {MANIFEST_KEY: manifest_json, "author": "first"})
    embed_metadata(path, {"author": "second"})
    assert read_metadata(path) == {MANIFEST_KEY: manifest_json, "author": "second"}
    np.testing.assert_array_equal(run_onnx(path, x), before)
    assert leftovers(tmp_path) == []


def test_missing_and_wrong_model_paths_raise_typed_one_line_errors(tmp_path):
    with pytest.raises(InputPathError) as missing:
        export_onnx(tmp_path / "nope", tmp_path / "out.onnx")
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(ModelLoadError) as not_saved_model:
        export_onnx(tmp_path / "empty_dir", tmp_path / "out.onnx")
    with pytest.raises(ConversionError) as not_a_model:
        export_onnx(object(), tmp_path / "out.onnx")
    (tmp_path / "garbage.onnx").write_bytes(b"\x08\x07 not a protobuf model \xff\xfe" * 10)
    with pytest.raises(ModelLoadError) as garbage:
        onnx_io_specs(tmp_path / "garbage.onnx")
    with pytest.raises(InputPathError):
        read_metadata(tmp_path / "absent.onnx")
    for error in (missing, not_saved_model, not_a_model, garbage):
        assert "\n" not in str(error.value) and str(error.value)
    assert not (tmp_path / "out.onnx").exists()


def test_an_op_onnx_lacks_is_a_conversion_error_not_a_broken_file(tmp_path):
    import tensorflow as tf

    class Noisy(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None, 4], tf.float32)])
        def __call__(self, x):
            return x + tf.random.stateless_uniform(tf.shape(x), seed=[1, 2])

    tf.saved_model.save(Noisy(), str(tmp_path / "noisy"))
    with pytest.raises(ConversionError, match="cannot convert the TensorFlow op.*StatelessRandomUniform") as error:
        export_onnx(tmp_path / "noisy", tmp_path / "noisy.onnx")
    assert "\n" not in str(error.value)
    assert not (tmp_path / "noisy.onnx").exists() and leftovers(tmp_path) == []


def test_tf2onnx_failure_is_one_conversion_error_and_writes_nothing(tmp_path):
    broken = tmp_path / "broken_saved_model"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"this is not a SavedModel protobuf")
    with pytest.raises(ConversionError) as error:
        export_onnx(broken, tmp_path / "out.onnx")
    assert "tf2onnx" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "out.onnx").exists() and leftovers(tmp_path) == []
