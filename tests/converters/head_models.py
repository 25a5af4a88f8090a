"""Small digit classifiers with every kind of output head, trained briefly on the bundled MNIST digits.

Each builder returns a compiled-and-trained Keras model; ``save_heads`` writes them as .keras files. The
heads are the ones people ship (and report problems with): softmax, softmax inside a nested sub-model, a
separate Softmax layer, logits, a one-unit binary sigmoid (digits 3 vs 8), and a ten-unit multi-label
sigmoid trained with one-hot binary cross-entropy.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

HEADS = ("softmax", "nested_softmax", "softmax_layer", "logits", "binary_sigmoid", "multilabel_sigmoid")
BINARY_DIGITS = {"eight": 8, "three": 3}  # class folders, alphabetical as Keras' image_dataset_from_directory
TRAIN_SAMPLES = 2400


def _trunk(keras):
    layers = keras.layers
    return [keras.Input((28, 28, 1), name="image"), layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(2),
            layers.Flatten(), layers.Dense(32, activation="relu")]


def build(head: str):
    import keras  # noqa: PLC0415

    layers = keras.layers
    if head == "softmax":
        return keras.Sequential(_trunk(keras) + [layers.Dense(10, activation="softmax")], name="head_softmax")
    if head == "nested_softmax":
        inner = keras.Sequential([keras.Input((32,)), layers.Dense(10, activation="softmax")], name="classifier")
        return keras.Sequential(_trunk(keras) + [inner], name="head_nested")
    if head == "softmax_layer":
        return keras.Sequential(_trunk(keras) + [layers.Dense(10), layers.Softmax()], name="head_softmax_layer")
    if head == "logits":
        return keras.Sequential(_trunk(keras) + [layers.Dense(10)], name="head_logits")
    if head == "binary_sigmoid":
        return keras.Sequential(_trunk(keras) + [layers.Dense(1, activation="sigmoid")], name="head_binary")
    if head == "multilabel_sigmoid":
        return keras.Sequential(_trunk(keras) + [layers.Dense(10, activation="sigmoid")], name="head_multilabel")
    raise ValueError(head)


def binary_subset(dataset):
    """The digits 3 and 8 of a Dataset, labelled 0 (eight) / 1 (three) as the alphabetical class folders."""
    keep = np.isin(dataset.labels, list(BINARY_DIGITS.values()))
    return dataset.images[keep], (dataset.labels[keep] == BINARY_DIGITS["three"]).astype(np.int64)


def train(head: str, seed: int = 0):
    import keras  # noqa: PLC0415

    from edgecnn.data import mnist_sample  # noqa: PLC0415

    keras.utils.set_random_seed(seed)
    train_set = mnist_sample("train")
    model = build(head)
    if head == "binary_sigmoid":
        images, labels = binary_subset(train_set)
        model.compile("adam", "binary_crossentropy")
        model.fit(images.astype("float32") / 255.0, labels.astype("float32"), epochs=3, batch_size=64, verbose=0)
        return model
    x = train_set.images[:TRAIN_SAMPLES].astype("float32") / 255.0
    y = train_set.labels[:TRAIN_SAMPLES]
    if head == "multilabel_sigmoid":
        model.compile("adam", "binary_crossentropy")
        model.fit(x, np.eye(10, dtype="float32")[y], epochs=3, batch_size=64, verbose=0)
    elif head == "logits":
        model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    else:
        model.compile("adam", "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=2, batch_size=64, verbose=0)
    return model


def save_heads(folder: Path) -> dict[str, Path]:
    """Train every head and save it as ``folder/<head>.keras``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for head in HEADS:
        path = folder / f"{head}.keras"
        train(head).save(str(path))
        paths[head] = path
    return paths


def write_binary_folder(folder: Path, split: str = "val", per_class: int | None = None, labelled: bool = True) -> Path:
    """Digits 3 and 8 as PNG files: class folders ``three/`` and ``eight/`` (or one flat folder)."""
    import cv2  # noqa: PLC0415

    from edgecnn.data import mnist_sample  # noqa: PLC0415

    dataset = mnist_sample(split)
    for name, digit in BINARY_DIGITS.items():
        images = dataset.images[dataset.labels == digit][:per_class]
        target = folder / name if labelled else folder
        target.mkdir(parents=True, exist_ok=True)
        for i, image in enumerate(images):
            cv2.imwrite(str(target / f"{name}_{i:04d}.png"), image)
    return folder
