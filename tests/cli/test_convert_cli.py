"""`edgecnn convert` through the CLI, in-process: bad input gets one line, exit code 2 and nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecnn.cli import main


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory) -> Path:
    import keras

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Lambda(lambda x: x * 2.0, name="doubler"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    path = tmp_path_factory.mktemp("lambda") / "lambda.keras"
    model.save(path)
    return path


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _assert_one_line_error(code: int, err: str, *fragments: str) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_missing_model_path(tmp_path, capsys):
    out = tmp_path / "out"
    code, _, err = _run(capsys, "convert", str(tmp_path / "nope.keras"), "--calib", "mnist", "--out", str(out))
    _assert_one_line_error(code, err, "does not exist")
    assert not out.exists()


@pytest.mark.parametrize("name, content", [("model.keras", b"this is not a zip"), ("notes.txt", b"hello"),
                                           ("model.h5", b"\x89HDF garbage")])
def test_a_file_that_is_not_a_model(tmp_path, capsys, name, content):
    bogus = tmp_path / name
    bogus.write_bytes(content)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "convert", str(bogus), "--calib", "mnist", "--out", str(out))
    _assert_one_line_error(code, err, str(bogus))
    assert not out.exists()


def test_a_truncated_model(tmp_path, capsys, mnist_keras_path):
    data = mnist_keras_path.read_bytes()
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    code, _, err = _run(capsys, "convert", str(truncated), "--calib", "mnist", "--out", str(out))
    _assert_one_line_error(code, err, "truncated")
    assert not out.exists()


def test_a_lambda_layer_is_refused_under_safe_mode(tmp_path, capsys, lambda_model):
    out = tmp_path / "out"
    code, _, err = _run(capsys, "convert", str(lambda_model), "--calib", "mnist", "--out", str(out))
    _assert_one_line_error(code, err, "Lambda layer 'doubler'", "--unsafe")
    assert not out.exists()


def test_unsafe_loads_the_lambda_model(tmp_path, capsys, lambda_model):
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "convert", str(lambda_model), "--calib", "mnist", "--calib-samples", "20",
                             "--formats", "tflite-fp32", "--out", str(out), "--unsafe", "--json")
    assert code == 0, err
    report = json.loads(stdout)
    assert report["artifacts"][0]["agreement"] == 1.0
    assert "calibration samples" in " ".join(report["warnings"])  # 20 samples is a tiny set


@pytest.mark.parametrize("array, fragment", [
    (np.zeros((0, 28, 28, 1), dtype=np.uint8), "shape"),            # empty
    (np.zeros((8, 5, 5), dtype=np.float32), "shape"),               # float input of the wrong shape
    (np.zeros((8, 28, 28), dtype=np.complex64), "dtype"),           # wrong dtype
    (np.zeros((8, 28, 28, 2), dtype=np.uint8), "neither grey nor colour"),  # 2 channels
])
def test_bad_calibration_data(tmp_path, capsys, mnist_keras_path, array, fragment):
    data = tmp_path / "calib.npy"
    np.save(data, array)
    out = tmp_path / "out"
    code, _, err = _run(capsys, "convert", str(mnist_keras_path), "--calib", str(data), "--out", str(out))
    _assert_one_line_error(code, err, fragment)
    assert not out.exists()


def test_empty_calibration_folder(tmp_path, capsys, mnist_keras_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    code, _, err = _run(capsys, "convert", str(mnist_keras_path), "--calib", str(tmp_path / "empty"), "--out", str(out))
    _assert_one_line_error(code, err, "no images")
    assert not out.exists()


def test_labels_file_with_the_wrong_count(tmp_path, capsys, mnist_keras_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\nbird\n")
    out = tmp_path / "out"
    code, _, err = _run(capsys, "convert", str(mnist_keras_path), "--calib", "mnist", "--labels", str(labels),
                        "--out", str(out))
    _assert_one_line_error(code, err, "3 labels", "10 classes")
    assert not out.exists()


def test_unwritable_output_folder(tmp_path, capsys, mnist_keras_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code, _, err = _run(capsys, "convert", str(mnist_keras_path), "--calib", "mnist", "--formats", "tflite-fp32",
                        "--out", str(blocker / "out"))
    _assert_one_line_error(code, err, "cannot write to output folder")
    assert blocker.read_text() == "not a folder"


def test_bad_option_values(tmp_path, capsys, mnist_keras_path):
    for argv, fragment in ((["--formats", "tflite-in8"], "did you mean"), (["--scale", "abc"], "not a number"),
                           (["--calib-method", "entropie"], "did you mean 'entropy'"),
                           (["--color", "rgb"], "3 channel"),
                           (["--onnx-target", "arm"], "did you mean 'arm64'"),
                           (["--onnx-target", "riscv"], "valid ONNX targets: arm64, x86, x86-avx2")):
        code, _, err = _run(capsys, "convert", str(mnist_keras_path), "--calib", "mnist", "--out",
                            str(tmp_path / "out"), *argv)
        _assert_one_line_error(code, err, fragment)
    assert not (tmp_path / "out").exists()


def test_labels_file_and_table_output(tmp_path, capsys, mnist_keras_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"digit {d}" for d in range(10)) + "\n")
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "convert", str(mnist_keras_path), "--calib", "mnist", "--val", "mnist",
                             "--formats", "tflite-int8", "--calib-samples", "100", "--labels", str(labels),
                             "--out", str(out))
    assert code == 0, err
    assert "tflite-int8" in stdout and "agree" in stdout and "1000 validation samples" in stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["labels"][3] == "digit 3"
    # a second run without --force keeps everything and says so in one line
    code, _, err = _run(capsys, "convert", str(mnist_keras_path), "--calib", "mnist", "--formats", "tflite-int8",
                        "--out", str(out))
    _assert_one_line_error(code, err, "already exists", "--force")


def test_onnx_target_arm64_writes_int8_activations_and_records_them(tmp_path, capsys, mnist_keras_path):
    out = tmp_path / "out"
    code, stdout, err = _run(capsys, "convert", str(mnist_keras_path), "--calib", "mnist", "--val", "mnist",
                             "--formats", "onnx-int8", "--calib-samples", "100", "--onnx-target", "ARM64",
                             "--out", str(out), "--json")
    assert code == 0, err
    assert json.loads(stdout)["artifacts"][0]["agreement"] >= 0.99
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["calibration"]["onnx-int8"]["target"] == "arm64"
    assert manifest["calibration"]["onnx-int8"]["activations"] == "int8"
    notes = manifest["artifacts"][0]["notes"]
    assert "quantized types: activations int8, weights int8" in notes
