"""The slow tier's soak: `edgecnn run` for 5 minutes at full speed on a looping video (benchmarks/soak.py);
memory and open descriptors stay flat and the frame rate does not decay.

The bounds are generous (20 MB, 2 descriptors, last tenth's FPS at least half the first's) because the
frame rate of a shared machine moves with its other work; the one-hour figures are in
benchmarks/results/reliability.md."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_five_minute_soak_is_flat(artifacts, tmp_path):
    out = tmp_path / "soak.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "soak.py"), "--minutes", "5",
                           "--model", str(artifacts["tflite-int8"]), "--out", str(out)],
                          capture_output=True, text=True, timeout=900)
    report = json.loads(out.read_text())
    result = report["result"]
    assert report["returncode"] == 0, report["output_tail"]
    assert "error" not in result, result
    assert result["frames_total"] > 1000
    assert result["rss_growth_mb"] <= 20, result
    assert result["fd_growth"] <= 2, result
    assert result["threads_end"] <= result["threads_start"] + 1, result
    assert result["fps_last_over_first"] >= 0.5, result
    assert proc.returncode == 0, proc.stdout[-2000:]
