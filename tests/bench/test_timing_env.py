"""The measurement loop's counts and the environment fingerprint (a fake vcgencmd stands in for a Pi's)."""
from __future__ import annotations

import os
import stat

import pytest

from edgecnn.bench import envinfo, timing
from edgecnn.errors import UsageError


def test_warmup_then_exactly_runs_calls():
    calls = []
    samples = timing.time_calls(lambda: calls.append(1), timing.TimingPlan(warmup=12, runs=30))
    assert len(calls) == 42 and samples.shape == (30,)
    assert (samples >= 0).all()


def test_duration_mode_runs_for_the_duration_and_at_least_ten_samples():
    samples = timing.time_calls(lambda: None, timing.TimingPlan(warmup=10, runs=None, duration_s=0.05))
    assert samples.size > timing.MIN_DURATION_SAMPLES
    slow = timing.time_calls(lambda: __import__("time").sleep(0.002), timing.TimingPlan(runs=None, duration_s=0.001))
    assert slow.size == timing.MIN_DURATION_SAMPLES
    assert slow.min() >= 2.0  # ms: the sleep is inside the timed call


@pytest.mark.parametrize("plan", [timing.TimingPlan(warmup=5), timing.TimingPlan(runs=None, duration_s=None),
                                  timing.TimingPlan(runs=10, duration_s=1.0), timing.TimingPlan(runs=0)])
def test_bad_plans_are_refused(plan):
    with pytest.raises(UsageError):
        plan.validate()


def test_rss_figures_are_plausible():
    assert 1 < timing.current_rss_mb() <= timing.peak_rss_mb() + 1


def test_fingerprint_describes_this_machine():
    info = envinfo.fingerprint()
    assert info["cpu_cores_logical"] == os.cpu_count()
    assert info["python"].count(".") == 2 and info["versions"]["numpy"]
    assert info["cpu_model"]


def test_throttled_flags_decode_a_pi_answer(tmp_path, monkeypatch):
    fake = tmp_path / "vcgencmd"  # test double for the Raspberry Pi firmware tool
    fake.write_text("#!/bin/sh\necho throttled=0x50005\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    flags = envinfo.throttled_flags()
    assert flags["raw"] == "0x50005"
    assert flags["under_voltage_now"] and flags["throttled_now"] and not flags["frequency_capped_now"]
    assert flags["under_voltage_since_boot"] and flags["throttled_since_boot"]
