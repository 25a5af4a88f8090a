"""The measurement loop: warm-up, then back-to-back calls for N runs or S seconds; load and first-call time; RSS.

Each sample is one call timed with ``time.perf_counter_ns`` around nothing but the call, so the
figure is comparable with a hand-written ``perf_counter`` loop (see benchmarks/honesty.py).
"""
from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, Optional

import numpy as np

from edgecnn.errors import UsageError

MIN_WARMUP = 10
MIN_DURATION_SAMPLES = 10  # a --duration run still takes at least this many samples (as MLPerf Tiny)


@dataclass(frozen=True)
class TimingPlan:
    """How many calls to time: ``runs`` back-to-back calls, or as many as fit in ``duration_s`` seconds."""

    warmup: int = MIN_WARMUP
    runs: Optional[int] = 200
    duration_s: Optional[float] = None

    def validate(self) -> None:
        if self.warmup < MIN_WARMUP:
            raise UsageError(f"--warmup {self.warmup} is below {MIN_WARMUP}",
                             f"use at least {MIN_WARMUP} warm-up runs so caches and thread pools settle")
        if (self.runs is None) == (self.duration_s is None):
            raise UsageError("give either --runs or --duration, not both")
        if self.runs is not None and self.runs < 1:
            raise UsageError(f"--runs {self.runs} is not positive")
        if self.duration_s is not None and self.duration_s <= 0:
            raise UsageError(f"--duration {self.duration_s} is not positive")


def warm_up(call: Callable[[], Any], count: int) -> None:
    for _ in range(count):
        call()


def time_calls(call: Callable[[], Any], plan: TimingPlan) -> np.ndarray:
    """Warm up, then time each call; returns the samples in ms, in the order measured."""
    warm_up(call, plan.warmup)
    if plan.runs is not None:
        return _time_count(call, plan.runs)
    return _time_duration(call, float(plan.duration_s or 0.0))


def _time_count(call: Callable[[], Any], runs: int) -> np.ndarray:
    samples = np.empty(runs, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(runs):
        start = clock()
        call()
        samples[i] = clock() - start
    return samples / 1e6


def _time_duration(call: Callable[[], Any], seconds: float) -> np.ndarray:
    samples: list[int] = []
    clock = time.perf_counter_ns
    deadline = clock() + int(seconds * 1e9)
    append = samples.append
    while True:
        start = clock()
        call()
        end = clock()
        append(end - start)
        if end >= deadline and len(samples) >= MIN_DURATION_SAMPLES:
            break
    return np.asarray(samples, dtype=np.float64) / 1e6


def time_once(call: Callable[[], Any]) -> tuple[Any, float]:
    """Run ``call`` once; return its result and the elapsed ms (load time, first inference)."""
    start = time.perf_counter_ns()
    result = call()
    return result, (time.perf_counter_ns() - start) / 1e6


def time_throughput(call: Callable[[], Any], batch: int, plan: TimingPlan) -> tuple[float, np.ndarray]:
    """Offline mode: batches back to back; returns (images per second over the whole run, per-batch ms)."""
    warm_up(call, plan.warmup)
    start = time.perf_counter_ns()
    samples = _time_offline(call, plan)
    total_s = (time.perf_counter_ns() - start) / 1e9
    return (batch * samples.size / total_s if total_s > 0 else 0.0), samples


def _time_offline(call: Callable[[], Any], plan: TimingPlan) -> np.ndarray:
    if plan.runs is not None:
        return _time_count(call, max(1, plan.runs))
    return _time_duration(call, float(plan.duration_s or 0.0))


def current_rss_mb() -> float:
    """Resident set size now, in MiB (Linux /proc; psutil elsewhere; 0 when neither is available)."""
    try:
        with open("/proc/self/statm", encoding="ascii") as handle:
            pages = int(handle.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # noqa: PLC0415

        return psutil.Process().memory_info().rss / 2**20
    except ImportError:
        return 0.0


def peak_rss_mb() -> float:
    """The process's peak resident set size so far, in MiB (getrusage; its unit is KiB on Linux, bytes on macOS)."""
    try:
        import resource  # noqa: PLC0415 - not on Windows
    except ImportError:
        return current_rss_mb()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak_mb = peak / 2**20 if sys.platform == "darwin" else peak / 1024
    # Linux updates its high-water mark lazily (at some memory events), so it can trail the RSS of this moment.
    return max(peak_mb, current_rss_mb())
