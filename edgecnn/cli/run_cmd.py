"""`edgecnn run MODEL --device TARGET --source SOURCE`: classify a camera, stream, video or images live.

Thin: parse options into RunOptions, call edgecnn.devices.live.run, print the summary table. Nothing on
this path imports TensorFlow or edgecnn.converters (a test runs it with TensorFlow unimportable).
"""
from __future__ import annotations

import gc
import os
import sys
from pathlib import Path
from typing import Optional

import click

from edgecnn.cli.app import app
from edgecnn.cli.prep_options import output_kind as given_output_kind
from edgecnn.cli.prep_options import parse_size, prep_choice, prep_options
from edgecnn.errors import UsageError


@app.command("run")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--device", "device", default="cpu", show_default=True,
              help="Target: cpu, pi, edgetpu (.tflite); onnx-cpu, gpu (.onnx); imx500 (.rpk, the AI Camera).")
@click.option("--source", default="0", show_default=True,
              help="Camera index or /dev/videoN, picamera2, a video file, an image, a folder, or an rtsp/http URL.")
@click.option("--threads", type=int, default=None, help="Inference threads (default: the machine's cores).")
@click.option("--top-k", "top_k", type=int, default=5, show_default=True)
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Multi-label (sigmoid) heads: list every class whose score reaches this.")
@click.option("--jsonl", default=None, metavar="PATH|-", help="One JSON line per frame to PATH, or '-' for stdout.")
@click.option("--record", default=None, metavar="VIDEO", help="Save the annotated video (.mp4, .avi, .mkv).")
@click.option("--force", is_flag=True, help="Overwrite --jsonl / --record outputs that exist.")
@click.option("--max-frames", "max_frames", type=int, default=None, help="Stop after this many frames.")
@click.option("--duration", type=float, default=None, help="Stop after this many seconds.")
@click.option("--realtime", is_flag=True, help="Play a video file at its own FPS, like a camera (frames may drop).")
@click.option("--loop", is_flag=True, help="Start a video file / folder again at its end (soak tests).")
@click.option("--serve", default=None, metavar="[HOST:]PORT", help="Web viewer (MJPEG + top-k); 127.0.0.1 unless a host is given.")
@click.option("--show/--no-show", "show", default=None, help="Show a window (default: only when there is a display).")
@click.option("--allow-cpu-fallback", is_flag=True, help="gpu/edgetpu: run even if the accelerator is not really used.")
@click.option("--edgetpu-device", default=None, metavar="SEL", help="Edge TPU to use, e.g. usb:0 or pci:0.")
@click.option("--manifest", "manifest", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The model's manifest.json (default: the one beside the model).")
@click.option("--capture-size", "capture_size", default=None, metavar="WxH",
              help="Ask a camera for this resolution, e.g. 640x480 (the driver may choose another).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary (no result lines, no source notices).")
@prep_options
def run_command(model: Path, device: str, source: str, threads: Optional[int], top_k: int, threshold: float,
                jsonl: Optional[str], record: Optional[str], force: bool, max_frames: Optional[int],
                duration: Optional[float], realtime: bool, loop: bool, serve: Optional[str], show: Optional[bool],
                allow_cpu_fallback: bool, edgetpu_device: Optional[str], manifest: Optional[Path],
                capture_size: Optional[str], quiet: bool, **prep: object) -> int:
    """Classify what a camera, stream, video or folder shows, live, with MODEL on a device."""
    # Until the model and the source are open, nearly every object made (modules, the runtime's tables) lives
    # as long as the process: collections in between find nothing to free. _collect_from_now turns them back on.
    collecting, frozen = gc.isenabled(), gc.get_freeze_count()
    gc.disable()
    if _whole_process() and "numpy" not in sys.modules:
        # numpy's OpenBLAS starts worker threads as numpy loads, and they spin on the cores that the model read
        # and the capture thread need while the run starts. Nothing on the device side calls a BLAS routine
        # (no matrix products), so one thread is all it needs; a value the user set is kept.
        os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    try:
        from edgecnn.devices.modelcheck import prefetched  # noqa: PLC0415

        with prefetched(model):  # read and hashed (from an SD card, cold: ~0.1 s) while the runtime is imported
            return _run(model, device, source, threads, top_k, threshold, jsonl, record, force, max_frames,
                        duration, realtime, loop, serve, show, allow_cpu_fallback, edgetpu_device, manifest,
                        capture_size, quiet, prep)
    finally:
        if collecting:
            gc.enable()
        if frozen == 0 and not _whole_process():
            gc.unfreeze()  # a caller in this process (tests, a notebook) gets its objects collected again


def _run(model: Path, device: str, source: str, threads: Optional[int], top_k: int, threshold: float,
         jsonl: Optional[str], record: Optional[str], force: bool, max_frames: Optional[int],
         duration: Optional[float], realtime: bool, loop: bool, serve: Optional[str], show: Optional[bool],
         allow_cpu_fallback: bool, edgetpu_device: Optional[str], manifest: Optional[Path],
         capture_size: Optional[str], quiet: bool, prep: dict) -> int:
    from edgecnn.devices.base import RunnerOptions  # noqa: PLC0415 - keep `edgecnn --help` fast
    from edgecnn.devices.live import Display, RunOptions, run  # noqa: PLC0415
    width, height = (None, None)
    if capture_size:
        height, width = parse_size(capture_size, "--capture-size", "640x480")
        width, height = height, width  # given as WxH, the way cameras are described
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads} is not positive", "give 1 or more, or leave it out")
    options = RunOptions(
        top_k=top_k, threshold=threshold, output_kind=given_output_kind(prep),
        runner=RunnerOptions(threads=threads, device=edgetpu_device, allow_cpu_fallback=allow_cpu_fallback),
        prep=prep_choice(prep), labels=str(prep["labels"]) if prep.get("labels") else None, manifest=str(manifest) if manifest else None,
        max_frames=max_frames, duration=duration, jsonl=jsonl, record=record, force=force, realtime=realtime,
        loop=loop, serve=serve, display=Display.AUTO if show is None else (Display.SHOW if show else Display.HIDE),
        print_every=0 if quiet else 1.0, quiet=quiet, width=width, height=height)
    # With --jsonl - stdout carries the JSON lines only; everything else goes to stderr. Plain lines, not rich:
    # importing rich would add about a third to the time to the first result (benchmarks/results/startup.md).
    to_err = jsonl == "-"
    summary = run(model, device, source, options, printer=lambda line: click.echo(line, err=to_err),
                  on_ready=_collect_from_now)
    click.echo(format_summary(summary), err=to_err)
    return 0


def _whole_process() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and isinstance(ctx.find_root().obj, dict) and ctx.find_root().obj.get("process"))


def _collect_from_now() -> None:
    """Called once the model and the source are open: what exists now stays for the whole run, so it is frozen
    out of every later collection (the live loop's, and the full ones at interpreter shutdown: ~20 ms on a
    2-core x86, benchmarks/results/startup.md), and collecting starts again for what the loop makes."""
    gc.freeze()
    gc.enable()


def format_summary(summary) -> str:
    """The run's summary as aligned "name  value" lines under a title (fits 80 columns but for long paths)."""
    from edgecnn.devices.live import summary_rows  # noqa: PLC0415

    rows = summary_rows(summary)
    width = max(len(name) for name, _ in rows)
    return "\n".join(["edgecnn run"] + [f"  {name:<{width}}  {value}" for name, value in rows])
