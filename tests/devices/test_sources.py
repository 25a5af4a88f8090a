"""Frame sources and the threaded newest-frame grabber, on real files decoded by real OpenCV.

Hardware that cannot exist here (a USB camera that unplugs, the Pi camera) is replaced by named test
doubles placed at the hardware boundary: the cv2.VideoCapture object and the picamera2 module.
"""
from __future__ import annotations

import sys
import threading
import time
import types

import cv2
import numpy as np
import pytest

from edgecnn.devices.grabber import GrabberOptions, LatestFrameGrabber
from edgecnn.devices.sources import (FrameReadError, OpenCVSource, SourceKind, SourceSpec, open_source,
                                     parse_source)
from fixtures.video import digit_frames, write_video
from edgecnn.errors import RuntimeMissingError, SourceError


@pytest.fixture(scope="module")
def digits():
    frames, labels = digit_frames(60, size=96)
    return frames, labels


@pytest.fixture(scope="module")
def video(tmp_path_factory, digits):
    return write_video(digits[0], tmp_path_factory.mktemp("src") / "digits.mkv", fps=30.0)


def drain(grabber: LatestFrameGrabber, limit: int = 10_000, delay: float = 0.0) -> list:
    frames = []
    while len(frames) < limit:
        frame = grabber.next_frame(timeout=2.0)
        if frame is None:
            if grabber.ended:
                break
            continue
        frames.append(frame)
        if delay:
            time.sleep(delay)
    return frames


# -- specs ---------------------------------------------------------------------------------------
def test_parse_source_recognises_every_kind(tmp_path, video):
    image = tmp_path / "one.png"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    assert parse_source("0").kind == SourceKind.CAMERA
    assert parse_source("PiCam").kind == SourceKind.PICAMERA
    assert parse_source("picamera2").kind == SourceKind.PICAMERA
    assert parse_source("rtsp://10.0.0.2/stream").kind == SourceKind.STREAM
    assert parse_source("https://example.org/cam.mjpg").kind == SourceKind.STREAM
    assert parse_source(str(tmp_path)).kind == SourceKind.FOLDER
    assert parse_source(str(image)).kind == SourceKind.IMAGE
    assert parse_source(str(video)).kind == SourceKind.VIDEO
    assert parse_source("0").live and not parse_source(str(video)).live


@pytest.mark.parametrize("text", ["", "/dev/video99", "no/such/file.mp4"])
def test_parse_source_refuses_what_is_not_there(text):
    with pytest.raises(SourceError) as info:
        parse_source(text)
    assert "\n" not in str(info.value)


def test_unreadable_video_fails_at_start(tmp_path):
    bogus = tmp_path / "not_a_video.avi"
    bogus.write_bytes(b"this is text, not a video")
    with pytest.raises(SourceError):
        LatestFrameGrabber(parse_source(str(bogus))).start()


# -- finite sources ------------------------------------------------------------------------------
def test_video_file_frames_are_faithful_and_end(video, digits):
    with open_source(parse_source(str(video))) as source:
        frames = []
        while (frame := source.read()) is not None:
            frames.append(frame)
        assert source.fps == pytest.approx(30.0)
    assert len(frames) == len(digits[0])
    assert all(np.array_equal(a, b) for a, b in zip(frames, digits[0]))  # FFV1 is lossless


def test_folder_source_reads_in_name_order_as_bgr_and_skips_a_broken_image(tmp_path):
    colour = np.zeros((10, 12, 3), np.uint8)
    colour[:, :, 2] = 200  # red in BGR
    cv2.imwrite(str(tmp_path / "a.png"), colour)
    (tmp_path / "b.png").write_bytes(b"not a png")
    cv2.imwrite(str(tmp_path / "c.png"), np.full((6, 6), 77, np.uint8))  # grey
    (tmp_path / "notes.txt").write_text("ignored")
    spec = parse_source(str(tmp_path))
    with LatestFrameGrabber(spec, GrabberOptions(lossless=True)) as grabber:
        frames = drain(grabber)
    assert [f.image.shape for f in frames] == [(10, 12, 3), (6, 6, 3)]
    assert np.array_equal(frames[0].image, colour)
    assert np.all(frames[1].image == 77)
    assert any("b.png" in event for event in grabber.events)


def test_single_image_is_one_frame(tmp_path):
    path = tmp_path / "x.jpg"
    cv2.imwrite(str(path), np.full((20, 30, 3), 128, np.uint8))
    with LatestFrameGrabber(parse_source(str(path)), GrabberOptions(lossless=True)) as grabber:
        frames = drain(grabber)
    assert len(frames) == 1 and frames[0].image.shape == (20, 30, 3)


