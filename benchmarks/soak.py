"""Soak `edgecnn run`: full speed on a looping video for a long time; memory, descriptors and FPS over time.

Starts the real CLI (``edgecnn run MODEL --source VIDEO --loop --duration S --device cpu``) on a video
of real MNIST digits, samples the process every few seconds with psutil (RSS, open file descriptors,
threads) and reads the one status line per second it prints ("frame N: ... | X FPS") to measure the
frame rate per interval. After a warm-up (the first 10 % of the run, at most 60 s) it reports the growth
of RSS and descriptors, the RSS slope (least squares), and the FPS of each tenth of the run.

    nice -n 10 .venv/bin/python benchmarks/soak.py --minutes 60

Writes benchmarks/results/soak.json (samples included). Exit status 1 when the run failed, memory grew
by more than --max-rss-growth-mb, descriptors by more than --max-fd-growth, or the last tenth's FPS fell
below --min-fps-ratio of the first tenth's (after warm-up).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
FRAME_LINE = re.compile(r"frame (\d+):")


def make_video(path: Path, frames: int = 300, size: tuple[int, int] = (320, 240)) -> Path:
    """An MJPG .avi of real MNIST digits (white on black, scaled up), one digit per 10 frames."""
    import cv2

    from edgecnn.data import mnist_sample

    digits = mnist_sample("val").images[: frames // 10 + 1, :, :, 0]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    side = min(size) - 20
    for i in range(frames):
        canvas = np.zeros((size[1], size[0], 3), np.uint8)
        digit = cv2.resize(digits[i // 10], (side, side), interpolation=cv2.INTER_NEAREST)
        y0, x0 = (size[1] - side) // 2, (size[0] - side) // 2
        canvas[y0:y0 + side, x0:x0 + side] = digit[:, :, None]
        writer.write(canvas)
    writer.release()
    return path


def default_model() -> Path:
    """The trained default converted once (cached): its tflite-int8 artifact, manifest beside it."""
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.converters.zoo import cache_dir, trained_mnist_cnn
    from edgecnn.fileio import sha256_of
    from edgecnn.manifest import Manifest

    keras_path = trained_mnist_cnn()
    out = cache_dir() / "fuzz-artifacts" / sha256_of(keras_path)[:12]
    if not (out / "manifest.json").is_file():
        convert(keras_path, calib="mnist", val="mnist", out=out, options=ConvertOptions(progress=False, force=True))
    return out / Manifest.read(out / "manifest.json").artifact("tflite-int8").file


class LineReader(threading.Thread):
    """Reads the run's output; keeps (monotonic time, frame index) of each status line."""

    def __init__(self, stream) -> None:
        super().__init__(daemon=True)
        self.stream, self.points, self.tail = stream, [], []

    def run(self) -> None:
        for line in self.stream:
            match = FRAME_LINE.search(line)
            if match:
                self.points.append((time.monotonic(), int(match.group(1))))
            else:
                self.tail = (self.tail + [line.rstrip()])[-60:]


def soak(model: Path, video: Path, seconds: float, sample_every: float, threads: int | None) -> dict:
    import psutil

    command = [str(Path(sys.executable).with_name("edgecnn")), "run", str(model), "--source", str(video), "--loop",
               "--duration", str(seconds), "--device", "cpu", "--no-show"]
    if threads:
        command += ["--threads", str(threads)]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "COLUMNS": "200"}
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    reader = LineReader(proc.stdout)
    reader.start()
    ps = psutil.Process(proc.pid)
    started = time.monotonic()
    samples = []
    while proc.poll() is None:
        try:
            with ps.oneshot():
                samples.append({"t": round(time.monotonic() - started, 2), "rss_mb": ps.memory_info().rss / 2 ** 20,
                                "fds": ps.num_fds(), "threads": ps.num_threads(),
                                "cpu_s": sum(ps.cpu_times()[:2])})
        except psutil.NoSuchProcess:
            break
        time.sleep(sample_every)
    proc.wait()
    reader.join(timeout=10)
    return {"command": command, "returncode": proc.returncode, "samples": samples,
            "frames": [(round(t - started, 2), n) for t, n in reader.points], "output_tail": reader.tail,
            "wall_s": round(time.monotonic() - started, 1)}


