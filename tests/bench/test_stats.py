"""Latency statistics and run-to-run variation: pure numpy, checked against numpy's own definitions."""
from __future__ import annotations

import numpy as np
import pytest

from edgecnn.bench.stats import block_medians, is_unstable, summarize
from edgecnn.errors import DataError


def test_percentiles_and_throughput_match_numpy():
    rng = np.random.default_rng(1)
    samples = rng.gamma(4.0, 0.5, size=1000)
    stats = summarize(samples, batch=4)
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    assert (stats.p50, stats.p90, stats.p99) == (p50, p90, p99)
    assert stats.mean == pytest.approx(samples.mean())
    assert stats.std == pytest.approx(samples.std())
    assert (stats.min, stats.max, stats.count) == (samples.min(), samples.max(), 1000)
    assert stats.images_per_s == pytest.approx(4 * 1000.0 / samples.mean())


def test_steady_samples_are_stable_and_drift_is_flagged():
    rng = np.random.default_rng(2)
    steady = 1.0 + rng.normal(0, 0.01, size=500)
    assert not summarize(steady).unstable
    # The second half runs 40 % slower (a neighbour started, or the CPU throttled): blocks disagree.
    drift = np.concatenate([steady[:250], steady[250:] * 1.4])
    stats = summarize(drift)
    assert stats.unstable
    assert stats.variation > 0.10
    assert len(stats.block_medians) == 5


def test_block_medians_are_consecutive_blocks():
    samples = np.repeat([1.0, 2.0, 3.0, 4.0, 5.0], 10)
    assert list(block_medians(samples, 5)) == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert not is_unstable(0.5, blocks=1)  # one block shows no variation: not judged


@pytest.mark.parametrize("bad", [[], [1.0, float("nan")], [-1.0, 2.0]])
def test_bad_samples_are_refused(bad):
    with pytest.raises(DataError):
        summarize(bad)
