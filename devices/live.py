"""The live loop: frames from a source, classified on a device, with stats, JSON lines, a recording, a
window and a web viewer.

Capture runs in its own thread (devices/grabber.py) so reading frame n+1 overlaps inference on frame n;
JPEG encoding for the web viewer runs in the viewer's thread. The loop itself only classifies, writes
one JSON line, and draws when something will show the drawing. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional, Union

from edgecnn.devices.base import RunnerOptions
from edgecnn.devices.grabber import Frame, GrabberOptions, LatestFrameGrabber
from edgecnn.devices.outputs import FrameWindow, JsonlWriter, predictions_json, unpack_result
from edgecnn.devices.sources import FrameSource, SourceKind, SourceSpec, open_source, parse_source
from edgecnn.devices.stats import STAGES, LiveStats
from edgecnn.errors import UsageError
from edgecnn.fileio import refuse_overwrite
from edgecnn.manifest import ColorOrder, OutputKind, Preprocessing
from edgecnn.prepchoice import PrepChoice


STATUS_INTERVAL_S = 0.1  # how often /status.json is refreshed


class Display(str, Enum):
    AUTO = "auto"  # a window when there is a display (DISPLAY / WAYLAND_DISPLAY)
    SHOW = "show"  # a window, or an error saying why there cannot be one
    HIDE = "hide"


class EndReason(str, Enum):
    SOURCE_END = "source-end"
    MAX_FRAMES = "max-frames"
    DURATION = "duration"
    INTERRUPTED = "interrupted"
    WINDOW_CLOSED = "window-closed"


@dataclass(frozen=True)
class RunOptions:
    """How `edgecnn run` runs: outputs, bounds, source pacing, viewer (see the CLI options of the same names)."""

    top_k: int = 5
    threshold: float = 0.5                      # a multi-label head lists every class at or over this score
    output_kind: Optional[OutputKind] = None    # override the manifest's (or, without one, the default) head kind
    runner: RunnerOptions = field(default_factory=RunnerOptions)
    prep: Union[Preprocessing, PrepChoice, None] = None  # options over the manifest's, or for a file without one
    labels: Union[tuple[str, ...], str, None] = None  # names, or a labels file (one per line)
    manifest: Optional[str] = None              # default: manifest.json beside the model
    max_frames: Optional[int] = None
    duration: Optional[float] = None            # seconds
    jsonl: Optional[str] = None                 # a path, or "-" for stdout
    record: Optional[str] = None                # an annotated video: .mp4, .avi, .mkv
    force: bool = False                         # overwrite --jsonl / --record outputs
    realtime: bool = False                      # pace a file at its FPS, like a camera (frames may drop)
    loop: bool = False                          # start a finite source again at its end (soak tests)
    serve: Optional[str] = None                 # "[HOST:]PORT" of the web viewer
    display: Display = Display.AUTO
    print_every: float = 1.0                    # seconds between printed result lines; <= 0 prints none
    quiet: bool = False                         # no source notices either (the summary only)
    width: Optional[int] = None                 # camera capture size request
    height: Optional[int] = None
    stall_timeout: float = 5.0
    backoff_max: float = 5.0

    def validate(self) -> None:
        if self.top_k < 1:
            raise UsageError(f"--top-k {self.top_k} is not positive", "give 1 or more")
        if not 0.0 <= self.threshold <= 1.0:
            raise UsageError(f"--threshold {self.threshold} is outside 0..1", "give a score such as 0.5")
        if self.max_frames is not None and self.max_frames < 1:
            raise UsageError(f"--max-frames {self.max_frames} is not positive", "give 1 or more")
        if self.duration is not None and self.duration <= 0:
            raise UsageError(f"--duration {self.duration} is not positive", "give seconds > 0")


class RunSummary(NamedTuple):
    """What a run did: frames, seconds, FPS, capture counts, why it ended, p50/p90 ms per stage."""

    frames: int
    seconds: float
    fps: float
    captured: int
    dropped: int
    reopens: int
    failures: int
    resolution_changes: int
    ended_by: EndReason
    ms: dict[str, dict[str, Optional[float]]]  # stage -> {"p50", "p90"}
    source: str
    runner: dict[str, Any]  # the runner's describe(): target, runtime, threads, preprocessing
    jsonl: Optional[str] = None
    record: Optional[str] = None
    url: Optional[str] = None
    events: tuple[str, ...] = ()


def open_classifier(model: Path | str, device: str, options: RunOptions):
    """The runners' Classifier for ``model`` on ``device`` (imported here: it loads a runtime)."""
    from edgecnn.devices.classify import Classifier  # noqa: PLC0415

    return Classifier.open(Path(model), target=device, options=options.runner, manifest=options.manifest,
                           prep=options.prep, labels=options.labels, top_k=options.top_k,
                           output_kind=options.output_kind, threshold=options.threshold)


