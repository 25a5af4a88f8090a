"""Small real models trained on the bundled MNIST digits under a known preprocessing: the test bed of the
preprocessing checks (converters/prep_check.py) and of benchmarks/prep_check.py.

Each is a CNN with BatchNormalization after its convolutions, trained for two epochs on the 4,000 training
digits fed one way: x/255, raw 0..255 pixels, or x/127.5 - 1; the colour variants see the digits as RGB
images with the digit in red and half-bright green (so a red/blue swap changes what it sees), fed x/255
("colour"), keras.applications' "torch" mode (x/255, ImageNet mean/std) or its "caffe" mode (BGR, ImageNet mean
subtracted from 0..255). Training input is made by the one input encoder (edgecnn.preprocess). BatchNormalization
keeps momentum 0.9 so that two epochs (126 steps) leave its moving statistics converged, as a long training
run would; the Keras default (0.99) would leave them a third of the way from their initial values.
Cached under the edgecnn cache as ``prep-<kind>-e<epochs>-s<seed>.keras``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgecnn.converters.known_models import CAFFE_MODE, TF_MODE, TORCH_MODE
from edgecnn.manifest import ColorOrder, Preprocessing
from edgecnn.preprocess import prepare_batch, to_float

# kind -> (scale, mean, std, colour order) of x = (pixel * scale - mean) / std; GRAY: the grey digits
KINDS = {
    "unit": (1 / 255, (0.0,), (1.0,), ColorOrder.GRAY),        # x/255: 0..1, the common default
    "raw": (1.0, (0.0,), (1.0,), ColorOrder.GRAY),             # raw 0..255 pixels, no Rescaling layer in the model
    "signed": (1 / 127.5, (1.0,), (1.0,), ColorOrder.GRAY),    # x/127.5 - 1: -1..1, as keras.applications' "tf" mode
    "colour": (1 / 255, (0.0,), (1.0,), ColorOrder.RGB),       # RGB digits (red + half green), x/255
    "torch": (TORCH_MODE.scale, TORCH_MODE.mean, TORCH_MODE.std, TORCH_MODE.color),  # RGB digits, ImageNet mean/std
    "caffe": (CAFFE_MODE.scale, CAFFE_MODE.mean, CAFFE_MODE.std, CAFFE_MODE.color),  # BGR digits - ImageNet mean
}


def preprocessing(kind: str) -> Preprocessing:
    """The 28x28 manifest Preprocessing a ``kind`` model was trained with."""
    scale, mean, std, color = KINDS[kind]
    return Preprocessing(28, 28, color, scale=scale, mean=mean, std=std)


def digits_for(kind: str, images: np.ndarray) -> np.ndarray:
    """Grey MNIST digits (N, 28, 28, 1) uint8 as the pixels a ``kind`` model sees: grey, or RGB colour digits."""
    return images if KINDS[kind][3] == ColorOrder.GRAY else colour_digits(images)


def training_input(kind: str, images: np.ndarray) -> np.ndarray:
    """Grey MNIST digits as the float32 input a ``kind`` model is trained on (through the one input encoder)."""
    prep = preprocessing(kind)
    return to_float(prepare_batch(digits_for(kind, images), prep), prep)


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

    path = cache_dir() / f"prep-{kind}-e{epochs}-s{seed}.keras"
    if path.exists():
        return path
    keras.utils.set_random_seed(seed)
    train = mnist_sample("train")
    model = build_bn_cnn(preprocessing(kind).channels)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(training_input(kind, train.images), train.labels, epochs=epochs, batch_size=64, verbose=0)
    with atomic_path(path) as tmp:
        model.save(str(tmp) + ".keras")
        os.replace(str(tmp) + ".keras", tmp)
    return path


# -- keras.applications families, their BatchNormalization statistics fitted to their documented input ------------
def documented_mode(constructor: str) -> str:
    """How keras.applications documents a constructor's input (its own preprocess_input): the imagenet_utils
    mode (tf, torch, caffe), or "built in" (the model carries Rescaling/Normalization layers, takes 0..255)."""
    if constructor.startswith(("ConvNeXt", "EfficientNet", "MobileNetV3")):
        return "built in"
    if constructor.startswith("ResNet"):
        return "tf" if constructor.endswith("V2") else "caffe"
    if constructor.startswith("VGG"):
        return "caffe"
    if constructor.startswith("DenseNet"):
        return "torch"
    return "tf"  # MobileNet, MobileNetV2, InceptionV3, InceptionResNetV2, Xception, NASNet


def documented_preprocessing(constructor: str, size: int) -> Preprocessing:
    """The documented input of ``constructor`` at size x size, as a manifest Preprocessing."""
    mode = documented_mode(constructor)
    if mode == "built in":
        return Preprocessing(size, size, ColorOrder.RGB, scale=1.0)
    known = {"tf": TF_MODE, "torch": TORCH_MODE, "caffe": CAFFE_MODE}[mode]
    return Preprocessing(size, size, known.color, scale=known.scale, mean=known.mean, std=known.std)


def family_size(constructor: str) -> int:
    """The smallest square input each constructor accepts, 32 for most."""
    return {"InceptionV3": 75, "InceptionResNetV2": 75, "Xception": 71}.get(constructor, 32)


def family_model(constructor: str, classes: int = 5):
    """keras.applications ``constructor`` (weights=None, no top) nested in a Sequential with a new head, as when
    fine-tuning; its input size from family_size."""
    import keras  # noqa: PLC0415

    size = family_size(constructor)
    base = getattr(keras.applications, constructor)(weights=None, input_shape=(size, size, 3), include_top=False)
    return keras.Sequential([keras.Input((size, size, 3)), base, keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Dense(classes, activation="softmax")], name=f"{constructor.lower()}_tuned")


def fit_batchnorm(model, x: np.ndarray) -> int:
    """Set every BatchNormalization layer's moving statistics to those of its input on ``x`` (float32 model
    input), as a training run on such data leaves them: one training-mode pass with momentum 0, each layer
    seeing its predecessors normalised by exactly the statistics it keeps. Returns how many layers were set."""
    import keras  # noqa: PLC0415

    layers = [layer for layer in _walk(model) if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    try:
        model(x, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
    return len(layers)


def photo_crops(size: tuple[int, int], count: int, seed: int = 0) -> np.ndarray:
    """``count`` random crops of scikit-image's colour photographs, resized to ``size`` (uint8 RGB, N x H x W x 3)."""
    import cv2  # noqa: PLC0415
    from skimage import data  # noqa: PLC0415

    photos = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    rng = np.random.default_rng(seed)
    crops = []
    for index in range(count):
        photo = photos[index % len(photos)]
        h, w = photo.shape[:2]
        ch, cw = rng.integers(h // 3, h), rng.integers(w // 3, w)
        y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crops.append(cv2.resize(photo[y:y + ch, x:x + cw], size[::-1], interpolation=cv2.INTER_LINEAR))
    return np.stack(crops)


def _walk(model):
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from _walk(layer)
