"""Small real models for the device tests, converted here with TensorFlow (workstation side).

Built from the trained embedded MNIST CNN: a full-int8 .tflite, a float .tflite and a float .onnx (tf2onnx via
a SavedModel, since tf2onnx cannot read Keras 3 models), plus a manifest.json beside them written from what
the converted models really report. Cached under the edgecnn cache keyed by the Keras file's hash, so a
second test run does not convert again.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

INT8 = "mnist_cnn-tflite-int8.tflite"
FP32 = "mnist_cnn-tflite-fp32.tflite"
ONNX = "mnist_cnn-onnx-fp32.onnx"


@dataclass(frozen=True)
class DeviceModels:
    folder: Path
    keras: Path

    @property
    def int8(self) -> Path:
        return self.folder / INT8

    @property
    def fp32(self) -> Path:
        return self.folder / FP32

    @property
    def onnx(self) -> Path:
        return self.folder / ONNX

    @property
    def manifest(self) -> Path:
        return self.folder / "manifest.json"


def build_device_models() -> DeviceModels:
    from edgecnn.converters.zoo import cache_dir, trained_mnist_cnn
    from edgecnn.fileio import atomic_path, sha256_of

    keras_path = trained_mnist_cnn()
    folder = cache_dir() / "test-device-models" / sha256_of(keras_path)[:12]
    if not (folder / "manifest.json").is_file():
        with atomic_path(folder) as tmp:
            tmp.mkdir(parents=True)
            _convert_all(keras_path, tmp)
    return DeviceModels(folder=folder, keras=keras_path)


def _convert_all(keras_path: Path, out: Path) -> None:
    import keras
    import tensorflow as tf

    from edgecnn.data import mnist_sample

    model = keras.models.load_model(keras_path, safe_mode=True)
    calib = mnist_sample("train").images[:200].astype(np.float32) / 255.0

    def representative():
        for i in range(calib.shape[0]):
            yield [calib[i:i + 1]]

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    (out / FP32).write_bytes(conv.convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = representative
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    (out / INT8).write_bytes(conv.convert())
    saved = out / "_saved_model"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--saved-model", str(saved), "--output",
                    str(out / ONNX), "--opset", "17"], check=True, capture_output=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    shutil.rmtree(saved)
    _write_manifest(keras_path, out)


def _write_manifest(keras_path: Path, out: Path) -> None:
    from edgecnn.devices.runners import open_runner
    from edgecnn.fileio import sha256_of
    from edgecnn.manifest import ArtifactEntry, ColorOrder, Manifest, Preprocessing

    entries = []
    for name, file, target, precision in (("tflite-int8", INT8, "cpu", "int8"), ("tflite-fp32", FP32, "cpu", "fp32"),
                                          ("onnx-fp32", ONNX, "onnx-cpu", "fp32")):
        with open_runner(out / file, target) as runner:
            entries.append(ArtifactEntry(name=name, file=file, size_bytes=(out / file).stat().st_size,
                                         sha256=sha256_of(out / file), input=runner.input, output=runner.output,
                                         precision=precision))
    manifest = Manifest(model_name="mnist_cnn", source_sha256=sha256_of(keras_path), input_shape=(28, 28, 1),
                        preprocessing=Preprocessing(height=28, width=28, color=ColorOrder.GRAY),
                        labels=tuple(str(d) for d in range(10)), artifacts=tuple(entries))
    (out / "manifest.json").write_text(manifest.to_json())
