"""Runner overhead: what the Classifier adds around LiteRT's invoke() for MobileNetV2 int8 at 224x224.

Overhead = preprocessing a 640x480 BGR frame (resize, colour, the int8 lookup table) + get tensor +
postprocessing (dequantize, top-5), relative to the raw single-thread ``invoke()`` of the same interpreter
configuration (XNNPACK on, 1 thread). Goals: <= 15 %, and <= 5 % without the frame resize (how that is
judged: NOTE below). The frame is encoded straight into LiteRT's input tensor; the same Classifier with the
runner's tensor view withheld (encode into its own buffer, then ``set_tensor`` copies it: the path before), and
a frame already at the model's size, are measured in the same rounds.
Raw and full rounds are interleaved so that load from other processes on the machine hits all alike;
medians are reported.

The MobileNetV2 (keras.applications, weights=None) int8 model is converted here with TFLiteConverter and a
small random representative set, and cached in the edgecnn cache dir.

    .venv/bin/python benchmarks/runner_overhead.py [--iterations 200]

Writes benchmarks/results/runner_overhead.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RESULTS = Path(__file__).resolve().parent / "results"
GOAL = 0.15
GOAL_WITHOUT_RESIZE = 0.05


def mobilenet_int8() -> Path:
    """MobileNetV2 full-int8 .tflite (int8 in and out), made by edgecnn's own converter (static batch 1, what
    `edgecnn convert` ships) from random weights and 16 random calibration images; converted once and cached."""
    import tempfile

    from edgecnn.converters.steps import export_savedmodel
    from edgecnn.converters.tflite import convert_bytes
    from edgecnn.converters.zoo import cache_dir, mobilenet_v2
    from edgecnn.fileio import write_bytes_atomic

    path = cache_dir() / "bench" / "mobilenet_v2-int8-b1.tflite"
    if path.exists():
        return path
    import keras

    keras.utils.set_random_seed(0)
    calib = np.random.default_rng(0).uniform(-1, 1, size=(16, 224, 224, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="edgecnn-bench-") as work:
        saved = Path(work) / "savedmodel"
        export_savedmodel(mobilenet_v2(), saved)
        write_bytes_atomic(path, convert_bytes(saved, "int8", calib))
    return path


def camera_frame() -> np.ndarray:
    """A real photograph (scikit-image's 'chelsea') as a 640x480 BGR camera frame."""
    import cv2
    from skimage import data

    return cv2.resize(data.chelsea()[:, :, ::-1], (640, 480), interpolation=cv2.INTER_LINEAR)


def measure(model: Path, iterations: int, rounds: int, mode: str) -> dict:
    resize, _, interpolation = mode.partition("/")
    from rich.progress import Progress

    from edgecnn.devices.base import RunnerOptions
    from edgecnn.devices.classify import Classifier
    from edgecnn.devices.litert import make_interpreter
    from edgecnn.manifest import ColorOrder, Interpolation, Preprocessing, ResizeMode

    prep = Preprocessing(height=224, width=224, color=ColorOrder.RGB, resize=ResizeMode(resize),
                         interpolation=Interpolation(interpolation or "linear"), scale=1 / 127.5,
                         mean=(1.0,), std=(1.0,))
    classifier = Classifier.open(model, "cpu", RunnerOptions(threads=1), prep=prep, top_k=5)
    copying = Classifier.open(model, "cpu", RunnerOptions(threads=1), prep=prep, top_k=5)
    copying.runner.input_view = lambda: None  # the runner offers no view: encode into a buffer, then set_tensor
    raw = make_interpreter(model, threads=1, use_xnnpack=True)
    detail = raw.get_input_details()[0]
    raw.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    frame = camera_frame()
    for _ in range(10):  # warm-up: caches, XNNPACK packing
        raw.invoke()
        classifier.classify(frame)
        copying.classify(frame)
    from edgecnn.preprocess import resize_image

    raw_ms, full_ms, raw_cpu, full_cpu, resize_cpu, copy_cpu, resize_cold_cpu = [], [], [], [], [], [], []
    small_cpu, inner_invoke_cpu, hand_cpu, argmax_cold_cpu, argmax_warm_cpu = [], [], [], [], []
    out_index = raw.get_output_details()[0]["index"]
    hand = by_hand_loop(raw, classifier.encoder.table[0], prep)
    stages = {"preprocess": [], "inference": [], "postprocess": []}
    small_frame = np.ascontiguousarray(resize_image(frame, prep.height, prep.width, prep.resize, prep.interpolation))
    invoke_in_place = classifier.runner.invoke_in_place

    sink: list[list[float]] = [[]]  # where the in-place timing goes: only the full-frame rounds keep it

    def timed_invoke():  # the invoke inside classify(), timed in place (one clock read each side)
        c = time.process_time()
        try:
            return invoke_in_place()
        finally:
            sink[0].append((time.process_time() - c) * 1e3)

    classifier.runner.invoke_in_place = timed_invoke
    per_round = max(1, iterations // rounds)
    with Progress(transient=True) as progress:
        task = progress.add_task(f"raw invoke() vs classify(frame), resize={resize}", total=per_round * rounds * 5)
        for _ in range(rounds):
            for _ in range(per_round):
                c0, t0 = time.process_time(), time.perf_counter()
                raw.invoke()
                raw_ms.append((time.perf_counter() - t0) * 1e3)
                raw_cpu.append((time.process_time() - c0) * 1e3)
                progress.advance(task)
            sink[0] = inner_invoke_cpu
            for _ in range(per_round):
                c0, t0 = time.process_time(), time.perf_counter()
                result = classifier.classify(frame)
                full_ms.append((time.perf_counter() - t0) * 1e3)
                full_cpu.append((time.process_time() - c0) * 1e3)
                for stage in stages:
                    stages[stage].append(getattr(result.times, f"{stage}_ms"))
                progress.advance(task)
            sink[0] = []
            for _ in range(per_round):
                c0 = time.process_time()
                copying.classify(frame)
                copy_cpu.append((time.process_time() - c0) * 1e3)
                progress.advance(task)
            for _ in range(per_round):  # a frame already at the model's size: no resize at all
                c0 = time.process_time()
                classifier.classify(small_frame)
                small_cpu.append((time.process_time() - c0) * 1e3)
                progress.advance(task)
            for _ in range(per_round):
                c0 = time.process_time()
                hand(frame)
                hand_cpu.append((time.process_time() - c0) * 1e3)
                progress.advance(task)
            for _ in range(max(1, per_round // 4)):  # the shared preprocessing's frame resize alone
                c0 = time.process_time()
                resize_image(frame, prep.height, prep.width, prep.resize, prep.interpolation)
                resize_cpu.append((time.process_time() - c0) * 1e3)
            for _ in range(max(1, per_round // 4)):  # the same right after an invoke, as in the pipeline
                raw.invoke()
                c0 = time.process_time()
                resize_image(frame, prep.height, prep.width, prep.resize, prep.interpolation)
                resize_cold_cpu.append((time.process_time() - c0) * 1e3)
            for _ in range(max(1, per_round // 4)):  # any code after an invoke runs from cold caches: one argmax
                raw.invoke()
                output = raw.get_tensor(out_index)
                c0 = time.process_time()
                np.argmax(output)
                argmax_cold_cpu.append((time.process_time() - c0) * 1e3)
                c0 = time.process_time()
                np.argmax(output)
                argmax_warm_cpu.append((time.process_time() - c0) * 1e3)
    classifier.close()
    copying.close()
    med = statistics.median
    stage_medians = {k: med(v) for k, v in stages.items()}
    return {
        "model": model.name, "model_bytes": model.stat().st_size, "frame": "640x480 BGR", "resize": mode, "threads": 1,
        "xnnpack": True, "iterations": len(raw_ms), "rounds": rounds,
        "raw_invoke_ms_median": round(med(raw_ms), 3), "classify_ms_median": round(med(full_ms), 3),
        "raw_invoke_cpu_ms_median": round(med(raw_cpu), 3), "classify_cpu_ms_median": round(med(full_cpu), 3),
        "stage_ms_median": {k: round(v, 3) for k, v in stage_medians.items()},
        "overhead_ms": round(med(full_ms) - med(raw_ms), 3),
        "overhead_fraction_wall": round((med(full_ms) - med(raw_ms)) / med(raw_ms), 4),
        "overhead_cpu_ms": round(med(full_cpu) - med(raw_cpu), 3),
        "overhead_fraction": round((med(full_cpu) - med(raw_cpu)) / med(raw_cpu), 4),
        "resize_cpu_ms_median": round(med(resize_cpu), 3),
        "overhead_without_resize_fraction": round((med(full_cpu) - med(raw_cpu) - med(resize_cpu)) / med(raw_cpu), 4),
        "resize_after_invoke_cpu_ms_median": round(med(resize_cold_cpu), 3),
        "overhead_without_resize_after_invoke_fraction": round((med(full_cpu) - med(raw_cpu) - med(resize_cold_cpu))
                                                               / med(raw_cpu), 4),
        "copying_classify_cpu_ms_median": round(med(copy_cpu), 3),
        "invoke_in_classify_cpu_ms_median": round(med(inner_invoke_cpu), 3),
        "around_invoke_cpu_ms": round(med(full_cpu) - med(inner_invoke_cpu) - med(resize_cold_cpu), 3),
        "small_frame_classify_cpu_ms_median": round(med(small_cpu), 3),
        "by_hand_cpu_ms_median": round(med(hand_cpu), 3),
        "argmax_after_invoke_cpu_us_median": round(med(argmax_cold_cpu) * 1e3, 1),
        "argmax_again_cpu_us_median": round(med(argmax_warm_cpu) * 1e3, 1),
        "over_by_hand_fraction": round((med(full_cpu) - med(hand_cpu)) / med(hand_cpu), 4),
        "small_frame_overhead_fraction": round((med(small_cpu) - med(raw_cpu)) / med(raw_cpu), 4),
        "copying_overhead_without_resize_fraction": round((med(copy_cpu) - med(raw_cpu) - med(resize_cold_cpu))
                                                          / med(raw_cpu), 4),
        "goal_fraction": GOAL, "goal_without_resize_fraction": GOAL_WITHOUT_RESIZE,
        # Judged on the worse of the two measures that leave the resize out as the pipeline pays for it.
        "judged_without_resize_fraction": round(max((med(full_cpu) - med(raw_cpu) - med(resize_cold_cpu)),
                                                    med(small_cpu) - med(raw_cpu)) / med(raw_cpu), 4),
        "load_average_1min": round(os.getloadavg()[0], 2),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores (shared with other processes)",
        "python": platform.python_version(), "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def by_hand_loop(interpreter, table: np.ndarray, prep):
    """What a careful hand-written loop does per frame with the same interpreter: the same resize (cv2), colour
    swap and int8 lookup table (cv2.LUT), set_tensor, invoke, argmax. classify() over this is edgecnn's own cost."""
    import cv2

    from edgecnn.preprocess import resize_image

    lut = table.view(np.uint8)
    index = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def classify(frame: np.ndarray) -> int:
        small = resize_image(frame, prep.height, prep.width, prep.resize, prep.interpolation)
        encoded = cv2.LUT(cv2.cvtColor(small, cv2.COLOR_BGR2RGB), lut).view(table.dtype)
        interpreter.set_tensor(index, encoded[None])
        interpreter.invoke()
        return int(np.argmax(interpreter.get_tensor(out)[0]))

    return classify


def rows_for(result: dict) -> list[tuple[str, str]]:
    ok = result["overhead_fraction"] <= GOAL
    judged = result["judged_without_resize_fraction"]
    pct = lambda key: f"{result[key] * 100:.1f} %"  # noqa: E731
    rows = [("raw invoke(), 1 thread (back to back): CPU time", f"{result['raw_invoke_cpu_ms_median']:.2f} ms"),
            ("classify(frame) total: CPU time", f"{result['classify_cpu_ms_median']:.2f} ms"),
            ("overhead, CPU time", f"{result['overhead_cpu_ms']:.2f} ms = {result['overhead_fraction'] * 100:.1f} % "
                                   f"({'meets' if ok else 'misses'} the <= {GOAL * 100:.0f} % goal)"),
            ("  the frame resize as the pipeline pays it (right after an invoke: frame out of cache): CPU time",
             f"{result['resize_after_invoke_cpu_ms_median']:.2f} ms"),
            ("  the invoke inside classify(): CPU time",
             f"{result['invoke_in_classify_cpu_ms_median']:.2f} ms"),
            ("  everything else around the invoke (view, colour, lookup table, decode, top-k): CPU time",
             f"{result['around_invoke_cpu_ms']:.2f} ms"),
            ("overhead without the frame resize: classify - raw invoke - that resize, CPU time",
             pct("overhead_without_resize_after_invoke_fraction")),
            ("overhead without the frame resize: a frame already 224x224 (no resize), CPU time",
             f"{pct('small_frame_overhead_fraction')} (classify {result['small_frame_classify_cpu_ms_median']:.2f} ms)"),
            ("overhead without the frame resize, judged (the worse of the two)",
             f"{judged * 100:.1f} % ({'meets' if judged <= GOAL_WITHOUT_RESIZE else 'misses'} the "
             f"<= {GOAL_WITHOUT_RESIZE * 100:.0f} % goal)"),
            ("  stricter: subtracting the resize with the frame in cache (not how a camera frame arrives)",
             f"{pct('overhead_without_resize_fraction')} (that resize: {result['resize_cpu_ms_median']:.2f} ms)"),
            ("  through a buffer and set_tensor (the path before), without the resize, CPU time",
             f"{pct('copying_overhead_without_resize_fraction')} "
             f"(classify {result['copying_classify_cpu_ms_median']:.2f} ms)"),
            ("a hand-written loop (cv2 resize, colour, LUT, set_tensor, invoke, argmax): CPU time",
             f"{result['by_hand_cpu_ms_median']:.2f} ms (classify() is {pct('over_by_hand_fraction')} over it)"),
            ("one np.argmax of the 1000 outputs right after an invoke / the same again: CPU time",
             f"{result['argmax_after_invoke_cpu_us_median']:.0f} us / {result['argmax_again_cpu_us_median']:.0f} us"),
            ("raw invoke(), 1 thread: wall", f"{result['raw_invoke_ms_median']:.2f} ms"),
            ("classify(frame) total: wall", f"{result['classify_ms_median']:.2f} ms"),
            ("  preprocess (640x480 -> 224x224 int8): wall", f"{result['stage_ms_median']['preprocess']:.2f} ms"),
            ("  inference stage (set + invoke + get): wall", f"{result['stage_ms_median']['inference']:.2f} ms"),
            ("  postprocess (dequantize, top-5): wall", f"{result['stage_ms_median']['postprocess']:.2f} ms"),
            ("overhead, wall", f"{result['overhead_ms']:.2f} ms = {result['overhead_fraction_wall'] * 100:.1f} %"),
            ("1-minute load average during the run", f"{result['load_average_1min']}")]
    return rows


NOTE = """Notes: the frame is shrunk with the manifest's `interpolation`, bilinear by default (what Keras itself
resizes with: `image_dataset_from_directory`, the `Resizing` layer, `tf.image.resize`, none of which antialias by
default); `edgecnn convert --interpolation area` keeps OpenCV's INTER_AREA for pipelines trained that way, at about
1 ms more per 640x480 frame. An invoke of MobileNetV2 streams its 3.9 MB of weights through the caches, so after it
the camera frame is read back from memory: the resize costs several times what it costs on a frame in cache, and
a camera frame (fresh from the capture) is never in cache. "Without the frame resize" is therefore judged on the
worse of two measures that leave the resize out as the pipeline pays it: classify() minus the raw invoke minus the
resize timed right after an invoke, and classify() of a frame already at 224x224 (no resize at all) minus the raw
invoke. Both still count the invoke inside classify() running slower than back-to-back raw invokes (the frame and
the code around it evict part of the weights; the row "the invoke inside classify()" shows by how much). The row
subtracting the in-cache resize is stricter than any real pipeline. Figures move with the machine's load (other
processes evict the cache too): compare runs at similar load averages.

Where the rest goes (cProfile and per-step CPU timing of classify(), see the argmax row): classify()'s own Python
and numpy work is ~0.1 ms with warm caches (view 5 us, colour swap + lookup table on 224x224x3 ~0.1 ms, decode
9 us, top-5 ~25 us: partition, not a full sort); after an invoke, every first call into numpy or OpenCV reloads its
code and data from memory, so the same steps cost 0.5-1 ms. A hand-written loop pays that too (its argmax, its
cv2 calls): the row comparing classify() with one doing the same work is edgecnn's own cost."""


def write_results(results: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "runner_overhead.json").write_text(json.dumps(results, indent=2) + "\n")
    result = results[0]
    md = ["# Runner overhead: MobileNetV2 int8, 224x224", "",
          f"Measured {result['measured']} on {result['machine']}, Python {result['python']}, "
          f"{result['iterations']} iterations each of raw `invoke()` and `Classifier.classify(frame)`, interleaved in "
          f"{result['rounds']} rounds; medians. Model: {result['model']} ({result['model_bytes'] / 1e6:.1f} MB), "
          "LiteRT (ai_edge_litert) with XNNPACK, 1 thread. The goal is judged on process CPU time: the machine is "
          "shared with other jobs, so wall-clock medians include time spent waiting for a core.", "",
          f"Command: `{' '.join(['.venv/bin/python', 'benchmarks/runner_overhead.py', *sys.argv[1:]])}`", "",
          "| measure | " + " | ".join(f"median, resize={r['resize']}" for r in results) + " |",
          "|---|" + "---|" * len(results)]
    all_rows = [rows_for(r) for r in results]
    for i, (name, _) in enumerate(all_rows[0]):
        md.append(f"| {name.strip()} | " + " | ".join(rows[i][1] for rows in all_rows) + " |")
    md += ["", NOTE]
    (RESULTS / "runner_overhead.md").write_text("\n".join(md) + "\n")
    table = Table(title="Runner overhead, MobileNetV2 int8 224x224")
    table.add_column("measure")
    for r in results:
        table.add_column(f"resize={r['resize']}", justify="right")
    for i, (name, _) in enumerate(all_rows[0]):
        table.add_row(name, *(rows[i][1] for rows in all_rows))
    Console().print(table)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--resize", default="stretch/linear,center_crop/linear,stretch/area",
                        help="resize mode/interpolation pairs to measure")
    args = parser.parse_args()
    model = mobilenet_int8()
    results = [measure(model, args.iterations, args.rounds, resize) for resize in args.resize.split(",")]
    write_results(results)
    met = all(r["overhead_fraction"] <= GOAL for r in results) and \
        results[0]["judged_without_resize_fraction"] <= GOAL_WITHOUT_RESIZE
    return 0 if met else 1


if __name__ == "__main__":
    raise SystemExit(main())
