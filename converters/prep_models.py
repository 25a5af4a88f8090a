"""Small real models trained on the bundled MNIST digits under a known preprocessing: the test bed of the
preprocessing checks (converters/prep_check.py) and of benchmarks/prep_check.py.

Each is a CNN with BatchNormalization after its convolutions, trained for two epochs on the 4,000 training
digits fed one way: x/255, raw 0..255 pixels, or x/127.5 - 1; the "colour" variant sees the digits as RGB
images with the digit in red and half-bright green (so a red/blue swap changes what it sees). BatchNormalization
keeps momentum 0.9 so that two epochs (126 steps) leave its moving statistics converged, as a long training
run would; the Keras default (0.99) would leave them a third of the way from their initial values.
Cached under the edgecnn cache as ``prep-<kind>-e<epochs>-s<seed>.keras``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# kind -> (pixels -> training input, colour input?)
KINDS = {
    "unit": (lambda x: x / 255.0, False),          # x/255: 0..1, the common default
    "raw": (lambda x: x, False),                   # raw 0..255 pixels, no Rescaling layer in the model
    "signed": (lambda x: x / 127.5 - 1.0, False),  # x/127.5 - 1: -1..1, as keras.applications' "tf" mode
    "colour": (lambda x: x / 255.0, True),         # RGB digits (red + half green), x/255
}


def colour_digits(images: np.ndarray) -> np.ndarray:
    """Grey MNIST digits (N, 28, 28, 1) uint8 as RGB images: the digit in red and half-bright green, blue 0."""
    grey = images[..., 0]
    return np.stack([grey, grey // 2, np.zeros_like(grey)], axis=-1)


def build_bn_cnn(channels: int = 1):
    """Conv 16 3x3 -> BN -> ReLU -> MaxPool -> Conv 32 3x3 -> BN -> ReLU -> MaxPool -> Flatten -> Dense 10 softmax."""
    import keras  # noqa: PLC0415

    layers = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, channels), name="image"),
        layers.Conv2D(16, 3, use_bias=False), layers.BatchNormalization(momentum=0.9), layers.ReLU(),
        layers.MaxPooling2D(2),
        layers.Conv2D(32, 3, use_bias=False), layers.BatchNormalization(momentum=0.9), layers.ReLU(),
        layers.MaxPooling2D(2),
        layers.Flatten(), layers.Dense(10, activation="softmax"),
    ], name="bn_cnn")


def trained_prep_model(kind: str, epochs: int = 2, seed: int = 0) -> Path:
    """The BatchNormalization CNN trained on digits fed as ``kind`` (see KINDS); its cached .keras path."""
    import keras  # noqa: PLC0415

    from edgecnn.converters.zoo import cache_dir  # noqa: PLC0415
    from edgecnn.data import mnist_sample  # noqa: PLC0415
    from edgecnn.fileio import atomic_path  # noqa: PLC0415

    feed, colour = KINDS[kind]
    path = cache_dir() / f"prep-{kind}-e{epochs}-s{seed}.keras"
    if path.exists():
        return path
    keras.utils.set_random_seed(seed)
    train = mnist_sample("train")
    pixels = colour_digits(train.images) if colour else train.images
    model = build_bn_cnn(3 if colour else 1)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(feed(pixels.astype("float32")), train.labels, epochs=epochs, batch_size=64, verbose=0)
    with atomic_path(path) as tmp:
        model.save(str(tmp) + ".keras")
        os.replace(str(tmp) + ".keras", tmp)
    return path