def run(model: Path | str, device: str = "cpu", source: str = "0", options: RunOptions = RunOptions(), *,
        classifier: Any = None, printer: Optional[Callable[[str], None]] = None,
        on_frame: Optional[Callable[[dict[str, Any]], None]] = None,
        source_factory: Optional[Callable[[SourceSpec], FrameSource]] = None,
        on_ready: Optional[Callable[[], None]] = None) -> RunSummary:
    """Classify every frame of ``source`` until it ends, a bound is reached or Ctrl-C; return the summary.

    ``model``: a .tflite/.onnx artifact (its manifest beside it or embedded); ``device``: a target name;
    ``source``: a camera index or /dev/videoN, "picamera2", a video file, an image or a folder of images, or a
    stream URL. Returns a RunSummary (frames, seconds, FPS, captured/dropped counts, why it ended, p50/p90 ms per
    stage). Raises the errors of Classifier.open, and SourceError when the source cannot be opened.

    ``classifier``: an already open object with ``classify(frame, source_color=...)`` (benchmarks pass a
    deliberately slow one); by default the model is opened on ``device``. ``printer`` receives the
    headless result lines and source events; ``on_frame`` each frame's JSON record. ``source_factory``
    replaces devices.sources.open_source (tests put camera doubles at the hardware boundary with it).
    ``on_ready`` is called once, when the model is loaded and the source is open, before the first frame.
    """
    options.validate()
    in_camera = False
    if classifier is None:
        from edgecnn.devices.runners import get_target  # noqa: PLC0415

        in_camera = get_target(device).in_camera  # an unknown device name is reported before anything else is opened
    spec = parse_source(source, options.width, options.height, loop=options.loop)
    for path, option in ((options.jsonl, "--jsonl"), (options.record, "--record")):
        if path and path != "-":
            refuse_overwrite([Path(path)], options.force, option)
    with contextlib.ExitStack() as stack:
        if in_camera:  # the camera runs the network (IMX500): it gives both the frames and their results
            from edgecnn.devices.imx500 import open_session  # noqa: PLC0415

            session = stack.enter_context(open_session(model, spec, options.manifest, options.labels, options.top_k,
                                                       options.output_kind, threshold=options.threshold))
            classifier, source_factory = session.classifier, session.source_factory
        loop = _Loop(spec, options, classifier, printer, on_frame, source_factory or open_source)
        if not options.realtime:
            # A camera starts (a second or more on some) and a file decodes ahead while the model loads; a bad
            # source is named before the model is loaded at all. A file paced like a camera starts its clock
            # with the loop instead, so that no frame is skipped.
            loop.open_source(stack)
        if loop.classifier is None:
            loop.classifier = stack.enter_context(contextlib.closing(open_classifier(model, device, options)))
        for notice in getattr(loop.classifier, "notices", ()):
            if printer is not None:  # what was assumed about a file without a manifest: never silent
                printer(f"note: {notice}")
        if on_ready is not None:
            on_ready()
        return loop.run(stack)


