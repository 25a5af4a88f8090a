"""Memory and descriptors over a long `edgecnn run` (devices/live.py): 10,000 frames in one run.

The MNIST CNN int8 on a looping video of real digits (224x224, decoded by OpenCV), with --jsonl to a
file and the web viewer on (one client reading the MJPEG stream the whole time), so every per-frame path
runs. RSS and open descriptors are sampled after a warm-up (frame 500) and at the end; the goal is RSS
growth <= 20 MB.

    nice -n 5 .venv/bin/python benchmarks/live_memory.py [--frames 10000]   # writes benchmarks/results/live_memory.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import sys
import tempfile
import threading
from pathlib import Path

import psutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # fixtures: real-digit videos, the outlier model

from edgecnn.devices.live import Display, RunOptions, run  # noqa: E402
from fixtures.video import digit_frames, write_video  # noqa: E402

RESULTS = Path(__file__).parent / "results"
WARMUP = 500


def mnist_int8() -> Path:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "devices"))
    from device_models import build_device_models  # noqa: PLC0415

    return build_device_models().int8


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def watch_stream(port: int, stop: threading.Event, counter: list[int]) -> None:
    """One viewer reading the MJPEG stream for the whole run (reconnecting if needed)."""
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
                while not stop.is_set():
                    data = sock.recv(65536)
                    if not data:
                        break
                    counter[0] += len(data)
        except OSError:
            stop.wait(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=RESULTS / "live_memory.json")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="live-memory-"))
    frames, _ = digit_frames(200, size=224)
    video = write_video(frames, work / "digits.mkv", fps=25.0)
    model = mnist_int8()
    process = psutil.Process()
    samples: dict[str, dict] = {}
    port = free_port()
    stop, received = threading.Event(), [0]
    viewer = threading.Thread(target=watch_stream, args=(port, stop, received), daemon=True)

    def sample(record: dict) -> None:
        index = record["frame"]
        if index == 0:
            viewer.start()
        if index in (WARMUP, args.frames - 1) or index % 2000 == 0:
            samples[str(index)] = {"rss_mb": round(process.memory_info().rss / 2**20, 2), "fds": process.num_fds(),
                                   "threads": process.num_threads()}

    summary = run(model, "cpu", str(video),
                  RunOptions(loop=True, max_frames=args.frames, jsonl=str(work / "frames.jsonl"),
                             serve=f"127.0.0.1:{port}", display=Display.HIDE), on_frame=sample)
    stop.set()
    first, last = samples[str(WARMUP)], samples[str(args.frames - 1)]
    results = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "frames": summary.frames, "seconds": summary.seconds, "fps": summary.fps, "ended_by": summary.ended_by.value,
        "source_loops_read": summary.captured // len(frames), "mjpeg_bytes_received": received[0],
        "rss_growth_mb_after_warmup": round(last["rss_mb"] - first["rss_mb"], 2),
        "fd_growth_after_warmup": last["fds"] - first["fds"], "samples": samples,
    }
    results["pass"] = results["rss_growth_mb_after_warmup"] <= 20.0 and summary.frames == args.frames
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0 if results["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())
