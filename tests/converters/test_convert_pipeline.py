"""The convert pipeline on the trained MNIST CNN: artifacts, manifest, verification, embedding, options."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgecnn.errors import AccuracyBudgetError, ConversionFailedError, OutputExistsError, UsageError
from edgecnn.fileio import sha256_of
from edgecnn.manifest import MANIFEST_NAME, ColorOrder, Manifest

ALL = ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx-fp32", "onnx-int8")


def test_every_format_is_written_and_listed_in_the_manifest(mnist_convert):
    manifest = Manifest.read(mnist_convert.out_dir / MANIFEST_NAME)
    assert manifest == mnist_convert.manifest
    assert tuple(e.name for e in manifest.artifacts) == ALL
    for entry in manifest.artifacts:
        path = mnist_convert.artifact_path(entry.name)
        assert path.stat().st_size == entry.size_bytes
        assert sha256_of(path) == entry.sha256
    assert manifest.input_shape == (28, 28, 1)
    assert manifest.preprocessing.color == ColorOrder.GRAY
    assert manifest.preprocessing.scale == pytest.approx(1 / 255)
    assert manifest.labels == tuple(str(d) for d in range(10))
    assert manifest.calibration["samples"] == 200 and manifest.calibration["source"] == "mnist:train"
    assert {"tensorflow", "onnxruntime", "numpy"} <= set(manifest.versions)
    assert not list(mnist_convert.out_dir.glob(".*partial*")), "no temporary files are left behind"


def test_int8_artifacts_meet_the_accuracy_acceptance(mnist_convert):
    for name in ("tflite-int8", "onnx-int8"):
        check = mnist_convert.manifest.artifact(name).verification
        assert check.samples == 1000 and check.data == "validation"
        assert check.keras_accuracy > 0.9, "the trained default is a real classifier"
        assert check.agreement >= 0.99, name
        assert check.drop_pp <= 0.3, name
        assert 0 < check.max_abs_diff < 0.5


def test_onnx_int8_probabilities_are_within_0_02_of_keras_with_no_accuracy_lost(mnist_convert):
    """The demo's onnx-int8 (x86 target: uint8 activations, Softmax and logits float) against Keras on the
    1,000 held-out digits: before these settings it disagreed on 1 digit and differed by up to 0.032."""
    check = mnist_convert.manifest.artifact("onnx-int8").verification
    assert check.samples == 1000
    assert check.max_abs_diff <= 0.02
    assert check.agreement >= 0.999
    assert check.drop_pp <= 0.0


def test_onnx_int8_settings_are_recorded_in_the_manifest(mnist_convert):
    record = mnist_convert.manifest.calibration["onnx-int8"]
    assert record["target"] == "x86" and record["format"] == "QDQ"
    assert record["activations"] == "uint8" and record["weights"] == "int8" and record["weights_per_channel"]
    assert record["float_head"] is True
    notes = mnist_convert.manifest.artifact("onnx-int8").notes
    assert "quantized types: activations uint8, weights int8" in notes
    kept = next(note for note in notes if note.startswith("kept in float:"))
    assert "Softmax" in kept
    assert any(note.startswith("QDQ for x86: activations uint8") for note in notes)


def test_float_artifacts_match_keras_closely(mnist_convert):
    for name in ("tflite-fp32", "onnx-fp32"):
        check = mnist_convert.manifest.artifact(name).verification
        assert check.agreement == 1.0 and check.max_abs_diff < 1e-4, name
    fp16 = mnist_convert.manifest.artifact("tflite-fp16").verification
    assert fp16.max_abs_diff < 1e-2 and fp16.agreement >= 0.998


def test_int8_tensors_carry_scale_and_zero_point(mnist_convert):
    entry = mnist_convert.manifest.artifact("tflite-int8")
    assert entry.input.dtype == "int8" and entry.output.dtype == "int8"
    # pixels/255 spans 0..1: the input scale is 1/255 and zero point -128
    assert entry.input.scale == pytest.approx(1 / 255, rel=1e-3) and entry.input.zero_point == -128
    assert entry.output.scale > 0
    sizes = {e.name: e.size_bytes for e in mnist_convert.manifest.artifacts}
    assert sizes["tflite-fp32"] / sizes["tflite-int8"] >= 3.5
    assert sizes["onnx-fp32"] / sizes["onnx-int8"] >= 3.5


def test_manifest_is_embedded_in_tflite_and_onnx(mnist_convert):
    from edgecnn.converters.onnx_export import MANIFEST_KEY, read_metadata as read_onnx
    from edgecnn.converters.tflite import read_metadata as read_tflite

    embedded = read_tflite(mnist_convert.artifact_path("tflite-int8"))
    assert embedded["model_name"] == "mnist_cnn"
    assert embedded["preprocessing"] == mnist_convert.manifest.to_dict()["preprocessing"]
    onnx_meta = json.loads(read_onnx(mnist_convert.artifact_path("onnx-int8"))[MANIFEST_KEY])
    assert onnx_meta["labels"] == list(mnist_convert.manifest.labels)
    assert any("embedded" in note for note in mnist_convert.manifest.artifact("onnx-fp32").notes)


def test_existing_outputs_are_kept_without_force(mnist_convert, mnist_keras_path):
    from edgecnn.converters.pipeline import ConvertOptions, convert

    target = mnist_convert.artifact_path("tflite-fp32")
    before = target.stat().st_mtime_ns
    with pytest.raises(OutputExistsError, match="--force"):
        convert(mnist_keras_path, calib="mnist", out=mnist_convert.out_dir,
                options=ConvertOptions(formats="tflite-fp32", progress=False))
    assert target.stat().st_mtime_ns == before


def test_io_uint8_and_float_for_full_integer(tmp_path, mnist_keras_path):
    from edgecnn.converters.formats import IoType
    from edgecnn.converters.pipeline import ConvertOptions, convert

    for io in (IoType.UINT8, IoType.FLOAT):
        result = convert(mnist_keras_path, calib="mnist", val="mnist", out=tmp_path / io.value,
                         options=ConvertOptions(formats="tflite-int8", io=io, calib_samples=100, progress=False))
        entry = result.manifest.artifact("tflite-int8")
        assert entry.input.dtype == ("uint8" if io == IoType.UINT8 else "float32")
        assert entry.verification.agreement >= 0.99
        if io == IoType.UINT8:
            assert entry.input.zero_point == 0 and entry.input.scale == pytest.approx(1 / 255, rel=1e-3)


def test_max_drop_fails_after_writing_the_report(tmp_path, mnist_keras_path):
    """Calibrating on dim images (pixels x 0.2) gives int8 ranges too narrow for real digits: about 1 pp lost."""
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.data import mnist_sample

    dim = tmp_path / "dim.npy"
    np.save(dim, (mnist_sample("train").images[:200] * 0.2).astype(np.uint8))
    out = tmp_path / "out"
    with pytest.raises(AccuracyBudgetError, match="max-drop") as caught:
        convert(mnist_keras_path, calib=dim, val="mnist", out=out,
                options=ConvertOptions(formats="tflite-fp32,tflite-int8", max_drop=0.5, progress=False))
    assert caught.value.exit_code == 1
    result = caught.value.result
    assert result.over_budget == ("tflite-int8",)
    assert result.manifest.artifact("tflite-int8").verification.drop_pp > 0.5
    assert (out / MANIFEST_NAME).is_file() and result.artifact_path("tflite-int8").is_file()


def test_collapsed_int8_is_a_failed_conversion_not_a_budget_miss(tmp_path, mnist_keras_path):
    """Calibrating on black images gives int8 ranges that fit nothing real: chance level, so it is not published."""
    from edgecnn.converters.pipeline import ConvertOptions, convert

    black = tmp_path / "black.npy"
    np.save(black, np.zeros((60, 28, 28, 1), dtype=np.uint8))
    out = tmp_path / "out"
    with pytest.raises(ConversionFailedError, match="tflite-int8.*chance level") as caught:
        convert(mnist_keras_path, calib=black, val="mnist", out=out,
                options=ConvertOptions(formats="tflite-fp32,tflite-int8", max_drop=1.0, progress=False))
    assert caught.value.exit_code == 1
    result = caught.value.result
    assert [a.name for a in result.manifest.artifacts] == ["tflite-fp32"]
    failed = result.manifest.failed[0]
    assert failed.name == "tflite-int8" and failed.verification.drop_pp > 1.0
    assert Manifest.read(out / MANIFEST_NAME).failed[0].reason == failed.reason
    assert not (out / "mnist_cnn_int8.tflite").exists()


def test_int8_without_calibration_is_refused(tmp_path, mnist_keras_path):
    from edgecnn.converters.pipeline import ConvertOptions, convert

    with pytest.raises(UsageError, match="calib"):
        convert(mnist_keras_path, out=tmp_path / "o", options=ConvertOptions(formats="tflite-int8", progress=False))
    assert not (tmp_path / "o").exists()


def test_unknown_format_suggests_the_closest(tmp_path, mnist_keras_path):
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="did you mean 'tflite-int8'"):
        convert(mnist_keras_path, calib="mnist", out=tmp_path, options=ConvertOptions(formats="tflite-in8"))
