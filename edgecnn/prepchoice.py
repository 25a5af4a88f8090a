"""Preprocessing for a model file that carries no manifest: what the user gave, what the file says, what is assumed.

A foreign .tflite or .onnx file (TFLiteConverter, a model zoo, a PyTorch export) says its input shape, and so
its layout and, when static, its height and width; it does not say its colour order or pixel scaling. A
``PrepChoice`` holds the options the user gave (None: not given); ``resolve`` completes them from the model's
input shape and names every value that was assumed, so `run` and `bench` can warn that they guessed.
Given options also override a manifest's preprocessing (``over``).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional, Sequence

from edgecnn.errors import ManifestError, UsageError
from edgecnn.manifest import ColorOrder, Interpolation, Layout, Preprocessing, ResizeMode

DEFAULT_SCALE = 1.0 / 255.0


@dataclass(frozen=True)
class PrepChoice:
    """Preprocessing options as given on the command line; None for each one not given."""

    size: Optional[tuple[int, int]] = None  # (height, width)
    color: Optional[ColorOrder] = None
    resize: Optional[ResizeMode] = None
    interpolation: Optional[Interpolation] = None
    scale: Optional[float] = None
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    invert: Optional[bool] = None
    layout: Optional[Layout] = None
    pad_value: Optional[int] = None

    def given(self) -> bool:
        return any(getattr(self, f.name) is not None for f in dataclasses.fields(self))

    def over(self, prep: Preprocessing) -> Preprocessing:
        """``prep`` (a manifest's) with every given option replacing its value."""
        changes = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                   if f.name != "size" and getattr(self, f.name) is not None}
        if self.size is not None:
            changes["height"], changes["width"] = self.size
        out = dataclasses.replace(prep, **changes)
        out.validate()
        return out

    def resolve(self, input_shape: Sequence[int], name: str = "the model") -> tuple[Preprocessing, tuple[str, ...]]:
        """Complete the options from the model's input shape (without the batch axis; -1 for a dynamic size).

        Returns the preprocessing and the names of the values assumed (not given, not read from the file).
        Raises UsageError when the layout is ambiguous or the size is dynamic and not given, ManifestError when a
        given option contradicts the file."""
        shape = tuple(int(d) for d in input_shape)
        layout = self.layout or detect_layout(shape)
        if layout is None:
            raise UsageError(f"{name} takes input {shape}: cannot tell which axis holds the colour channels",
                             "give --layout nchw or --layout nhwc")
        channels, height, width = _geometry(shape, layout, name)
        if self.size is not None:
            if (height not in (None, self.size[0])) or (width not in (None, self.size[1])):
                raise ManifestError(f"--size {self.size[0]}x{self.size[1]} given but {name} takes "
                                    f"{height}x{width} ({layout.value} input {shape})", "leave --size out: the file gives it")
            height, width = self.size
        if height is None or width is None:
            raise UsageError(f"{name} takes input {shape} with a dynamic height and width",
                             "dynamic H/W: give --size HxW, the size the model was trained at")
        guessed = []
        color = self.color
        if color is None:
            color = ColorOrder.GRAY if channels == 1 else ColorOrder.RGB
            if channels != 1:
                guessed.append("color rgb")
        elif (color == ColorOrder.GRAY) != (channels == 1):
            raise ManifestError(f"--color {color.value} given but {name} takes {channels} channel(s)",
                                "use --color gray for 1 channel, rgb or bgr for 3")
        if self.scale is None and self.mean is None and self.std is None:
            guessed.append("scale 1/255, mean 0, std 1")
        if self.resize is None:
            guessed.append("resize stretch")
        if layout == Layout.HW and channels != 1:
            raise ManifestError(f"{name} takes an (H, W) input: a grey image", "use --color gray")
        prep = Preprocessing(
            height=height, width=width, color=color, resize=self.resize or ResizeMode.STRETCH,
            interpolation=self.interpolation or Interpolation.LINEAR,
            scale=DEFAULT_SCALE if self.scale is None else self.scale, mean=self.mean or (0.0,), std=self.std or (1.0,),
            invert=bool(self.invert), layout=layout, pad_value=self.pad_value or 0)
        prep.validate()
        return prep, tuple(guessed)


def detect_layout(shape: Sequence[int]) -> Optional[Layout]:
    """The layout of an image input (without the batch axis): a channel axis of size 1 or 3 where the other axes
    are larger or dynamic (-1). None when both ends could be the channel axis (e.g. (3, 3, 3)) or none can."""
    shape = tuple(int(d) for d in shape)
    if len(shape) == 1:
        return Layout.FLAT
    if len(shape) == 2:
        return Layout.HW
    if len(shape) != 3:
        return None
    first, last = shape[0] in (1, 3), shape[2] in (1, 3)
    if first and not last:
        return Layout.NCHW
    if last and not first:
        return Layout.NHWC
    return None


def _geometry(shape: tuple[int, ...], layout: Layout, name: str) -> tuple[int, Optional[int], Optional[int]]:
    """(channels, height or None when dynamic, width or None) of an input of ``layout``."""
    def size(d: int) -> Optional[int]:
        return d if d > 0 else None

    expected = {Layout.NHWC: 3, Layout.NCHW: 3, Layout.HW: 2, Layout.FLAT: 1}[layout]
    if len(shape) != expected:
        raise ManifestError(f"--layout {layout.value} given but {name} takes input {shape}",
                            "leave --layout out, or give the layout of that shape")
    if layout == Layout.NHWC:
        channels, height, width = shape[2], size(shape[0]), size(shape[1])
    elif layout == Layout.NCHW:
        channels, height, width = shape[0], size(shape[1]), size(shape[2])
    elif layout == Layout.HW:
        channels, height, width = 1, size(shape[0]), size(shape[1])
    else:  # a flat vector: a square grey image (an MLP on 28x28 -> 784) unless --size says otherwise
        side = int(round(shape[0] ** 0.5)) if shape[0] > 0 else 0
        return 1, (side if side * side == shape[0] and side else None), (side if side * side == shape[0] and side else None)
    if channels not in (1, 3):
        raise ManifestError(f"{name} takes input {shape}, {channels} channels as {layout.value}",
                            "edgecnn feeds grey (1) or colour (3) images; check --layout")
    return channels, height, width


def describe_prep(prep: Preprocessing) -> str:
    """One short line: "48x192 bgr pad_right, (x*1/255 - 0.5) / 0.5, nchw"."""
    def values(v: Sequence[float]) -> str:
        return ",".join(f"{x:g}" for x in v)

    scale = "1/255" if abs(prep.scale - DEFAULT_SCALE) < 1e-12 else f"{prep.scale:g}"
    if abs(prep.scale - 1 / 127.5) < 1e-12:
        scale = "1/127.5"
    resize = prep.resize.value + (f" pad {prep.pad_value}" if prep.pad_value and prep.resize in
                                  (ResizeMode.LETTERBOX, ResizeMode.PAD_RIGHT) else "")
    return (f"{prep.height}x{prep.width} {prep.color.value} {resize}, (x*{scale} - {values(prep.mean)}) / "
            f"{values(prep.std)}{', inverted' if prep.invert else ''}, {prep.layout.value}")
