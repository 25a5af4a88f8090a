"""Per-frame input encoding for a channels-first (NCHW) model: the table lookup written plane by plane straight into
the (1, C, H, W) buffer (Classifier._encode_into_buffer), against encoding in (H, W, C) order and then copying the
transposed array (what the Classifier did before), on prepared 224x224 and 48x192 colour frames, float32 input
with per-channel mean/std (ImageNet's). Both ways give identical tensors (checked here).

    .venv/bin/python benchmarks/nchw_encode.py

Writes benchmarks/results/nchw_encode.json and .md. Ratios are measured in one run, interleaved, so machine load
affects both ways alike.
"""
from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).parent / "results"
REPEATS = 400


def _old(table: np.ndarray, pixels: np.ndarray, hwc: np.ndarray) -> np.ndarray:
    for c in range(table.shape[0]):
        np.take(table[c], pixels[:, :, c], out=hwc[0, :, :, c], mode="clip")
    return np.ascontiguousarray(hwc.transpose(0, 3, 1, 2))


def _new(table: np.ndarray, pixels: np.ndarray, chw: np.ndarray) -> np.ndarray:
    for c in range(table.shape[0]):
        np.take(table[c], pixels[:, :, c], out=chw[0, c], mode="clip")
    return chw


def measure(height: int, width: int) -> dict:
    from edgecnn.manifest import Layout, Preprocessing, TensorSpec
    from edgecnn.preprocess import InputEncoder

    prep = Preprocessing(height, width, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), layout=Layout.NCHW)
    encoder = InputEncoder.build(prep, TensorSpec("x", (1, 3, height, width), "float32"))
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    hwc = np.empty((1, height, width, 3), np.float32)
    chw = np.empty((1, 3, height, width), np.float32)
    np.testing.assert_array_equal(_old(encoder.table, pixels, hwc), _new(encoder.table, pixels, chw))
    np.testing.assert_array_equal(_new(encoder.table, pixels, chw), encoder(pixels[None]))
    old, new = [], []
    for _ in range(REPEATS):  # interleaved
        t0 = time.perf_counter()
        _old(encoder.table, pixels, hwc)
        t1 = time.perf_counter()
        _new(encoder.table, pixels, chw)
        t2 = time.perf_counter()
        old.append((t1 - t0) * 1e3)
        new.append((t2 - t1) * 1e3)
    p50_old, p50_new = float(np.median(old)), float(np.median(new))
    return {"size": f"{height}x{width}", "old_p50_ms": p50_old, "new_p50_ms": p50_new, "speedup": p50_old / p50_new}


def main() -> int:
    rows = [measure(224, 224), measure(48, 192)]
    load = os.getloadavg()
    meta = {"command": "python benchmarks/nchw_encode.py", "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
            "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
            "load_average": [round(v, 2) for v in load], "repeats": REPEATS, "python": sys.version.split()[0],
            "numpy": np.__version__}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "nchw_encode.json").write_text(json.dumps({**meta, "rows": rows}, indent=2) + "\n")
    lines = ["# NCHW per-frame encoding: planes written in place vs encode-then-transpose", "",
             f"`{meta['command']}` on {meta['date']}; {meta['machine']}; load average {meta['load_average']} "
             "(a shared machine: the ratio, measured interleaved in one run, is what counts).", "",
             "| frame | before: HWC + transposed copy, p50 ms | now: CHW planes in place, p50 ms | speed-up |",
             "|---|---|---|---|"]
    lines += [f"| {r['size']} | {r['old_p50_ms']:.3f} | {r['new_p50_ms']:.3f} | {r['speedup']:.2f}x |" for r in rows]
    (RESULTS / "nchw_encode.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
