"""The seed models this project grew from, defined in code, and the embedded default (a trained MNIST CNN).

Everything here needs TensorFlow (workstation side). Trained models are cached under ``cache_dir()``
so the main job and the tests train once per machine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgecnn.fileio import cache_dir  # noqa: F401 - its home is the core; re-exported for callers here
from edgecnn.registry import lookup


def _keras():
    import keras  # noqa: PLC0415

    return keras


def mnist_cnn():
    """Conv2D 32 5x5 relu -> MaxPool 2x2 -> Dropout 0.2 -> Flatten -> Dense 128 relu -> Dense 10 softmax."""
    keras = _keras()
    layers = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1), name="image"),
        layers.Conv2D(32, 5, activation="relu"),
        layers.MaxPooling2D(2),
        layers.Dropout(0.2),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ], name="mnist_cnn")


def mnist_mlp():
    """Dense 784 relu -> Dense 10 softmax on flattened 28x28 digits."""
    keras = _keras()
    layers = keras.layers
    return keras.Sequential([
        keras.Input((784,), name="image"),
        layers.Dense(784, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ], name="mnist_mlp")


def cifar10_vgg():
    """CIFAR-10 "improved VGG16": 3 blocks of two 3x3 'same' convs (32, 64, 128) + MaxPool + Dropout 0.25,
    Flatten, Dense 1024 + Dropout 0.5, Dense 10 softmax."""
    keras = _keras()
    layers = keras.layers
    stack = [keras.Input((32, 32, 3), name="image")]
    for filters in (32, 64, 128):
        stack += [layers.Conv2D(filters, 3, padding="same", activation="relu"),
                  layers.Conv2D(filters, 3, padding="same", activation="relu"),
                  layers.MaxPooling2D(2), layers.Dropout(0.25)]
    stack += [layers.Flatten(), layers.Dense(1024, activation="relu"), layers.Dropout(0.5),
              layers.Dense(10, activation="softmax")]
    return keras.Sequential(stack, name="cifar10_vgg")


def cifar10_cnn():
    """The Keras CIFAR-10 example with 'valid' second convs: 1,250,858 parameters."""
    keras = _keras()
    layers = keras.layers
    return keras.Sequential([
        keras.Input((32, 32, 3), name="image"),
        layers.Conv2D(32, 3, padding="same", activation="relu"),
        layers.Conv2D(32, 3, activation="relu"),
        layers.MaxPooling2D(2), layers.Dropout(0.25),
        layers.Conv2D(64, 3, padding="same", activation="relu"),
        layers.Conv2D(64, 3, activation="relu"),
        layers.MaxPooling2D(2), layers.Dropout(0.25),
        layers.Flatten(), layers.Dense(512, activation="relu"), layers.Dropout(0.5),
        layers.Dense(10, activation="softmax"),
    ], name="cifar10_cnn")


def dave2():
    """DAVE-2 style steering net on 66x200x3: convs 24/36/48 5x5 stride 2, 64/64 3x3, ELU; one output."""
    keras = _keras()
    layers = keras.layers
    return keras.Sequential([
        keras.Input((66, 200, 3), name="image"),
        layers.Conv2D(24, 5, strides=2, activation="elu"),
        layers.Conv2D(36, 5, strides=2, activation="elu"),
        layers.Conv2D(48, 5, strides=2, activation="elu"),
        layers.Conv2D(64, 3, activation="elu"),
        layers.Conv2D(64, 3, activation="elu"),
        layers.Dropout(0.5),
        layers.Flatten(),
        layers.Dense(100, activation="elu"), layers.Dense(50, activation="elu"), layers.Dense(10, activation="elu"),
        layers.Dense(1),
    ], name="dave2")


def mobilenet_v2():
    """keras.applications.MobileNetV2(weights=None) at 224x224x3, 1000 classes: the realistic edge model."""
    keras = _keras()
    return keras.applications.MobileNetV2(input_shape=(224, 224, 3), weights=None, classes=1000)


@dataclass(frozen=True)
class SeedModel:
    name: str
    build: Callable[[], object]
    input_shape: tuple[int, ...]
    description: str


SEED_MODELS = {
    "mnist_cnn": SeedModel("mnist_cnn", mnist_cnn, (28, 28, 1), "MNIST CNN (the embedded default)"),
    "mnist_mlp": SeedModel("mnist_mlp", mnist_mlp, (784,), "MNIST MLP"),
    "cifar10_vgg": SeedModel("cifar10_vgg", cifar10_vgg, (32, 32, 3), "CIFAR-10 improved VGG16"),
    "cifar10_cnn": SeedModel("cifar10_cnn", cifar10_cnn, (32, 32, 3), "CIFAR-10 CNN, 'valid' second convs"),
    "dave2": SeedModel("dave2", dave2, (66, 200, 3), "DAVE-2 style steering net"),
    "mobilenet_v2": SeedModel("mobilenet_v2", mobilenet_v2, (224, 224, 3), "MobileNetV2, weights=None"),
}


def build_seed(name: str):
    return lookup(SEED_MODELS, name, "seed model").build()


def trained_mnist_cnn(epochs: int = 6, seed: int = 0) -> Path:
    """The embedded default: the MNIST CNN trained on the 4,000 training digits of the bundled sample.

    Cached as ``<cache>/mnist_cnn-e{epochs}-s{seed}.keras``; returns its path. Deterministic for a seed.
    """
    from edgecnn.data import mnist_sample
    from edgecnn.fileio import atomic_path

    path = cache_dir() / f"mnist_cnn-e{epochs}-s{seed}.keras"
    if path.exists():
        return path
    keras = _keras()
    keras.utils.set_random_seed(seed)
    train = mnist_sample("train")
    x = train.images.astype("float32") / 255.0
    model = mnist_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, train.labels, epochs=epochs, batch_size=64, verbose=0)
    with atomic_path(path) as tmp:
        model.save(str(tmp) + ".keras")
        os.replace(str(tmp) + ".keras", tmp)
    return path


def tinted_digits(split: str = "train", seed: int = 0):
    """The bundled MNIST digits as 32x32 RGB images: each digit drawn in one random colour on another
    (pixels blended by the digit's ink), padded by 2 pixels. Returns (uint8 (N, 32, 32, 3), labels (N,)).

    Colour images with real content and labels, for RGB models (the CIFAR-10 seeds) where no colour data
    set ships in a wheel. Deterministic for a split and seed.
    """
    import numpy as np  # noqa: PLC0415

    from edgecnn.data import mnist_sample  # noqa: PLC0415

    sample = mnist_sample(split)
    ink = np.pad(sample.images[..., 0].astype(np.float32) / 255.0, ((0, 0), (2, 2), (2, 2)))[..., None]
    rng = np.random.default_rng(seed + (0 if split == "train" else 1))
    fore = rng.uniform(0, 255, (len(ink), 1, 1, 3)).astype(np.float32)
    back = rng.uniform(0, 255, (len(ink), 1, 1, 3)).astype(np.float32)
    far = np.abs(fore - back).sum(axis=3, keepdims=True) < 150  # keep the digit visible: push close colours apart
    fore = np.where(far, 255.0 - back, fore)
    pixels = np.clip(np.rint(ink * fore + (1.0 - ink) * back), 0, 255).astype(np.uint8)
    return pixels, sample.labels


def rgb_cnn():
    """A compact RGB classifier on 32x32x3: three Conv 3x3 + BatchNormalization + ReLU blocks (16, 32, 64 filters,
    max-pooling after the first two), GlobalAveragePooling, Dropout 0.2, Dense 10 softmax (24,000 parameters).

    The layer kinds an edge accelerator's converter folds and fuses (Conv/BN/ReLU/MaxPool/GAP/Dense); unlike the
    CIFAR-10 VGG seeds (no BatchNormalization) it learns from a few thousand images in a few epochs.
    """
    keras = _keras()
    layers = keras.layers
    stack = [keras.Input((32, 32, 3), name="image")]
    for filters, pool in ((16, True), (32, True), (64, False)):
        stack += [layers.Conv2D(filters, 3, padding="same", use_bias=False), layers.BatchNormalization(), layers.ReLU()]
        stack += [layers.MaxPooling2D(2)] if pool else []
    stack += [layers.GlobalAveragePooling2D(), layers.Dropout(0.2), layers.Dense(10, activation="softmax")]
    return keras.Sequential(stack, name="rgb_cnn")


def trained_rgb_cnn(epochs: int = 20, seed: int = 0) -> Path:
    """``rgb_cnn`` trained on the 4,000 tinted training digits (32x32 RGB, ``tinted_digits``).

    Cached as ``<cache>/rgb_cnn-digits-e{epochs}-s{seed}.keras``; returns its path. Deterministic for a seed.
    """
    from edgecnn.fileio import atomic_path

    path = cache_dir() / f"rgb_cnn-digits-e{epochs}-s{seed}.keras"
    if path.exists():
        return path
    keras = _keras()
    keras.utils.set_random_seed(seed)
    pixels, labels = tinted_digits("train", seed)
    model = rgb_cnn()
    # A learning rate that decays to 0 settles BatchNormalization's statistics by the last epoch.
    steps = epochs * -(-len(pixels) // 32)
    model.compile(optimizer=keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(3e-3, steps)),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(pixels.astype("float32") / 255.0, labels, epochs=epochs, batch_size=32, verbose=0)
    with atomic_path(path) as tmp:
        model.save(str(tmp) + ".keras")
        os.replace(str(tmp) + ".keras", tmp)
    return path
