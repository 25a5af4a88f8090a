"""The live loop on a real video of real digits, with the real int8 model in LiteRT.

Acceptance: per-frame top-1 of `run` equals the int8 model called directly (LiteRT Interpreter, frames
decoded by OpenCV, preprocessed by edgecnn.preprocess) on 100 % of frames, and Keras on >= 99 %.
"""
from __future__ import annotations

import json
import os
import signal
import time

import cv2
import numpy as np
import pytest

from edgecnn.devices.classify import Classifier
from edgecnn.devices.live import Display, EndReason, RunOptions, run, summary_rows
from edgecnn.devices.sources import OpenCVSource, SourceKind
from edgecnn.devices.stats import LiveStats, RollingWindow
from fixtures.video import digit_frames, write_video
from edgecnn.errors import OutputExistsError, UsageError
from edgecnn.manifest import ColorOrder, Manifest
from edgecnn.preprocess import InputEncoder, prepare_batch, to_float

FRAMES = 200


@pytest.fixture(scope="module")
def digit_video(tmp_path_factory):
    frames, labels = digit_frames(FRAMES, size=224)
    path = write_video(frames, tmp_path_factory.mktemp("live") / "digits.mkv", fps=25.0)
    return path, labels


@pytest.fixture(scope="module")
def model(device_models):
    return device_models.int8


