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
@click.option("--force", is_flag=True, help="Overwrite an existing compiler-ready model.")
@click.option("--unsafe", is_flag=True, help="Load models with Lambda layers / custom code (only trusted files).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of tables.")
def inspect_command(model: str, calib: Optional[str], target: Optional[str], family: str, samples: int, top: int,
                    calib_method: str, out: Optional[Path], force: bool, unsafe: bool, as_json: bool) -> None:
    """Per-layer int8 error of MODEL (.keras/.h5/SavedModel) on --calib, worst layers first, with a calibration
    audit; or, with --target edgetpu, the Edge TPU partition of MODEL (Keras, or a full-int8 .tflite)."""
    if samples <= 0 or top <= 0:
        raise UsageError("--samples and --top must be positive")
    from edgecnn.interrupts import interrupt_guard  # noqa: PLC0415
    from edgecnn.native_log import command_log  # noqa: PLC0415

    # TensorFlow's and the converter's own output goes to inspect.log, next to the report when there is one.
    with command_log("inspect") as log, interrupt_guard():
        payload = _inspect(model, calib, target, family, samples, top, calib_method, out, force, unsafe)
        if "edgetpu" in payload:
            log.move_to(Path(payload["edgetpu"].ready_model).parent / "inspect.log")
    _emit(payload, as_json, top)
    console_err.print(f"inspect log: {log.path}", highlight=False, soft_wrap=True)


def _inspect(model: str, calib: Optional[str], target: Optional[str], family: str, samples: int, top: int,
             calib_method: str, out: Optional[Path], force: bool, unsafe: bool) -> dict[str, Any]:
    if model.lower().endswith(".tflite"):
        if target != "edgetpu":
            raise UsageError("a .tflite file can only be checked for the Edge TPU",
                             "add --target edgetpu, or inspect the Keras model layer by layer")
        return _edgetpu(Path(model), out or Path(model).parent)
    loaded, inputs, dataset_labels, prep = _load(model, calib, unsafe)
    if target == "edgetpu":
        return _edgetpu_from_keras(loaded, inputs.inputs[:samples], out, force)
    from edgecnn.converters.calib_audit import audit, expected_input_range  # noqa: PLC0415
    from edgecnn.converters.inspect import Family, InspectOptions, inspect  # noqa: PLC0415

    report = audit(inputs.inputs, expected_input_range(prep), dataset_labels, loaded.num_outputs, loaded.keras_model)
    options = InspectOptions(family=Family(family), samples=samples, top=top, calib_method=calib_method)
    with console_err.status(f"quantizing {loaded.name} to {family} int8 and comparing layer by layer"):
        result = inspect(loaded, inputs.inputs, options=options)
    from dataclasses import replace  # noqa: PLC0415

    return {"inspect": replace(result, audit=report)}


def _load(model: str, calib: Optional[str], unsafe: bool) -> tuple[Any, Any, Any, Any]:
    if not calib:
        raise UsageError("inspect needs calibration data", "pass --calib DATA (image folder, .npy/.npz, or mnist)")
    from edgecnn.converters import calibration as cal  # noqa: PLC0415
    from edgecnn.converters.keras_load import load_model  # noqa: PLC0415
    from edgecnn.data import load_dataset  # noqa: PLC0415

    loaded = load_model(model, unsafe=unsafe)
    prep, _ = cal.build_preprocessing(loaded.input_shape, cal.PrepRequest(), loaded.layer_classes)
    dataset = load_dataset(calib, mnist_split="train")
    inputs = cal.model_inputs(dataset, prep, loaded.input_shape, "calibration")
    return loaded, inputs, dataset.labels, prep


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
