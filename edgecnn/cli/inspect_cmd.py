"""`edgecnn inspect MODEL --calib DATA`: the layers int8 hurts, a calibration audit, and Edge TPU readiness;
`edgecnn inspect m_int8.onnx` (or a convert output folder): quantized nodes ONNX Runtime fused vs ran in float."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import click

from edgecnn.cli.app import app, console, console_err
from edgecnn.devices.edgetpu_ops import DEFAULT_RUNTIME
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
@click.option("--onnx-target", default="x86", show_default=True,
              help="--format onnx: int8 settings as convert --onnx-target (x86, x86-avx2, arm64).")
@click.option("--out", type=click.Path(path_type=Path), help="--target edgetpu: folder for the compiler-ready and "
              "compiled models (default edgecnn-out/<model name>, or beside a .tflite).")
@click.option("--edgetpu-runtime", type=int, default=DEFAULT_RUNTIME, show_default=True, help="--target edgetpu: the Edge TPU "
              "runtime to target (edgetpu_compiler -m): operations that need a newer one are unsupported.")
@click.option("--multiple-subgraphs", is_flag=True, help="--target edgetpu: allow several Edge TPU subgraphs "
              "(edgetpu_compiler -a) instead of stopping at the first unsupported operation.")
@click.option("--color", type=click.Choice(["rgb", "bgr", "gray"]), help="Channel order the model was trained on.")
@click.option("--scale", help="Pixel scale, e.g. 1/255 (as convert; default from the model).")
@click.option("--mean", help="Mean subtracted after scaling: one value or one per channel.")
@click.option("--std", help="Std divided by after the mean: one value or one per channel.")
@click.option("--force", is_flag=True, help="Overwrite an existing compiler-ready or compiled model.")
@click.option("--unsafe", is_flag=True, help="Load models with Lambda layers / custom code (only trusted files).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON instead of tables.")
def inspect_command(model: str, calib: Optional[str], target: Optional[str], family: str, samples: int, top: int,
                    calib_method: str, onnx_target: str, out: Optional[Path], edgetpu_runtime: int,
                    multiple_subgraphs: bool, color: Optional[str], scale: Optional[str], mean: Optional[str],
                    std: Optional[str], force: bool, unsafe: bool, as_json: bool) -> None:
    """Per-layer int8 error of MODEL (.keras/.h5/SavedModel) on --calib, worst layers first, with a calibration
    audit; or, with --target edgetpu, the Edge TPU partition of MODEL (Keras, or a full-int8 .tflite); or, for
    an .onnx MODEL or a folder of them, how many quantized nodes ONNX Runtime fuses vs runs in float here."""
    if samples <= 0 or top <= 0:
        raise UsageError("--samples and --top must be positive")
    from edgecnn.converters.inspect import onnx_artifacts  # noqa: PLC0415

    if target is None and onnx_artifacts(model):
        from edgecnn.converters.inspect import inspect  # noqa: PLC0415

        with console_err.status("optimizing with ONNX Runtime and counting fused nodes"):
            return _emit({"inspect": inspect(model, None)}, as_json, top)
    from edgecnn.converters.onnx_targets import onnx_settings  # noqa: PLC0415

    onnx_settings(onnx_target)  # an unknown target fails before the model is loaded
    from edgecnn.converters.edgetpu_compiler import EdgeTpuRequest  # noqa: PLC0415
    from edgecnn.converters.inspect import Family, InspectOptions, inspect  # noqa: PLC0415
    from edgecnn.devices.edgetpu_check import EdgeTpuOptions  # noqa: PLC0415
    from edgecnn.interrupts import interrupt_guard  # noqa: PLC0415
    from edgecnn.native_log import command_log  # noqa: PLC0415

    options = InspectOptions(family=Family(family), samples=samples, top=top, calib_method=calib_method,
                             onnx_target=onnx_target, prep=_prep_request(color, scale, mean, std), unsafe=unsafe,
                             edgetpu=EdgeTpuRequest(out_dir=out, force=force,
                                                    options=EdgeTpuOptions(edgetpu_runtime, multiple_subgraphs)))
    what = "the Edge TPU readiness" if target == "edgetpu" else f"{family} int8 vs float, layer by layer"
    # TensorFlow's and the converter's own output goes to inspect.log, next to the report when there is one.
    with command_log("inspect") as log, interrupt_guard():
        with console_err.status(f"inspecting {Path(model).name}: {what}"):
            result = inspect(model, calib, target, options)
        payload = {"edgetpu": result.edgetpu} if result.edgetpu is not None else {"inspect": result}
        ready = getattr(result.edgetpu, "ready_model", None)
        if ready is not None:
            log.move_to(Path(ready).parent / "inspect.log")
    _emit(payload, as_json, top)
    console_err.print(f"inspect log: {log.path}", highlight=False, soft_wrap=True)


def _prep_request(color: Optional[str], scale: Optional[str], mean: Optional[str], std: Optional[str]) -> Any:
    from edgecnn.cli.prep_options import number, numbers  # noqa: PLC0415 - the same option syntax as convert
    from edgecnn.converters.calibration import PrepRequest  # noqa: PLC0415
    from edgecnn.manifest import ColorOrder  # noqa: PLC0415

    return PrepRequest(color=ColorOrder(color) if color else None,
                       scale=number(scale, "--scale") if scale is not None else None,
                       mean=numbers(mean, "--mean"), std=numbers(std, "--std"))


def _emit(payload: dict[str, Any], as_json: bool, top: int = 10) -> None:
    if as_json:
        click.echo(json.dumps({key: value.to_dict() for key, value in payload.items()}, indent=2))
        return
    if "inspect" in payload:
        _print_inspect(payload["inspect"], top)
    if "edgetpu" in payload:
        _print_edgetpu(payload["edgetpu"])


def _print_inspect(result: Any, top: int) -> None:
    if result.layers or result.audit is not None:
        _print_layers(result, top)
    if result.fusion:
        _print_fusion(result.fusion)


def _print_fusion(reports: Any) -> None:
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"quantized nodes ONNX Runtime fuses vs runs in float ({reports[0].machine})")
    for header in ("model", "fused", "in float", "ops in float"):
        table.add_column(header, justify="right" if header in ("fused", "in float") else "left")
    for report in reports:  # which kernels they fused into: --json
        table.add_row(report.model, str(report.fused_count), str(report.float_count), _ops(report.in_float))
    console.print(table)
    for report in reports:
        colour = "red" if report.float_count else "green"
        console.print(f"{report.model}: [{colour}]{report.summary()}[/]", highlight=False, soft_wrap=True)
        if report.hint():
            console_err.print(f"[yellow]hint:[/] {report.hint()}", highlight=False, soft_wrap=True)


def _ops(counts: dict) -> str:
    return ", ".join(f"{n} {op}" for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))) or "-"


def _print_layers(result: Any, top: int) -> None:
    from rich.table import Table  # noqa: PLC0415

    from edgecnn.converters.inspect import TABLE_HEADERS, table_rows  # noqa: PLC0415

    table = Table(title=f"{result.model_name}: {result.family.value} int8 vs float, worst layers first "
                        f"({result.samples} calibration samples)")
    for header in TABLE_HEADERS:
        text = header in ("layer", "op", "keep in float")
        # Names fold onto a second line at 80 columns instead of ending in "…": a cut name is no name.
        table.add_column(header, justify="left" if text else "right", overflow="fold" if text else "ellipsis",
                         min_width=6 if text else None)
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
        table.add_column(header, overflow="fold")
    for op in report.ops:
        where = ("[yellow]Edge TPU?[/]" if op.may_not_map else "[green]Edge TPU[/]") if op.on_edgetpu else "[red]CPU[/]"
        detail = op.status + (f": {op.reason}" if op.reason else "") + (f" (may not map: {op.may_not_map})"
                                                                         if op.may_not_map else "")
        table.add_row(str(op.index), op.op, op.layer, where, detail)
    console.print(table)
    if readiness.compiler is not None:
        compare = Table(title=f"prediction vs edgetpu_compiler {readiness.compiler.version}")
        for header in ("operator", "status", "predicted", "compiler", "agree"):
            compare.add_column(header, overflow="fold")
        for name, status, predicted, compiled, agree in readiness.comparison():
            compare.add_row(name, status, str(predicted), str(compiled), agree if agree == "yes" else f"[red]{agree}[/]")
        console.print(compare)
    console.print(_verdict(report), highlight=False, soft_wrap=True)
    console.print(report.assumption(), highlight=False, soft_wrap=True)
    for line in list(report.problems) + list(report.notes) + list(readiness.notes):
        console_err.print(f"[yellow]note:[/] {line}", highlight=False, soft_wrap=True)
    console.print(readiness.ready_line(), highlight=False, soft_wrap=True)


def _verdict(report: Any) -> str:
    total, first = len(report.ops), report.first_unsupported
    caveats = report.caveats
    maybe = (f" ({len(caveats)} may not map: {', '.join(sorted({op.op for op in caveats}))})" if caveats else "")
    if report.fully_mapped:
        return f"all {total} operations map to the Edge TPU{maybe}"
    text = f"{report.mapped} of {total} operations on the Edge TPU in {report.subgraphs} subgraph(s){maybe}"
    return text + (f"; the first that cannot map: {first.op} in layer {first.layer} ({first.reason})" if first else "")
