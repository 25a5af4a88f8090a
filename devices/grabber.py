"""Capture in its own thread and hand the newest frame to inference.

One slot, not a queue: a frame that inference did not take before the next one arrived is dropped and
counted, so inference never works on stale frames and memory stays flat. A file read without pacing is
``lossless`` instead: capture decodes at most ``lossless_depth`` frames ahead and then waits, so every
frame is classified while decoding still overlaps inference (a file has no stale frames to avoid).

Faults: a live source (camera, stream) that raises, returns empty frames or blocks for longer than
``stall_timeout`` is closed and reopened with exponential backoff, forever unless ``max_reopens`` is set.
A blocked read cannot be interrupted (OpenCV holds it in C), so its reader thread is abandoned and closes
its source when the read finally returns; a new reader opens a fresh source meanwhile.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import dataclass
from typing import Callable, NamedTuple, Optional

import numpy as np

from edgecnn.devices.sources import FrameReadError, FrameSource, SourceSpec, frame_interval, open_source
from edgecnn.errors import EdgecnnError, SourceError


@dataclass(frozen=True)
class GrabberOptions:
    """How frames are captured: lossless or newest-only, pacing, stall and reopen timing."""

    lossless: bool = False          # hand every frame: capture waits for inference (files without pacing)
    lossless_depth: int = 3         # lossless only: frames decoded ahead, to absorb scheduling jitter
    realtime: bool = False          # pace a source at its nominal FPS (a file played like a camera)
    stall_timeout: float = 5.0      # a read blocked this long is a failure: abandon it and reopen
    backoff_initial: float = 0.1    # seconds before the first reopen; doubles up to backoff_max
    backoff_max: float = 5.0
    max_reopens: Optional[int] = None  # None: keep trying (a camera may be plugged back in)


class Frame(NamedTuple):
    """One captured frame and when it was captured."""

    image: np.ndarray  # BGR uint8 (H, W, 3)
    seq: int           # 1-based capture count over the whole run
    timestamp: float   # wall-clock time of capture (time.time())
    capture_ms: float  # how long the read took
    name: str = ""     # the image file it was read from (a folder or image source), else ""


class LatestFrameGrabber:
    """``with LatestFrameGrabber(spec) as grab: frame = grab.next_frame(timeout=0.5)``."""

    def __init__(self, spec: SourceSpec, options: GrabberOptions = GrabberOptions(),
                 factory: Callable[[SourceSpec], FrameSource] = open_source,
                 on_event: Optional[Callable[[str], None]] = None) -> None:
        self.spec = spec
        self.options = options
        self._factory = factory
        self._on_event = on_event
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._slot: collections.deque[Frame] = collections.deque()
        self._seq = 0
        self._gen = 0
        self._read_started: Optional[float] = None
        self._outcome: dict[int, str] = {}
        self._ended = False
        self._error: Optional[EdgecnnError] = None
        self._thread: Optional[threading.Thread] = None
        self._size: Optional[tuple[int, int]] = None
        self.fps = 0.0
        self.captured = 0
        self.dropped = 0
        self.reopens = 0
        self.failures = 0
        self.loops = 0
        self.resolution_changes = 0
        self.events: collections.deque[str] = collections.deque(maxlen=50)

    # -- consumer side -------------------------------------------------------------------------
    def start(self) -> "LatestFrameGrabber":
        """Open the source now (a bad spec fails here, in the caller), then capture in a thread."""
        source = self._factory(self.spec)
        source.open()
        self.fps = source.fps
        self._thread = threading.Thread(target=self._supervise, args=(source,), name="edgecnn-capture", daemon=True)
        self._thread.start()
        return self

    def next_frame(self, timeout: Optional[float] = None) -> Optional[Frame]:
        """The newest frame not handed out yet (lossless: the next in order); None on timeout or when the
        source has ended (see ``ended``)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while not self._slot and not self._ended:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining)
            frame = self._slot.popleft() if self._slot else None
            self._cond.notify_all()  # a lossless reader waits for the slot to empty
            if frame is None and self._error is not None:
                raise self._error
            return frame

    def start_counting(self) -> int:
        """Count dropped frames from now on. A source opened before its consumer was ready (a camera started
        while the model loads) replaced frames that nobody was there to take: not inference falling behind.
        Returns the sequence number of the last frame captured before now (0 if none)."""
        with self._cond:
            self.dropped = 0
            return self._seq

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._ended and not self._slot

    def stop(self) -> None:
        self._stop.set()
        with self._cond:
            self._gen += 1  # the reader sees a new generation and leaves after its current read
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=self.options.stall_timeout + 1.0)

    def __enter__(self) -> "LatestFrameGrabber":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- capture side --------------------------------------------------------------------------
    def _supervise(self, source: FrameSource) -> None:
        delay = self.options.backoff_initial
        first, restart = True, False
        while not self._stop.is_set():
            if not first:
                source = self._reopen(counted=not restart)
                if source is None:
                    delay = self._wait_backoff(delay)
                    if self._give_up():
                        break
                    continue
            first, restart = False, False
            captured_before = self.captured
            outcome = self._run_reader(source)
            if self.captured > captured_before:
                delay = self.options.backoff_initial  # it worked for a while: start backoff afresh
            if outcome == "stop":
                break
            if outcome == "end":
                if not self.spec.loop:
                    break
                self.loops += 1
                restart = True  # a loop, not a failure: reopen without backoff or counting
                continue
            self.failures += 1
            if self._give_up():
                break
            delay = self._wait_backoff(delay)
        self._finish()

    def _reopen(self, counted: bool = True) -> Optional[FrameSource]:
        self.reopens += int(counted)
        try:
            source = self._factory(self.spec)
            source.open()
        except (EdgecnnError, FrameReadError, OSError) as exc:
            self._event(f"reopen of {self.spec.describe()} failed: {exc}")
            self.failures += 1
            return None
        if counted:
            self._event(f"reopened {self.spec.describe()}")
        return source

    def _give_up(self) -> bool:
        limit = self.options.max_reopens
        if limit is not None and self.reopens >= limit:
            self._error = SourceError(f"{self.spec.describe()} failed {self.failures} time(s) and was reopened "
                                      f"{self.reopens} time(s)", "check the camera or stream")
            return True
        return False

    def _wait_backoff(self, delay: float) -> float:
        self._event(f"waiting {delay:.2f} s before reopening")
        self._stop.wait(delay)
        return min(delay * 2.0, self.options.backoff_max)

    def _run_reader(self, source: FrameSource) -> str:
        """Read in a worker thread while watching for a blocked read; return why reading stopped."""
        with self._cond:
            self._gen += 1
            gen = self._gen
            self._read_started = None
        reader = threading.Thread(target=self._read_loop, args=(gen, source), name="edgecnn-reader", daemon=True)
        reader.start()
        while reader.is_alive():
            reader.join(timeout=min(0.1, self.options.stall_timeout / 4))
            started = self._read_started
            if reader.is_alive() and started is not None and time.monotonic() - started > self.options.stall_timeout:
                with self._cond:
                    self._gen += 1  # abandon it: its source is closed when (if) the read returns
                self._event(f"{self.spec.describe()} blocked for over {self.options.stall_timeout:g} s")
                return "stop" if self._stop.is_set() else "stalled"
        return self._outcome.pop(gen, "stop")

    def _read_loop(self, gen: int, source: FrameSource) -> None:
        outcome = "stop"
        interval = frame_interval(source.fps) if self.options.realtime else 0.0
        due = time.monotonic()
        try:
            while self._current(gen):
                if self.options.lossless and not self._wait_slot_free(gen):
                    break
                if interval:
                    due = self._pace(due, interval)
                t0 = time.monotonic()
                self._read_started = t0
                try:
                    image = source.read()
                except FrameReadError as exc:
                    if self.spec.live:
                        self._event(f"{self.spec.describe()}: {exc}")
                        outcome = "error"
                        break
                    self._event(f"skipped a frame: {exc}")  # a bad image in a folder: go on to the next
                    continue
                except Exception as exc:  # noqa: BLE001 - cv2.error and driver errors must not kill capture
                    self._event(f"{self.spec.describe()} raised {type(exc).__name__}: {exc}")
                    outcome = "error" if self.spec.live else "end"
                    break
                finally:
                    self._read_started = None
                if image is None:
                    outcome = "end"
                    break
                self._publish(gen, image, t0, getattr(source, "name", ""))
        finally:
            self._outcome[gen] = outcome
            source.close()

    def _current(self, gen: int) -> bool:
        return gen == self._gen and not self._stop.is_set()

    def _wait_slot_free(self, gen: int) -> bool:
        with self._cond:
            while len(self._slot) >= self.options.lossless_depth and self._current(gen):
                self._cond.wait(0.5)
            return self._current(gen)

    def _pace(self, due: float, interval: float) -> float:
        now = time.monotonic()
        if due > now:
            self._stop.wait(due - now)
            return due + interval
        return now + interval  # behind schedule: do not burst to catch up

    def _publish(self, gen: int, image: np.ndarray, t0: float, name: str = "") -> None:
        capture_ms = (time.monotonic() - t0) * 1000.0
        size = (int(image.shape[1]), int(image.shape[0]))
        if self._size is not None and size != self._size:
            self.resolution_changes += 1
            self._event(f"resolution changed from {self._size[0]}x{self._size[1]} to {size[0]}x{size[1]}")
        self._size = size
        with self._cond:
            if gen != self._gen:
                return  # an abandoned reader's late frame
            if self._slot and not self.options.lossless:
                self._slot.clear()  # the newest frame replaces an untaken one: counted, never queued
                self.dropped += 1
            self._seq += 1
            self.captured += 1
            self._slot.append(Frame(image, self._seq, time.time(), capture_ms, name))
            self._cond.notify_all()

    def _finish(self) -> None:
        with self._cond:
            self._ended = True
            self._cond.notify_all()

    def _event(self, text: str) -> None:
        self.events.append(text)
        if self._on_event is not None:
            self._on_event(text)
