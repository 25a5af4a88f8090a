"""The Classifier: manifest-driven pre/post-processing on real models, and refusal of mismatched manifests."""
from __future__ import annotations

import dataclasses
import json
import shutil

import cv2
import numpy as np
import pytest

from edgecnn.data import mnist_sample
from edgecnn.devices.classify import Classifier, read_labels
from edgecnn.devices.runners import open_runner
from edgecnn.errors import DataError, ManifestError
from edgecnn.manifest import ColorOrder, Manifest, Preprocessing
from edgecnn.preprocess import InputEncoder, prepare_pixels

PREP = Preprocessing(height=28, width=28, color=ColorOrder.GRAY)


@pytest.fixture(scope="module")
def val():
    return mnist_sample("val")


@pytest.fixture(scope="module")
def int8_classifier(device_models):
    with Classifier.open(device_models.int8, "cpu", top_k=3) as classifier:
        yield classifier


def _frame(digit: np.ndarray) -> np.ndarray:
    """A 640x480 BGR camera-like frame: the digit scaled up, centred on black."""
    frame = np.zeros((480, 640, 3), np.uint8)
    big = cv2.resize(digit[:, :, 0], (480, 480), interpolation=cv2.INTER_NEAREST)
    frame[:, 80:560] = big[:, :, None]
    return frame


def test_sidecar_manifest_gives_accuracy_and_labels(int8_classifier, val):
    assert int8_classifier.manifest is not None
    assert int8_classifier.labels == tuple(str(d) for d in range(10))
    accuracy = np.mean(int8_classifier.predict(val.images) == val.labels)
    assert accuracy >= 0.94, accuracy


def test_batch_path_equals_the_raw_runner_exactly(int8_classifier, device_models, val):
    """The Classifier's encoding is the shared InputEncoder's: the same int8 tensor, the same output."""
    images = val.images[:200]
    with open_runner(device_models.int8, "cpu") as runner:
        raw = runner.invoke(InputEncoder.build(PREP, runner.input)(images))
    np.testing.assert_array_equal(int8_classifier.predict(images), raw.argmax(axis=1))


def test_frame_path_equals_batch_path_on_the_same_pixels(int8_classifier, val):
    for digit in val.images[:30]:
        frame = _frame(digit)
        result = int8_classifier.classify(frame, source_color=ColorOrder.BGR)
        pixels = prepare_pixels(frame, PREP, ColorOrder.BGR)[None]
        scores = int8_classifier.scores(pixels)[0]
        assert result.best.index == int(scores.argmax())
        assert result.best.score == pytest.approx(float(scores.max()))


def test_frames_of_digits_are_recognised(int8_classifier, val):
    hits = [int8_classifier.classify(_frame(d)).best.index == y for d, y in zip(val.images[:100], val.labels[:100])]
    assert np.mean(hits) >= 0.9


def test_result_has_top_k_best_first_and_stage_times(int8_classifier, val):
    result = int8_classifier.classify(_frame(val.images[0]))
    assert len(result.top) == 3
    assert [p.score for p in result.top] == sorted((p.score for p in result.top), reverse=True)
    assert result.top[0].label == str(result.top[0].index)
    assert result.times.inference_ms > 0 and result.times.preprocess_ms > 0 and result.times.postprocess_ms >= 0
    as_dict = result.to_dict()
    assert set(as_dict["ms"]) == {"preprocess", "inference", "postprocess"} and len(as_dict["top"]) == 3
    json.dumps(as_dict)


def test_onnx_classifier_agrees_with_tflite_fp32(device_models, val):
    with Classifier.open(device_models.onnx, "onnx-cpu") as onnx, Classifier.open(device_models.fp32, "cpu") as tfl:
        a, b = onnx.predict(val.images), tfl.predict(val.images)
    assert np.mean(a == b) >= 0.999