def decode_all(path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return np.stack(frames)


def direct_int8_top1(model_path, frames_bgr: np.ndarray, manifest: Manifest) -> np.ndarray:
    """The int8 model with nothing of edgecnn's runner: the LiteRT Interpreter called directly."""
    from ai_edge_litert.interpreter import Interpreter

    from edgecnn.devices.litert import tensor_spec

    interpreter = Interpreter(model_path=str(model_path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    pixels = prepare_batch(frames_bgr, manifest.preprocessing, ColorOrder.BGR)
    encoded = InputEncoder.build(manifest.preprocessing, tensor_spec(inp))(pixels)
    top1 = []
    for i in range(encoded.shape[0]):
        interpreter.set_tensor(inp["index"], encoded[i:i + 1])
        interpreter.invoke()
        top1.append(int(np.argmax(interpreter.get_tensor(out["index"])[0])))
    return np.asarray(top1)


def read_jsonl(path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


@pytest.fixture(scope="module")
def reference(digit_video, model, device_models):
    """Direct int8 and Keras top-1 on the frames as OpenCV decodes them from the file."""
    import keras

    frames = decode_all(digit_video[0])
    manifest = Manifest.read(device_models.manifest)
    int8 = direct_int8_top1(model, frames, manifest)
    keras_model = keras.models.load_model(device_models.keras, safe_mode=True)
    floats = to_float(prepare_batch(frames, manifest.preprocessing, ColorOrder.BGR), manifest.preprocessing)
    keras_top1 = np.argmax(keras_model.predict(floats, verbose=0, batch_size=100), axis=1)
    return frames, int8, keras_top1


def test_run_matches_the_int8_model_called_directly_and_keras(tmp_path, digit_video, model, reference):
    frames, int8, keras_top1 = reference
    out = tmp_path / "frames.jsonl"
    summary = run(model, "cpu", str(digit_video[0]), RunOptions(jsonl=str(out), top_k=3, display=Display.HIDE))
    records = read_jsonl(out)
    assert summary.frames == len(frames) == FRAMES and summary.ended_by == EndReason.SOURCE_END
    assert summary.dropped == 0 and len(records) == FRAMES
    assert [r["frame"] for r in records] == list(range(FRAMES))
    top1 = np.asarray([r["top_k"][0]["index"] for r in records])
    assert np.array_equal(top1, int8)  # 100 % of frames
    assert np.mean(top1 == keras_top1) >= 0.99
    assert np.mean(top1 == digit_video[1]) > 0.9  # and the model really reads the digits
    first = records[0]
    assert set(first["ms"]) == {"capture", "preprocess", "inference", "postprocess"}
    assert len(first["top_k"]) == 3 and first["top_k"][0]["score"] >= first["top_k"][1]["score"]


def test_summary_has_stage_percentiles_and_bounds_stop_the_run(tmp_path, digit_video, model):
    summary = run(model, "cpu", str(digit_video[0]), RunOptions(max_frames=7, display=Display.HIDE))
    assert summary.frames == 7 and summary.ended_by == EndReason.MAX_FRAMES
    for stage in ("capture", "preprocess", "inference", "postprocess"):
        assert summary.ms[stage]["p50"] is not None and summary.ms[stage]["p90"] >= summary.ms[stage]["p50"]
    assert any(name == "inference ms p50 / p90" for name, _ in summary_rows(summary))
    timed = run(model, "cpu", str(digit_video[0]), RunOptions(duration=0.3, loop=True, display=Display.HIDE))
    assert timed.ended_by == EndReason.DURATION and timed.frames > 0


def test_record_writes_the_annotated_video_atomically(tmp_path, digit_video, model):
    target = tmp_path / "annotated.avi"
    summary = run(model, "cpu", str(digit_video[0]), RunOptions(max_frames=20, record=str(target), display=Display.HIDE))
    assert summary.record == str(target)
    recorded = decode_all(target)
    assert recorded.shape[0] == 20 and recorded.shape[1:] == (224, 224, 3)
    assert not np.array_equal(recorded[0], decode_all(digit_video[0])[0])  # labels drawn on it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["annotated.avi"]  # no partial file left


def test_outputs_are_not_overwritten_without_force(tmp_path, digit_video, model):
    out = tmp_path / "frames.jsonl"
    out.write_text("keep me\n")
    with pytest.raises(OutputExistsError):
        run(model, "cpu", str(digit_video[0]), RunOptions(jsonl=str(out), max_frames=3, display=Display.HIDE))
    assert out.read_text() == "keep me\n"
    run(model, "cpu", str(digit_video[0]), RunOptions(jsonl=str(out), max_frames=3, force=True, display=Display.HIDE))
    assert len(read_jsonl(out)) == 3


@pytest.mark.parametrize("options", [RunOptions(top_k=0), RunOptions(max_frames=0), RunOptions(duration=-1.0)])
def test_bad_options_are_usage_errors(options, digit_video, model):
    with pytest.raises(UsageError):
        run(model, "cpu", str(digit_video[0]), options)


def test_ctrl_c_ends_cleanly_with_the_summary_and_the_jsonl(tmp_path, digit_video, model):
    out = tmp_path / "frames.jsonl"

    def interrupt_at_five(record):
        if record["frame"] == 4:
            os.kill(os.getpid(), signal.SIGINT)  # a real SIGINT, delivered to the main thread

    summary = run(model, "cpu", str(digit_video[0]), RunOptions(jsonl=str(out), display=Display.HIDE),
                  on_frame=interrupt_at_five)
    assert summary.ended_by == EndReason.INTERRUPTED
    assert summary.frames == 5 and len(read_jsonl(out)) == 5


class SlowClassifier:
    """The real Classifier made deliberately slower than the source (inference-bound device)."""

    def __init__(self, inner: Classifier, delay: float):
        self.inner, self.delay = inner, delay

    def classify(self, frame, source_color=ColorOrder.BGR):
        time.sleep(self.delay)
        return self.inner.classify(frame, source_color)


def test_a_faster_source_drops_stale_frames_instead_of_queueing(tmp_path, digit_video, model):
    fast = write_video(decode_all(digit_video[0])[:50], tmp_path / "fast.mkv", fps=200.0)
    out = tmp_path / "frames.jsonl"
    with Classifier.open(model) as inner:
        summary = run(model, source=str(fast), classifier=SlowClassifier(inner, 0.03),
                      options=RunOptions(realtime=True, loop=True, max_frames=15, jsonl=str(out), display=Display.HIDE))
    seqs = [r["capture_seq"] for r in read_jsonl(out)]
    assert summary.dropped > 0 and summary.captured > summary.frames
    assert seqs == sorted(seqs) and max(np.diff(seqs)) > 1


class UnpluggedUsbCamera:
    """Test double for a USB camera (none here): the REAL cv2.VideoCapture of the digit video, whose reads
    fail (exception, then empty frames) for a while mid-run, as a camera that is unplugged and plugged back."""

    def __init__(self, path):
        self.path, self.reads = str(path), 0

    def open(self, target, backend):
        return _FailingCapture(cv2.VideoCapture(self.path), self)


class _FailingCapture:
    def __init__(self, cap, owner):
        self.cap, self.owner = cap, owner

    def read(self):
        self.owner.reads += 1
        if self.owner.reads == 10:
            raise cv2.error("VIDEOIO(V4L2:/dev/video0): can't read frame")
        if 20 <= self.owner.reads < 23:
            return True, np.zeros((0, 0, 3), np.uint8)
        return self.cap.read()

    def __getattr__(self, name):
        return getattr(self.cap, name)


def test_a_camera_failing_mid_run_is_reopened_and_the_run_goes_on(digit_video, model):
    camera = UnpluggedUsbCamera(digit_video[0])
    lines: list[str] = []
    summary = run(model, "cpu", "0", RunOptions(max_frames=60, display=Display.HIDE, print_every=0),
                  printer=lines.append, source_factory=lambda spec: OpenCVSource(spec, capture_factory=camera.open))
    assert summary.frames == 60 and summary.ended_by == EndReason.MAX_FRAMES
    assert summary.reopens >= 2 and summary.failures >= 2
    assert any("reopened camera 0" in line for line in lines)


def test_rolling_stats_use_bounded_memory():
    window = RollingWindow(100)
    for value in range(10_000):
        window.add(float(value))
    assert len(window) == 100 and window.percentile(50) == pytest.approx(9949.5)
    stats = LiveStats()
    for i in range(50):
        stats.record({"capture": 1.0, "preprocess": 2.0, "inference": float(i), "postprocess": 0.5}, now=i * 0.1)
    snap = stats.snapshot()
    assert snap["frames"] == 50 and snap["ms"]["inference"]["p50"] == pytest.approx(24.5)


def test_source_kind_live_flags():
    assert SourceKind.CAMERA.live and SourceKind.STREAM.live and not SourceKind.VIDEO.live


@pytest.mark.parametrize("count", [1, 2, 3, 7, 100, 999, 1000])
def test_rolling_percentiles_equal_numpys_linear_method(count):
    values = np.random.default_rng(count).exponential(3.0, count)
    window = RollingWindow(1000)
    for value in values:
        window.add(value)
    for q in (0, 1, 10, 50, 90, 99, 100):
        assert window.percentile(q) == pytest.approx(float(np.percentile(values, q)), rel=1e-12, abs=1e-12)


class PacedCamera:
    """Test double for a 30 FPS USB camera (none here): the REAL cv2.VideoCapture of the digit video, read no
    faster than a camera delivers. Records when it was opened and how many frames it gave."""

    def __init__(self, path):
        self.path, self.opened_at, self.reads = str(path), None, 0

    def open(self, target, backend):
        self.opened_at = time.monotonic()
        return _PacedCapture(cv2.VideoCapture(self.path), self)


class _PacedCapture:
    def __init__(self, cap, owner):
        self.cap, self.owner = cap, owner

    def read(self):
        time.sleep(1 / 30)
        self.owner.reads += 1
        return self.cap.read()

    def __getattr__(self, name):
        return getattr(self.cap, name)


def test_the_camera_starts_while_the_model_loads_and_those_frames_are_not_counted_as_dropped(digit_video, model,
                                                                                           monkeypatch):
    # A camera takes a second or more to start and a Pi seconds to load a model: `run` opens the source first
    # so that the two overlap. Frames the camera gave while nobody could classify them are not inference
    # falling behind: the dropped count starts with the loop. The model load is made as slow as a Pi's.
    from edgecnn.devices import live

    camera, load = PacedCamera(digit_video[0]), {}
    real_open = live.open_classifier

    def slow_open(*args, **kwargs):
        load["start"] = time.monotonic()
        time.sleep(0.5)
        load["reads_during"] = camera.reads
        return real_open(*args, **kwargs)

    monkeypatch.setattr(live, "open_classifier", slow_open)
    summary = run(model, "cpu", "0", RunOptions(max_frames=5, display=Display.HIDE, print_every=0),
                  source_factory=lambda spec: OpenCVSource(spec, capture_factory=camera.open))
    assert camera.opened_at is not None and camera.opened_at < load["start"]
    assert load["reads_during"] >= 5  # ~15 at 30 FPS: the camera ran while the model loaded
    assert summary.frames == 5 and summary.captured >= load["reads_during"] > summary.frames
    assert summary.dropped == 0  # inference (~1 ms) keeps up with 30 FPS once it runs


def test_a_bad_source_is_named_before_the_model_is_loaded(tmp_path, model, monkeypatch):
    # The source is opened first (above): its fault is named at once, the model never loaded; with a good
    # source, a bad model is named.
    from edgecnn.devices import live
    from edgecnn.errors import ModelLoadError, SourceError

    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"\0\0\0\0TFL3" + b"\0" * 64)
    empty = tmp_path / "no-images"
    empty.mkdir()
    loads = []
    real_open = live.open_classifier
    monkeypatch.setattr(live, "open_classifier", lambda *a, **k: loads.append(a) or real_open(*a, **k))
    for path in (broken, model):
        with pytest.raises(SourceError, match="no images"):
            run(path, "cpu", str(empty), RunOptions(display=Display.HIDE))
    assert loads == []
    frames, _ = digit_frames(1, size=64)
    cv2.imwrite(str(empty / "digit.png"), frames[0])
    with pytest.raises(ModelLoadError):
        run(broken, "cpu", str(empty), RunOptions(display=Display.HIDE))


def test_short_runs_report_the_source_rate_and_images_get_a_line_each(tmp_path, digit_video, model):
    # A file played like a camera at 25 FPS: three frames are two intervals of 40 ms, so 25 FPS, not three
    # frames over the time since the clock started (the first frame was already waiting: ~35 FPS).
    summary = run(model, "cpu", str(digit_video[0]), RunOptions(realtime=True, max_frames=3, display=Display.HIDE,
                                                               print_every=0))
    assert summary.frames == 3 and 22.0 <= summary.fps <= 26.0, summary.fps
    # Images: one line each, named, and no rate before a second frame. One image has no FPS, and its read,
    # made while the model loaded, is no capture time.
    folder = tmp_path / "digits"
    folder.mkdir()
    frames, _ = digit_frames(3, size=64)
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"d{i}.png"), frame)
    lines: list[str] = []
    run(model, "cpu", str(folder), RunOptions(display=Display.HIDE), printer=lines.append)
    results = [line for line in lines if line.startswith("frame ")]
    assert [line.split(":")[0] for line in results] == ["frame 0 d0.png", "frame 1 d1.png", "frame 2 d2.png"]
    assert "FPS" not in results[0]
    one = run(model, "cpu", str(folder / "d0.png"), RunOptions(display=Display.HIDE, print_every=0))
    rows = dict(summary_rows(one))
    assert rows["FPS"] == "n/a (one frame)" and "capture ms p50 / p90" not in rows
    assert "inference ms p50 / p90" in rows
