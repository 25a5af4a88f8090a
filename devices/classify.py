"""The Classifier used by ``edgecnn run`` and ``edgecnn bench``: a runner + the manifest's pre/post-processing.

Everything per frame is in ``classify``: geometry and colour (edgecnn.preprocess.prepare_pixels), one table
lookup into a buffer allocated once (the same table InputEncoder builds, so values equal convert's
verification), the runner, then dequantize/softmax/top-k (edgecnn.preprocess). The manifest is checked
against what the loaded model really reports, so a manifest for another model is refused, not trusted.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from edgecnn.devices.base import Runner, RunnerOptions
from edgecnn.errors import DataError, InputPathError, ManifestError
from edgecnn.fileio import sha256_of
from edgecnn.manifest import ColorOrder, Layout, Manifest, OutputKind, Preprocessing, TensorSpec, find_manifest
from edgecnn.preprocess import (InputEncoder, above, class_count, decode_scores, prepare_batch, prepare_pixels,
                                resize_image, top_k)

MAX_LABELS_BYTES = 4 * 1024 * 1024
NO_PREPROCESSING_HINT = ("pass --manifest PATH, or the preprocessing options --size HxW [--color --resize --scale "
                         "--mean --std] (in Python: Classifier.open(..., prep=Preprocessing(...)))")


@dataclass(frozen=True)
class Prediction:
    index: int
    label: str
    score: float


@dataclass(frozen=True)
class StageTimes:
    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


@dataclass(frozen=True)
class ClassifyResult:
    top: tuple[Prediction, ...]  # best first
    times: StageTimes
    # A multi-label head: every class whose score reaches the threshold (best first); None for other heads.
    over_threshold: Optional[tuple[Prediction, ...]] = None

    @property
    def best(self) -> Prediction:
        return self.top[0]

    def to_dict(self) -> dict[str, Any]:
        out = {"top": [_prediction_dict(p) for p in self.top],
               "ms": {"preprocess": round(self.times.preprocess_ms, 3), "inference": round(self.times.inference_ms, 3),
                      "postprocess": round(self.times.postprocess_ms, 3)}}
        if self.over_threshold is not None:
            out["over_threshold"] = [_prediction_dict(p) for p in self.over_threshold]
        return out


def _prediction_dict(p: Prediction) -> dict[str, Any]:
    return {"index": p.index, "label": p.label, "score": round(p.score, 6)}


def read_labels(path: Path) -> tuple[str, ...]:
    """One label per line (data only; blank lines skipped)."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_LABELS_BYTES:
            raise ManifestError(f"labels file {path} is larger than 4 MiB", "give one label per line")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"cannot read labels file {path} ({exc})") from None
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise ManifestError(f"labels file {path} holds no labels", "give one label per line")
    return labels


def _load_manifest(model_path: Path, manifest: Union[Manifest, Path, str, None]) -> Optional[Manifest]:
    if isinstance(manifest, Manifest):
        return manifest
    if manifest is not None:
        return Manifest.read(Path(manifest))
    found = find_manifest(model_path)
    return Manifest.read(found) if found else None


def _same_quantization(a: TensorSpec, b: TensorSpec) -> bool:
    if a.dtype != b.dtype or a.quantized != b.quantized:
        return False
    return not a.quantized or (abs(a.scale - b.scale) <= 1e-6 * max(a.scale, b.scale) and a.zero_point == b.zero_point)


def output_units(runner: Runner) -> int:
    """How many values the model outputs per sample (0 when its shape is not known)."""
    dims = [d for d in runner.output.shape[1:]] if runner.output.shape else []
    return int(np.prod(dims)) if dims and all(d > 0 for d in dims) else 0


def check_against_model(runner: Runner, prep: Preprocessing, labels: Sequence[str],
                        manifest: Optional[Manifest], kind: OutputKind = OutputKind.PROBABILITIES) -> None:
    """Refuse (ManifestError) preprocessing/labels/manifest that do not describe the loaded model."""
    name = runner.model_path.name
    model_shape = tuple(runner.input.shape[1:])
    if tuple(prep.input_shape()) != model_shape:
        raise ManifestError(f"preprocessing produces {prep.input_shape()} but {name} takes {model_shape}",
                            "use the manifest written with this model, or fix the preprocessing options")
    units = output_units(runner)
    classes = class_count(kind, units) if units else 0
    if classes > 0 and len(labels) != classes:
        raise ManifestError(f"{len(labels)} labels given but {name} has {classes} classes ({kind.value} head "
                            f"of {units} output(s))", "use the manifest or labels file written with this model")
    if manifest is None:
        return
    if tuple(manifest.input_shape) != model_shape:
        raise ManifestError(f"the manifest is for input {tuple(manifest.input_shape)} but {name} takes {model_shape}",
                            "use the manifest written with this model")
    entry = next((a for a in manifest.artifacts if Path(a.file).name == name), None)
    if entry is None:
        return
    if entry.sha256 and sha256_of(runner.model_path) != entry.sha256:
        # A damaged artifact can load and still answer wrongly; the hash written at conversion catches it.
        raise ManifestError(f"{name} does not match the SHA-256 its manifest records: the file was modified or "
                            "corrupted after conversion", "re-run edgecnn convert, or pass the manifest written with it")
    for side, declared, actual in (("input", entry.input, runner.input), ("output", entry.output, runner.output)):
        if not _same_quantization(declared, actual):
            raise ManifestError(f"the manifest says {name}'s {side} is {declared.dtype} (scale {declared.scale:g}, "
                                f"zero point {declared.zero_point}) but the model has {actual.dtype} "
                                f"(scale {actual.scale:g}, zero point {actual.zero_point})",
                                "the file was replaced; use the manifest written with it")


