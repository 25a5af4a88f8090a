"""Frame sources by spec: a camera (index or /dev/video path), the Pi camera, a video file, a folder of
images, a single image, or an rtsp:// / http(s):// stream.

Every source yields BGR uint8 frames (H, W, 3), the order OpenCV uses, so the live loop always passes
``source_color=BGR`` to preprocessing. A source is a context manager; ``read`` returns the next frame,
``None`` at the end of a finite source, and raises ``FrameReadError`` for a failure that reopening may
cure (a camera unplugged, an empty frame, a dropped stream). The threaded LatestFrameGrabber
(devices/grabber.py) turns these failures into reopen-with-backoff.
"""
from __future__ import annotations

import abc
import os
import sys
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgecnn.errors import RuntimeMissingError, SourceError
from edgecnn.fileio import IMAGE_SUFFIXES, image_files

STREAM_PREFIXES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")
PICAMERA_NAMES = ("picamera2", "picam", "picamera")


class SourceKind(str, Enum):
    CAMERA = "camera"      # OpenCV device: index or /dev/videoN
    PICAMERA = "picamera"  # the Raspberry Pi camera through picamera2
    VIDEO = "video"        # a video file
    FOLDER = "folder"      # a folder of images, in name order
    IMAGE = "image"        # one image file
    STREAM = "stream"      # an rtsp/http stream URL

    @property
    def live(self) -> bool:
        """Live sources are reopened when they fail; finite ones end the run."""
        return self in (SourceKind.CAMERA, SourceKind.PICAMERA, SourceKind.STREAM)


@dataclass(frozen=True)
class SourceSpec:
    """A parsed --source: its kind, target and capture requests."""

    kind: SourceKind
    target: str                          # the index, device path, file, folder or URL
    width: Optional[int] = None          # requested capture size for cameras (None: the driver's default)
    height: Optional[int] = None
    loop: bool = False                   # finite sources start again at the end (soak tests)

    @property
    def live(self) -> bool:
        return self.kind.live

    def describe(self) -> str:
        return f"{self.kind.value} {self.target}"


class FrameReadError(Exception):
    """A read that failed in a way reopening may cure; internal to sources and the grabber."""


def parse_source(text: str, width: Optional[int] = None, height: Optional[int] = None,
                 loop: bool = False) -> SourceSpec:
    """Recognise ``text``: "0", "/dev/video0", "picamera2", a URL, a folder, an image or a video file."""
    raw = str(text).strip()
    if not raw:
        raise SourceError("the frame source is empty", "give a camera index, a device path, a file, a folder or a URL")
    lowered = raw.lower()
    if raw.isdigit():
        return SourceSpec(SourceKind.CAMERA, raw, width, height, loop)
    if lowered in PICAMERA_NAMES:
        return SourceSpec(SourceKind.PICAMERA, "picamera2", width, height, loop)
    if lowered.startswith(STREAM_PREFIXES):
        return SourceSpec(SourceKind.STREAM, raw, width, height, loop)
    if raw.startswith("/dev/"):
        if not Path(raw).exists():
            raise SourceError(f"camera device {raw} does not exist", "list cameras with `edgecnn doctor`")
        return SourceSpec(SourceKind.CAMERA, raw, width, height, loop)
    path = Path(raw).expanduser()
    if not path.exists():
        raise SourceError(f"source {raw} is not a camera, URL or existing file/folder",
                          "give a camera index (0), /dev/videoN, picamera2, a video/image file, a folder or a URL")
    if path.is_dir():
        return SourceSpec(SourceKind.FOLDER, str(path), width, height, loop)
    kind = SourceKind.IMAGE if path.suffix.lower() in IMAGE_SUFFIXES else SourceKind.VIDEO
    return SourceSpec(kind, str(path), width, height, loop)


class FrameSource(abc.ABC):
    """One opened source. ``read`` -> BGR uint8 frame, None at the end, or FrameReadError."""

    name = ""  # the file the last frame was read from (folder and image sources), else ""

    def __init__(self, spec: SourceSpec) -> None:
        self.spec = spec

    @abc.abstractmethod
    def open(self) -> None:
        """Open the device or file; raise SourceError if it cannot be opened."""

    @abc.abstractmethod
    def read(self) -> Optional[np.ndarray]:
        """The next frame, or None when a finite source has no more."""

    def close(self) -> None:  # noqa: B027 - sources with nothing to free
        """Release the device or file."""

    @property
    def fps(self) -> float:
        """The nominal frame rate (0 when unknown)."""
        return 0.0

    def __enter__(self) -> "FrameSource":
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _cv2():
    try:
        import cv2  # noqa: PLC0415 - heavy; only the live path needs it
    except ImportError:
        raise RuntimeMissingError("frame sources need OpenCV", "pip install 'edgecnn[device]'") from None
    return cv2


def as_bgr(frame: np.ndarray) -> np.ndarray:
    """Any decoded frame (grey, BGRA, 16-bit) -> contiguous BGR uint8 (H, W, 3)."""
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise FrameReadError(f"frame has pixel type {frame.dtype}")
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim == 2:
        return np.ascontiguousarray(np.repeat(frame[:, :, None], 3, axis=2))
    if frame.ndim == 3 and frame.shape[2] == 4:
        frame = frame[:, :, :3]
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise FrameReadError(f"frame of shape {frame.shape} is not an image")
    return np.ascontiguousarray(frame)


_OPEN_HINTS = {
    SourceKind.CAMERA: "check that it is plugged in and not in use by another program (`edgecnn doctor` lists cameras)",
    SourceKind.STREAM: "check the URL and that the stream is up (try it with ffplay or VLC)",
    SourceKind.VIDEO: "check that it is a video file OpenCV can decode (.mp4, .avi, .mkv)",
}


