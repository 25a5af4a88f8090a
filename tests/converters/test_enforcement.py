"""Verification is enforced: NaN/Inf outputs, a float artifact that disagrees with Keras and chance-level
agreement make a failed conversion (not published, listed in the manifest, exit 1, no empty folder), while
ties (an untrained model's equal scores) are not disagreements."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.converters.verify import compare, judge
from edgecnn.manifest import Manifest, OutputKind


def _cli(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgecnn", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


# -- the rule, on outputs with known answers ----------------------------------------------------------------
def test_nan_outputs_fail_whatever_the_agreement():
    rng = np.random.default_rng(0)
    reference = rng.dirichlet(np.ones(10), size=200)
    outputs = reference.copy()
    outputs[:3] = np.nan
    v = compare(outputs, reference, None, "validation", OutputKind.PROBABILITIES)
    assert v.nonfinite == 3 and v.agreement == 1.0
    assert "NaN or Inf on 3 of 200 samples" in judge("tflite-fp32", "fp32", v)
    assert "NaN" in judge("tflite-int8", "int8", v)


def test_a_float_artifact_below_99_percent_agreement_fails_and_a_flag_lowers_the_floor():
    from edgecnn.converters.verify import VerifyRule

    rng = np.random.default_rng(1)
    reference = rng.dirichlet(np.ones(10) * 0.3, size=1000)
    outputs = reference.copy()
    flip = np.arange(0, 1000, 50)  # 2 % of the samples get another top-1
    outputs[flip] = np.roll(outputs[flip], 1, axis=1)
    v = compare(outputs, reference, None, "validation", OutputKind.PROBABILITIES)
    assert v.agreement == pytest.approx(0.98, abs=0.002)
    assert "agrees with Keras on only 98.0%" in judge("onnx-fp32", "fp32", v)
    assert judge("onnx-fp32", "fp32", v, VerifyRule(min_float_agreement=0.97)) is None or \
        "output range" in judge("onnx-fp32", "fp32", v, VerifyRule(min_float_agreement=0.97))
    assert judge("onnx-int8", "int8", v) is None  # int8 artifacts answer to --max-drop, not to the float floor


def test_chance_level_agreement_fails_any_artifact():
    rng = np.random.default_rng(2)
    reference = rng.dirichlet(np.ones(10) * 0.3, size=500)
    collapsed = np.zeros_like(reference)
    collapsed[:, 7] = 1.0  # "it always predicts one class"
    v = compare(collapsed, reference, None, "validation", OutputKind.PROBABILITIES)
    assert v.kappa is not None and abs(v.kappa) < 0.05
    assert "chance level" in judge("tflite-int8", "int8", v)
    shuffled = reference[rng.permutation(len(reference))]
    v = compare(shuffled, reference, None, "validation", OutputKind.PROBABILITIES)
    assert "chance level" in judge("tflite-int8", "int8", v)


def test_ties_are_not_disagreements():
    """An untrained model: every class within float noise of the others; the float artifact still passes."""
    reference = np.full((300, 1000), 1e-3) + np.random.default_rng(3).normal(0, 1e-9, (300, 1000))
    outputs = reference + np.random.default_rng(4).normal(0, 1e-9, (300, 1000))
    v = compare(outputs, reference, None, "calibration", OutputKind.PROBABILITIES, tolerance=4e-9)
    assert v.ties > 250 and judge("tflite-fp32", "fp32", v) is None


def test_a_real_nan_artifact_is_refused(tmp_path):
    """What TFLite's converter makes of an unfrozen tf.saved_model.save folder: a model whose outputs are NaN."""
    import keras
    import tensorflow as tf

    from edgecnn.converters.calibration import ModelInputs
    from edgecnn.converters.tflite import tflite_io_specs
    from edgecnn.converters.verify import verify_artifact
    from edgecnn.data import mnist_sample
    from edgecnn.manifest import ColorOrder, Preprocessing

    keras.utils.set_random_seed(0)
    digits = mnist_sample("train")
    x = digits.images[:1000].astype("float32") / 255.0
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(x, digits.labels[:1000], epochs=1, verbose=0)
    tf.saved_model.save(model, str(tmp_path / "folder"))
    path = tmp_path / "raw.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_saved_model(str(tmp_path / "folder")).convert())
    inp, out = tflite_io_specs(path)
    data = ModelInputs(x[:100], digits.images[:100], digits.labels[:100], "mnist", "validation")
    prep = Preprocessing(28, 28, ColorOrder.GRAY)
    v = verify_artifact(path, "tflite", inp, out, data, prep, np.asarray(model(x[:100])),
                        kind=OutputKind.PROBABILITIES, precision="fp32")
    reason = judge("tflite-fp32", "fp32", v)
    # The unfrozen variables read as whatever the buffer held: NaN on most runs, other garbage on some. Either
    # way the artifact is refused, naming the figure.
    assert reason is not None, v
    if v.nonfinite:
        assert reason == f"tflite-fp32: outputs hold NaN or Inf on {v.nonfinite} of 100 samples"
    else:
        assert "agrees with Keras on only" in reason or "output range" in reason


