"""`edgecnn inspect MODEL --calib DATA`: the layers int8 hurts, a calibration audit, and Edge TPU readiness."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import click

from edgecnn.cli.app import app, console, console_err
from edgecnn.errors import UsageError


@app.command("inspect")
@click.argument("model")
@click.option("--calib", help="Calibration data: image folder, .npy/.npz, or 'mnist'. Needed unless MODEL is a .tflite.")
@click.option("--target", type=click.Choice(["edgetpu"]), help="edgetpu: check the full-int8 model against the "
              "Edge TPU's requirements and predict which operations it runs.")
@click.option("--format", "family", type=click.Choice(["tflite", "onnx"]), default="tflite", show_default=True,
              help="Which int8 model to inspect layer by layer.")
@click.option("--samples", type=int, default=100, show_default=True, help="Calibration samples to compare on.")
@click.option("--top", type=int, default=10, show_default=True, help="Rows of the worst-layers table.")
@click.option("--calib-method", default="minmax", show_default=True, help="ONNX activation ranges: minmax, entropy, percentile.")
@click.option("--out", type=click.Path(path_type=Path), help="--target edgetpu: folder for the compiler-ready model "
              "(default edgecnn-out/<model name>).")
@click.option("--color", type=click.Choice(["rgb", "bgr", "gray"]), help="Channel order the model was trained on.")
@click.option("--scale", help="Pixel scale, e.g. 1/255 (as convert; default from the model).")
@click.option("--mean", help="Mean subtracted after scaling: one value or one per channel.")
@click.option("--std", help="Std divided by after the mean: one value or one per channel.")
@click.option("--force", is_flag=True, help="Overwrite an existing compiler-ready model.")
@click.option("--unsafe", is_flag=True, help="Load models with Lambda layers / custom code (only trusted files).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of tables.")
def inspect_command(model: str, calib: Optional[str], target: Optional[str], family: str, samples: int, top: int,
                    calib_method: str, out: Optional[Path], color: Optional[str], scale: Optional[str],
                    mean: Optional[str], std: Optional[str], force: bool, unsafe: bool, as_json: bool) -> None:
    """Per-layer int8 error of MODEL (.keras/.h5/SavedModel) on --calib, worst layers first, with a calibration
    audit; or, with --target edgetpu, the Edge TPU partition of MODEL (Keras, or a full-int8 .tflite)."""
    if samples <= 0 or top <= 0:
        raise UsageError("--samples and --top must be positive")
    if model.lower().endswith(".tflite"):
        if target != "edgetpu":
            raise UsageError("a .tflite file can only be checked for the Edge TPU",
                             "add --target edgetpu, or inspect the Keras model layer by layer")
        payload = _edgetpu(Path(model), out or Path(model).parent)
        return _emit(payload, as_json)
    loaded, inputs, dataset, prep = _load(model, calib, unsafe, _prep_request(color, scale, mean, std))
    if target == "edgetpu":
        return _emit(_edgetpu_from_keras(loaded, inputs.inputs[:samples], out, force), as_json)
    from edgecnn.converters.calib_audit import audit  # noqa: PLC0415
    from edgecnn.converters.calibration import RESCALING_LAYERS  # noqa: PLC0415
    from edgecnn.converters.inspect import Family, InspectOptions, inspect  # noqa: PLC0415
    from edgecnn.converters.prep_check import check_preprocessing  # noqa: PLC0415

    rescales_itself = any(name in RESCALING_LAYERS for name in loaded.layer_classes)
    with console_err.status("checking the preprocessing against the model"):
        prep_report = check_preprocessing(loaded, prep, inputs, None, rescales_itself, (dataset,))
    report = audit(inputs.inputs, dataset.labels, loaded.num_outputs, loaded.keras_model, prep_report)
    options = InspectOptions(family=Family(family), samples=samples, top=top, calib_method=calib_method)
    with console_err.status(f"quantizing {loaded.name} to {family} int8 and comparing layer by layer"):
        result = inspect(loaded, inputs.inputs, options=options)
    from dataclasses import replace  # noqa: PLC0415

    _emit({"inspect": replace(result, audit=report)}, as_json, top)


def _prep_request(color: Optional[str], scale: Optional[str], mean: Optional[str], std: Optional[str]) -> Any:
    from edgecnn.cli.convert_cmd import _number, _numbers  # noqa: PLC0415 - the same option syntax as convert
    from edgecnn.converters.calibration import PrepRequest  # noqa: PLC0415
    from edgecnn.manifest import ColorOrder  # noqa: PLC0415

    return PrepRequest(color=ColorOrder(color) if color else None,
                       scale=_number(scale, "--scale") if scale is not None else None,
                       mean=_numbers(mean, "--mean"), std=_numbers(std, "--std"))


def _load(model: str, calib: Optional[str], unsafe: bool, request: Any) -> tuple[Any, Any, Any, Any]:
    if not calib:
        raise UsageError("inspect needs calibration data", "pass --calib DATA (image folder, .npy/.npz, or mnist)")
    from edgecnn.converters import calibration as cal  # noqa: PLC0415
    from edgecnn.converters.keras_load import load_model  # noqa: PLC0415
    from edgecnn.data import load_dataset  # noqa: PLC0415

    loaded = load_model(model, unsafe=unsafe)
    prep, _ = cal.build_preprocessing(loaded.input_shape, request, loaded.layer_classes, loaded.keras_model)
    dataset = load_dataset(calib, mnist_split="train")
    inputs = cal.model_inputs(dataset, prep, loaded.input_shape, "calibration")
    return loaded, inputs, dataset, prep


def _edgetpu(path: Path, out_dir: Path) -> dict[str, Any]:
    from edgecnn.converters.edgetpu_compiler import readiness  # noqa: PLC0415

    return {"edgetpu": readiness(path, out_dir)}


def _edgetpu_from_keras(loaded: Any, samples: Any, out: Optional[Path], force: bool) -> dict[str, Any]:
    from edgecnn.converters.edgetpu_compiler import compiler_ready_model  # noqa: PLC0415
    from edgecnn.fileio import check_writable_dir, refuse_overwrite  # noqa: PLC0415

    out_dir = out or Path("edgecnn-out") / loaded.name
    target = out_dir / f"{loaded.name}_int8_edgetpu_ready.tflite"
    refuse_overwrite([target], force)
    check_writable_dir(out_dir)
    with console_err.status("writing the compiler-ready full-int8 model (batch 1)"):
        compiler_ready_model(loaded, samples, target)
    return _edgetpu(target, out_dir)


def _emit(payload: dict[str, Any], as_json: bool, top: int = 10) -> None:
    if as_json:
        click.echo(json.dumps({key: value.to_dict() for key, value in payload.items()}, indent=2))
        return
    if "inspect" in payload:
        _print_inspect(payload["inspect"], top)
    if "edgetpu" in payload:
        _print_edgetpu(payload["edgetpu"])


def _print_inspect(result: Any, top: int) -> None:
    from rich.table import Table  # noqa: PLC0415

    from edgecnn.converters.inspect import TABLE_HEADERS, table_rows  # noqa: PLC0415

    table = Table(title=f"{result.model_name}: {result.family.value} int8 vs float, worst layers first "
                        f"({result.samples} calibration samples)")
    for header in TABLE_HEADERS:
        table.add_column(header, justify="right" if header not in ("layer", "op", "keep in float") else "left")
    for row in table_rows(result, top):
        table.add_row(*row)
    console.print(table)
    if result.audit is not None:
        audit = Table(title="calibration audit")
        for header in ("check", "level", "finding"):
            audit.add_column(header)
        colours = {"ok": "green", "warning": "yellow", "problem": "red"}
        for finding in result.audit.findings:
            audit.add_row(finding.check, f"[{colours[finding.level.value]}]{finding.level.value}[/]", finding.message)
        console.print(audit)
    worst = result.worst
    if worst is not None:
        console.print(f"worst layer: [bold]{worst.layer}[/] ({worst.op}): channel SQNR {worst.channel_sqnr_db:.1f} dB, "
                      f"float range [{worst.float_min:.3g}, {worst.float_max:.3g}]; keep in float with "
                      f"--fallback auto, which would keep: {', '.join(worst.keep_float)}", highlight=False, soft_wrap=True)


def _print_edgetpu(readiness: Any) -> None:
    from rich.table import Table  # noqa: PLC0415

    report = readiness.prediction
    table = Table(title=f"Edge TPU partition predicted for {Path(report.model).name}")
    for header in ("#", "op", "layer", "runs on", "status"):
        table.add_column(header)
    for op in report.ops:
        table.add_row(str(op.index), op.op, op.layer, "[green]Edge TPU[/]" if op.on_edgetpu else "[red]CPU[/]", op.status)
    console.print(table)
    if readiness.compiler is not None:
        compare = Table(title=f"prediction vs edgetpu_compiler {readiness.compiler.version}")
        for header in ("operator", "predicted on Edge TPU", "compiler on Edge TPU", "agree"):
            compare.add_column(header)
        for name, predicted, compiled, agree in readiness.comparison():
            compare.add_row(name, str(predicted), str(compiled), agree)
        console.print(compare)
    first = report.first_unsupported
    verdict = (f"all {len(report.ops)} operations map to the Edge TPU" if report.fully_mapped else
               f"{report.mapped} of {len(report.ops)} operations on the Edge TPU; the first that is not: "
               f"{first.op} in layer {first.layer} ({first.reason})" if first else
               f"{report.mapped} of {len(report.ops)} operations on the Edge TPU")
    console.print(verdict, highlight=False, soft_wrap=True)
    for line in list(report.problems) + list(readiness.notes):
        console_err.print(f"[yellow]note:[/] {line}", highlight=False, soft_wrap=True)
    console.print(f"compiler-ready model: {readiness.ready_model}", highlight=False, soft_wrap=True)
