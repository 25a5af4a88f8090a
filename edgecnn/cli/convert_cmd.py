"""`edgecnn convert [MODEL]`: a trained Keras CNN -> verified TFLite/ONNX artifacts + manifest.json."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from edgecnn.cli.app import app, console, console_err
from edgecnn.errors import AccuracyBudgetError, ConversionFailedError, UsageError

_FORMAT_NAMES = "tflite-fp32, tflite-fp16, tflite-dynamic, tflite-int8, onnx-fp32, onnx-int8"


@app.command("convert")
@click.argument("model", required=False)
@click.option("--calib", help="Calibration data: image folder, .npy/.npz, or 'mnist'. Default for no MODEL: mnist.")
@click.option("--val", help="Validation data for verification (else the calibration data). Labels come from "
                            "class subfolders or the .npz 'y' array.")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder. Default: edgecnn-out/<model name>.")
@click.option("--formats", help=f"Comma-separated, default all that apply: {_FORMAT_NAMES}.")
@click.option("--io", "io_type", type=click.Choice(["int8", "uint8", "float"]), default="int8", show_default=True,
              help="Input/output tensor type of tflite-int8.")
@click.option("--calib-method", default="minmax", show_default=True, help="onnx-int8 ranges: minmax, entropy, percentile.")
@click.option("--calib-samples", type=int, default=200, show_default=True, help="Calibration samples drawn from --calib.")
@click.option("--labels", "labels_file", type=click.Path(path_type=Path), help="Text file, one class label per line.")
@click.option("--color", type=click.Choice(["rgb", "bgr", "gray"]), help="Channel order the model was trained on.")
@click.option("--resize", type=click.Choice(["stretch", "center_crop", "letterbox"]), default="stretch",
              show_default=True, help="How images are brought to the model's input size.")
@click.option("--interpolation", type=click.Choice(["linear", "area"]), default="linear", show_default=True,
              help="How larger images are shrunk: linear (as Keras' Resizing / image_dataset_from_directory) or area.")
@click.option("--scale", help="Pixel scale, e.g. 1/255 (default), or 1 when the model rescales itself.")
@click.option("--mean", help="Mean subtracted after scaling: one value or one per channel (comma-separated).")
@click.option("--std", help="Std divided by after the mean: one value or one per channel.")
@click.option("--invert", is_flag=True, help="Invert pixels (white digit on black, as MNIST).")
@click.option("--max-drop", type=float, help="Fail (exit 1) if an artifact loses more top-1 accuracy, in pp.")
@click.option("--output-kind", "output_kind", default=None,
              type=click.Choice(["probabilities", "logits", "binary_sigmoid", "multilabel_sigmoid"]),
              help="What the model outputs (default: read from the graph's final op, checked on the data).")
@click.option("--min-float-agreement", type=float, default=0.99, show_default=True,
              help="fp32/fp16 artifacts agreeing less with Keras (on decided samples) fail the conversion.")
@click.option("--fallback", type=click.Choice(["none", "auto"]), default="none", show_default=True,
              help="auto: keep the most harmful layers in float until --max-drop is met.")
@click.option("--per-tensor", is_flag=True, help="Per-tensor instead of per-channel int8 weights.")
@click.option("--opset", type=int, help="ONNX opset (default 17).")
@click.option("--onnx-target", default="x86", show_default=True,
              help="CPU the onnx-int8 artifact is for: x86 (uint8 activations), x86-avx2 (x86 without VNNI: also "
                   "7-bit weights), arm64 (int8 activations).")
@click.option("--onnx-full-int8", is_flag=True, help="onnx-int8: quantize the final Softmax and the logits too "
              "(default: they stay float; int8 only loses precision there).")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--unsafe", is_flag=True, help="Load models with Lambda layers / custom code (only trusted files).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of a table.")
def convert_command(model: Optional[str], calib, val, out, formats, io_type, calib_method, calib_samples, labels_file,
                    color, resize, interpolation, scale, mean, std, invert, max_drop, output_kind, min_float_agreement,
                    fallback, per_tensor, opset, onnx_target, onnx_full_int8, force, unsafe, as_json) -> None:
    """Convert MODEL (.keras, .h5 or SavedModel folder; default: the embedded MNIST CNN) to TFLite and ONNX,
    verify every artifact against Keras, and write manifest.json beside them."""
    from edgecnn.converters.formats import IoType  # noqa: PLC0415
    from edgecnn.converters.pipeline import ConvertOptions, FallbackMode, convert  # noqa: PLC0415
    from edgecnn.manifest import ColorOrder, Interpolation, OutputKind, ResizeMode  # noqa: PLC0415

    options = ConvertOptions(
        formats=formats, io=IoType(io_type), calib_method=calib_method.strip().lower(), calib_samples=calib_samples,
        labels_file=labels_file, color=ColorOrder(color) if color else None, resize=ResizeMode(resize), interpolation=Interpolation(interpolation),
        scale=_number(scale, "--scale") if scale is not None else None, mean=_numbers(mean, "--mean"),
        std=_numbers(std, "--std"), invert=invert, max_drop=max_drop, force=force, unsafe=unsafe,
        fallback=FallbackMode(fallback), per_channel=not per_tensor, opset=opset, progress=not as_json,
        output_kind=OutputKind(output_kind) if output_kind else None, min_float_agreement=min_float_agreement,
        onnx_target=onnx_target, onnx_full_int8=onnx_full_int8)
    try:
        result = convert(model, calib=calib, val=val, out=out, options=options)
    except (AccuracyBudgetError, ConversionFailedError) as exc:
        partial = getattr(exc, "result", None)
        if partial is not None:
            _print(partial, as_json)
        raise
    _print(result, as_json)


def _print(result, as_json: bool) -> None:
    from edgecnn.converters.summary import summary_rows, summary_table  # noqa: PLC0415

    if as_json:
        payload = {"out_dir": str(result.out_dir), "manifest": str(result.manifest_path),
                   "artifacts": summary_rows(result.manifest), "warnings": list(result.warnings),
                   "over_budget": list(result.over_budget),
                   "failed": [{"name": f.name, "reason": f.reason} for f in result.failed],
                   "output_kind": result.manifest.output_kind.value,
                   "log": None if result.log_path is None else str(result.log_path)}
        click.echo(json.dumps(payload, indent=2))
        return
    for warning in result.warnings:
        console_err.print(f"[yellow]warning:[/] {warning}", highlight=False, soft_wrap=True)
    console.print(summary_table(result.manifest))
    for entry in result.manifest.artifacts:  # --fallback auto (issue 5): which layers stayed in float
        for note in (n for n in entry.notes if n.startswith("--fallback auto")):
            console.print(f"{entry.name}: {note}", highlight=False, soft_wrap=True)
    console.print(f"artifacts and manifest in {result.out_dir}", highlight=False, soft_wrap=True)
    if result.log_path is not None:
        console_err.print(f"converter log: {result.log_path}", highlight=False, soft_wrap=True)


def _number(text: str, option: str) -> float:
    """A float, also written as a fraction ("1/255")."""
    try:
        if "/" in text:
            top, bottom = text.split("/", 1)
            return float(top) / float(bottom)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"{option} '{text}' is not a number", "write e.g. 0.5 or 1/255") from None


def _numbers(text: Optional[str], option: str) -> Optional[tuple[float, ...]]:
    if text is None:
        return None
    parts = [p for p in text.replace(" ", ",").split(",") if p]
    if not parts:
        raise UsageError(f"{option} is empty", "give one value or one per channel, comma-separated")
    return tuple(_number(p, option) for p in parts)
