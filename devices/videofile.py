"""Writing video files: the annotated recording of a run.

A recording is written to a temporary name beside the target (keeping the extension, which OpenCV uses
to pick the container) and renamed into place when it is closed, so a killed run never leaves a
half-written file under the name the user asked for.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterable, Optional

import numpy as np

from edgecnn.errors import OutputPathError, RuntimeMissingError

# Container -> codec: MJPG/FFV1 keep frames faithful; mp4v is what opencv-python's FFmpeg can write to .mp4.
FOURCC = {".avi": "MJPG", ".mkv": "FFV1", ".mp4": "mp4v", ".m4v": "mp4v", ".mov": "mp4v"}


def _cv2():
    try:
        import cv2  # noqa: PLC0415
    except ImportError:
        raise RuntimeMissingError("writing video needs OpenCV", "pip install 'edgecnn[device]'") from None
    return cv2


def partial_name(final: Path) -> Path:
    return final.parent / f".{final.stem}.partial-{os.getpid()}{final.suffix}"


class VideoRecorder:
    """Frames of any size in, one fixed-size video out (the first frame's size); atomic on close."""

    def __init__(self, path: Path, fps: float, fourcc: Optional[str] = None) -> None:
        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if fourcc is None and suffix not in FOURCC:
            raise OutputPathError(f"cannot record to '{self.path.name}'", f"use one of {', '.join(sorted(FOURCC))}")
        self.fourcc = fourcc or FOURCC[suffix]
        self.fps = fps if fps > 0 else 30.0
        self.frames = 0
        self._tmp = partial_name(self.path)
        self._writer = None
        self._size: Optional[tuple[int, int]] = None

    def write(self, frame: np.ndarray) -> None:
        cv2 = _cv2()
        if self._writer is None:
            self._open(cv2, (int(frame.shape[1]), int(frame.shape[0])))
        if (frame.shape[1], frame.shape[0]) != self._size:
            frame = cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)  # the camera changed resolution
        self._writer.write(np.ascontiguousarray(frame))
        self.frames += 1

    def _open(self, cv2, size: tuple[int, int]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*self.fourcc), self.fps, size)
        if not writer.isOpened():
            raise OutputPathError(f"OpenCV cannot write {self.fourcc} video to {self.path}",
                                  "try another extension (.avi, .mp4) or folder")
        self._writer, self._size = writer, size

    def close(self, keep: bool = True) -> Optional[Path]:
        """Finish the file and rename it into place (``keep``), or remove it; returns the final path."""
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()
        if keep and self.frames and self._tmp.exists():
            os.replace(self._tmp, self.path)
            return self.path
        with contextlib.suppress(OSError):
            self._tmp.unlink()
        return None

    def __enter__(self) -> "VideoRecorder":
        return self

    def __exit__(self, exc_type, *rest: object) -> None:
        self.close(keep=exc_type is None or exc_type is KeyboardInterrupt)
