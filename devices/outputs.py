"""Where the live loop's results go besides the summary: JSON lines, and a window when there is a display.

``unpack_result`` is the one place that reads the Classifier's result (devices/classify.py), so the
loop and its outputs do not depend on its field names.
"""
from __future__ import annotations

import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgecnn.devices.sources import has_display
from edgecnn.errors import OutputPathError, UsageError


def unpack_result(result: Any) -> tuple[list[tuple[int, str, float]], dict[str, float],
                                        Optional[list[tuple[int, str, float]]]]:
    """A devices.classify.ClassifyResult -> ([(index, label, score)...], {"preprocess": ms, ...}, over_threshold),
    where over_threshold lists a multi-label head's classes at or over its threshold (None for other heads)."""
    top = [(int(p.index), str(p.label), float(p.score)) for p in result.top]
    times = result.times
    over = getattr(result, "over_threshold", None)
    active = None if over is None else [(int(p.index), str(p.label), float(p.score)) for p in over]
    return top, {"preprocess": float(times.preprocess_ms), "inference": float(times.inference_ms),
                 "postprocess": float(times.postprocess_ms)}, active


def predictions_json(predictions: list[tuple[int, str, float]], digits: int = 6) -> list[dict[str, Any]]:
    return [{"index": i, "label": label, "score": round(score, digits)} for i, label, score in predictions]


class JsonlWriter:
    """One JSON object per line to stdout ("-") or to a file written beside its final name and renamed
    into place on close, so a crashed run leaves no half-written file under the name asked for."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.lines = 0
        self._final: Optional[Path] = None
        self._tmp: Optional[Path] = None
        if target == "-":
            self._handle = sys.stdout
            return
        final = Path(target)
        self._tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            self._handle = open(self._tmp, "w", encoding="utf-8")
        except OSError as exc:
            raise OutputPathError(f"cannot write {final} ({exc.strerror or exc})", "choose a writable path for --jsonl") from None
        self._final = final

    def write(self, record: dict[str, Any]) -> None:
        self._handle.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.lines += 1
        if self._final is None:
            self._handle.flush()  # a pipe reader sees each frame as it happens

    def close(self, keep: bool = True) -> None:
        if self._final is None:
            self._handle.flush()
            return
        if self._handle.closed:
            return
        self._handle.close()
        if keep:
            os.replace(self._tmp, self._final)
        else:
            with contextlib.suppress(OSError):
                self._tmp.unlink()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, exc_type, *rest: object) -> None:
        self.close(keep=exc_type is None or exc_type is KeyboardInterrupt)


class FrameWindow:
    """An OpenCV window for the annotated video: on with "show", off with "hide", and with "auto" only when
    there is a display. Returns False from ``show`` when the user pressed q or Esc."""

    def __init__(self, mode: str, title: str, on_event: Optional[Callable[[str], None]] = None) -> None:
        self.mode, self.title = mode, title
        self.active = mode == "show" or (mode == "auto" and has_display())
        self._on_event = on_event
        self._opened = False

    def show(self, frame: np.ndarray) -> bool:
        if not self.active:
            return True
        import cv2  # noqa: PLC0415

        try:
            if not self._opened:
                cv2.namedWindow(self.title, cv2.WINDOW_NORMAL)
                self._opened = True
            cv2.imshow(self.title, frame)
            key = cv2.waitKey(1) & 0xFF
        except cv2.error:
            return self._no_gui()
        return key not in (ord("q"), 27)

    def _no_gui(self) -> bool:
        if self.mode == "show":
            raise UsageError("cannot show a window: this OpenCV has no GUI support (opencv-python-headless?)",
                             "pip install opencv-python, or use --serve PORT / --no-show")
        self.active = False
        if self._on_event is not None:
            self._on_event("no window: this OpenCV has no GUI support; use --serve PORT to watch")
        return True

    def close(self) -> None:
        if self._opened:
            import cv2  # noqa: PLC0415

            with contextlib.suppress(cv2.error):
                cv2.destroyWindow(self.title)
            self._opened = False

    def __enter__(self) -> "FrameWindow":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
