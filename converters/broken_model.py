"""A model that full-int8 quantization visibly breaks: the test bed of ``inspect`` and ``--fallback auto``.

A small MNIST CNN trained on the 4,000 bundled training digits, whose hidden Dense layer then gets a few
"outlier" units: their incoming weights and bias are multiplied by ``OUTLIER_GAIN`` and their outgoing
weights divided by it. ReLU is positively homogeneous, so the float model computes exactly the same
function, but the layer's activation range becomes hundreds of times wider than its typical values: one
per-tensor int8 scale for that tensor rounds every ordinary unit to zero. This is the outlier-feature
pattern that breaks post-training quantization of real networks (a few channels with huge activations).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

GUILTY_LAYER = "hidden"        # the layer whose output int8 breaks
OUTLIER_COUNT = 2              # hidden units turned into outliers: the most active ones
OUTLIER_GAIN = 400.0           # how much wider their activations become


def build_outlier_cnn():
    """Conv 16 3x3 relu -> MaxPool 2 -> Flatten -> Dense 64 relu ('hidden') -> Dense 10 softmax ('classifier')."""
    import keras  # noqa: PLC0415

    layers = keras.layers
    return keras.Sequential([
        keras.Input((28, 28, 1), name="image"),
        layers.Conv2D(16, 3, activation="relu", name="conv"),
        layers.MaxPooling2D(2, name="pool"),
        layers.Flatten(name="flatten"),
        layers.Dense(64, activation="relu", name=GUILTY_LAYER),
        layers.Dense(10, activation="softmax", name="classifier"),
    ], name="mnist_outlier")


def inject_outliers(model, units: tuple[int, ...], gain: float = OUTLIER_GAIN) -> None:
    """Scale ``units`` of the hidden layer up by ``gain`` and their outgoing weights down: same float function."""
    hidden = model.get_layer(GUILTY_LAYER)
    classifier = model.get_layer("classifier")
    kernel, bias = (np.array(w) for w in hidden.get_weights())
    out_kernel, out_bias = (np.array(w) for w in classifier.get_weights())
    for unit in units:
        kernel[:, unit] *= gain
        bias[unit] *= gain
        out_kernel[unit, :] /= gain
    hidden.set_weights([kernel, bias])
    classifier.set_weights([out_kernel, out_bias])


def trained_outlier_cnn(epochs: int = 4, seed: int = 0) -> Path:
    """The broken-by-int8 model, trained once and cached as ``<cache>/mnist_outlier-e{epochs}-s{seed}.keras``."""
    import keras  # noqa: PLC0415

    from edgecnn.converters.zoo import cache_dir
    from edgecnn.data import mnist_sample
    from edgecnn.fileio import atomic_path

    path = cache_dir() / f"mnist_outlier-e{epochs}-s{seed}.keras"
    if path.exists():
        return path
    keras.utils.set_random_seed(seed)
    train = mnist_sample("train")
    x = train.images.astype("float32") / 255.0
    model = build_outlier_cnn()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, train.labels, epochs=epochs, batch_size=64, verbose=0)
    inject_outliers(model, _most_active_units(model, x))
    with atomic_path(path) as tmp:
        model.save(str(tmp) + ".keras")
        os.replace(str(tmp) + ".keras", tmp)
    return path


def _most_active_units(model, x: np.ndarray) -> tuple[int, ...]:
    """The hidden units with the largest mean activation: a dead unit would not widen the range."""
    import keras  # noqa: PLC0415

    probe = keras.Model(model.inputs, model.get_layer(GUILTY_LAYER).output)
    acts = np.asarray(probe(x[:500], training=False))
    return tuple(int(u) for u in np.argsort(-acts.mean(axis=0))[:OUTLIER_COUNT])
