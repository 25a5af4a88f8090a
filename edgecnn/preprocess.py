"""Pre- and post-processing, the one implementation shared by conversion, verification and runners.

Pure numpy except resizing and colour conversion, which use OpenCV (imported when first needed).
Images enter as uint8 arrays: H x W (grey) or H x W x 3 in the ``source_color`` order (frames from
OpenCV are BGR; images loaded by edgecnn.data are RGB). The uint8 -> model-input map is elementwise
over 256 values per channel, so it is a lookup table: one pass whether the model wants float32 or int8.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional, Sequence

import numpy as np

from edgecnn.errors import DataError
from edgecnn.manifest import ColorOrder, Interpolation, Layout, OutputKind, Preprocessing, ResizeMode, TensorSpec

_QRANGE = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}


def _cv2():
    try:
        import cv2  # noqa: PLC0415 - heavy, optional on the core path
    except ImportError:
        from edgecnn.errors import RuntimeMissingError

        raise RuntimeMissingError("OpenCV is needed to resize images", "pip install 'edgecnn[device]'") from None
    return cv2


def convert_color(image: np.ndarray, source: ColorOrder, target: ColorOrder) -> np.ndarray:
    """Return ``image`` (uint8) in ``target`` colour order with an explicit channel axis."""
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        gray = image
        if target == ColorOrder.GRAY:
            return gray[:, :, None]
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise DataError(f"image of shape {image.shape} is neither grey nor colour")
    if image.shape[2] == 4:
        image = image[:, :, :3]
    if target == ColorOrder.GRAY:
        cv2 = _cv2()
        code = cv2.COLOR_BGR2GRAY if source == ColorOrder.BGR else cv2.COLOR_RGB2GRAY
        return cv2.cvtColor(np.ascontiguousarray(image), code)[:, :, None]
    if source == target or source == ColorOrder.GRAY:
        return image
    return image[:, :, ::-1]


def resize_image(image: np.ndarray, height: int, width: int, mode: ResizeMode,
                 interpolation: Interpolation = Interpolation.LINEAR, out: np.ndarray | None = None,
                 pad_value: int = 0) -> np.ndarray:
    """Resize (H, W, C) uint8 to (height, width, C), shrinking with ``interpolation`` (the training pipeline's).

    ``out``: a contiguous (height, width, C) uint8 array to write into (stretch and centre crop); the result is
    ``out`` when it was used, else a new array (or ``image`` itself when it already has the size).
    ``pad_value``: the pixel value letterbox and pad_right fill the rest with."""
    h, w = image.shape[:2]
    if (h, w) == (height, width):
        return image
    cv2 = _cv2()
    channels = image.shape[2]
    if mode == ResizeMode.PAD_RIGHT:
        # PaddleOCR's resize_norm_img: width ceil(height * aspect), at most the input's width.
        new_w = max(1, min(width, int(np.ceil(height * w / h))))
        inner = _cv2_resize(cv2, image, height, new_w, interpolation)
        canvas = np.full((height, width, channels), pad_value, dtype=image.dtype)
        canvas[:, :new_w] = inner.reshape(height, new_w, channels)
        return canvas
    if mode == ResizeMode.CENTER_CROP:
        target_ratio = width / height
        if w / h > target_ratio:
            new_w = max(1, round(h * target_ratio))
            x0 = (w - new_w) // 2
            image = image[:, x0:x0 + new_w]
        else:
            new_h = max(1, round(w / target_ratio))
            y0 = (h - new_h) // 2
            image = image[y0:y0 + new_h]
        h, w = image.shape[:2]
    if mode == ResizeMode.LETTERBOX:
        ratio = min(height / h, width / w)
        new_h, new_w = max(1, round(h * ratio)), max(1, round(w * ratio))
        inner = _cv2_resize(cv2, image, new_h, new_w, interpolation)
        canvas = np.full((height, width, channels), pad_value, dtype=image.dtype)
        y0, x0 = (height - new_h) // 2, (width - new_w) // 2
        canvas[y0:y0 + new_h, x0:x0 + new_w] = inner.reshape(new_h, new_w, channels)
        return canvas
    if out is not None and out.shape == (height, width, channels) and channels in (3, 4):
        written = _cv2_resize(cv2, image, height, width, interpolation, out)
        if written is out:
            return out
        return written.reshape(height, width, channels)
    return _cv2_resize(cv2, image, height, width, interpolation).reshape(height, width, channels)


def _cv2_resize(cv2, image: np.ndarray, height: int, width: int, interpolation: Interpolation,
                out: np.ndarray | None = None) -> np.ndarray:
    h, w = image.shape[:2]
    shrink_area = Interpolation(interpolation) == Interpolation.AREA and (height < h or width < w)
    interp = cv2.INTER_AREA if shrink_area else cv2.INTER_LINEAR
    if out is not None:
        return cv2.resize(np.ascontiguousarray(image), (width, height), dst=out, interpolation=interp)
    return cv2.resize(np.ascontiguousarray(image), (width, height), interpolation=interp)


def prepare_pixels(image: np.ndarray, prep: Preprocessing, source_color: ColorOrder = ColorOrder.RGB) -> np.ndarray:
    """Geometry and colour only: a raw uint8 image -> (H, W, C) uint8 in the model's colour order."""
    if image.dtype != np.uint8:
        raise DataError(f"image dtype is {image.dtype}, expected uint8 pixels",
                        "convert 16-bit or float images to 8-bit first")
    if image.size == 0:
        raise DataError("image is empty (0 pixels)")
    colored = convert_color(image, ColorOrder(source_color), prep.color)
    return resize_image(colored, prep.height, prep.width, prep.resize, prep.interpolation, pad_value=prep.pad_value)


def prepare_batch(images: Sequence[np.ndarray] | np.ndarray, prep: Preprocessing,
                  source_color: ColorOrder = ColorOrder.RGB) -> np.ndarray:
    """Raw uint8 images -> (N, H, W, C) uint8 pixels, ready for an InputEncoder."""
    if isinstance(images, np.ndarray) and images.ndim >= 3 and images.shape[1:3] == (prep.height, prep.width) \
            and _channels(images) == prep.channels and source_color in (prep.color, ColorOrder.GRAY) \
            and images.dtype == np.uint8:
        return images.reshape(images.shape[0], prep.height, prep.width, prep.channels)
    if len(images) == 0:
        raise DataError("no images to preprocess (an empty batch)", "give at least one image")
    return np.stack([prepare_pixels(img, prep, source_color) for img in images])


def _channels(images: np.ndarray) -> int:
    return 1 if images.ndim == 3 else images.shape[3]


def _float_table(prep: Preprocessing) -> np.ndarray:
    """(C, 256) float64: the model's float input for each channel and pixel value."""
    values = np.arange(256, dtype=np.float64)
    if prep.invert:
        values = 255.0 - values
    mean = np.broadcast_to(np.asarray(prep.mean, dtype=np.float64), (prep.channels,))
    std = np.broadcast_to(np.asarray(prep.std, dtype=np.float64), (prep.channels,))
    return (values[None, :] * prep.scale - mean[:, None]) / std[:, None]


def quantize(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Float -> the tensor's integer dtype with its scale and zero point (round half away from zero, as TFLite)."""
    lo, hi = _QRANGE[spec.dtype]
    scaled = np.asarray(x, dtype=np.float64) / spec.scale + spec.zero_point
    q = np.sign(scaled) * np.floor(np.abs(scaled) + 0.5)
    return np.clip(q, lo, hi).astype(spec.dtype)


def dequantize(q: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """A raw tensor -> float32 values, a new array: (q - zero_point) * scale for a quantized one. 8-bit values
    are looked up in a table of the 256 results of that same float32 arithmetic (bit-identical; one pass
    instead of four over a 1,000-class output, per frame)."""
    if not spec.quantized:
        return np.array(q, dtype=np.float32)
    q = np.asarray(q)
    if q.dtype in (np.int8, np.uint8):
        return _dequantize_table(q.dtype.str, spec.scale, spec.zero_point)[q.view(np.uint8)]
    return ((q.astype(np.float32) - spec.zero_point) * spec.scale).astype(np.float32)


@functools.lru_cache(maxsize=64)
def _dequantize_table(dtype: str, scale: float, zero_point: int) -> np.ndarray:
    """(256,) float32, indexed by the raw byte: entry b is the value of the 8-bit code whose byte is b."""
    codes = np.arange(256, dtype=np.uint8).view(np.dtype(dtype))
    table = ((codes.astype(np.float32) - zero_point) * scale).astype(np.float32)
    table.flags.writeable = False
    return table


class InputEncoder(NamedTuple):
    """uint8 pixels (N, H, W, C) -> the model input tensor (float32/float16/int8/uint8) in one table lookup."""

    prep: Preprocessing
    spec: TensorSpec
    table: np.ndarray  # (C, 256) of spec.dtype
    uniform: bool = False  # every channel maps alike: one flat lookup, whatever the channel count

    @classmethod
    def build(cls, prep: Preprocessing, spec: TensorSpec) -> "InputEncoder":
        floats = _float_table(prep)
        table = quantize(floats, spec) if spec.quantized else floats.astype(spec.dtype)
        return cls(prep=prep, spec=spec, table=table, uniform=bool(np.all(table == table[:1])))

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.dtype != np.uint8:
            raise DataError(f"pixels dtype is {pixels.dtype}, expected uint8")
        if self.uniform:
            out = self.table[0][pixels]
        else:
            if pixels.ndim == 0 or pixels.shape[-1] != self.table.shape[0]:
                raise DataError(f"pixels of shape {pixels.shape} do not have {self.table.shape[0]} channels",
                                "preprocess images with prepare_batch first")
            out = self.table[np.arange(self.table.shape[0]), pixels]
        return arrange(out, self.prep.layout)

    def encode_into(self, pixels: np.ndarray, out: np.ndarray, channels_first: bool = False) -> None:
        """One image's (H, W, C) uint8 pixels -> ``out`` (H, W, C), or (C, H, W) with ``channels_first``, of the
        table's dtype, written in place: no allocation, so ``out`` can be the runtime's own input tensor or the
        device's per-frame buffer (a channels-first model's planes are written one by one, never transposed)."""
        # mode="clip" is a no-op for uint8 indices into 256 entries, and lets numpy write straight into out.
        if self.uniform and not channels_first:
            np.take(self.table[0], pixels, out=out, mode="clip")
            return
        for channel in range(pixels.shape[-1]):
            target = out[channel] if channels_first else out[:, :, channel]
            np.take(self.table[0 if self.uniform else channel], pixels[:, :, channel], out=target, mode="clip")


def arrange(encoded: np.ndarray, layout: Layout) -> np.ndarray:
    """(N, H, W, C) encoded pixels -> the model's input layout (a view, except NCHW which is a copy)."""
    layout = Layout(layout)
    if layout == Layout.NHWC:
        return encoded
    if layout == Layout.FLAT:
        return encoded.reshape(encoded.shape[0], -1)
    if layout == Layout.HW:
        return encoded.reshape(encoded.shape[:3])
    return np.ascontiguousarray(encoded.transpose(0, 3, 1, 2))


def to_float(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 pixels -> float32 model input: exactly what the float (Keras) model is fed."""
    spec = TensorSpec(name="input", shape=(), dtype="float32")
    return InputEncoder.build(prep, spec)(pixels)


def encode(x: np.ndarray, prep: Preprocessing, spec: TensorSpec) -> np.ndarray:
    """Model input in the tensor's dtype from uint8 pixels (N, H, W, C), through the one InputEncoder, or from
    already-preprocessed float input (e.g. a float .npy), quantized with the tensor's scale and zero point."""
    if x.dtype == np.uint8:
        return InputEncoder.build(prep, spec)(x)
    return encode_float(x, spec)


def encode_float(x: np.ndarray, spec: TensorSpec) -> np.ndarray:
    """Already-preprocessed float input -> the tensor's dtype (for .npy data given as floats)."""
    return quantize(x, spec) if spec.quantized else np.asarray(x, dtype=spec.dtype)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    shifted = logits - np.max(logits, axis=axis, keepdims=True)
    exp = np.exp(shifted)
    return exp / np.sum(exp, axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return np.where(x >= 0, 1.0 / (1.0 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1.0 + np.exp(-np.abs(x))))


# -- outputs: the one decoder --------------------------------------------------------------------------
# Every consumer of a classifier's output (convert's verification, bench's accuracy, `run`'s scores, the
# web viewer) goes through decode_scores and ranks with top1 / top_k (or decode_top_k, which is those two
# for one frame, ranking an int8 softmax's codes directly), so a head kind is read one way only.
def is_binary(kind: OutputKind, units: int) -> bool:
    """One output unit read as two classes: a sigmoid probability or a logit."""
    return units == 1 and OutputKind(kind) in (OutputKind.BINARY_SIGMOID, OutputKind.LOGITS)


def class_count(kind: OutputKind, units: int) -> int:
    """How many classes (labels) a head of ``units`` output values has: 2 for a one-unit binary head."""
    return 2 if is_binary(kind, units) else int(units)


def decode_scores(raw: np.ndarray, spec: TensorSpec, kind: OutputKind = OutputKind.PROBABILITIES) -> np.ndarray:
    """Raw output tensor (N, ...) -> float32 class scores (N, classes), each in [0, 1].

    probabilities: as dequantized; logits: softmax (one unit: [1 - sigmoid(z), sigmoid(z)]);
    binary_sigmoid: [1 - p, p]; multilabel_sigmoid: the independent scores, never softmaxed.
    """
    raw = np.asarray(raw)
    values = dequantize(raw, spec).reshape(raw.shape[0] if raw.ndim else 1, -1)
    kind = OutputKind(kind)
    if is_binary(kind, values.shape[1]):
        p = sigmoid(values[:, 0]) if kind == OutputKind.LOGITS else values[:, 0].astype(np.float64)
        return np.stack([1.0 - p, p], axis=1).astype(np.float32)
    if kind == OutputKind.LOGITS:
        return softmax(values.astype(np.float64)).astype(np.float32)
    return values  # dequantize made it: float32, and no view of the runtime's buffers


def decode_output(raw: np.ndarray, spec: TensorSpec, kind: OutputKind = OutputKind.PROBABILITIES) -> np.ndarray:
    """Alias of :func:`decode_scores` (class scores, (N, classes) float32)."""
    return decode_scores(raw, spec, kind)


def ranking(scores: np.ndarray) -> np.ndarray:
    """Class indices of each row of (N, classes) scores, best first; ties go to the lower index, except that a
    two-class binary row at exactly p = 0.5 decides for class 1 (the p >= 0.5 rule)."""
    scores = np.asarray(scores)
    order = np.argsort(-scores, axis=-1, kind="stable")
    if scores.shape[-1] == 2:
        tie = scores[..., 1] == scores[..., 0]
        order[tie] = (1, 0)
    return order


def top1(scores: np.ndarray) -> np.ndarray:
    """(N, classes) scores -> (N,) int64 top-1 class indices (the rule of :func:`ranking`)."""
    return ranking(np.atleast_2d(scores))[:, 0].astype(np.int64)


def top_k(scores: np.ndarray, k: int) -> list[tuple[int, float]]:
    """The k best (class index, score) of one score vector, best first (the rule of :func:`ranking`)."""
    scores = np.asarray(scores)
    n = scores.shape[-1]
    k = max(1, min(k, n))
    order = _top_k_order(scores, k) if 2 < n and k < n else None
    if order is None:
        order = ranking(scores[None, :])[0][:k]
    return [(int(i), float(scores[i])) for i in order]


def _top_k_order(scores: np.ndarray, k: int) -> np.ndarray | None:
    """The k best indices of a 1-D score vector by the rule of :func:`ranking`, found without sorting all of it
    (a stable sort of 1,000 scores costs ~50 us per frame, 1 % of a MobileNetV2 invoke): every score at or above
    the k-th largest is a candidate, so ties at the boundary keep their lower-index order. None when NaNs make
    the candidates too few (the caller then ranks everything)."""
    n = scores.shape[0]
    kth = np.partition(scores, n - k)[n - k]
    # Fewer than k scores beat the k-th; the rest are its ties, lowest index first. An int8 softmax has
    # hundreds of classes tied at 0, often inside the top 5: they are taken in index order, not sorted.
    over = np.flatnonzero(scores > kth)
    tied = np.flatnonzero(scores == kth)[:k - over.size]
    if over.size + tied.size < k:
        return None
    return np.concatenate((over[np.argsort(-scores[over].astype(np.float64), kind="stable")], tied))


def decode_top_k(raw: np.ndarray, spec: TensorSpec, kind: OutputKind, k: int) -> list[tuple[int, float]]:
    """The k best (class index, score) of one frame's raw output (1, classes): top_k(decode_scores(raw)[0], k),
    the same indices, order and float32 scores, by code_ranker's shortcut where it applies."""
    rank = code_ranker(spec, kind)
    return rank(raw, k) if rank is not None else top_k(decode_scores(raw, spec, kind)[0], k)


def code_ranker(spec: TensorSpec, kind: OutputKind) -> Optional[Callable[[np.ndarray, int], list[tuple[int, float]]]]:
    """For a probabilities head with an 8-bit output (a quantized classifier's int8 softmax): a function
    ``(raw (1, classes), k) -> [(class index, score)]`` equal to top_k(decode_scores(raw)[0], k), else None.

    The codes rank as their scores do (scale > 0), so they are ranked directly and only the k winners are
    dequantized. The ranking works on the output's bytes (bytes.translate, bytes.find: a few C calls), not with
    numpy: after an invoke has pushed numpy's code and data out of the caches, every numpy call on a frame costs
    tens of microseconds (a stable argsort of 1,000 codes: ~70 us against ~30 us for this, on a 2-core x86;
    benchmarks/results/runner_overhead.md). Built once per model."""
    if (OutputKind(kind) != OutputKind.PROBABILITIES or not spec.quantized or spec.scale <= 0
            or spec.dtype not in ("int8", "uint8")):
        return None
    scores_of = _dequantize_table(np.dtype(spec.dtype).str, spec.scale, spec.zero_point).tolist()
    # Byte b of a code -> its rank key: ascending keys are descending values (int8: 127..0, -1..-128).
    flip = 0x7F if spec.dtype == "int8" else 0xFF
    keys_of = bytes(b ^ flip for b in range(256))

    def rank(raw: np.ndarray, k: int) -> list[tuple[int, float]]:
        raw = np.asarray(raw)
        if raw.size <= 2 or raw.dtype.itemsize != 1:  # two classes: the p >= 0.5 tie rule applies
            return top_k(decode_scores(raw, spec, kind)[0], k)
        codes = raw.tobytes()
        keys = codes.translate(keys_of)
        k = max(1, k)
        best: list[tuple[int, float]] = []
        # Each key's classes in index order, best key first: the stable order of decode_scores + top_k.
        for key in range(min(keys), 256):
            at = keys.find(key)
            while at >= 0:
                best.append((at, scores_of[codes[at]]))
                if len(best) == k:
                    return best
                at = keys.find(key, at + 1)
        return best

    return rank


def above(scores: np.ndarray, threshold: float) -> list[tuple[int, float]]:
    """Every (class index, score) of one multi-label score vector at or over ``threshold``, best first."""
    order = ranking(np.asarray(scores)[None, :])[0]
    return [(int(i), float(scores[i])) for i in order if scores[i] >= threshold]
