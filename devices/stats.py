"""Live statistics in bounded memory: rolling percentiles per stage and a rolling FPS.

Each stage keeps its last ``window`` values in a fixed numpy ring, so a run of any length uses the same
memory, and the percentiles describe recent behaviour (what a live display should show).
"""
from __future__ import annotations

import time
from typing import Iterable, Optional

import numpy as np

STAGES = ("capture", "preprocess", "inference", "postprocess")


class RollingWindow:
    """The last ``size`` values of one measurement; percentiles over them."""

    def __init__(self, size: int = 1000) -> None:
        self._values = np.zeros(max(1, size), dtype=np.float64)
        self._count = 0

    def add(self, value: float) -> None:
        self._values[self._count % self._values.shape[0]] = value
        self._count += 1

    def __len__(self) -> int:
        return min(self._count, self._values.shape[0])

    def percentile(self, q: float) -> Optional[float]:
        """numpy's default (linear) percentile, computed here: np.percentile imports numpy.ma and
        numpy.matrixlib on first use, a tenth of a second added to a one-image run."""
        filled = len(self)
        if filled == 0:
            return None
        ordered = np.sort(self._values[:filled])
        position = (filled - 1) * min(max(q, 0.0), 100.0) / 100.0
        low = int(position)
        high = min(low + 1, filled - 1)
        return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


class FpsMeter:
    """Frames per second over the last ``horizon`` seconds of frame timestamps (monotonic)."""

    def __init__(self, size: int = 256, horizon: float = 2.0) -> None:
        self._times = np.zeros(size, dtype=np.float64)
        self._count = 0
        self._horizon = horizon

    def tick(self, now: Optional[float] = None) -> None:
        self._times[self._count % self._times.shape[0]] = time.monotonic() if now is None else now
        self._count += 1

    def fps(self, now: Optional[float] = None) -> float:
        filled = min(self._count, self._times.shape[0])
        if filled < 2:
            return 0.0
        now = time.monotonic() if now is None else now
        times = self._times[:filled]
        recent = np.sort(times[times >= now - self._horizon])
        if recent.shape[0] < 2 or recent[-1] <= recent[0]:
            return 0.0
        return float((recent.shape[0] - 1) / (recent[-1] - recent[0]))


class LiveStats:
    """Per-stage rolling milliseconds, FPS and frame counts of one live run."""

    def __init__(self, stages: Iterable[str] = STAGES, window: int = 1000) -> None:
        self.windows = {stage: RollingWindow(window) for stage in stages}
        self.meter = FpsMeter()
        self.frames = 0
        self.started = time.monotonic()
        self._first_done: Optional[float] = None
        self._last_done: Optional[float] = None

    def record(self, ms: dict[str, float], now: Optional[float] = None) -> None:
        for stage, value in ms.items():
            window = self.windows.get(stage)
            if window is not None:
                window.add(value)
        self.frames += 1
        self.meter.tick(now)
        done = time.monotonic() if now is None else now
        if self._first_done is None:
            self._first_done = done
        self._last_done = done

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def mean_fps(self) -> float:
        """Frames per second between the first and the last frame done: (frames - 1) / that span. Not frames /
        elapsed, which overstates a short run whose first frame was waiting when the clock started (a source
        opened while the model loaded); 0.0 with fewer than two frames, where there is no rate."""
        if self.frames < 2 or self._first_done is None or self._last_done is None:
            return 0.0
        span = self._last_done - self._first_done
        return (self.frames - 1) / span if span > 0 else 0.0

    def snapshot(self) -> dict[str, object]:
        """A JSON-ready view: fps, frames, and p50/p90 ms per stage."""
        stages = {stage: {"p50": _round(w.percentile(50)), "p90": _round(w.percentile(90))}
                  for stage, w in self.windows.items()}
        return {"fps": round(self.meter.fps(), 2), "mean_fps": round(self.mean_fps(), 2), "frames": self.frames,
                "elapsed_s": round(self.elapsed(), 2), "ms": stages}


def _round(value: Optional[float]) -> Optional[float]:
    return None if value is None else round(value, 3)
