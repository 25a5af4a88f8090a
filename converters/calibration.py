"""Calibration and verification data shaped for the model: the preprocessing to record, and float inputs.

Raw uint8 images go through edgecnn.preprocess (the same code the runners use) so that calibration,
verification and devices see identical pixels. A float array file is taken as model-ready input and
must match the model's input shape exactly.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from edgecnn.data import Dataset
from edgecnn.errors import DataError, UsageError
from edgecnn.manifest import ColorOrder, Interpolation, Layout, Preprocessing, ResizeMode
from edgecnn.preprocess import prepare_batch, to_float

TINY_CALIBRATION = 50  # fewer samples than this give unstable int8 ranges
RESCALING_LAYERS = ("Rescaling", "Normalization")


@dataclass(frozen=True)
class PrepRequest:
    """What the user asked for; None means "derive it from the model"."""

    color: Optional[ColorOrder] = None
    resize: ResizeMode = ResizeMode.STRETCH
    interpolation: Interpolation = Interpolation.LINEAR
    scale: Optional[float] = None
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    invert: bool = False


@dataclass(frozen=True)
class ModelInputs:
    """Samples ready for the model: float32 inputs, the uint8 pixels they came from (None for float data)."""

    inputs: np.ndarray
    pixels: Optional[np.ndarray]
    labels: Optional[np.ndarray]
    source: str
    role: str  # "calibration" | "validation"

    def __len__(self) -> int:
        return int(self.inputs.shape[0])


def build_preprocessing(input_shape: tuple[int, ...], request: PrepRequest, layer_classes: tuple[str, ...] = ()) -> tuple[Preprocessing, tuple[str, ...]]:
    """The Preprocessing for a model input shape and the user's options, plus notes about the choice.

    A Rescaling/Normalization layer inside the model already scales pixels, so by default pixels are fed
    at 0..255 (scale 1) instead of being divided by 255 a second time.
    """
    height, width, channels, layout = _geometry(input_shape, request.color)
    color = request.color or (ColorOrder.GRAY if channels == 1 else ColorOrder.RGB)
    if (color == ColorOrder.GRAY) != (channels == 1):
        raise UsageError(f"--color {color.value} gives {1 if color == ColorOrder.GRAY else 3} channel(s) but the model "
                         f"input {input_shape} has {channels}", "choose --color gray for 1 channel, rgb or bgr for 3")
    notes: list[str] = []
    in_model = [name for name in layer_classes if name in RESCALING_LAYERS]
    default_scale = 1.0 if in_model else 1.0 / 255.0
    if in_model:
        notes.append(f"the model has a {in_model[0]} layer: pixels are fed at 0..255 (scale 1), not rescaled twice")
        if request.scale is not None and request.scale != 1.0:
            notes.append(f"--scale {request.scale:g} given although the model rescales itself: check it is intended")
    prep = Preprocessing(height=height, width=width, color=color, resize=request.resize,
                         interpolation=request.interpolation,
                         scale=default_scale if request.scale is None else float(request.scale),
                         mean=request.mean or (0.0,), std=request.std or (1.0,), invert=request.invert, layout=layout)
    try:
        prep.validate()
    except Exception as exc:  # ManifestError: present it as a usage problem of the options
        raise UsageError(str(exc)) from None
    return prep, tuple(notes)


def _geometry(input_shape: tuple[int, ...], color: Optional[ColorOrder]) -> tuple[int, int, int, Layout]:
    """(height, width, channels, layout) of an image model input (without the batch axis)."""
    if len(input_shape) == 3 and input_shape[2] in (1, 3):
        return input_shape[0], input_shape[1], input_shape[2], Layout.NHWC
    if len(input_shape) == 3 and input_shape[0] in (1, 3) and min(input_shape[1:]) > 4:
        raise UsageError(f"model input shape {input_shape} is channels_first (C, H, W)",
                         "rebuild the model channels_last (keras.config.set_image_data_format('channels_last'), "
                         "Input((H, W, C))) and copy the weights, then convert it")
    if len(input_shape) == 2:  # (H, W): a grey image without a channel axis (Input((28, 28)) -> Flatten)
        if color in (ColorOrder.RGB, ColorOrder.BGR):
            raise UsageError(f"model input shape {input_shape} has no channel axis: it takes grey images",
                             "leave --color out (or pass --color gray)")
        return input_shape[0], input_shape[1], 1, Layout.HW
    if len(input_shape) == 1:  # a flat vector: a square grey (or colour) image flattened
        size = input_shape[0]
        channels = 3 if color in (ColorOrder.RGB, ColorOrder.BGR) else 1
        if color is None and math.isqrt(size) ** 2 != size and size % 3 == 0:
            channels = 3
        side = math.isqrt(size // channels)
        if side * side * channels == size:
            return side, side, channels, Layout.FLAT
    raise UsageError(f"model input shape {input_shape} is not an image (H, W, 1|3), (H, W) or a flattened square "
                     "image", "edgecnn converts image classifiers")


def model_inputs(dataset: Dataset, prep: Preprocessing, input_shape: tuple[int, ...], role: str) -> ModelInputs:
    """``dataset`` as float32 model input (N, *input_shape), through the recorded preprocessing."""
    if len(dataset) == 0:
        raise DataError(f"{role} data {dataset.source} holds no samples", "give a non-empty folder or array")
    if dataset.preprocessed:
        inputs = np.asarray(dataset.images, dtype=np.float32)
        if inputs.shape[1:] != tuple(input_shape):
            raise DataError(f"{role} array {dataset.source} has shape {inputs.shape[1:]} per sample but the model takes "
                            f"{tuple(input_shape)}", "save float arrays already preprocessed at the model's input shape")
        return ModelInputs(inputs, None, dataset.labels, dataset.source, role)
    images = dataset.images
    if isinstance(images, np.ndarray) and images.dtype != object and images.ndim == 2 \
            and images.shape[1] == prep.height * prep.width * prep.channels:
        images = images.reshape(-1, prep.height, prep.width, prep.channels)  # flattened uint8 images
    try:
        pixels = prepare_batch(images, prep)
    except DataError as exc:
        raise DataError(f"{role} data {dataset.source}: {exc.message}", exc.hint or
                        f"give images of shape (H, W[, C]); the model takes {tuple(input_shape)}") from None
    inputs = to_float(pixels, prep).reshape(len(pixels), *input_shape)
    return ModelInputs(inputs.astype(np.float32), pixels, dataset.labels, dataset.source, role)


def choose_calibration(data: ModelInputs, samples: int, seed: int = 0) -> tuple[ModelInputs, tuple[str, ...]]:
    """A seeded random subset of at most ``samples``; warns when the set is tiny."""
    if samples <= 0:
        raise UsageError(f"--calib-samples {samples} must be positive")
    count = len(data)
    chosen = np.sort(np.random.default_rng(seed).permutation(count)[:samples]) if count > samples else np.arange(count)
    subset = replace(data, inputs=data.inputs[chosen],
                     pixels=None if data.pixels is None else data.pixels[chosen],
                     labels=None if data.labels is None else data.labels[chosen])
    warnings = ()
    if len(subset) < TINY_CALIBRATION:
        warnings = (f"only {len(subset)} calibration samples: int8 ranges may be unstable "
                    f"(use at least {TINY_CALIBRATION}, ideally 100-500 representative images)",)
    return subset, warnings


def calibration_record(data: ModelInputs, method: str, seed: int, warnings: tuple[str, ...]) -> dict:
    """What the manifest says about calibration."""
    return {"source": data.source, "samples": len(data), "method": method, "seed": seed,
            "input": "uint8 pixels through the recorded preprocessing" if data.pixels is not None else "float arrays",
            "warnings": list(warnings)}
