"""The preprocessings a model may have been trained with, and float arrays matched to the range each gives.

Candidates are the standard ones (keras.applications' "tf", "torch" and "caffe" modes, x/255, x) and the
given preprocessing with its colours swapped, each in the given geometry; each is described as a formula on
pixels x with the range it gives ("x/127.5 - 1 (-1..1)") and carries the `edgecnn convert` options that
give it. Float arrays (.npy/.npz, model-ready input) are matched to these ranges by their min and max.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

from edgecnn.manifest import ColorOrder, Preprocessing
from edgecnn.preprocess import _float_table, to_float

from edgecnn.converters.known_models import CAFFE_MODE, TF_MODE, TORCH_MODE, cli_options

RANGE_FIT = 0.1       # arrays whose min and max lie within this share of a range of its ends "fit" it
RANGE_FAR = 0.25      # ... and are mismatched with the manifest's range beyond this share


@dataclass(frozen=True)
class Candidate:
    name: str            # how the preprocessing reads: "x/255 (0..1)"
    prep: Preprocessing
    options: str         # the convert options that give it


class CandidateInputs:
    """uint8 pixels (N, H, W, C) as float32 model input under one candidate, made slice by slice (``[a:b]``);
    ``swap``: the candidate's colour order is the reverse of the pixels'."""

    def __init__(self, pixels: np.ndarray, prep: Preprocessing, shape: tuple[int, ...], swap: bool) -> None:
        self.pixels, self.prep, self.shape, self.swap = pixels, prep, shape, swap

    def __len__(self) -> int:
        return len(self.pixels)

    def __getitem__(self, part: slice) -> np.ndarray:
        pixels = self.pixels[part]
        pixels = np.ascontiguousarray(pixels[..., ::-1]) if self.swap else pixels
        return to_float(pixels, self.prep).reshape(len(pixels), *self.shape).astype(np.float32)


# -- candidates ------------------------------------------------------------------------------------
def describe(prep: Preprocessing, with_range: bool = True) -> str:
    """A preprocessing as a formula on pixels x with the range it gives: "x/127.5 - 1 (-1..1)"."""
    inverse = 1.0 / prep.scale
    text = "x" if prep.scale == 1 else f"x/{inverse:.6g}" if abs(inverse - round(inverse, 1)) < 1e-6 else f"x*{prep.scale:.3g}"
    mean, std = tuple(prep.mean), tuple(prep.std)
    if mean == CAFFE_MODE.mean:
        text += " - ImageNet mean"
    elif mean == TORCH_MODE.mean:
        text = f"({text} - ImageNet mean)"
    elif mean != (0.0,):
        text += f" - {_values(mean)}"
    if std == TORCH_MODE.std:
        text += " / ImageNet std"
    elif std != (1.0,):
        text = f"({text}) / {_values(std)}"
    if prep.invert:
        text = text.replace("x", "(255 - x)", 1)
    text += ", BGR" if prep.color == ColorOrder.BGR else ""
    return f"{text} ({span(*value_range(prep))})" if with_range else text


def value_range(prep: Preprocessing) -> tuple[float, float]:
    """The float range ``prep`` (a manifest Preprocessing) gives the model from 0..255 pixels."""
    table = _float_table(prep)
    return float(table.min()), float(table.max())


def span(lo: float, hi: float) -> str:
    return f"{_num(lo)}..{_num(hi)}"


def candidates(prep: Preprocessing) -> tuple[Candidate, ...]:
    """The standard preprocessings (keras.applications' three modes, x/255, x; for colour inputs the plain
    scales in both colour orders) and the given one with its colours swapped, in ``prep``'s geometry; each
    distinct from ``prep`` and from each other."""
    grey = prep.channels == 1
    swap = ColorOrder.RGB if prep.color == ColorOrder.BGR else ColorOrder.BGR
    scales = [dict(scale=1 / 255, mean=(0.0,), std=(1.0,)), dict(scale=1.0, mean=(0.0,), std=(1.0,)),
              dict(scale=TF_MODE.scale, mean=TF_MODE.mean, std=(1.0,))]
    made = [replace(prep, **scale) for scale in scales]
    if not grey:
        # Each plain scale in the other colour order too: a caffe-mode (BGR) default, or a --color bgr given
        # by mistake, may hide a model trained on x/255 RGB, and one trained on cv2.imread frames is BGR.
        made += [replace(prep, **scale, color=swap) for scale in scales]
        made += [replace(prep, scale=TORCH_MODE.scale, mean=TORCH_MODE.mean, std=TORCH_MODE.std, color=ColorOrder.RGB),
                 replace(prep, scale=CAFFE_MODE.scale, mean=CAFFE_MODE.mean, std=(1.0,), color=ColorOrder.BGR),
                 replace(prep, color=swap)]
    chosen: list[Candidate] = []
    for option in made:
        if not any(same(option, seen) for seen in [prep] + [c.prep for c in chosen]):
            chosen.append(Candidate(describe(option), option, options_for(option, prep)))
    return tuple(chosen)


def options_for(target: Preprocessing, given: Preprocessing) -> str:
    """The convert options that turn ``given`` into ``target`` (mean and std named whenever either differs)."""
    explicit = tuple(given.mean) != (0.0,) or tuple(given.std) != (1.0,)
    return cli_options(target.scale, tuple(target.mean), tuple(target.std),
                       target.color if target.color != given.color else None, explicit=explicit)


def fitting(lo: float, hi: float, preps: list[Preprocessing]) -> Optional[Preprocessing]:
    """The preprocessing whose range the values lo..hi fit best, if any fits within RANGE_FIT."""
    errors = [(_fit_error(lo, hi, value_range(p)), i) for i, p in enumerate(preps)]
    best, index = min(errors)
    return preps[index] if best <= RANGE_FIT else None


def _fit_error(lo: float, hi: float, expected: tuple[float, float]) -> float:
    width = max(expected[1] - expected[0], 1e-12)
    return max(abs(lo - expected[0]), abs(hi - expected[1])) / width


def range_mismatch(lo: float, hi: float, prep: Preprocessing) -> bool:
    """Arrays spanning lo..hi are not what ``prep`` gives from pixels: outside its range, far narrower, or
    fitting another standard range while missing this one's ends."""
    e_lo, e_hi = value_range(prep)
    width = e_hi - e_lo
    if lo < e_lo - RANGE_FIT * width or hi > e_hi + RANGE_FIT * width or (hi - lo) < RANGE_FAR * width:
        return True
    other = fitting(lo, hi, [c.prep for c in candidates(prep)])
    return other is not None and _fit_error(lo, hi, (e_lo, e_hi)) > RANGE_FAR


def pixels_from_arrays(inputs: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """uint8 pixels (N, H, W, C) that ``prep`` would turn into ``inputs`` (float, model-ready): the inverse map."""
    x = np.asarray(inputs, dtype=np.float64).reshape(len(inputs), prep.height, prep.width, prep.channels)
    mean = np.broadcast_to(np.asarray(prep.mean, dtype=np.float64), (prep.channels,))
    std = np.broadcast_to(np.asarray(prep.std, dtype=np.float64), (prep.channels,))
    pixels = (x * std + mean) / prep.scale
    if prep.invert:
        pixels = 255.0 - pixels
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def same(a: Preprocessing, b: Preprocessing) -> bool:
    """Whether ``a`` and ``b`` feed the model the same values from every image (colour order and value map)."""
    tables = [np.broadcast_to(_float_table(p), (p.channels, 256)) for p in (a, b)]
    return a.color == b.color and a.invert == b.invert and np.allclose(tables[0], tables[1], atol=1e-6)


def _num(value: float) -> str:
    text = f"{value:.3g}"
    return "0" if text == "-0" else text


def _values(values: tuple[float, ...]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")" if len(values) > 1 else f"{values[0]:g}"