class Classifier:
    """A loaded model plus its preprocessing and labels. Use as a context manager.

    Not thread-safe: ``classify`` reuses one input buffer, so one inference thread owns a Classifier.
    """

    def __init__(self, runner: Runner, prep: Preprocessing, labels: Sequence[str],
                 output_kind: OutputKind = OutputKind.PROBABILITIES, top_k: int = 5,
                 manifest: Optional[Manifest] = None, threshold: float = 0.5) -> None:
        if not 0.0 <= float(threshold) <= 1.0:
            raise DataError(f"threshold {threshold} is outside 0..1", "give a score between 0 and 1, e.g. 0.5")
        self.runner = runner
        self.prep = prep
        self.labels = tuple(labels)
        self.output_kind = OutputKind(output_kind)
        self.top_k = max(1, int(top_k))
        self.threshold = float(threshold)
        self.manifest = manifest
        self.encoder = InputEncoder.build(prep, runner.input)
        self._uniform = self.encoder.table.shape[0] == 1 or not np.any(self.encoder.table != self.encoder.table[:1])
        # One frame's input tensor, reused for every frame.
        self._buffer = np.empty((1, prep.height, prep.width, prep.channels), dtype=self.encoder.table.dtype)
        layout = Layout(prep.layout)
        self._batch_view = self._buffer
        if layout == Layout.FLAT:
            self._batch_view = self._buffer.reshape(1, -1)
        elif layout == Layout.HW:
            self._batch_view = self._buffer.reshape(1, prep.height, prep.width)
        self._channels_first = layout == Layout.NCHW
        self._cv2 = _optional_cv2()
        # 8-bit inputs with one table for all channels: OpenCV's LUT writes straight into the buffer (2x np.take).
        self._lut8 = self.encoder.table[0].view(np.uint8) if self._uniform and self.encoder.table.itemsize == 1 else None
        self._buffer_u8 = self._buffer.view(np.uint8)[0]

    @classmethod
    def open(cls, model_path: Path | str, target: str = "cpu", options: RunnerOptions = RunnerOptions(),
             manifest: Union[Manifest, Path, str, None] = None, prep: Optional[Preprocessing] = None,
             labels: Union[Sequence[str], Path, str, None] = None, top_k: int = 5,
             output_kind: Optional[OutputKind] = None, threshold: float = 0.5) -> "Classifier":
        """Load ``model_path`` on ``target`` with the sidecar manifest (or the given one / explicit ``prep``)."""
        from edgecnn.devices.runners import open_runner

        model_path = Path(model_path)
        if not model_path.is_file():
            raise InputPathError(f"model file {model_path} does not exist" if not model_path.exists()
                                 else f"{model_path} is not a model file", "give the path of a .tflite or .onnx artifact")
        loaded = _load_manifest(model_path, manifest)
        if loaded is None and prep is None:
            raise ManifestError(f"{model_path.name} has no manifest.json beside it and no preprocessing was given",
                                NO_PREPROCESSING_HINT)
        runner = open_runner(model_path, target, options)
        try:
            prep = prep or loaded.preprocessing
            prep.validate()
            kind = OutputKind(output_kind or (loaded.output_kind if loaded else OutputKind.PROBABILITIES))
            names = _labels(labels, loaded, runner, kind)
            check_against_model(runner, prep, names, loaded, kind)
            return cls(runner, prep, names, kind, top_k, loaded, threshold)
        except BaseException:
            runner.close()
            raise

    # -- per frame -------------------------------------------------------------------------------------
    def prepare(self, frame: np.ndarray, source_color: ColorOrder = ColorOrder.BGR) -> np.ndarray:
        """A raw frame -> (H, W, C) uint8 pixels in the model's colour order and size (= prepare_pixels)."""
        if not isinstance(frame, np.ndarray):
            raise DataError(f"frame is a {type(frame).__name__}, not an image array")
        if (frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3 and frame.size
                and self.prep.color != ColorOrder.GRAY and ColorOrder(source_color) != ColorOrder.GRAY):
            # Resizing works per channel, so resizing first and swapping RGB<->BGR on the small image gives
            # the same bytes as prepare_pixels, without copying a reversed full-size frame (5 ms at 640x480).
            small = resize_image(frame, self.prep.height, self.prep.width, self.prep.resize, self.prep.interpolation)
            if ColorOrder(source_color) == self.prep.color:
                return small
            return self._cv2.cvtColor(small, self._cv2.COLOR_BGR2RGB) if self._cv2 else small[:, :, ::-1]
        return prepare_pixels(frame, self.prep, source_color)

    def _encode_into_buffer(self, pixels: np.ndarray) -> np.ndarray:
        batch = self._encode_nhwc(pixels)
        return np.ascontiguousarray(self._buffer.transpose(0, 3, 1, 2)) if self._channels_first else batch

    def _encode_nhwc(self, pixels: np.ndarray) -> np.ndarray:
        table = self.encoder.table
        if self._lut8 is not None and self._cv2 is not None:
            written = self._cv2.LUT(np.ascontiguousarray(pixels), self._lut8, dst=self._buffer_u8)
            if written is not self._buffer_u8:
                self._buffer_u8[...] = written
            return self._batch_view
        # mode="clip" is a no-op for uint8 indices into 256 entries, and lets numpy write straight into the buffer.
        if self._uniform:
            np.take(table[0], pixels, out=self._buffer[0], mode="clip")
        else:
            for channel in range(table.shape[0]):
                np.take(table[channel], pixels[:, :, channel], out=self._buffer[0, :, :, channel], mode="clip")
        return self._batch_view

    def classify(self, frame: np.ndarray, source_color: ColorOrder = ColorOrder.BGR) -> ClassifyResult:
        """Classify one raw frame (BGR from OpenCV by default); per-stage times in milliseconds."""
        t0 = time.perf_counter()
        batch = self._encode_into_buffer(self.prepare(frame, source_color))
        t1 = time.perf_counter()
        raw = self.runner.invoke(batch)
        t2 = time.perf_counter()
        scores = decode_scores(raw, self.runner.output, self.output_kind)[0]
        top = self.top_predictions(scores)
        active = self.over_threshold(scores) if self.output_kind == OutputKind.MULTILABEL_SIGMOID else None
        t3 = time.perf_counter()
        return ClassifyResult(top, StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3), active)

    def top_predictions(self, scores: np.ndarray) -> tuple[Prediction, ...]:
        return tuple(self._prediction(i, s) for i, s in top_k(scores, self.top_k))

    def over_threshold(self, scores: np.ndarray) -> tuple[Prediction, ...]:
        """Every class whose (multi-label) score reaches ``self.threshold``, best first."""
        return tuple(self._prediction(i, s) for i, s in above(scores, self.threshold))

    def _prediction(self, index: int, score: float) -> Prediction:
        return Prediction(index, self.labels[index] if index < len(self.labels) else str(index), score)

    # -- batches ---------------------------------------------------------------------------------------
    def scores(self, pixels: np.ndarray) -> np.ndarray:
        """Already-prepared uint8 pixels (N, H, W, C) -> float32 class scores (N, classes)."""
        pixels = np.asarray(pixels)
        expected = (self.prep.height, self.prep.width, self.prep.channels)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != expected:
            raise DataError(f"pixels of shape {pixels.shape} given, expected (N, {', '.join(map(str, expected))})",
                            "prepare them with edgecnn.preprocess.prepare_batch")
        raw = self.runner.invoke(self.encoder(pixels))
        return decode_scores(raw, self.runner.output, self.output_kind)

    def predict(self, pixels: np.ndarray) -> np.ndarray:
        """Top-1 class index of each of (N, H, W, C) prepared uint8 pixels."""
        from edgecnn.preprocess import top1  # noqa: PLC0415

        return top1(self.scores(pixels))

    def classify_images(self, images: Sequence[np.ndarray] | np.ndarray,
                        source_color: ColorOrder = ColorOrder.RGB) -> np.ndarray:
        """Raw images (any size; RGB by default, as edgecnn.data loads them) -> class scores (N, classes)."""
        return self.scores(prepare_batch(images, self.prep, source_color))

    def describe(self) -> dict[str, Any]:
        return {**self.runner.describe(), "classes": len(self.labels), "top_k": self.top_k,
                "manifest": self.manifest is not None, "output_kind": self.output_kind.value}

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _optional_cv2() -> Any:
    try:
        import cv2  # noqa: PLC0415 - already loaded by preprocessing whenever frames are resized
    except ImportError:
        return None
    return cv2


def _labels(labels: Union[Sequence[str], Path, str, None], manifest: Optional[Manifest], runner: Runner,
            kind: OutputKind) -> tuple[str, ...]:
    if isinstance(labels, (str, Path)):
        return read_labels(Path(labels))
    if labels is not None:
        return tuple(str(label) for label in labels)
    if manifest is not None:
        return tuple(manifest.labels)
    units = output_units(runner)
    return tuple(str(i) for i in range(class_count(kind, units) if units else 0))
