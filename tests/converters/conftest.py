"""Small digit CNNs trained here on the bundled MNIST (pixels / 255), once per session: the models of the
SavedModel-folder, mixed-precision and diagnosis tests."""
from __future__ import annotations

import pytest


def _digit_cnn(keras, softmax_layer: bool = False):
    layers = keras.layers
    head = [layers.Dense(10), layers.Activation("softmax", dtype="float32", name="probs")] if softmax_layer \
        else [layers.Dense(10, activation="softmax")]
    return keras.Sequential([keras.Input((28, 28, 1), name="image"), layers.Conv2D(16, 3, activation="relu"),
                             layers.MaxPooling2D(2), layers.Dropout(0.2), layers.Flatten(), *head], name="digits")


def train_digit_cnn(policy: str = "float32", epochs: int = 2, seed: int = 0):
    """A digit CNN trained for ``epochs`` on the 4,000 training digits under the global dtype ``policy``
    (the policy is float32 again afterwards); under a mixed policy the softmax is a float32 Activation layer.
    Cached (optimizer state included) in $EDGECNN_CACHE/test-models: trained once per machine."""
    import keras

    from edgecnn.converters.zoo import cache_dir
    from edgecnn.data import mnist_sample
    from edgecnn.fileio import atomic_path

    path = cache_dir() / "test-models" / f"digit_cnn-{policy}-e{epochs}-s{seed}.keras"
    if path.exists():
        return keras.models.load_model(path, compile=policy == "float32")  # a mixed one has a loss-scale optimizer
    train = mnist_sample("train")
    keras.utils.set_random_seed(seed)
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = _digit_cnn(keras, softmax_layer=policy != "float32")
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(train.images.astype("float32") / 255.0, train.labels, epochs=epochs, batch_size=64, verbose=0)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        model.save(str(tmp) + ".keras")
        tmp.with_name(tmp.name + ".keras").replace(tmp)
    return model


@pytest.fixture(scope="session")
def digit_cnn():
    """A trained float32 digit CNN with its optimizer state (what a training script holds when it saves)."""
    return train_digit_cnn()


@pytest.fixture(scope="session")
def mixed_digit_cnn():
    """The digit CNN trained under keras.mixed_precision "mixed_float16" with a float32 softmax layer."""
    return train_digit_cnn("mixed_float16")
