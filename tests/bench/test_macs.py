"""MACs counted from the graph of real TFLite and ONNX artifacts, against hand-computed figures."""
from __future__ import annotations

import pytest

from edgecnn.bench.macs import count_macs, gmacs_per_s

# MNIST CNN: Conv 5x5x1 -> 32 on a 24x24 output, Dense 4608 -> 128, Dense 128 -> 10.
MNIST_CNN_MACS = 24 * 24 * 32 * 5 * 5 * 1 + 12 * 12 * 32 * 128 + 128 * 10


@pytest.mark.parametrize("name", ["tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx-fp32",
                                  "onnx-int8"])
def test_mnist_cnn_macs_from_every_format(mnist_convert, name):
    assert count_macs(mnist_convert.artifact_path(name)) == MNIST_CNN_MACS


def test_depthwise_and_strided_convs(tmp_path):
    import keras
    import tensorflow as tf

    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(8, 3, strides=2, padding="same"),  # 8x8x8 outputs, 3*3*3 each
        keras.layers.DepthwiseConv2D(3, padding="valid"),       # 6x6x8 outputs, 3*3 each
        keras.layers.Conv2D(4, 1),                              # 6x6x4 outputs, 8 each
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(5),                                  # 5 outputs, 4 each
    ])
    path = tmp_path / "small.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    expected = 8 * 8 * 8 * 27 + 6 * 6 * 8 * 9 + 6 * 6 * 4 * 8 + 5 * 4
    assert count_macs(path) == expected


def test_gmacs_per_s():
    assert gmacs_per_s(2_000_000, 1.0) == pytest.approx(2.0)
    assert gmacs_per_s(None, 1.0) is None and gmacs_per_s(10, 0.0) is None
