"""The preprocessing, label and output options shared by `run` and `bench` (one home, one parser).

``@prep_options`` adds them to a command; ``prep_choice(options)`` turns what was given into an
edgecnn.prepchoice.PrepChoice (None for each option left out: the manifest's value, else the file's, else an
assumption that is reported). ``number`` / ``numbers`` parse values such as ``1/255`` (also used by convert).
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import click

from edgecnn.errors import UsageError

RESIZE_MODES = ("stretch", "center_crop", "letterbox", "pad_right")
OUTPUT_KINDS = ("probabilities", "logits", "binary_sigmoid", "multilabel_sigmoid")
PREP_KEYS = ("size", "color", "resize", "interpolation", "scale", "mean", "std", "invert", "layout", "pad_value")

_OPTIONS = (
    click.option("--size", default=None, metavar="HxW",
                 help="Input size, when the file does not give it (a dynamic H/W) or to override a manifest's."),
    click.option("--color", type=click.Choice(["rgb", "bgr", "gray"]), default=None,
                 help="Channel order the model was trained on (default: the manifest's, else rgb for 3 channels)."),
    click.option("--resize", type=click.Choice(RESIZE_MODES), default=None,
                 help="How a frame is fitted to the input; pad_right: fit the height, pad on the right (text lines)."),
    click.option("--interpolation", type=click.Choice(["linear", "area"]), default=None,
                 help="How larger frames are shrunk (default linear)."),
    click.option("--scale", default=None, help="x = (pixel*scale - mean)/std; e.g. 1/255 (the default) or 1/127.5."),
    click.option("--mean", default=None, metavar="M[,M,M]", help="Per-channel mean, after scaling."),
    click.option("--std", default=None, metavar="S[,S,S]", help="Per-channel std, after the mean."),
    click.option("--invert", is_flag=True, default=None, help="Invert pixels (white digit on black, as MNIST)."),
    click.option("--layout", type=click.Choice(["nhwc", "nchw"]), default=None,
                 help="Where the input holds the channels, when its shape does not tell (default: from the shape)."),
    click.option("--pad-value", "pad_value", type=click.IntRange(0, 255), default=None,
                 help="Pixel value letterbox / pad_right pad with (default 0)."),
    click.option("--labels", type=click.Path(dir_okay=False), default=None,
                 help="Labels file, one per line (default: the manifest's, else the class indices)."),
    click.option("--output-kind", "output_kind", type=click.Choice(OUTPUT_KINDS), default=None,
                 help="What the model outputs (default: the manifest's, else read from the file's final op)."),
)


def prep_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """Add the shared preprocessing / label / output-kind options to a click command."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def prep_choice(options: dict[str, Any]):
    """The given preprocessing options (keyword arguments of a command) as a PrepChoice."""
    from edgecnn.manifest import ColorOrder, Interpolation, Layout, ResizeMode  # noqa: PLC0415
    from edgecnn.prepchoice import PrepChoice  # noqa: PLC0415

    scale = options.get("scale")
    return PrepChoice(
        size=parse_size(options["size"]) if options.get("size") else None,
        color=ColorOrder(options["color"]) if options.get("color") else None,
        resize=ResizeMode(options["resize"]) if options.get("resize") else None,
        interpolation=Interpolation(options["interpolation"]) if options.get("interpolation") else None,
        scale=number(str(scale), "--scale") if scale is not None else None,
        mean=numbers(options.get("mean"), "--mean"), std=numbers(options.get("std"), "--std"),
        invert=True if options.get("invert") else None,
        layout=Layout(options["layout"]) if options.get("layout") else None, pad_value=options.get("pad_value"))


def output_kind(options: dict[str, Any]):
    from edgecnn.manifest import OutputKind  # noqa: PLC0415

    return OutputKind(options["output_kind"]) if options.get("output_kind") else None


def parse_size(text: str, option: str = "--size", example: str = "224x224") -> tuple[int, int]:
    """"HxW" (or "WxH" for --capture-size) -> two positive integers in the order written."""
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        form = "WxH" if option == "--capture-size" else "HxW"
        raise UsageError(f"{option} '{text}' is not {form}", f"for example {option} {example}")
    return int(parts[0]), int(parts[1])


def number(text: str, option: str) -> float:
    """A float, also written as a fraction ("1/255")."""
    try:
        if "/" in text:
            top, bottom = text.split("/", 1)
            value = float(top) / float(bottom)
        else:
            value = float(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"{option} '{text}' is not a number", "write e.g. 0.5 or 1/255") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise UsageError(f"{option} '{text}' is not a finite number", "write e.g. 0.5 or 1/255")
    return value


def numbers(text: Optional[str], option: str) -> Optional[tuple[float, ...]]:
    """One value or one per channel, comma- or space-separated; fractions allowed."""
    if text is None:
        return None
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not parts:
        raise UsageError(f"{option} is empty", "give one value or one per channel, comma-separated")
    return tuple(number(p, option) for p in parts)