class _Loop:
    def __init__(self, spec: SourceSpec, options: RunOptions, classifier: Any,
                 printer: Optional[Callable[[str], None]], on_frame: Optional[Callable[[dict[str, Any]], None]],
                 factory: Callable[[SourceSpec], FrameSource]):
        self.spec, self.options, self.classifier, self.factory = spec, options, classifier, factory
        self.printer, self.on_frame = printer, on_frame
        self.stats = LiveStats(STAGES)
        self.index = 0
        self.last_print = 0.0
        self.last_status = 0.0
        self.over: Optional[list] = None  # the latest frame's multi-label classes over the threshold
        self.jsonl: Optional[JsonlWriter] = None
        self.recorder: Any = None  # a devices.videofile.VideoRecorder with --record
        self.server = None
        self.window: Optional[FrameWindow] = None
        self.grabber: Optional[LatestFrameGrabber] = None
        self.loaded_at_seq = 0  # frames up to this capture number were read while the model loaded

    def open_source(self, stack: contextlib.ExitStack) -> LatestFrameGrabber:
        """Open the source and start capturing (a bad source fails here)."""
        opts = self.options
        grab_opts = GrabberOptions(lossless=not self.spec.live and not opts.realtime, realtime=opts.realtime,
                                   stall_timeout=opts.stall_timeout, backoff_max=opts.backoff_max)
        self.grabber = stack.enter_context(LatestFrameGrabber(self.spec, grab_opts, self.factory,
                                                              on_event=self._event))
        return self.grabber

    def run(self, stack: contextlib.ExitStack) -> RunSummary:
        opts = self.options
        grabber = self.grabber if self.grabber is not None else self.open_source(stack)
        # Frames a camera gave while the model loaded were nobody's to classify; their reads shared the CPU
        # with the model load, so their capture times are not the source's either (kept out of the stats).
        self.loaded_at_seq = grabber.start_counting()
        self._open_outputs(stack)
        if opts.record:
            from edgecnn.devices.videofile import VideoRecorder  # noqa: PLC0415 - only with --record

            self.recorder = stack.enter_context(VideoRecorder(Path(opts.record), grabber.fps or 30.0))
        self.stats = LiveStats(STAGES)  # start the clock when the source is open
        ended_by = self._loop(grabber)
        return self._summary(grabber, ended_by)

    def _open_outputs(self, stack: contextlib.ExitStack) -> None:
        opts = self.options
        if opts.jsonl:
            self.jsonl = stack.enter_context(JsonlWriter(opts.jsonl))
        if opts.serve:
            from edgecnn.devices.serve import ViewerServer, parse_bind  # noqa: PLC0415

            host, port = parse_bind(opts.serve)
            self.server = stack.enter_context(ViewerServer(host, port))
            self._event(f"web viewer at {self.server.url}")
        self.window = stack.enter_context(FrameWindow(opts.display.value, f"edgecnn: {self.spec.target}",
                                                      on_event=self._event))

    def _loop(self, grabber: LatestFrameGrabber) -> EndReason:
        opts = self.options
        deadline = None if opts.duration is None else time.monotonic() + opts.duration
        try:
            while True:
                if deadline is not None and time.monotonic() >= deadline:
                    return EndReason.DURATION
                frame = grabber.next_frame(timeout=0.25)
                if frame is None:
                    if grabber.ended:
                        return EndReason.SOURCE_END
                    continue
                if not self._process(frame, grabber):
                    return EndReason.WINDOW_CLOSED
                if opts.max_frames is not None and self.index >= opts.max_frames:
                    return EndReason.MAX_FRAMES
        except KeyboardInterrupt:
            return EndReason.INTERRUPTED

    def _process(self, frame: Frame, grabber: LatestFrameGrabber) -> bool:
        result = self.classifier.classify(frame.image, source_color=ColorOrder.BGR)
        top, stage_ms, over = unpack_result(result)
        ms = {"capture": frame.capture_ms, **stage_ms}
        self.stats.record(ms if frame.seq > self.loaded_at_seq else stage_ms)
        record = {"frame": self.index, "capture_seq": frame.seq, "timestamp": round(frame.timestamp, 6)}
        if getattr(frame, "name", ""):
            record["file"] = frame.name
        record["top_k"] = predictions_json(top)
        if over is not None:
            record["over_threshold"] = predictions_json(over)
        record["ms"] = {k: round(v, 3) for k, v in ms.items()}
        self.over = over
        self.index += 1
        if self.jsonl is not None:
            self.jsonl.write(record)
        if self.on_frame is not None:
            self.on_frame(record)
        keep_going = self._show(frame, top, grabber)
        self._print(record, grabber)
        return keep_going

    def _show(self, frame: Frame, top: list, grabber: LatestFrameGrabber) -> bool:
        watching = self.server is not None and self.server.viewers > 0
        if self.server is not None:
            self._publish_status(top, grabber)
        if self.recorder is None and not watching and not self.window.active:
            return True  # nobody looks at the drawing: do not spend time on it
        from edgecnn.devices.annotate import annotate  # noqa: PLC0415 - only when someone looks

        drawn = annotate(frame.image, top, self.stats.meter.fps())
        if self.recorder is not None:
            self.recorder.write(drawn)
        if watching:
            self.server.publish(drawn, None)
        return self.window.show(drawn)

    def _publish_status(self, top: list, grabber: LatestFrameGrabber) -> None:
        now = time.monotonic()
        if now - self.last_status >= STATUS_INTERVAL_S:  # percentiles cost ~0.1 ms: not every frame
            self.last_status = now
            self.server.publish(None, self._status(top, grabber))

    def _status(self, top: list, grabber: LatestFrameGrabber) -> dict[str, Any]:
        status = {"frame": self.index, "source": self.spec.describe(), "top_k": predictions_json(top, 4),
                  "stats": self.stats.snapshot(), "dropped": grabber.dropped, "reopens": grabber.reopens}
        if self.over is not None:
            status["over_threshold"] = predictions_json(self.over, 4)
        return status

    def _print(self, record: dict[str, Any], grabber: LatestFrameGrabber) -> None:
        every = self.options.print_every
        now = time.monotonic()
        if self.printer is None or every <= 0:
            return
        # A stream of frames prints a line a second; images are each their own answer: one line each, named.
        per_image = self.spec.kind in (SourceKind.IMAGE, SourceKind.FOLDER)
        if not per_image and now - self.last_print < every:
            return
        self.last_print = now
        shown = record.get("over_threshold", record["top_k"][:3])
        best = "  ".join(f"{p['label']} {p['score']:.2f}" for p in shown) or "no class over the threshold"
        name = f" {record['file']}" if record.get("file") else ""
        fps = self.stats.meter.fps()
        rate = f"{fps:.1f} FPS, " if fps > 0 else ""  # no rate before a second frame
        self.printer(f"frame {record['frame']}{name}: {best}  |  {rate}dropped {grabber.dropped}")

    def _event(self, text: str) -> None:
        viewer = text.startswith("web viewer")
        if self.printer is not None and (viewer or not self.options.quiet):
            self.printer(f"source: {text}" if not text.startswith("web viewer") else text)

    def _summary(self, grabber: LatestFrameGrabber, ended_by: EndReason) -> RunSummary:
        snap = self.stats.snapshot()
        runner = {}
        describe = getattr(self.classifier, "describe", None)
        if callable(describe):
            with contextlib.suppress(Exception):
                runner = dict(describe())
        jsonl = self.options.jsonl if self.options.jsonl else None
        return RunSummary(
            frames=self.index, seconds=round(self.stats.elapsed(), 3), fps=round(self.stats.mean_fps(), 2),
            captured=grabber.captured, dropped=grabber.dropped, reopens=grabber.reopens, failures=grabber.failures,
            resolution_changes=grabber.resolution_changes, ended_by=ended_by, ms=snap["ms"],
            source=self.spec.describe(), runner=runner, jsonl=jsonl,
            record=self.options.record if self.recorder is not None and self.recorder.frames else None,
            url=self.server.url if self.server is not None else None, events=tuple(grabber.events))


def summary_rows(summary: RunSummary) -> list[tuple[str, str]]:
    """(name, value) rows for printing the summary as a table."""
    rows = [("source", summary.source), ("ended by", summary.ended_by.value), ("frames", str(summary.frames)),
            ("seconds", f"{summary.seconds:.2f}"),
            ("FPS", f"{summary.fps:.1f}" if summary.frames >= 2 else "n/a (one frame)"),
            ("dropped frames", str(summary.dropped)), ("source reopens", str(summary.reopens))]
    if summary.runner.get("preprocessing"):  # how frames were fed (with the layout): a figure needs it
        rows.append(("preprocessing", str(summary.runner["preprocessing"])))
    for stage, values in summary.ms.items():
        if values.get("p50") is not None:
            rows.append((f"{stage} ms p50 / p90", f"{values['p50']:.2f} / {values['p90']:.2f}"))
    for key in ("jsonl", "record", "url"):
        value = getattr(summary, key)
        if value:
            rows.append((key, str(value)))
    return rows
