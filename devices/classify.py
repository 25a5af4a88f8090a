"""The Classifier used by ``edgecnn run`` and ``edgecnn bench``: a runner + the manifest's pre/post-processing.

Everything per frame is in ``classify``: geometry and colour (edgecnn.preprocess.prepare_pixels), one table
lookup written straight into the runtime's input tensor where the runner offers it (LiteRT), else into a
buffer allocated once (the same table InputEncoder builds, so values equal convert's verification), the
runner, then dequantize/softmax/top-k (edgecnn.preprocess). The manifest is checked against what the loaded
model really reports, so a manifest for another model is refused, not trusted.

The manifest is the one given, else ``manifest.json`` beside the model, else the copy embedded in the model
file at conversion (so one .tflite or .onnx file is enough to deploy). The embedded copy was written before
the artifact existed, so it lists no artifacts and no SHA-256 of the file: with it there is no hash check
(nor a check of the declared quantization); the load checks (flatbuffer walk, probe, warm-up) still run.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, NamedTuple, Optional, Sequence, Union

import numpy as np

from edgecnn.devices.base import Runner, RunnerOptions
from edgecnn.errors import DataError, InputPathError, ManifestError, UsageError
from edgecnn.fileio import read_labels, sha256_of  # noqa: F401 - read_labels: part of this module's API
from edgecnn.manifest import ColorOrder, Layout, Manifest, OutputKind, Preprocessing, TensorSpec, find_manifest
from edgecnn.prepchoice import PrepChoice
from edgecnn.preprocess import (InputEncoder, above, class_count, code_ranker, decode_scores, prepare_batch,
                                prepare_pixels, resize_image, top_k)

class NotAClassifierError(UsageError):
    """The model is not a single-output image classifier (a detector, a segmenter): it cannot be classified with."""


# Records made per frame or once per start (a prediction, a frame, a model's setup) are NamedTuples rather than
# frozen dataclasses: on Python 3.11 a dataclass costs ~0.6 ms to create at import, on the start path of
# `edgecnn run` (benchmarks/results/startup.md), and a frozen one is slower to build per frame. Options and
# the manifest stay frozen dataclasses.
class Prediction(NamedTuple):
    """One class of a result: index into the labels, label, score (probability, 0..1)."""

    index: int
    label: str
    score: float


class StageTimes(NamedTuple):
    """Milliseconds spent per stage on one frame (perf_counter)."""

    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float

    @property
    def total_ms(self) -> float:
        return self.preprocess_ms + self.inference_ms + self.postprocess_ms


class ClassifyResult(NamedTuple):
    """The top-k predictions of one frame, best first, and the stage times."""

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


def _load_manifest(model_path: Path, manifest: Union[Manifest, Path, str, None]) -> Optional[Manifest]:
    if isinstance(manifest, Manifest):
        return manifest
    if manifest is not None:
        return Manifest.read(Path(manifest))
    found = find_manifest(model_path)
    return Manifest.read(found) if found else None


def embedded_manifest(runner: Runner) -> Optional[Manifest]:
    """The manifest embedded in the loaded model at conversion (no artifact entries, so no hash), or None."""
    text = runner.embedded_manifest()
    if not text:
        return None
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ManifestError(f"the manifest embedded in {runner.model_path.name} is not valid JSON ({exc})"[:300],
                            "re-run edgecnn convert, or put its manifest.json beside the model") from None
    return Manifest.from_dict(raw)


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
    produced = tuple(prep.input_shape())
    if len(produced) != len(model_shape) or any(m >= 0 and m != p for m, p in zip(model_shape, produced)):
        raise ManifestError(f"preprocessing produces {produced} but {name} takes {model_shape}",
                            "use the manifest written with this model, or fix the preprocessing options"
                            if manifest is not None else "fix the preprocessing options (--size, --color, --layout)")
    units = output_units(runner)
    classes = class_count(kind, units) if units else 0
    if classes > 0 and len(labels) != classes:
        raise ManifestError(f"{len(labels)} labels given but {name} has {classes} classes ({kind.value} head "
                            f"of {units} output(s))", "use the manifest or labels file written with this model"
                            if manifest is not None else f"give --labels FILE with {classes} lines, one per class")
    if manifest is None:
        return
    if tuple(manifest.input_shape) != model_shape:
        raise ManifestError(f"the manifest is for input {tuple(manifest.input_shape)} but {name} takes {model_shape}",
                            "use the manifest written with this model")
    entry = next((a for a in manifest.artifacts if Path(a.file).name == name), None)
    if entry is None:
        return
    if entry.sha256 and (runner.sha256 or sha256_of(runner.model_path)) != entry.sha256:
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
        self._rank = code_ranker(runner.output, self.output_kind)  # None: decode all scores, then rank them
        self.threshold = float(threshold)
        self.manifest = manifest
        self.encoder = InputEncoder.build(prep, runner.input)
        self.notices: tuple[str, ...] = ()  # what was assumed or read from a file without a manifest
        self.precision = ""  # read from a file without a manifest (devices/model_info.py)
        layout = Layout(prep.layout)
        # One frame's input tensor, reused for every frame; channels first for an NCHW model, so the table
        # lookup writes each channel plane straight into it (no transposed copy per frame).
        shape = (1, prep.channels, prep.height, prep.width) if layout == Layout.NCHW else \
            (1, prep.height, prep.width, prep.channels)
        self._buffer = np.empty(shape, dtype=self.encoder.table.dtype)
        self._shape4 = self._buffer.shape
        self._batch_view = self._buffer
        if layout == Layout.FLAT:
            self._batch_view = self._buffer.reshape(1, -1)
        elif layout == Layout.HW:
            self._batch_view = self._buffer.reshape(1, prep.height, prep.width)
        self._channels_first = layout == Layout.NCHW
        self._cv2 = _optional_cv2()
        # 8-bit inputs with one table for all channels: OpenCV's LUT writes straight into the tensor (2x np.take).
        self._lut8 = self.encoder.table[0].view(np.uint8) if self.encoder.uniform and self.encoder.table.itemsize == 1 else None
        self._fused = self._lut8 is not None and self._cv2 is not None and prep.channels == 3

    @classmethod
    def open(cls, model_path: Path | str, target: str = "cpu", options: RunnerOptions = RunnerOptions(),
             manifest: Union[Manifest, Path, str, None] = None, prep: Union[Preprocessing, PrepChoice, None] = None,
             labels: Union[Sequence[str], Path, str, None] = None, top_k: int = 5,
             output_kind: Optional[OutputKind] = None, threshold: float = 0.5) -> "Classifier":
        """Load ``model_path`` on ``target`` with the sidecar manifest (or the given one, or the one embedded in
        the file); ``prep``: a Preprocessing used as it is, or a PrepChoice of options that override the
        manifest's or, for a file without one, complete what the file says (devices/model_info.py). What was
        assumed or read from the file is listed in ``notices``. ``top_k``: predictions per frame; ``threshold``:
        a multi-label head's cut-off (0..1). Raises NotAClassifierError for a model that is not a single-output
        classifier (a detector, a segmenter), ManifestError (a manifest that does not match the model or the
        file's SHA-256), InputPathError, ModelLoadError, RuntimeMissingError, DeviceError (as open_runner)."""
        from edgecnn.devices.model_info import SUPPORTED, resolve_setup
        from edgecnn.devices.runners import open_runner

        model_path = Path(model_path)
        if not model_path.is_file():
            raise InputPathError(f"model file {model_path} does not exist" if not model_path.exists()
                                 else f"{model_path} is not a model file", "give the path of a .tflite or .onnx artifact")
        loaded = _load_manifest(model_path, manifest)
        size = prep.size if isinstance(prep, PrepChoice) else (
            (prep.height, prep.width) if isinstance(prep, Preprocessing) else None)
        if size is not None and options.input_hw is None:
            options = dataclasses.replace(options, input_hw=tuple(size))
        runner = open_runner(model_path, target, options)
        try:
            if loaded is None and not isinstance(prep, Preprocessing):
                loaded = embedded_manifest(runner)
            setup = resolve_setup(runner, loaded, prep, labels, output_kind)
            if setup.problem:
                raise NotAClassifierError(setup.problem, f"{SUPPORTED}; edgecnn bench still measures its latency")
            check_against_model(runner, setup.prep, setup.labels, loaded, setup.kind)
            classifier = cls(runner, setup.prep, setup.labels, setup.kind, top_k, loaded, threshold)
            classifier.notices = setup.notices
            classifier.precision = setup.info.precision if setup.info is not None else ""
            return classifier
        except BaseException:
            runner.close()
            raise

    # -- per frame -------------------------------------------------------------------------------------
    def prepare(self, frame: np.ndarray, source_color: ColorOrder = ColorOrder.BGR) -> np.ndarray:
        """A raw frame -> (H, W, C) uint8 pixels in the model's colour order and size (= prepare_pixels)."""
        if not isinstance(frame, np.ndarray):
            raise DataError(f"frame is a {type(frame).__name__}, not an image array")
        if (_colour_frame(frame) and self.prep.color != ColorOrder.GRAY
                and ColorOrder(source_color) != ColorOrder.GRAY):
            # Resizing works per channel, so resizing first and swapping RGB<->BGR on the small image gives
            # the same bytes as prepare_pixels, without copying a reversed full-size frame (5 ms at 640x480).
            small = resize_image(frame, self.prep.height, self.prep.width, self.prep.resize, self.prep.interpolation,
                                 pad_value=self.prep.pad_value)
            if ColorOrder(source_color) == self.prep.color:
                return small
            return self._cv2.cvtColor(small, self._cv2.COLOR_BGR2RGB) if self._cv2 else small[:, :, ::-1]
        return prepare_pixels(frame, self.prep, source_color)

    def _write_pixels(self, pixels: np.ndarray, target: np.ndarray) -> None:
        """(H, W, C) uint8 pixels -> ``target`` (1, H, W, C) in the input's dtype, written in place by the
        shared encoder's table (OpenCV's LUT applies the same table faster when there is one for all channels)."""
        if self._lut8 is not None and self._cv2 is not None:
            dst = target.view(np.uint8)[0]
            written = self._cv2.LUT(np.ascontiguousarray(pixels), self._lut8, dst=dst)
            if written is not dst:
                dst[...] = written
            return
        self.encoder.encode_into(pixels, target[0])

    def _fill_input(self, frame: np.ndarray, source_color: ColorOrder, pixels: Optional[np.ndarray]) -> bool:
        """Write the frame, prepared and encoded, straight into the runtime's own input tensor (no ``set_tensor``
        copy); False when the runner offers no view of it. ``pixels``: the prepared frame, or None for a colour
        frame of an 8-bit colour model, which is resized into the tensor, its channels swapped and the table
        applied there in place: no intermediate image.

        The view dies when this returns, before the invoke: LiteRT refuses to run while one is alive. Nothing
        here can fail on a frame that prepare() accepted, so no traceback keeps the view alive either."""
        if self._channels_first:
            return False  # the tensor is (1, C, H, W): encoded in (H, W, C) order first, then transposed
        view = self.runner.input_view()
        if view is None or view.dtype != self._buffer.dtype or view.size != self._buffer.size:
            return False
        target = view.reshape(self._shape4)
        if pixels is None:
            self._resize_encode(frame, ColorOrder(source_color), target.view(np.uint8)[0])
        else:
            self._write_pixels(pixels, target)
        return True

    def _resize_encode(self, frame: np.ndarray, source_color: ColorOrder, dst: np.ndarray) -> None:
        """= _write_pixels(prepare(frame)) for a uint8 colour frame, computed in ``dst`` (H, W, 3) uint8 in place."""
        cv2, prep = self._cv2, self.prep
        small = resize_image(frame, prep.height, prep.width, prep.resize, prep.interpolation, out=dst,
                             pad_value=prep.pad_value)
        if source_color != prep.color:
            small = cv2.cvtColor(small, cv2.COLOR_BGR2RGB, dst=dst)
        if small is not dst:
            dst[...] = small
        written = cv2.LUT(dst, self._lut8, dst=dst)
        if written is not dst:
            dst[...] = written

    def _encode_into_buffer(self, pixels: np.ndarray) -> np.ndarray:
        if self._channels_first:
            self.encoder.encode_into(pixels, self._buffer[0], channels_first=True)
            return self._buffer
        self._write_pixels(pixels, self._buffer)
        return self._batch_view

    def classify(self, frame: np.ndarray, source_color: ColorOrder = ColorOrder.BGR) -> ClassifyResult:
        """Classify one raw frame: (H, W, 3) uint8 in ``source_color`` order (BGR from OpenCV by default), or
        (H, W) / (H, W, 1) grey, any size (resized as the manifest says). Returns the top-k Predictions (class
        index, label, score in 0..1), every class over the threshold for a multi-label head, and per-stage times
        in milliseconds. Raises DataError for a frame that is empty or of another dtype or shape."""
        t0 = time.perf_counter()
        raw, t1 = self._infer(frame, source_color)
        t2 = time.perf_counter()
        if self.output_kind == OutputKind.MULTILABEL_SIGMOID:
            scores = decode_scores(raw, self.runner.output, self.output_kind)[0]
            top, active = self.top_predictions(scores), self.over_threshold(scores)
        else:
            ranked = (self._rank(raw, self.top_k) if self._rank is not None
                      else top_k(decode_scores(raw, self.runner.output, self.output_kind)[0], self.top_k))
            top = tuple(self._prediction(i, s) for i, s in ranked)
            active = None
        t3 = time.perf_counter()
        return ClassifyResult(top, StageTimes((t1 - t0) * 1e3, (t2 - t1) * 1e3, (t3 - t2) * 1e3), active)

    def raw_output(self, frame: np.ndarray, source_color: ColorOrder = ColorOrder.BGR) -> np.ndarray:
        """The model's raw output tensor (1, *output shape), in its own dtype (int8 for a full-int8 model), for
        one raw frame taken exactly as classify() takes it. Conversion verifies artifacts through this, so the
        device's frame path (resize, colour swap, encoding into the input tensor) is what verification judges.
        Raises DataError as classify()."""
        return self._infer(frame, source_color)[0]

    def _infer(self, frame: np.ndarray, source_color: ColorOrder) -> tuple[np.ndarray, float]:
        """(raw output, perf_counter time when the input tensor was ready) for one raw frame."""
        fused = self._fused and _colour_frame(frame) and ColorOrder(source_color) != ColorOrder.GRAY
        pixels = None if fused else self.prepare(frame, source_color)  # a bad frame fails here, before any view
        if self._fill_input(frame, source_color, pixels):
            ready = time.perf_counter()
            return self.runner.invoke_in_place(), ready
        batch = self._encode_into_buffer(self.prepare(frame, source_color) if pixels is None else pixels)
        ready = time.perf_counter()
        return self.runner.invoke(batch), ready

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
        from edgecnn.prepchoice import describe_prep  # noqa: PLC0415

        return {**self.runner.describe(), "classes": len(self.labels), "top_k": self.top_k,
                "manifest": self.manifest is not None, "output_kind": self.output_kind.value,
                "preprocessing": describe_prep(self.prep)}

    def close(self) -> None:
        self.runner.close()

    def __enter__(self) -> "Classifier":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _colour_frame(frame: Any) -> bool:
    return (isinstance(frame, np.ndarray) and frame.dtype == np.uint8 and frame.ndim == 3 and frame.shape[2] == 3
            and frame.size > 0)


def _optional_cv2() -> Any:
    try:
        import cv2  # noqa: PLC0415 - already loaded by preprocessing whenever frames are resized
    except ImportError:
        return None
    return cv2
