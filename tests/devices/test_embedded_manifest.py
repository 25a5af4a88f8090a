"""One artifact file is enough to deploy: without a manifest.json beside it, runners read the manifest that
`edgecnn convert` embedded in it (TFLite metadata read by the pure-Python flatbuffer reader; ONNX
metadata_props through ONNX Runtime). Real artifacts from the shared MNIST conversion.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgecnn.data import mnist_sample
from edgecnn.devices.classify import Classifier
from edgecnn.devices.flatbuf import FlatbufferError, read_metadata
from edgecnn.errors import ManifestError
from edgecnn.manifest import EMBEDDED_KEY, MANIFEST_NAME, ColorOrder

CASES = [("tflite-int8", "cpu"), ("tflite-fp32", "cpu"), ("onnx-int8", "onnx-cpu"), ("onnx-fp32", "onnx-cpu")]


@pytest.fixture(scope="module")
def digits():
    sample = mnist_sample("val")
    return sample.images[:60], sample.labels[:60]


def _alone(mnist_convert, name, folder):
    source = mnist_convert.artifact_path(name)
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source.name
    shutil.copy2(source, target)
    assert not (folder / MANIFEST_NAME).exists()
    return source, target


def _read_with_tensorflow(path):
    """TensorFlow's own flatbuffer utilities: an independent reader of the metadata entry."""
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model(str(path))
    for entry in model.metadata or []:
        name = entry.name.decode() if isinstance(entry.name, bytes) else str(entry.name)
        if name == EMBEDDED_KEY:
            return json.loads(bytes(model.buffers[entry.buffer].data).decode("utf-8"))
    return None


def test_flatbuffer_reader_finds_what_the_converter_embedded(mnist_convert):
    for name in ("tflite-int8", "tflite-fp32", "tflite-fp16", "tflite-dynamic"):
        path = mnist_convert.artifact_path(name)
        text = read_metadata(path.read_bytes(), EMBEDDED_KEY)
        assert text is not None and json.loads(text) == _read_with_tensorflow(path), name
    assert read_metadata(path.read_bytes(), "no-such-entry") is None


def test_metadata_reader_on_damaged_bytes_fails_cleanly(mnist_convert):
    data = mnist_convert.artifact_path("tflite-int8").read_bytes()
    rng = np.random.default_rng(0)
    for cut in list(rng.integers(8, len(data), 40)) + [0, 4, 7]:
        try:
            read_metadata(data[:cut], EMBEDDED_KEY)
        except FlatbufferError as exc:
            assert str(exc) and "\n" not in str(exc)


@pytest.mark.parametrize("name,target", CASES)
def test_an_artifact_copied_alone_runs_with_its_labels_and_preprocessing(mnist_convert, digits, tmp_path, name,
                                                                         target):
    source, alone = _alone(mnist_convert, name, tmp_path / "deploy")
    images, labels = digits
    with Classifier.open(alone, target) as lone, Classifier.open(source, target) as beside:
        assert lone.manifest is not None and lone.manifest.artifacts == ()  # the embedded copy, not a sidecar
        assert beside.manifest.artifacts  # the sidecar
        assert lone.labels == beside.labels == tuple(mnist_convert.manifest.labels)
        assert lone.prep == beside.prep == mnist_convert.manifest.preprocessing
        assert lone.output_kind == beside.output_kind
        lone_scores = lone.classify_images(images, ColorOrder.GRAY)
        np.testing.assert_array_equal(lone_scores, beside.classify_images(images, ColorOrder.GRAY))
        frame = np.ascontiguousarray(np.repeat(images[0], 3, axis=2))  # a grey digit as a BGR frame
        assert lone.classify(frame).best == beside.classify(frame).best
    assert (np.argmax(lone_scores, axis=1) == labels).mean() >= 0.9


def test_a_file_with_no_manifest_anywhere_is_read_and_the_guesses_named(device_models, tmp_path):
    alone = tmp_path / device_models.int8.name
    shutil.copy2(device_models.int8, alone)  # converted by hand in the fixture: nothing embedded
    with Classifier.open(alone, "cpu") as classifier:
        assert classifier.manifest is None and classifier.prep.input_shape() == (28, 28, 1)
        assert any("no manifest: preprocessing assumed" in n for n in classifier.notices)


def test_an_embedded_manifest_that_is_not_json_is_refused(mnist_convert, tmp_path):
    from edgecnn.converters.tflite import embed_metadata

    _, alone = _alone(mnist_convert, "tflite-int8", tmp_path)
    assert embed_metadata(alone, '{"schema_version": 1, "model_name": ')
    with pytest.raises(ManifestError, match="embedded in .* is not valid JSON"):
        Classifier.open(alone, "cpu")


def test_bench_of_a_lone_artifact_uses_its_embedded_manifest(mnist_convert, tmp_path):
    from edgecnn.bench.harness import BenchOptions, bench

    _, alone = _alone(mnist_convert, "tflite-int8", tmp_path)
    _, alone_fp32 = _alone(mnist_convert, "tflite-fp32", tmp_path / "fp32")
    result = bench([alone_fp32, alone], devices=["cpu"], data="mnist",
                   options=BenchOptions(runs=20, max_samples=200, progress=False))
    fp32, row = result.rows
    assert row.ok, row.reason
    assert row.model == mnist_convert.manifest.model_name
    assert any("manifest read from the model file itself" in note for note in row.notes)
    assert row.accuracy is not None and row.accuracy.top1 >= 0.9
    # The precision read from the file (the embedded manifest has no artifact entry), the name convert gave
    # the artifact, and so the pairing with its fp32 sibling deployed alone too.
    assert (row.precision, row.format, fp32.precision, fp32.format) == ("int8", "tflite-int8", "fp32", "tflite-fp32")
    assert fp32.p50_vs_fp32 == 1.0 and row.p50_vs_fp32 is not None and row.p50_vs_fp32 > 0


def test_run_cli_with_a_lone_artifact(mnist_convert, tmp_path, capsys):
    import cv2

    from edgecnn.cli import main

    _, alone = _alone(mnist_convert, "tflite-int8", tmp_path / "deploy")
    images = mnist_sample("val").images[:4]
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, image in enumerate(images):
        cv2.imwrite(str(folder / f"{i}.png"), image)
    assert main(["run", str(alone), "--source", str(folder), "--jsonl", "-", "--no-show"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert len(records) == 4
    assert {r["top_k"][0]["label"] for r in records} <= set(mnist_convert.manifest.labels)