# -- the pipeline: refused artifacts are not published --------------------------------------------------------
@pytest.fixture(scope="module")
def broken_keras(tmp_path_factory):
    """The trained MNIST CNN whose int8 collapses (outlier units): float artifacts fine, int8 at chance level."""
    from edgecnn.converters.broken_model import trained_outlier_cnn

    return Path(trained_outlier_cnn())


def test_chance_level_int8_is_refused_and_listed_while_float_is_published(broken_keras, tmp_path):
    out = tmp_path / "out"
    proc = _cli("convert", str(broken_keras), "--calib", "mnist", "--val", "mnist", "--out", str(out),
                "--formats", "tflite-fp32,tflite-int8")
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and "tflite-int8" in errors[0] and "chance level" in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    manifest = Manifest.read(out / "manifest.json")
    assert [a.name for a in manifest.artifacts] == ["tflite-fp32"]
    assert [f.name for f in manifest.failed] == ["tflite-int8"] and "chance level" in manifest.failed[0].reason
    assert manifest.failed[0].verification.kappa < 0.2
    files = sorted(p.name for p in out.iterdir())
    assert not any(name.endswith("_int8.tflite") for name in files), files
    assert not any(name.startswith(".convert.partial") for name in files), files


def test_nothing_published_leaves_no_folder(broken_keras, tmp_path):
    out = tmp_path / "never"
    proc = _cli("convert", str(broken_keras), "--calib", "mnist", "--val", "mnist", "--out", str(out),
                "--formats", "tflite-int8,onnx-int8", "--json")
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = _error_lines(proc.stderr)
    assert len(errors) == 1 and "2 artifact(s) failed" in errors[0] and "nothing was written" in errors[0]
    assert not out.exists()


def test_a_keras_model_with_nan_weights_is_named_as_the_cause(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    weights = model.get_weights()
    weights[0][0, 0] = np.nan
    model.set_weights(weights)
    model.save(str(tmp_path / "diverged.keras"))
    proc = _cli("convert", str(tmp_path / "diverged.keras"), "--calib", "mnist", "--out", str(tmp_path / "out"))
    assert proc.returncode == 2
    assert "the Keras model itself outputs NaN or Inf" in " ".join(_error_lines(proc.stderr))
    assert not (tmp_path / "out").exists()


def test_an_untrained_model_with_equal_scores_still_converts(tmp_path):
    """MobileNetV2(weights=None) gives every class about the same probability: ties, not disagreements."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, weights=None, classes=1000)
    model.save(str(tmp_path / "untrained.keras"))
    images = np.random.default_rng(0).integers(0, 256, (64, 96, 96, 3), dtype=np.uint8)
    np.save(tmp_path / "calib.npy", images)
    proc = _cli("convert", str(tmp_path / "untrained.keras"), "--calib", str(tmp_path / "calib.npy"),
                "--out", str(tmp_path / "out"), "--formats", "tflite-fp32,tflite-int8,onnx-fp32,onnx-int8", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    payload = json.loads(proc.stdout)
    rows = {row["artifact"]: row for row in payload["artifacts"]}
    assert set(rows) == {"tflite-fp32", "tflite-int8", "onnx-fp32", "onnx-int8"}
    assert all(row["status"] == "ok" for row in rows.values())
    assert any(row["ties"] > 0 for row in rows.values())


def test_the_tensorflow_beginner_tutorial_model_takes_grey_images(tmp_path):
    """Input((28, 28)) -> Flatten -> Dense: an (H, W) input is a grey image without a channel axis."""
    import keras

    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.data import mnist_sample
    from edgecnn.devices.classify import Classifier
    from edgecnn.manifest import ColorOrder

    keras.utils.set_random_seed(0)
    train = mnist_sample("train")
    model = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10)])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(train.images[..., 0] / 255.0, train.labels, epochs=2, verbose=0)
    model.save(str(tmp_path / "tutorial.keras"))
    result = convert(tmp_path / "tutorial.keras", calib="mnist", val="mnist", out=tmp_path / "out",
                     options=ConvertOptions(formats="tflite-fp32,tflite-int8,onnx-fp32", progress=False))
    assert result.manifest.preprocessing.layout.value == "hw" and result.manifest.input_shape == (28, 28)
    assert result.manifest.output_kind == OutputKind.LOGITS
    for entry in result.manifest.artifacts:
        assert entry.verification.agreement >= 0.99 and entry.verification.accuracy > 0.85
    val = mnist_sample("val")
    with Classifier.open(result.artifact_path("tflite-int8")) as classifier:
        best = [classifier.classify(img, source_color=ColorOrder.GRAY).best.index for img in val.images[:50]]
    assert np.mean(np.asarray(best) == val.labels[:50]) > 0.85