class OpenCVSource(FrameSource):
    """A camera, a stream or a video file through cv2.VideoCapture (V4L2 for cameras on Linux)."""

    def __init__(self, spec: SourceSpec, capture_factory: Optional[Callable[[object, int], Any]] = None) -> None:
        super().__init__(spec)
        # capture_factory(target, backend) -> a cv2.VideoCapture-like object; tests wrap the real one to inject faults.
        self._capture_factory = capture_factory
        self._cap = None
        self._fps = 0.0

    def open(self) -> None:
        cv2 = _cv2()
        target: object = self.spec.target
        if self.spec.kind == SourceKind.CAMERA:
            target = int(self.spec.target) if self.spec.target.isdigit() else self.spec.target
            # V4L2 directly: the default backend order on Linux may try GStreamer first and hang on some Pis.
            backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        else:
            backend = cv2.CAP_FFMPEG if self.spec.kind == SourceKind.STREAM else cv2.CAP_ANY
        cap = (self._capture_factory or cv2.VideoCapture)(target, backend)
        if not cap.isOpened():
            cap.release()
            raise SourceError(f"cannot open {self.spec.describe()}", _OPEN_HINTS[self.spec.kind])
        if self.spec.kind == SourceKind.CAMERA:
            # A one-frame driver buffer: the newest frame, not one that waited in the driver's queue.
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
            if self.spec.width and self.spec.height:
                cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.spec.width)
                cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.spec.height)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        self._fps = fps if 0.0 < fps < 1000.0 else 0.0
        self._cap = cap

    def read(self) -> Optional[np.ndarray]:
        if self._cap is None:
            raise FrameReadError(f"{self.spec.describe()} is not open")
        ok, frame = self._cap.read()
        if not ok or frame is None or frame.size == 0:
            if self.spec.kind == SourceKind.VIDEO:
                return None  # the end of the file
            raise FrameReadError(f"{self.spec.describe()} returned no frame")
        return as_bgr(frame)

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    @property
    def fps(self) -> float:
        return self._fps


class ImageFilesSource(FrameSource):
    """A folder of images (name order) or one image; each decoded as BGR when read."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._files: list[Path] = []
        self._next = 0

    def open(self) -> None:
        path = Path(self.spec.target)
        if self.spec.kind == SourceKind.IMAGE:
            files = [path] if path.is_file() else []
        else:
            files = image_files(path) if path.is_dir() else []
        if not files:
            raise SourceError(f"no images at {path}", f"give a folder holding {', '.join(IMAGE_SUFFIXES)} files")
        self._files, self._next = files, 0

    def read(self) -> Optional[np.ndarray]:
        if self._next >= len(self._files):
            return None
        file = self._files[self._next]
        self._next += 1
        self.name = file.name
        image = _cv2().imread(str(file), _cv2().IMREAD_UNCHANGED)
        if image is None:
            raise FrameReadError(f"cannot decode image {file}")
        return as_bgr(image)


class PiCameraSource(FrameSource):
    """The Raspberry Pi camera through picamera2 (imported only here, only when used)."""

    def __init__(self, spec: SourceSpec) -> None:
        super().__init__(spec)
        self._camera = None

    def open(self) -> None:
        try:
            from picamera2 import Picamera2  # noqa: PLC0415 - only on a Pi
        except ImportError:
            raise RuntimeMissingError("the Pi camera needs picamera2",
                                      "sudo apt install python3-picamera2 (or pip install 'edgecnn[pi]')") from None
        size = (self.spec.width or 640, self.spec.height or 480)
        try:
            camera = Picamera2()
            # libcamera names formats by word order: "RGB888" is B,G,R bytes in memory, i.e. exactly the
            # BGR layout OpenCV uses, so frames go on unconverted (asking for "BGR888" would give RGB).
            camera.configure(camera.create_video_configuration(main={"size": size, "format": "RGB888"}))
            camera.start()
        except Exception as exc:  # noqa: BLE001 - libcamera raises RuntimeError, IndexError (no camera), ...
            raise SourceError(f"cannot open the Pi camera ({type(exc).__name__}: {exc})",
                              "check the ribbon cable and `rpicam-hello --list-cameras`") from None
        self._camera = camera

    def read(self) -> Optional[np.ndarray]:
        if self._camera is None:
            raise FrameReadError("the Pi camera is not open")
        try:
            frame = self._camera.capture_array("main")
        except Exception as exc:  # noqa: BLE001 - any libcamera failure is a reopenable read failure
            raise FrameReadError(f"Pi camera capture failed ({exc})") from None
        if frame is None or frame.size == 0:
            raise FrameReadError("the Pi camera returned an empty frame")
        return as_bgr(frame)  # already BGR (see open); drops a padding/alpha channel if any

    def close(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            for step in (camera.stop, camera.close):
                try:
                    step()
                except Exception:  # noqa: BLE001 - closing must not mask the reason the run ended
                    pass


def open_source(spec: SourceSpec) -> FrameSource:
    """A new, not yet opened FrameSource for ``spec`` (use it as a context manager)."""
    if spec.kind == SourceKind.PICAMERA:
        return PiCameraSource(spec)
    if spec.kind in (SourceKind.FOLDER, SourceKind.IMAGE):
        return ImageFilesSource(spec)
    return OpenCVSource(spec)


def frame_interval(fps: float, fallback: float = 30.0) -> float:
    """Seconds between frames for pacing a file at its own rate."""
    return 1.0 / (fps if fps > 0 else fallback)


def has_display() -> bool:
    """True when a window can be shown (X11 or Wayland on Linux; always elsewhere)."""
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True
