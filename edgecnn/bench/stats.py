"""Latency statistics: percentiles, throughput, and run-to-run variation across repeated blocks.

Pure numpy. Latencies are in milliseconds. Percentiles use numpy's default (linear interpolation),
the same definition a reader gets from ``numpy.percentile`` on the raw samples in the JSON.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from edgecnn.errors import DataError

DEFAULT_BLOCKS = 5
DEFAULT_UNSTABLE_CV = 0.10  # block medians varying by more than 10 % (coefficient of variation) is flagged


@dataclass(frozen=True)
class LatencyStats:
    """Summary of back-to-back single-inference latencies (ms)."""

    count: int
    p50: float
    p90: float
    p99: float
    mean: float
    std: float
    min: float
    max: float
    images_per_s: float  # 1000 / mean x batch: what back-to-back runs actually achieved
    block_medians: tuple[float, ...]  # p50 of each consecutive block of samples
    variation: float  # coefficient of variation of the block medians (0 = identical blocks)
    unstable: bool

    def to_dict(self) -> dict:
        return {"count": self.count, "p50": self.p50, "p90": self.p90, "p99": self.p99, "mean": self.mean,
                "std": self.std, "min": self.min, "max": self.max, "images_per_s": self.images_per_s,
                "block_medians": list(self.block_medians), "variation": self.variation, "unstable": self.unstable}


def summarize(samples_ms: Sequence[float] | np.ndarray, batch: int = 1, blocks: int = DEFAULT_BLOCKS,
              unstable_cv: float = DEFAULT_UNSTABLE_CV) -> LatencyStats:
    """Statistics of ``samples_ms`` (in measurement order); ``batch`` images per sample."""
    samples = np.asarray(samples_ms, dtype=np.float64)
    if samples.size == 0:
        raise DataError("no latency samples to summarize", "run at least one timed inference")
    if not np.all(np.isfinite(samples)) or np.any(samples < 0):
        raise DataError("latency samples contain negative or non-finite values")
    p50, p90, p99 = (float(v) for v in np.percentile(samples, [50, 90, 99]))
    mean = float(samples.mean())
    medians = block_medians(samples, blocks)
    variation = variation_of(medians)
    return LatencyStats(
        count=int(samples.size), p50=p50, p90=p90, p99=p99, mean=mean, std=float(samples.std()),
        min=float(samples.min()), max=float(samples.max()),
        images_per_s=(1000.0 * batch / mean) if mean > 0 else 0.0,
        block_medians=tuple(float(m) for m in medians), variation=variation,
        unstable=is_unstable(variation, len(medians), unstable_cv),
    )


def block_medians(samples: np.ndarray, blocks: int) -> np.ndarray:
    """Median of each of ``blocks`` consecutive, equal-sized blocks (fewer when there are few samples).

    Consecutive blocks catch drift over the run (thermal throttling, a neighbour starting work), which
    shuffled resampling would hide.
    """
    blocks = max(1, min(int(blocks), samples.size // 3 or 1))
    return np.array([float(np.median(chunk)) for chunk in np.array_split(samples, blocks)])


def variation_of(medians: np.ndarray) -> float:
    """Coefficient of variation (std / mean) of the block medians; 0 with a single block."""
    if medians.size < 2:
        return 0.0
    mean = float(np.mean(medians))
    return float(np.std(medians) / mean) if mean > 0 else 0.0


def is_unstable(variation: float, blocks: int, threshold: float = DEFAULT_UNSTABLE_CV) -> bool:
    """Unstable when blocks disagree by more than ``threshold``; a single block cannot show variation, so is not flagged."""
    return blocks >= 2 and variation > threshold


def ratio(numerator: Optional[float], denominator: Optional[float]) -> Optional[float]:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return float(numerator) / float(denominator)