def analyse(raw: dict, seconds: float) -> dict:
    warm = min(60.0, 0.1 * seconds)
    samples = [s for s in raw["samples"] if s["t"] >= warm]
    frames = [(t, n) for t, n in raw["frames"] if t >= warm]
    if len(samples) < 2 or len(frames) < 2:
        return {"error": "too few samples after warm-up", "warmup_s": warm}
    t = np.array([s["t"] for s in samples])
    rss = np.array([s["rss_mb"] for s in samples])
    fds = np.array([s["fds"] for s in samples])
    slope = float(np.polyfit(t, rss, 1)[0]) * 3600 if len(t) > 2 else 0.0
    # FPS of each tenth of the post-warm-up time, from the printed frame indices.
    ft = np.array([p[0] for p in frames])
    fn = np.array([p[1] for p in frames])
    edges = np.linspace(ft[0], ft[-1], 11)
    fps = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        n_lo, n_hi = np.interp(lo, ft, fn), np.interp(hi, ft, fn)
        fps.append(round(float((n_hi - n_lo) / (hi - lo)), 1) if hi > lo else None)
    return {
        "warmup_s": warm, "measured_s": round(float(t[-1] - t[0]), 1), "frames_total": int(raw["frames"][-1][1]),
        "rss_mb_start": round(float(rss[0]), 1), "rss_mb_end": round(float(rss[-1]), 1),
        "rss_mb_max": round(float(rss.max()), 1), "rss_growth_mb": round(float(rss[-1] - rss[0]), 2),
        "rss_slope_mb_per_h": round(slope, 2),
        "fds_start": int(fds[0]), "fds_end": int(fds[-1]), "fds_max": int(fds.max()),
        "fd_growth": int(fds[-1] - fds[0]),
        "threads_start": samples[0]["threads"], "threads_end": samples[-1]["threads"],
        "fps_by_tenth": fps, "fps_mean": round(float((fn[-1] - fn[0]) / (ft[-1] - ft[0])), 1),
        "fps_last_over_first": round(fps[-1] / fps[0], 3) if fps[0] and fps[-1] else None,
        "cpu_s": round(samples[-1]["cpu_s"] - samples[0]["cpu_s"], 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=60.0)
    parser.add_argument("--model", type=Path, default=None, help="default: the trained default's tflite-int8")
    parser.add_argument("--video", type=Path, default=None, help="default: a generated MNIST digit video")
    parser.add_argument("--sample-every", type=float, default=5.0, help="seconds between process samples")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--max-rss-growth-mb", type=float, default=20.0)
    parser.add_argument("--max-fd-growth", type=int, default=2)
    parser.add_argument("--min-fps-ratio", type=float, default=0.5)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "soak.json")
    args = parser.parse_args(argv)

    seconds = args.minutes * 60
    with tempfile.TemporaryDirectory(prefix="edgecnn-soak-") as tmp:
        video = args.video or make_video(Path(tmp) / "digits.avi")
        model = args.model or default_model()
        load_before = os.getloadavg()
        raw = soak(model, video, seconds, args.sample_every, args.threads)
    result = analyse(raw, seconds)
    report = {"benchmark": "soak", "minutes": args.minutes, "model": str(model), "result": result,
              "returncode": raw["returncode"], "wall_s": raw["wall_s"],
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "load_avg_before": load_before,
                          "load_avg_after": os.getloadavg()},
              "output_tail": raw["output_tail"][-25:], "samples": raw["samples"], "frames": raw["frames"]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({"returncode": raw["returncode"], **result}))
    failed = (raw["returncode"] != 0 or "error" in result or result["rss_growth_mb"] > args.max_rss_growth_mb
              or result["fd_growth"] > args.max_fd_growth
              or (result["fps_last_over_first"] or 0) < args.min_fps_ratio)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