def test_bad_frames_are_refused(int8_classifier):
    with pytest.raises(DataError, match="uint16"):
        int8_classifier.classify(np.zeros((48, 64, 3), np.uint16))
    with pytest.raises(DataError, match="empty"):
        int8_classifier.classify(np.zeros((0, 64, 3), np.uint8))
    with pytest.raises(DataError, match="not an image"):
        int8_classifier.classify(None)


def _lone_copy(device_models, tmp_path, name="int8"):
    model = tmp_path / getattr(device_models, name).name
    shutil.copy(getattr(device_models, name), model)
    return model


def test_no_manifest_and_no_preprocessing_says_which_options_to_pass(device_models, tmp_path):
    with pytest.raises(ManifestError, match="no manifest.json beside it.*--manifest"):
        Classifier.open(_lone_copy(device_models, tmp_path))


def test_explicit_preprocessing_and_labels_file(device_models, tmp_path, val):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"digit {d}" for d in range(10)) + "\n\n")
    assert read_labels(labels)[3] == "digit 3"
    with Classifier.open(_lone_copy(device_models, tmp_path), prep=PREP, labels=labels) as classifier:
        assert classifier.manifest is None
        assert classifier.classify(val.images[0], ColorOrder.GRAY).best.label == f"digit {val.labels[0]}"


def _write_manifest(tmp_path, device_models, **changes):
    model = _lone_copy(device_models, tmp_path)
    manifest = Manifest.read(device_models.manifest)
    manifest = dataclasses.replace(manifest, **changes)
    (tmp_path / "manifest.json").write_text(manifest.to_json())
    return model


def test_manifest_for_another_input_shape_is_refused(device_models, tmp_path):
    prep = Preprocessing(height=32, width=32, color=ColorOrder.RGB)
    model = _write_manifest(tmp_path, device_models, preprocessing=prep, input_shape=(32, 32, 3))
    with pytest.raises(ManifestError, match=r"preprocessing produces \(32, 32, 3\) but .* takes \(28, 28, 1\)"):
        Classifier.open(model)


def test_manifest_with_another_class_count_is_refused(device_models, tmp_path):
    model = _write_manifest(tmp_path, device_models, labels=("cat", "dog"))
    with pytest.raises(ManifestError, match="2 labels given but .* has 10 classes"):
        Classifier.open(model)


def test_manifest_with_other_quantization_is_refused(device_models, tmp_path):
    manifest = Manifest.read(device_models.manifest)
    entries = tuple(dataclasses.replace(a, input=dataclasses.replace(a.input, scale=a.input.scale * 2))
                    if a.name == "tflite-int8" else a for a in manifest.artifacts)
    model = _write_manifest(tmp_path, device_models, artifacts=entries)
    with pytest.raises(ManifestError, match="the manifest says .* input is int8 .* the file was replaced"):
        Classifier.open(model)


def test_manifest_float_dtype_for_an_int8_model_is_refused(device_models, tmp_path):
    manifest = Manifest.read(device_models.manifest)
    fp32 = next(a for a in manifest.artifacts if a.name == "tflite-fp32")
    entries = tuple(dataclasses.replace(a, input=fp32.input) if a.name == "tflite-int8" else a
                    for a in manifest.artifacts)
    model = _write_manifest(tmp_path, device_models, artifacts=entries)
    with pytest.raises(ManifestError, match="is float32 .* but the model has int8"):
        Classifier.open(model)


def test_convert_pipeline_artifacts_run_with_their_manifest(mnist_convert, val):
    """The artifacts and manifest written by edgecnn convert load and score as convert verified them."""
    for name, target in (("tflite-int8", "cpu"), ("onnx-fp32", "onnx-cpu")):
        entry = mnist_convert.manifest.artifact(name)
        with Classifier.open(mnist_convert.artifact_path(name), target) as classifier:
            accuracy = float(np.mean(classifier.predict(val.images) == val.labels))
        if entry.verification is not None and entry.verification.accuracy is not None:
            assert accuracy == pytest.approx(entry.verification.accuracy, abs=0.002)
        assert accuracy >= 0.94


