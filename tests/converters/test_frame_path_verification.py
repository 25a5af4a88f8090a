"""Verification judges the device's own frame path: image data reaches each artifact as camera frames
(BGR for a colour model) through the device Classifier, so a fault there fails the conversion instead of
surfacing on the device. The model's class is the brightest colour channel, so any colour mix-up shows."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgecnn.manifest import ColorOrder, Preprocessing

SIDE = 16
CLASSES = ("blue", "green", "red")  # alphabetical, as class folders are read; index = the bright channel's
CHANNEL = {"red": 0, "green": 1, "blue": 2}  # RGB order


def colour_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(count, 16, 16, 3) uint8 RGB images, one channel brighter than the other two, and the labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(CLASSES), count)
    images = rng.integers(0, 110, (count, SIDE, SIDE, 3)).astype(np.uint8)
    for image, label in zip(images, labels):
        image[:, :, CHANNEL[CLASSES[label]]] += 120
    return images, labels


def save_channel_model(path: Path, order: tuple[str, ...]) -> None:
    """A Keras model scoring the mean of each channel, its outputs in ``order`` (weights set by hand)."""
    import keras

    model = keras.Sequential([keras.Input((SIDE, SIDE, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(3, activation="softmax")])
    weights = np.zeros((3, 3), np.float32)
    for index, name in enumerate(order):
        weights[CHANNEL[name], index] = 20.0
    model.layers[-1].set_weights([weights, np.zeros(3, np.float32)])
    model.save(path)


@pytest.fixture(scope="module")
def colour_model(tmp_path_factory) -> tuple[Path, Path]:
    """A Keras model that scores the mean of each channel (no training: weights set by hand), and a .npz of
    labelled RGB images."""
    folder = tmp_path_factory.mktemp("colour")
    save_channel_model(folder / "colour.keras", CLASSES)
    images, labels = colour_images(300, seed=1)
    np.savez(folder / "data.npz", x=images, y=labels)
    return folder / "colour.keras", folder / "data.npz"


def test_the_model_sees_colour(colour_model):
    import keras

    images, labels = colour_images(100, seed=2)
    model = keras.models.load_model(colour_model[0])
    assert np.mean(np.argmax(model.predict(images.astype(np.float32), verbose=0), axis=1) == labels) == 1.0


def test_frame_path_and_batch_path_give_the_same_raw_outputs(colour_model, tmp_path):
    """The two device paths (camera frames through the Classifier, encoded batches through the runner) agree
    bit for bit on every format, int8 included: the frame path's colour swap and tables are the encoder's."""
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.converters.verify import _run_artifact, encode_inputs, run_frames
    from edgecnn.converters.calibration import ModelInputs

    model, data = colour_model
    result = convert(model, calib=str(data), val=str(data), out=tmp_path / "out",
                     options=ConvertOptions(progress=False, formats="tflite-fp32,tflite-int8,onnx-int8"))
    manifest = result.manifest
    assert ColorOrder(manifest.preprocessing.color) == ColorOrder.RGB
    images, labels = colour_images(64, seed=3)
    inputs = ModelInputs(images.astype(np.float32), images, labels, "test", "validation")
    for entry in manifest.artifacts:
        family = "tflite" if entry.file.endswith(".tflite") else "onnx"
        path = result.out_dir / entry.file
        frames = run_frames(path, family, images, manifest.preprocessing)
        batch = _run_artifact(path, family, encode_inputs(inputs, manifest.preprocessing, entry.input), None)
        assert frames.dtype == batch.dtype and frames.shape == batch.shape == (64, 3), entry.name
        np.testing.assert_array_equal(frames, batch, err_msg=entry.name)
        assert np.mean(np.argmax(frames, axis=1) == labels) == 1.0, entry.name
        assert entry.verification.agreement == 1.0, entry.name


def test_a_colour_fault_in_the_device_frame_path_fails_the_conversion(colour_model, tmp_path, monkeypatch):
    """A Classifier that takes camera frames in the wrong colour order (as a device path bug would) makes every
    artifact disagree with Keras: the conversion refuses them, naming the agreement."""
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.devices.classify import Classifier
    from edgecnn.errors import ConversionFailedError

    original = Classifier._infer

    def swapped(self, frame, source_color):
        return original(self, np.ascontiguousarray(frame[..., ::-1]) if frame.ndim == 3 else frame, source_color)

    monkeypatch.setattr(Classifier, "_infer", swapped)
    model, data = colour_model
    with pytest.raises(ConversionFailedError) as failed:
        convert(model, calib=str(data), val=str(data), out=tmp_path / "out",
                options=ConvertOptions(progress=False, formats="tflite-fp32,tflite-int8"))
    message = str(failed.value)
    assert "tflite-fp32" in message and "tflite-int8" in message, message
    assert not list(tmp_path.glob("out/*.tflite"))  # nothing refused is published


def test_grey_and_bgr_models_take_their_frames_as_a_camera_gives_them():
    from edgecnn.converters.verify import camera_frame

    pixels = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    frame, colour = camera_frame(pixels, Preprocessing(4, 4, ColorOrder.RGB))
    assert colour == ColorOrder.BGR and np.array_equal(frame, pixels[:, :, ::-1]) and frame.flags.c_contiguous
    frame, colour = camera_frame(pixels, Preprocessing(4, 4, ColorOrder.BGR))
    assert colour == ColorOrder.BGR and frame is pixels
    grey = pixels[:, :, :1]
    frame, colour = camera_frame(grey, Preprocessing(4, 4, ColorOrder.GRAY))
    assert colour == ColorOrder.GRAY and frame.shape == (4, 4) and np.array_equal(frame, grey[:, :, 0])


# -- class folders and a labels file -------------------------------------------------------------------------
TRAINED_ORDER = ("red", "green", "blue")  # the model's outputs; alphabetical folders would be blue, green, red


@pytest.fixture(scope="module")
def red_first_model(tmp_path_factory) -> Path:
    """The colour model with its outputs in the order red, green, blue (not alphabetical), and class folders of
    PNG files (written BGR, as OpenCV writes) named by colour."""
    import cv2

    folder = tmp_path_factory.mktemp("red-first")
    save_channel_model(folder / "colour.keras", TRAINED_ORDER)
    images, labels = colour_images(90, seed=4)
    for i, (image, label) in enumerate(zip(images, labels)):
        (folder / "data" / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / "data" / CLASSES[label] / f"{i}.png"), image[:, :, ::-1])
    return folder


def test_class_folders_follow_the_labels_file_by_name(red_first_model, tmp_path):
    """Folders are numbered alphabetically unless a labels file names them: then by the file's order, so the
    model trained red, green, blue is scored against the right outputs (100 %, not the 33 % of blue=0)."""
    from edgecnn.converters.pipeline import ConvertOptions, convert

    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(TRAINED_ORDER) + "\n")
    data = str(red_first_model / "data")
    result = convert(red_first_model / "colour.keras", calib=data, val=data, out=tmp_path / "out",
                     options=ConvertOptions(progress=False, formats="tflite-int8", labels_file=labels))
    assert result.manifest.labels == TRAINED_ORDER
    verification = result.manifest.artifacts[0].verification
    assert verification.keras_accuracy == 1.0 and verification.accuracy == 1.0, verification
    assert any("numbered in the order of" in w and "red=0" in w for w in result.warnings), result.warnings
    # Without the file the folders' alphabetical order is taken: Keras itself then scores a third.
    plain = convert(red_first_model / "colour.keras", calib=data, val=data, out=tmp_path / "plain",
                    options=ConvertOptions(progress=False, formats="tflite-fp32"))
    assert plain.manifest.labels == CLASSES
    assert plain.manifest.artifacts[0].verification.keras_accuracy < 0.5
    # ... and the check names the class order (a colour swap happens to explain it too: both are said).
    order = [w for w in plain.warnings if w.startswith("class order mismatch")]
    assert len(order) == 1 and "'blue' (0) -> output 2" in order[0] and "'red' (2) -> output 0" in order[0], \
        plain.warnings
    assert "top-1 is 100.0 %" in order[0] and "--labels" in order[0]
    assert not any(w.startswith("class order") for w in result.warnings)


def test_a_labels_file_placing_a_folder_name_elsewhere_is_refused(red_first_model, tmp_path):
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.errors import DataError

    labels = tmp_path / "labels.txt"
    labels.write_text("red\ngreen\nyellow\n")
    data = str(red_first_model / "data")
    with pytest.raises(DataError) as refused:
        convert(red_first_model / "colour.keras", calib=data, val=data, out=tmp_path / "out",
                options=ConvertOptions(progress=False, formats="tflite-fp32", labels_file=labels))
    assert "class folder 'red'" in str(refused.value) and "line 1 of labels file" in str(refused.value)
    assert not (tmp_path / "out").exists()
