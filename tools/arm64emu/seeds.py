"""The x86 side's models and inputs: the seed models (converters/zoo.py SEED_MODELS) converted to every format
with edgecnn convert, and the real MNIST digits both sides are fed (as a lossless video and as pixels).

Weights: the MNIST CNN is the trained embedded default; the MLP and the two CIFAR-10 nets are trained briefly
(2 epochs) on the bundled 4,000 MNIST training digits (as 32x32 RGB for the CIFAR nets), so that their top-1
means something; DAVE-2 (one regression output) and MobileNetV2 are used as built (random weights, seed 0).
Trained models and conversions are cached under the edgecnn cache, keyed by the weights and the project's
source, so a second run converts nothing.
"""
from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
import numpy as np

from edgecnn.manifest import ColorOrder, Manifest, Preprocessing

TRAIN_EPOCHS = 2
# Calibration images per seed; fewer for MobileNetV2, whose ONNX Runtime calibration keeps every activation.
CALIB_SAMPLES = {"default": 100, "mobilenet_v2": 32}
WEIGHTS = {
    "mnist_cnn": "trained embedded default (6 epochs)",
    "mnist_mlp": f"trained {TRAIN_EPOCHS} epochs on MNIST digits",
    "cifar10_vgg": f"trained {TRAIN_EPOCHS} epochs on MNIST digits (32x32 RGB)",
    "cifar10_cnn": f"trained {TRAIN_EPOCHS} epochs on MNIST digits (32x32 RGB)",
    "dave2": "as built (random, seed 0); 1 regression output",
    "mobilenet_v2": "as built (random, weights=None, seed 0)",
}


@dataclass(frozen=True)
class SeedArtifacts:
    name: str
    folder: Path  # edgecnn convert output: six artifacts + manifest.json
    manifest: Manifest
    weights: str

    def files(self) -> list[Path]:
        return [self.folder / entry.file for entry in self.manifest.artifacts]


def source_key(project: Path) -> str:
    """A hash of the project's Python sources: conversions are redone when the converter changes."""
    digest = hashlib.sha256()
    for folder in ("edgecnn", "converters", "devices"):
        for path in sorted((project / folder).rglob("*.py")):
            digest.update(str(path.relative_to(project)).encode())
            digest.update(path.read_bytes())
    digest.update((project / "pyproject.toml").read_bytes())
    return digest.hexdigest()[:12]


def model_shape(name: str) -> tuple[int, ...]:
    from edgecnn.converters.zoo import SEED_MODELS

    return SEED_MODELS[name].input_shape


def digits_at(images: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(N, 28, 28, 1) uint8 digits -> uint8 images of a model's input size (grey stays grey, else RGB)."""
    from edgecnn.preprocess import prepare_batch

    if len(shape) == 1:  # the MLP takes flattened 28x28 digits
        return images
    color = ColorOrder.GRAY if shape[-1] == 1 else ColorOrder.RGB
    return prepare_batch(images, Preprocessing(height=shape[0], width=shape[1], color=color), ColorOrder.GRAY)


def keras_model(name: str, cache: Path) -> Path:
    """The seed's .keras file with the weights WEIGHTS describes (trained and cached on first use)."""
    import keras

    from edgecnn.converters.zoo import build_seed, trained_mnist_cnn
    from edgecnn.data import mnist_sample
    from edgecnn.fileio import atomic_path

    if name == "mnist_cnn":
        return trained_mnist_cnn()
    trained = "trained" in WEIGHTS[name]
    path = cache / f"{name}-{'e%d' % TRAIN_EPOCHS if trained else 'built'}-s0.keras"
    if path.exists():
        return path
    keras.utils.set_random_seed(0)
    model = build_seed(name)
    if trained:
        train = mnist_sample("train")
        x = digits_at(train.images, model_shape(name)).astype("float32") / 255.0
        x = x.reshape(len(x), *model_shape(name))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(x, train.labels, epochs=TRAIN_EPOCHS, batch_size=64, verbose=0)
    with atomic_path(path) as tmp:
        model.save(str(tmp) + ".keras")
        os.replace(str(tmp) + ".keras", tmp)
    return path


def spread(count: int, total: int) -> np.ndarray:
    """``count`` indices spread over ``total``: the bundled digits are sorted by class."""
    return np.linspace(0, total - 1, count).astype(int)


def convert_seed(name: str, cache: Path, project: Path) -> Path:
    """Every format of one seed model, converted (and verified) by edgecnn convert, cached; its folder."""
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.data import mnist_sample
    from edgecnn.fileio import atomic_path, sha256_of

    cache.mkdir(parents=True, exist_ok=True)
    keras_path = keras_model(name, cache)
    folder = cache / "converted" / f"{name}-{sha256_of(keras_path)[:12]}-{source_key(project)}"
    if (folder / "manifest.json").is_file():
        return folder
    samples = CALIB_SAMPLES.get(name, CALIB_SAMPLES["default"])
    with atomic_path(folder) as tmp, tempfile.TemporaryDirectory(prefix=f"edgecnn-{name}-data-") as data:
        calib, val = Path(data) / "calib.npy", Path(data) / "val.npz"
        train = mnist_sample("train")
        np.save(calib, digits_at(train.images[spread(samples, len(train))], model_shape(name)))
        labelled = "trained" in WEIGHTS[name]
        if labelled:
            held_out = mnist_sample("val")
            np.savez(val, x=digits_at(held_out.images, model_shape(name)), y=held_out.labels)
        convert(keras_path, calib=calib, val=val if labelled else None, out=tmp,
                options=ConvertOptions(calib_samples=samples, force=True, progress=False))
    return folder


def convert_seeds(names: tuple[str, ...], cache: Path, project: Path, log: Callable[[str], None]) -> list[SeedArtifacts]:
    """Each seed converted in a child process of its own: TensorFlow's memory (about 10 GB for MobileNetV2)
    is returned between models, and this process never imports TensorFlow."""
    from tools.arm64emu.host import run_tool

    models = []
    for name in names:
        done = run_tool([sys.executable, "-m", "tools.arm64emu.seeds", name, str(cache)], log, cwd=project,
                        timeout=7200, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        folder = Path(done.stdout.strip().splitlines()[-1])
        models.append(SeedArtifacts(name, folder, Manifest.read(folder / "manifest.json"), WEIGHTS[name]))
    return models


def model_pixels(bgr: np.ndarray, manifest: Manifest) -> np.ndarray:
    """The frames prepared for one model (N, H, W, C) uint8, as `edgecnn run` prepares a frame."""
    from edgecnn.preprocess import prepare_batch

    return prepare_batch(bgr, manifest.preprocessing, ColorOrder.BGR)


if __name__ == "__main__":  # the child convert_seeds starts: python -m tools.arm64emu.seeds NAME CACHE
    print(convert_seed(sys.argv[1], Path(sys.argv[2]), Path(__file__).resolve().parents[2]))
