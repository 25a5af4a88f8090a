"""A digit classifier made by plain tf.lite.TFLiteConverter (no edgecnn convert, no manifest), trained on
x/127.5 - 1, full int8 with int8 and with uint8 I/O: `bench` with the right preprocessing options reproduces an
independent LiteRT evaluation exactly; without them it warns that it guessed (and its figure is not the truth).

The model is the trained embedded MNIST CNN (trained on x/255) behind a Rescaling layer that maps x/127.5 - 1
back to x/255: a classifier whose input is x/127.5 - 1, as a model trained that way has. Built once per cache.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgecnn.cli import main

SAMPLES = 400


def _build(folder: Path) -> None:
    import keras
    import tensorflow as tf

    from edgecnn.converters.zoo import trained_mnist_cnn
    from edgecnn.data import mnist_sample

    cnn = keras.models.load_model(trained_mnist_cnn(), safe_mode=True)
    inputs = keras.Input((28, 28, 1))
    model = keras.Model(inputs, cnn(keras.layers.Rescaling(0.5, offset=0.5)(inputs)))  # (x/127.5 - 1) -> x/255
    calib = mnist_sample("train").images[:200].astype(np.float32) / 127.5 - 1.0

    def representative():
        for i in range(calib.shape[0]):
            yield [calib[i:i + 1]]

    for io, dtype in (("int8", tf.int8), ("uint8", tf.uint8)):
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = dtype
        conv.inference_output_type = dtype
        (folder / f"digits_{io}.tflite").write_bytes(conv.convert())


@pytest.fixture(scope="module")
def plain_int8(tmp_path_factory) -> Path:
    from edgecnn.converters.zoo import cache_dir, trained_mnist_cnn
    from edgecnn.fileio import atomic_path, sha256_of

    folder = cache_dir() / "test-plain-tflite" / sha256_of(trained_mnist_cnn())[:12]
    if not (folder / "digits_uint8.tflite").is_file():
        with atomic_path(folder) as tmp:
            tmp.mkdir(parents=True)
            _build(tmp)
    alone = tmp_path_factory.mktemp("plain")  # no manifest anywhere near the files
    for name in ("digits_int8.tflite", "digits_uint8.tflite"):
        (alone / name).write_bytes((folder / name).read_bytes())
    return alone


def independent_accuracy(model: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """LiteRT directly, one digit per invoke: x/127.5 - 1, quantized with the input's scale and zero point
    (rounding half away from zero, as TFLite's own Quantize op), top-1 of the raw output."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero = inp["quantization"]
    info = np.iinfo(inp["dtype"])
    hits = 0
    for image, label in zip(images, labels):
        x = image.astype(np.float64) / 127.5 - 1.0
        v = x / scale
        q = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5) + zero, info.min, info.max).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], q.reshape(inp["shape"]))
        interpreter.invoke()
        hits += int(np.argmax(interpreter.get_tensor(out["index"])[0]) == label)
    return hits / len(labels)


def _bench(model: Path, out: Path, extra: list[str]) -> dict:
    code = main(["bench", str(model), "--runs", "10", "--no-step", "--data", "mnist", "--samples", str(SAMPLES),
                 "--out", str(out), *extra])
    assert code == 0
    return json.loads((out / "bench.json").read_text())["rows"][0]


@pytest.mark.parametrize("io", ["int8", "uint8"])
def test_plain_tflite_int8_with_the_right_options_reproduces_litert(plain_int8, tmp_path, io, capsys):
    from edgecnn.bench.harness import _load_data

    model = plain_int8 / f"digits_{io}.tflite"
    data = _load_data("mnist", SAMPLES)  # the seeded subset bench uses
    truth = independent_accuracy(model, np.asarray(data.images), np.asarray(data.labels))
    assert truth > 0.9

    right = _bench(model, tmp_path / "right", ["--scale", "1/127.5", "--mean", "1", "--resize", "stretch"])
    assert right["accuracy"]["top1"] == truth  # exactly: the same samples, the same tensors
    assert right["precision"] == "int8"  # read from the file's tensors (uint8 I/O, int8 inside)
    assert right["preprocessing"] == "28x28 gray stretch, (x*1/127.5 - 1) / 1, nhwc"
    assert not any("assumed" in note for note in right["notes"])
    capsys.readouterr()
    if io == "int8":
        return  # the guess is checked once (the uint8 I/O file): each bench costs seconds

    guessed = _bench(model, tmp_path / "guessed", [])
    assert guessed["preprocessing"].endswith("(assumed)")
    assert any("preprocessing assumed (scale 1/255, mean 0, std 1" in note for note in guessed["notes"])
    assert guessed["accuracy"]["top1"] != truth  # pixels/255 is not what it was trained on
    assert "assumed" in capsys.readouterr().err  # the warning reaches the terminal, not only bench.json
