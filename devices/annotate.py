"""Draw the top-k labels, scores and FPS on a BGR frame (for the window, the recording and the web viewer)."""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

Prediction = tuple[int, str, float]  # (class index, label, score)


def _cv2():
    import cv2  # noqa: PLC0415 - the live path only

    return cv2


def annotate(frame: np.ndarray, top: Sequence[Prediction], fps: Optional[float] = None,
             min_height: int = 160) -> np.ndarray:
    """A new BGR uint8 frame with the predictions top-left and the FPS top-right; ``frame`` is not changed.

    Frames smaller than ``min_height`` (a 28x28 digit) are scaled up first so that the text stays legible.
    """
    cv2 = _cv2()
    canvas = np.ascontiguousarray(frame)
    if canvas.ndim == 2:
        canvas = np.repeat(canvas[:, :, None], 3, axis=2)
    height, width = canvas.shape[:2]
    if height < min_height:
        factor = min_height / height
        canvas = cv2.resize(canvas, (max(1, round(width * factor)), min_height), interpolation=cv2.INTER_NEAREST)
    else:
        canvas = canvas.copy()
    height, width = canvas.shape[:2]
    scale = max(0.4, height / 480.0)
    thickness = max(1, round(scale * 1.5))
    line = int(26 * scale)
    lines = [f"{label} {score:.2f}" for _, label, score in top]
    if lines:
        box_w = min(width, int(max(len(text) for text in lines) * 13 * scale) + 12)
        box_h = min(height, line * len(lines) + 10)
        # Darken under the text so it reads on any image.
        canvas[:box_h, :box_w] = (canvas[:box_h, :box_w] * 0.35).astype(np.uint8)
        for row, text in enumerate(lines):
            colour = (80, 255, 80) if row == 0 else (230, 230, 230)
            cv2.putText(canvas, text, (6, line * (row + 1)), cv2.FONT_HERSHEY_SIMPLEX, 0.7 * scale, colour,
                        thickness, cv2.LINE_AA)
    if fps is not None:
        text = f"{fps:.1f} FPS"
        (text_w, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale, thickness)
        cv2.putText(canvas, text, (max(0, width - text_w - 6), line), cv2.FONT_HERSHEY_SIMPLEX, 0.6 * scale,
                    (0, 220, 255), thickness, cv2.LINE_AA)
    return canvas