# -- the grabber -------------------------------------------------------------------------------
def test_lossless_grabber_hands_every_frame_in_order(video, digits):
    with LatestFrameGrabber(parse_source(str(video)), GrabberOptions(lossless=True)) as grabber:
        frames = drain(grabber, delay=0.002)
    assert [f.seq for f in frames] == list(range(1, len(digits[0]) + 1))
    assert grabber.dropped == 0
    assert all(np.array_equal(f.image, d) for f, d in zip(frames, digits[0]))


def test_slow_consumer_gets_newest_frames_and_drops_are_counted(video):
    """A camera-like (paced) source faster than inference: stale frames are dropped, never queued."""
    spec = parse_source(str(video), loop=True)
    with LatestFrameGrabber(spec, GrabberOptions(realtime=True)) as grabber:
        frames = drain(grabber, limit=8, delay=0.1)  # 10 frames/s taken from a 30 frames/s source
    seqs = [f.seq for f in frames]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert grabber.dropped > 0
    assert max(np.diff(seqs)) > 1  # frames were skipped, not delivered late
    # Every captured frame was either handed out, dropped, or is the one still in the slot.
    assert grabber.captured - grabber.dropped - len(frames) in (0, 1)


def test_looping_video_starts_again(tmp_path, digits):
    short = write_video(digits[0][:5], tmp_path / "short.mkv", fps=30.0)
    with LatestFrameGrabber(parse_source(str(short), loop=True), GrabberOptions(lossless=True)) as grabber:
        frames = drain(grabber, limit=17)
    assert len(frames) == 17 and grabber.loops >= 3
    assert np.array_equal(frames[5].image, digits[0][0]) and grabber.reopens == 0


def test_looping_video_removed_and_restored_mid_run_is_reopened(tmp_path, digits):
    path = write_video(digits[0][:5], tmp_path / "soak.mkv", fps=30.0)
    aside = tmp_path / "aside.mkv"
    events: list[str] = []
    options = GrabberOptions(lossless=True, backoff_initial=0.05, backoff_max=0.2)
    with LatestFrameGrabber(parse_source(str(path), loop=True), options, on_event=events.append) as grabber:
        first = drain(grabber, limit=3)
        path.rename(aside)  # gone: the next loop's reopen fails until it is back
        rest = drain(grabber, limit=2)
        time.sleep(0.5)
        aside.rename(path)
        more = drain(grabber, limit=10)
    assert len(first) + len(rest) + len(more) == 15
    assert any("reopen of" in e and "failed" in e for e in events)
    assert np.array_equal(more[-1].image, digits[0][(15 - 1) % 5])


class FlakyUsbCamera:
    """Test double for a USB camera (none exists here): wraps a REAL cv2.VideoCapture of a video file and
    injects the faults a camera shows in the field, by global read count."""

    def __init__(self, path, faults: dict[int, str], failed_opens: int = 0):
        self.path, self.faults, self.failed_opens = str(path), faults, failed_opens
        self.reads = 0
        self.opens = 0

    def open(self, target, backend):
        self.opens += 1
        cap = cv2.VideoCapture(self.path)
        if self.failed_opens > 0 and self.opens > 1:  # unplugged: the device node is gone for a while
            self.failed_opens -= 1
            cap.release()
            return cv2.VideoCapture()
        return _Wrapped(cap, self)


class _Wrapped:
    def __init__(self, cap, owner):
        self.cap, self.owner = cap, owner

    def read(self):
        self.owner.reads += 1
        fault = self.owner.faults.get(self.owner.reads)
        ok, frame = self.cap.read()
        if fault == "raise":
            raise cv2.error("VIDEOIO(V4L2): select() timeout")
        if fault == "false":
            return False, None
        if fault == "empty":
            return True, np.zeros((0, 0, 3), np.uint8)
        if fault == "resize" and ok:
            return True, cv2.resize(frame, (64, 48))
        if fault == "block":
            time.sleep(1.5)
        return ok, frame

    def __getattr__(self, name):
        return getattr(self.cap, name)


def test_failing_camera_is_reopened_with_backoff_and_the_run_goes_on(video):
    camera = FlakyUsbCamera(video, {5: "raise", 9: "false", 13: "empty", 17: "resize", 21: "block"}, failed_opens=2)
    spec = SourceSpec(SourceKind.CAMERA, "0")
    options = GrabberOptions(stall_timeout=0.5, backoff_initial=0.02, backoff_max=0.1)
    events: list[str] = []
    with LatestFrameGrabber(spec, options, factory=lambda s: OpenCVSource(s, capture_factory=camera.open),
                            on_event=events.append) as grabber:
        frames = drain(grabber, limit=40)
    assert len(frames) == 40
    assert grabber.reopens >= 4 and grabber.failures >= 6  # 4 faults + blocked read + 2 failed opens
    assert grabber.resolution_changes >= 1
    assert any("blocked" in e for e in events) and any("reopen of" in e and "failed" in e for e in events)
    assert all(f.image.ndim == 3 and f.image.size for f in frames)


