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
