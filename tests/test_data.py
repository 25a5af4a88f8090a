"""Data loading: folders, array files, 16-bit and grey images, bad data refused with a DataError."""
from __future__ import annotations

import pickle
from collections import Counter

import cv2
import numpy as np
import pytest

from edgecnn.data import load_dataset, mnist_sample
from edgecnn.errors import DataError, InputPathError


def write_png(path, image):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def test_folder_with_class_subfolders_gives_labels_in_sorted_order(tmp_path):
    for name, value in (("cat", 10), ("ant", 20), ("bee", 30)):
        for i in range(2):
            write_png(tmp_path / name / f"{i}.png", np.full((5, 6, 3), value + i, np.uint8))
    (tmp_path / ".hidden").mkdir()
    data = load_dataset(tmp_path)
    assert data.class_names == ("ant", "bee", "cat")
    assert data.images.shape == (6, 5, 6, 3) and data.images.dtype == np.uint8
    assert data.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert data.images[0, 0, 0].tolist() == [20, 20, 20] and data.images[5, 0, 0, 0] == 11


def test_flat_folder_is_unlabelled_and_colour_is_rgb(tmp_path):
    bgr = np.zeros((4, 4, 3), np.uint8)
    bgr[..., 0] = 255  # blue in OpenCV's order
    write_png(tmp_path / "a.png", bgr)
    write_png(tmp_path / "b.png", bgr)
    (tmp_path / "notes.txt").write_text("not an image")
    data = load_dataset(tmp_path)
    assert data.labels is None and not data.labelled and len(data) == 2
    assert data.images[0, 0, 0].tolist() == [0, 0, 255]


def test_grey_and_colour_images_of_different_sizes_load_ragged(tmp_path):
    write_png(tmp_path / "grey.png", np.full((7, 9), 5, np.uint8))
    write_png(tmp_path / "rgb.png", np.full((4, 4, 3), 6, np.uint8))
    write_png(tmp_path / "rgba.png", np.full((4, 4, 4), 7, np.uint8))
    data = load_dataset(tmp_path)
    shapes = sorted(img.shape for img in data.images)
    assert shapes == [(4, 4, 3), (4, 4, 3), (7, 9, 1)]


def test_16_bit_png_is_scaled_to_8_bit(tmp_path):
    image = np.array([[0, 256, 65535]], np.uint16)
    write_png(tmp_path / "deep.png", image)
    data = load_dataset(tmp_path / "deep.png")
    assert data.images.dtype == np.uint8 and data.images[0, 0, :, 0].tolist() == [0, 1, 255]


def test_float_tiff_and_corrupt_images_are_refused(tmp_path):
    assert cv2.imwrite(str(tmp_path / "f.tiff"), np.full((4, 4), 0.5, np.float32))
    with pytest.raises(DataError, match="pixel type float32"):
        load_dataset(tmp_path / "f.tiff")
    (tmp_path / "bad" / "x.png").parent.mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    with pytest.raises(DataError, match="cannot decode"):
        load_dataset(tmp_path / "bad")


def test_empty_folders_and_missing_paths(tmp_path):
    with pytest.raises(DataError, match="no images"):
        load_dataset(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="no images"):
        load_dataset(tmp_path)
    with pytest.raises(InputPathError, match="does not exist"):
        load_dataset(tmp_path / "nope")
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        load_dataset(tmp_path / "model.txt")