def test_http_stream_that_goes_down_is_reopened_with_exponential_backoff():
    """A real MJPEG-over-HTTP stream (the viewer's own server), read by OpenCV's FFmpeg, that stops and
    comes back on the same port."""
    from edgecnn.devices.serve import ViewerServer

    server = ViewerServer("127.0.0.1", 0).start()
    port, stop = server.port, threading.Event()
    servers = [server]

    def publish():
        i = 0
        while not stop.is_set():
            servers[-1].publish(np.full((60, 80, 3), i % 250, np.uint8), {"frame": i})
            i += 1
            time.sleep(0.02)

    threading.Thread(target=publish, daemon=True).start()
    events: list[str] = []
    spec = parse_source(f"http://127.0.0.1:{port}/stream.mjpg")
    options = GrabberOptions(stall_timeout=2.0, backoff_initial=0.05, backoff_max=0.4)
    try:
        with LatestFrameGrabber(spec, options, on_event=events.append) as grabber:
            before = drain(grabber, limit=10)
            server.stop()
            time.sleep(1.0)  # down for a while: several reopen attempts fail
            servers.append(ViewerServer("127.0.0.1", port).start())
            after = drain(grabber, limit=10)
    finally:
        stop.set()
        servers[-1].stop()
    assert len(before) == len(after) == 10 and after[0].image.shape == (60, 80, 3)
    waits = [float(e.split()[1]) for e in events if e.startswith("waiting")]
    assert len(waits) >= 3 and waits[1] == pytest.approx(2 * waits[0]) and max(waits) <= 0.4
    assert grabber.reopens >= 3 and any(e.startswith("reopened stream") for e in events)


def test_camera_that_never_returns_gives_up_after_max_reopens(video):
    camera = FlakyUsbCamera(video, {}, failed_opens=100)
    camera.faults = {n: "false" for n in range(1, 1000)}
    spec = SourceSpec(SourceKind.CAMERA, "0")
    options = GrabberOptions(backoff_initial=0.01, backoff_max=0.02, max_reopens=3)
    with LatestFrameGrabber(spec, options, factory=lambda s: OpenCVSource(s, capture_factory=camera.open)) as grabber:
        with pytest.raises(SourceError) as info:
            drain(grabber)
    assert "reopened 3 time(s)" in str(info.value)


def test_stop_is_prompt_while_waiting_for_a_slow_consumer(video):
    grabber = LatestFrameGrabber(parse_source(str(video)), GrabberOptions(lossless=True)).start()
    assert grabber.next_frame(timeout=2.0) is not None
    started = time.monotonic()
    grabber.stop()
    assert time.monotonic() - started < 2.0
    assert not grabber._thread.is_alive()


# -- the Pi camera -----------------------------------------------------------------------------
class FakePicamera2:
    """Test double for picamera2.Picamera2 (no Pi camera here). Like libcamera's "RGB888", it hands out
    B,G,R byte order."""

    instances: list["FakePicamera2"] = []

    def __init__(self):
        self.config, self.started, self.closed = None, False, False
        FakePicamera2.instances.append(self)

    def create_video_configuration(self, main):
        return {"main": dict(main)}

    def configure(self, config):
        self.config = config

    def start(self):
        self.started = True

    def capture_array(self, name):
        frame = np.zeros((self.config["main"]["size"][1], self.config["main"]["size"][0], 3), np.uint8)
        frame[:, :, 0] = 255  # blue, in the first byte: BGR in memory
        return frame

    def stop(self):
        self.started = False

    def close(self):
        self.closed = True


def test_picamera_frames_are_bgr_and_the_camera_is_released(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", types.SimpleNamespace(Picamera2=FakePicamera2))
    spec = parse_source("picamera2", width=320, height=240)
    with open_source(spec) as source:
        frame = source.read()
    camera = FakePicamera2.instances[-1]
    assert camera.config["main"] == {"size": (320, 240), "format": "RGB888"}
    assert frame.shape == (240, 320, 3) and frame[0, 0].tolist() == [255, 0, 0]  # unconverted: BGR, blue
    assert camera.closed and not camera.started


def test_picamera_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)
    with pytest.raises(RuntimeMissingError, match="picamera2"):
        open_source(parse_source("picam")).open()


def test_read_before_open_is_a_read_error(video):
    with pytest.raises(FrameReadError):
        OpenCVSource(parse_source(str(video))).read()
