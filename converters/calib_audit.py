"""A calibration audit: is this data fit to choose int8 ranges with?

int8 accuracy collapses silently when calibration is done on a handful of samples, on samples of only a
few classes, or on data in another range than the model was trained on (0-255 pixels fed to a model
trained on 0-1, or the reverse). Each check gives a Finding; ``problems`` are those that must be fixed.
The preprocessing check is convert's own (converters/prep_check.py), passed in as its PrepReport.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Optional

import numpy as np

MIN_SAMPLES = 50           # fewer gives unstable ranges (the convert pipeline warns below this as well)
RANGE_GROWTH = 0.05        # half the samples missing >5% of a layer's range on average: ranges still "moving"
MAX_PROBE_SAMPLES = 256


class Level(str, Enum):
    OK = "ok"
    WARNING = "warning"
    PROBLEM = "problem"


@dataclass(frozen=True)
class Finding:
    check: str     # samples | classes | ranges-moving | preprocessing | exif
    level: Level
    message: str


@dataclass(frozen=True)
class CalibrationAudit:
    samples: int
    findings: tuple[Finding, ...] = field(default=())
    data_range: tuple[float, float] = (0.0, 0.0)
    range_growth: dict[str, float] = field(default_factory=dict)  # layer -> growth over the second half

    @property
    def problems(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.level == Level.PROBLEM)

    def flagged(self, check: str) -> bool:
        return any(f.check == check and f.level != Level.OK for f in self.findings)

    def to_dict(self) -> dict[str, Any]:
        from edgecnn.manifest import _to_jsonable  # noqa: PLC0415

        return _to_jsonable(self)


def audit(inputs: np.ndarray, labels: Optional[np.ndarray] = None, num_classes: Optional[int] = None,
          model: Any = None, preprocessing: Any = None) -> CalibrationAudit:
    """Audit float model inputs (N, ...) meant for calibration. ``model``: a keras.Model to probe ranges;
    ``preprocessing``: the PrepReport of converters/prep_check.check_preprocessing on the same data."""
    inputs = np.asarray(inputs, dtype=np.float32)
    findings = [check_count(len(inputs))]
    if labels is not None and num_classes:
        findings.append(check_classes(np.asarray(labels), num_classes))
    data_range = (float(inputs.min()), float(inputs.max())) if inputs.size else (0.0, 0.0)
    if preprocessing is not None:
        findings += preprocessing_findings(preprocessing)
    growth: dict[str, float] = {}
    if model is not None and len(inputs) >= 2:
        growth = range_growth(model, inputs[:MAX_PROBE_SAMPLES])
        findings.append(check_growth(growth))
    return CalibrationAudit(len(inputs), tuple(findings), data_range, growth)


def preprocessing_findings(report: Any) -> list[Finding]:
    """convert's preprocessing findings as audit findings: a mismatch is a problem, data hygiene a warning."""
    if not report.warnings:
        return [Finding("preprocessing", Level.OK, report.summary())]
    return [Finding("exif" if f.check == "exif" else "preprocessing",
                    Level.WARNING if f.check == "exif" else Level.PROBLEM, f.line()) for f in report.warnings]


def check_count(count: int) -> Finding:
    if count <= 1:
        return Finding("samples", Level.PROBLEM, f"{count} calibration sample(s): int8 ranges from one image fit that "
                       f"image only; give a few hundred representative samples")
    if count < MIN_SAMPLES:
        return Finding("samples", Level.WARNING, f"only {count} calibration samples (fewer than {MIN_SAMPLES}): "
                       "ranges may not cover real inputs")
    return Finding("samples", Level.OK, f"{count} calibration samples")


def check_classes(labels: np.ndarray, num_classes: int) -> Finding:
    present = set(int(v) for v in np.unique(labels))
    missing = [c for c in range(num_classes) if c not in present]
    if not missing:
        return Finding("classes", Level.OK, f"all {num_classes} classes present")
    shown = ", ".join(str(c) for c in missing[:10]) + (" ..." if len(missing) > 10 else "")
    level = Level.PROBLEM if len(missing) > num_classes // 2 else Level.WARNING
    return Finding("classes", level, f"{len(missing)} of {num_classes} classes have no calibration sample ({shown})")


def range_growth(model: Any, inputs: np.ndarray, orders: int = 16) -> dict[str, float]:
    """Per layer, the share of its activation range (max - min) that the first half of the samples misses.

    Averaged over ``orders`` random orders of the samples: near 0 when half the data already finds the
    range (enough samples), large when every added sample still widens it (too few).
    """
    import keras  # noqa: PLC0415

    layers = [layer for layer in model.layers if layer.output is not None]
    probe = keras.Model(model.inputs, [layer.output for layer in layers])
    with warnings.catch_warnings():  # Keras warns that a bare array is not its ['image'] input structure
        warnings.simplefilter("ignore")
        outputs = probe(inputs, training=False)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    rng = np.random.default_rng(0)
    half = max(1, len(inputs) // 2)
    growth = {}
    for layer, out in zip(layers, outputs):
        flat = np.asarray(out).reshape(len(inputs), -1)
        lows, highs = flat.min(axis=1), flat.max(axis=1)
        span = highs.max() - lows.min()
        if span <= 0:
            growth[layer.name] = 0.0
            continue
        missed = []
        for _ in range(orders):
            part = rng.permutation(len(inputs))[:half]
            missed.append((span - (highs[part].max() - lows[part].min())) / span)
        growth[layer.name] = float(np.mean(missed))
    return growth


def check_growth(growth: dict[str, float]) -> Finding:
    moving = sorted(((g, name) for name, g in growth.items() if g > RANGE_GROWTH), reverse=True)
    if not moving:
        return Finding("ranges-moving", Level.OK, "activation ranges are stable over the second half of the samples")
    worst = ", ".join(f"{name} +{g * 100:.0f}%" for g, name in moving[:3])
    return Finding("ranges-moving", Level.WARNING, f"activation ranges still widen as samples are added ({worst}): "
                   "too few samples; add more calibration data")


