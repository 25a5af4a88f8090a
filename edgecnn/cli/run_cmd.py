"""`edgecnn run MODEL --device TARGET --source SOURCE`: classify a camera, stream, video or images live.

Thin: parse options into RunOptions, call edgecnn.devices.live.run, print the summary table. Nothing on
this path imports TensorFlow or edgecnn.converters (a test runs it with TensorFlow unimportable).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from edgecnn.cli.app import app, console, console_err
from edgecnn.errors import UsageError


def _floats(text: Optional[str], option: str) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(",") if v)
    except ValueError:
        raise UsageError(f"{option} '{text}' is not a comma-separated list of numbers", f"for example {option} 0.5,0.5,0.5") from None
    if not values:
        raise UsageError(f"{option} is empty", "give one value or one per channel")
    return values


def _size(text: str, option: str = "--size", example: str = "224x224") -> tuple[int, int]:
    parts = text.lower().replace("×", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        form = "WxH" if option == "--capture-size" else "HxW"
        raise UsageError(f"{option} '{text}' is not {form}", f"for example {option} {example}")
    return int(parts[0]), int(parts[1])


def preprocessing_overrides(size: Optional[str], color: Optional[str], scale: Optional[float], mean: Optional[str],
                            std: Optional[str], resize: Optional[str]):
    """The --size/--color/--scale/--mean/--std/--resize options as a Preprocessing, or None when none given."""
    if size is None:
        if any(v is not None for v in (color, scale, mean, std, resize)):
            raise UsageError("preprocessing options need --size HxW", "give --size, or rely on the model's manifest.json")
        return None
    from edgecnn.manifest import ColorOrder, Preprocessing, ResizeMode  # noqa: PLC0415

    height, width = _size(size)
    prep = Preprocessing(height=height, width=width, color=ColorOrder(color or "rgb"),
                         resize=ResizeMode(resize or "stretch"), scale=1 / 255 if scale is None else scale,
                         mean=_floats(mean, "--mean") or (0.0,), std=_floats(std, "--std") or (1.0,))
    prep.validate()
    return prep


@app.command("run")
@click.argument("model", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--device", "device", default="cpu", show_default=True,
              help="Target: cpu, pi, edgetpu (.tflite); onnx-cpu, gpu (.onnx).")
@click.option("--source", default="0", show_default=True,
              help="Camera index or /dev/videoN, picamera2, a video file, an image, a folder, or an rtsp/http URL.")
@click.option("--threads", type=int, default=None, help="Inference threads (default: the machine's cores).")
@click.option("--top-k", "top_k", type=int, default=5, show_default=True)
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Multi-label (sigmoid) heads: list every class whose score reaches this.")
@click.option("--output-kind", "output_kind", default=None,
              type=click.Choice(["probabilities", "logits", "binary_sigmoid", "multilabel_sigmoid"]),
              help="What the model outputs (default: the manifest's).")
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
@click.option("--size", default=None, metavar="HxW", help="Without a manifest: the model's input size.")
@click.option("--color", type=click.Choice(["rgb", "bgr", "gray"]), default=None, help="Without a manifest: colour order.")
@click.option("--resize", type=click.Choice(["stretch", "center_crop", "letterbox"]), default=None,
              help="Without a manifest: how a frame is fitted to the input.")
@click.option("--scale", type=float, default=None, help="Without a manifest: x = (pixel*scale - mean)/std; default 1/255.")
@click.option("--mean", default=None, metavar="M[,M,M]", help="Without a manifest: per-channel mean.")
@click.option("--std", default=None, metavar="S[,S,S]", help="Without a manifest: per-channel std.")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Labels file, one per line (default: the manifest's).")
@click.option("--capture-size", "capture_size", default=None, metavar="WxH",
              help="Ask a camera for this resolution, e.g. 640x480 (the driver may choose another).")
@click.option("--quiet", "-q", is_flag=True, help="Print only the summary.")
def run_command(model: Path, device: str, source: str, threads: Optional[int], top_k: int, threshold: float,
                output_kind: Optional[str], jsonl: Optional[str],
                record: Optional[str], force: bool, max_frames: Optional[int], duration: Optional[float],
                realtime: bool, loop: bool, serve: Optional[str], show: Optional[bool], allow_cpu_fallback: bool,
                edgetpu_device: Optional[str], manifest: Optional[Path], size: Optional[str], color: Optional[str],
                resize: Optional[str], scale: Optional[float], mean: Optional[str], std: Optional[str],
                labels: Optional[Path], capture_size: Optional[str], quiet: bool) -> int:
    """Classify what a camera, stream, video or folder shows, live, with MODEL on a device."""
    from edgecnn.devices.base import RunnerOptions  # noqa: PLC0415 - keep `edgecnn --help` fast
    from edgecnn.devices.live import Display, RunOptions, run  # noqa: PLC0415
    from edgecnn.manifest import OutputKind  # noqa: PLC0415

    width, height = (None, None)
    if capture_size:
        height, width = _size(capture_size, "--capture-size", "640x480")
        width, height = height, width  # given as WxH, the way cameras are described
    if threads is not None and threads < 1:
        raise UsageError(f"--threads {threads} is not positive", "give 1 or more, or leave it out")
    options = RunOptions(
        top_k=top_k, threshold=threshold, output_kind=OutputKind(output_kind) if output_kind else None, runner=RunnerOptions(threads=threads, device=edgetpu_device, allow_cpu_fallback=allow_cpu_fallback),
        prep=preprocessing_overrides(size, color, scale, mean, std, resize),
        labels=str(labels) if labels else None, manifest=str(manifest) if manifest else None,
        max_frames=max_frames, duration=duration, jsonl=jsonl, record=record, force=force, realtime=realtime,
        loop=loop, serve=serve, display=Display.AUTO if show is None else (Display.SHOW if show else Display.HIDE),
        print_every=0 if quiet else 1.0, width=width, height=height)
    # With --jsonl - stdout carries the JSON lines only; everything else goes to stderr.
    out = console_err if jsonl == "-" else console
    summary = run(model, device, source, options, printer=lambda line: out.print(line, highlight=False, markup=False))
    print_summary(summary, out)
    return 0


def print_summary(summary, out) -> None:
    from rich.table import Table  # noqa: PLC0415

    from edgecnn.devices.live import summary_rows  # noqa: PLC0415

    table = Table(title="edgecnn run", show_header=False, title_justify="left")
    table.add_column("what", style="bold")
    table.add_column("value")
    for name, value in summary_rows(summary):
        table.add_row(name, value)
    out.print(table)