def test_npz_with_x_and_one_hot_y(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    y = np.eye(10)[[3, 1, 4, 1, 5]]
    np.savez(tmp_path / "d.npz", x=x, y=y)
    data = load_dataset(tmp_path / "d.npz")
    assert data.images.shape == (5, 28, 28, 1) and not data.preprocessed
    assert data.labels.tolist() == [3, 1, 4, 1, 5] and data.labels.dtype == np.int64
    np.savez(tmp_path / "named.npz", images=x, labels=np.arange(5))
    assert load_dataset(tmp_path / "named.npz").labels.tolist() == [0, 1, 2, 3, 4]


def test_npy_uint8_is_pixels_and_float_is_model_input(tmp_path):
    np.save(tmp_path / "u.npy", np.zeros((3, 8, 8, 3), np.uint8))
    u = load_dataset(tmp_path / "u.npy")
    assert u.images.shape == (3, 8, 8, 3) and not u.preprocessed and u.labels is None
    np.save(tmp_path / "f.npy", np.full((2, 28, 28, 1), 0.5, np.float64))
    f = load_dataset(tmp_path / "f.npy")
    assert f.preprocessed and f.images.dtype == np.float32
    np.save(tmp_path / "i.npy", np.full((2, 4, 4), 200, np.int64))
    assert load_dataset(tmp_path / "i.npy").images.dtype == np.uint8


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_data_is_refused(tmp_path, bad):
    x = np.zeros((2, 4, 4, 1), np.float32)
    x[1, 2, 3, 0] = bad
    np.save(tmp_path / "n.npy", x)
    with pytest.raises(DataError, match="NaN or infinite"):
        load_dataset(tmp_path / "n.npy")


def write_hostile(tmp_path, kind):
    """A .npy/.npz that is wrong in one way; returns its path and the words the error must contain."""
    p = tmp_path / "d.npy"
    if kind == "out_of_range_ints":
        np.save(p, np.full((2, 4, 4), 300, np.int32))
    elif kind == "bool":
        np.save(p, np.zeros((2, 4, 4), bool))
    elif kind == "object_pickle":
        np.save(p, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
    elif kind == "raw_pickle":
        p.write_bytes(pickle.dumps([1, 2, 3]))
    elif kind == "zero_bytes":
        p.write_bytes(b"")
    elif kind == "truncated":
        np.save(p, np.zeros((10, 28, 28), np.uint8))
        p.write_bytes(p.read_bytes()[:300])
    elif kind == "one_dim":
        np.save(p, np.zeros(10, np.uint8))
    elif kind == "zero_size_image":
        np.save(p, np.zeros((3, 0, 28), np.int32))
    elif kind == "npz_named_npy":
        np.savez(tmp_path / "real.npz", x=np.zeros((2, 4, 4), np.uint8))
        (tmp_path / "real.npz").rename(p)
    elif kind == "npy_named_npz":
        np.save(p, np.zeros((2, 4, 4), np.uint8))
        p = p.rename(tmp_path / "d.npz")
    elif kind == "no_x":
        p = tmp_path / "d.npz"
        np.savez(p, z=np.zeros(3))
    elif kind == "label_count":
        p = tmp_path / "d.npz"
        np.savez(p, x=np.zeros((3, 4, 4), np.uint8), y=np.arange(2))
    elif kind == "string_labels":
        p = tmp_path / "d.npz"
        np.savez(p, x=np.zeros((3, 4, 4), np.uint8), y=np.array(["cat", "dog", "cat"]))
    elif kind == "scalar_label":
        p = tmp_path / "d.npz"
        np.savez(p, x=np.zeros((3, 4, 4), np.uint8), y=np.int64(3))
    elif kind == "nan_labels":
        p = tmp_path / "d.npz"
        np.savez(p, x=np.zeros((2, 4, 4), np.uint8), y=np.array([1.0, np.nan]))
    elif kind == "negative_labels":
        p = tmp_path / "d.npz"
        np.savez(p, x=np.zeros((2, 4, 4), np.uint8), y=np.array([1, -4]))
    return p


HOSTILE = ["out_of_range_ints", "bool", "object_pickle", "raw_pickle", "zero_bytes", "truncated", "one_dim",
           "zero_size_image", "no_x", "label_count", "string_labels",
           "scalar_label", "nan_labels", "negative_labels"]


@pytest.mark.parametrize("kind", HOSTILE)
def test_hostile_array_files_are_one_line_data_errors(tmp_path, kind):
    path = write_hostile(tmp_path, kind)
    with pytest.raises(DataError) as exc:
        load_dataset(path)
    message = str(exc.value)
    assert "\n" not in message and (path.name in message or "label" in message)


@pytest.mark.parametrize("kind", ["npz_named_npy", "npy_named_npz"])
def test_array_files_with_the_other_suffix_load_by_content(tmp_path, kind):
    data = load_dataset(write_hostile(tmp_path, kind))
    assert data.images.shape == (2, 4, 4, 1) and data.images.dtype == np.uint8


def test_bundled_mnist_splits_are_4000_and_1000_and_disjoint():
    train, val, everything = mnist_sample("train"), mnist_sample("val"), mnist_sample("all")
    assert (len(train), len(val), len(everything)) == (4000, 1000, 5000)
    assert train.images.shape[1:] == (28, 28, 1) and train.images.dtype == np.uint8
    assert np.bincount(train.labels).tolist() == [400] * 10
    rows = lambda d: Counter(row.tobytes() for row in d.images.reshape(len(d), -1))  # noqa: E731
    assert rows(train) + rows(val) == rows(everything)  # a partition of the 5,000: disjoint, nothing lost
    assert not set(np.flatnonzero(np.isin(val.labels, []))) and len(set(val.labels.tolist())) == 10
    assert load_dataset("mnist", mnist_split="train").source == "mnist:train"
    assert load_dataset("MNIST:val").labels.tolist() == val.labels.tolist()
    with pytest.raises(DataError, match="split"):
        mnist_sample("test")