def test_artifact_changed_after_conversion_is_refused(mnist_convert, tmp_path):
    """A damaged artifact can still load and answer wrongly; the manifest's SHA-256 catches it at load."""
    source = mnist_convert.artifact_path("tflite-int8")
    shutil.copy(mnist_convert.out_dir / "manifest.json", tmp_path / "manifest.json")
    damaged = tmp_path / source.name
    damaged.write_bytes(source.read_bytes() + b"\0" * 16)  # trailing bytes: still a loadable flatbuffer
    with pytest.raises(ManifestError, match="SHA-256"):
        Classifier.open(damaged, "cpu")
    shutil.copy(source, damaged)
    with Classifier.open(damaged, "cpu") as classifier:
        assert classifier.manifest is not None


@pytest.mark.parametrize("resize", ["stretch", "center_crop", "letterbox"])
@pytest.mark.parametrize("source,target", [("bgr", "rgb"), ("rgb", "rgb"), ("bgr", "bgr"), ("rgb", "gray")])
def test_fast_frame_preparation_equals_the_shared_prepare_pixels(device_models, tmp_path, resize, source, target):
    """The Classifier resizes before swapping channels (cheaper); the bytes must equal prepare_pixels'."""
    from edgecnn.manifest import ResizeMode

    prep = Preprocessing(height=28, width=28, color=ColorOrder(target), resize=ResizeMode(resize))
    with open_runner(device_models.int8, "cpu") as runner:
        classifier = Classifier(runner, PREP, [str(d) for d in range(10)])
        classifier.prep = prep  # only prepare() is used here; the model's own size is 28x28
        rng = np.random.default_rng(0)
        for shape in ((480, 640, 3), (37, 91, 3), (28, 28, 3), (300, 200, 3)):
            frame = rng.integers(0, 256, size=shape, dtype=np.uint8)
            expected = prepare_pixels(frame, prep, ColorOrder(source))
            np.testing.assert_array_equal(classifier.prepare(frame, ColorOrder(source)), expected)


@pytest.mark.parametrize("model", ["int8", "fp32"])
@pytest.mark.parametrize("mean", [(0.0,), (0.1, 0.2, 0.3)])
def test_per_frame_encoding_equals_the_shared_input_encoder(device_models, model, mean):
    """The per-frame buffer (OpenCV LUT for 8-bit, np.take otherwise) holds what InputEncoder computes."""
    with open_runner(getattr(device_models, model), "cpu") as runner:
        prep = Preprocessing(height=28, width=28, color=ColorOrder.RGB, mean=mean, std=(0.5,))
        spec = dataclasses.replace(runner.input, shape=(1, 28, 28, 3))
    pixels = np.random.default_rng(1).integers(0, 256, (28, 28, 3), dtype=np.uint8)
    classifier = _encoder_only(prep, spec)
    assert (classifier._lut8 is not None) == (model == "int8" and len(mean) == 1)
    np.testing.assert_array_equal(classifier._encode_into_buffer(pixels)[0], InputEncoder.build(prep, spec)(pixels[None])[0])


def _encoder_only(prep, spec):
    """A Classifier's per-frame encoding state for ``prep``/``spec`` without a model of that shape."""
    class _SpecOnly:
        input = spec
        output = spec
    return Classifier(_SpecOnly(), prep, ["x"])


def test_missing_model_or_manifest_paths(device_models, tmp_path):
    from edgecnn.errors import InputPathError

    with pytest.raises(InputPathError, match="does not exist"):
        Classifier.open(tmp_path / "gone.tflite", prep=PREP)
    with pytest.raises(ManifestError, match="cannot read manifest"):
        Classifier.open(device_models.int8, manifest=tmp_path / "none.json")
