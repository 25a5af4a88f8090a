"""`edgecnn bench MODEL...` (latency, accuracy loss, efficiency per artifact x target x threads) and
`edgecnn report A.json B.json ...` (merge results from several devices into one comparison)."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Optional

import click

from edgecnn.cli.app import app, console, console_err
from edgecnn.cli.prep_options import output_kind as given_output_kind
from edgecnn.cli.prep_options import prep_choice, prep_options
from edgecnn.errors import UsageError

DEFAULT_OUT = Path("edgecnn-out") / "bench"
TERMINAL_COLUMNS = ("source", "model", "format", "target", "threads", "status", "size", "load ms", "p50 ms", "p90 ms",
                    "p99 ms", "img/s", "step p50 ms", "p50 vs fp32", "GMAC/s", "top-1", "preprocessing", "drop pp",
                    "agreement", "stability")
# A narrow terminal gets the columns a reader compares first, with short headers; the files have all.
COMPACT_COLUMNS = ("source", "model", "format", "target", "threads", "status", "p50 ms", "p90 ms", "step p50 ms",
                   "p50 vs fp32", "top-1", "drop pp", "stability")
SHORT_HEADERS = {"threads": "thr", "step p50 ms": "step ms", "p50 vs fp32": "/fp32", "stability": "stable",
                 "preprocessing": "prep"}
WIDE_TERMINAL = 170


@app.command("bench")
@click.argument("models", nargs=-1, required=True)
@click.option("--device", "devices", default="cpu", show_default=True,
              help="Comma-separated targets: cpu, pi, edgetpu (for .tflite); onnx-cpu, gpu (for .onnx).")
@click.option("--threads", default="1", show_default=True, help="Comma-separated thread counts, e.g. 1,2,4.")
@click.option("--data", help="Labelled validation data for accuracy: image folder, .npy/.npz, or 'mnist' (held-out digits).")
@click.option("--runs", type=int, help="Timed single-image inferences per row (default 200).")
@click.option("--duration", type=float, help="Or: seconds of back-to-back inferences per row.")
@click.option("--warmup", type=int, default=10, show_default=True, help="Untimed warm-up runs (at least 10).")
@click.option("--offline", is_flag=True, help="Also measure batched throughput (images/s).")
@click.option("--batch", type=int, default=8, show_default=True, help="Images per batch with --offline.")
@click.option("--samples", type=int, help="Accuracy on at most this many samples of --data (a fixed, seeded subset).")
@click.option("--reference", type=click.Path(path_type=Path), help="The Keras fp32 model, if not found from the manifest.")
@click.option("--max-drop", type=float, help="Rows losing more top-1 accuracy (pp) are marked failed verification.")
@click.option("--min-agreement", type=float, default=0.9, show_default=True,
              help="Rows agreeing less with the reference's top-1 are marked failed verification.")
@click.option("--ray", "ray_address", metavar="auto|HOST:PORT",
              help="Run the accuracy evaluation (--data) as chunks on a Ray cluster: auto or the head's HOST:PORT. "
                   "Latency is never distributed: it is timed on this machine, the one being measured. "
                   "Needs edgecnn[cluster]; this machine must be a node of the cluster.")
@click.option("--ray-chunk", type=int, default=1000, show_default=True, help="Samples per Ray task.")
@click.option("--no-step", is_flag=True, help="Skip timing the whole runner step (preprocess + inference + postprocess).")
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_OUT, show_default=True,
              help="Folder for bench.json, bench.md and bench.html.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--unsafe", is_flag=True, help="Load a Keras reference with custom code (only trusted files).")
@click.option("--json", "as_json", is_flag=True, help="Print the result JSON instead of a table.")
@click.option("--host", "hosts", multiple=True, metavar="HOST",
              help="Bench on this board over SSH instead of here (repeatable): ssh config alias, user@host, "
                   "ssh://user@host:port. Rows from every host merge into one report.")
@click.option("--ssh-config", type=click.Path(path_type=Path), help="ssh config file for --host (ssh -F).")
@click.option("--remote-edgecnn", metavar="PATH",
              help="The board's edgecnn (default: edgecnn on its PATH, then python3 -m edgecnn).")
@click.option("--connect-timeout", type=int, default=10, show_default=True, help="ssh connect timeout, seconds.")
@prep_options
def bench_command(models, devices, threads, data, runs, duration, warmup, offline, batch, samples, reference,
                  max_drop, min_agreement, ray_address, ray_chunk, no_step, out, force, unsafe, as_json, hosts,
                  ssh_config, remote_edgecnn, connect_timeout, **prep) -> int:
    """Benchmark MODEL... (.tflite/.onnx files or edgecnn convert output folders) on each --device at each
    --threads count: latency percentiles, load and first-inference time, memory, MACs, accuracy loss."""
    from edgecnn.bench.harness import BenchOptions, bench  # noqa: PLC0415
    from edgecnn.bench.report import output_paths, write_reports  # noqa: PLC0415
    from edgecnn.devices.cluster import ClusterOptions  # noqa: PLC0415 - Ray itself only with --ray
    from edgecnn.fileio import refuse_overwrite  # noqa: PLC0415
    from edgecnn.registry import split_names  # noqa: PLC0415

    options = BenchOptions(warmup=warmup, runs=runs, duration_s=duration, offline=offline, batch=batch,
                           step=not no_step, max_samples=samples, reference=str(reference) if reference else None,
                           unsafe=unsafe, min_agreement=min_agreement, max_drop_pp=max_drop, progress=not as_json,
                           ray=ClusterOptions(ray_address.strip(), chunk=ray_chunk) if ray_address else None,
                           prep=prep_choice(prep), labels=prep.get("labels"), output_kind=given_output_kind(prep))
    options.validate()
    refuse_overwrite(list(output_paths(out).values()), force)  # before the work, not after it
    command = "edgecnn " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == ["bench"] else "edgecnn bench"
    if hosts:
        from edgecnn.bench.fleet import bench_fleet  # noqa: PLC0415
        from edgecnn.bench.remote import parse_host  # noqa: PLC0415

        boards = [parse_host(h, ssh_config, connect_timeout) for h in hosts]
        raw = bench_fleet(list(models), boards, split_names(devices), split_names(threads), data, options,
                          remote_edgecnn, command=command, prep_args=_remote_prep_args(prep))
    else:
        raw = bench(list(models), split_names(devices), split_names(threads), data, options, command=command).to_dict()
    paths = write_reports(raw, out, force=force)
    _show(raw, paths, as_json)
    return _exit_code(raw)


def _remote_prep_args(prep: dict) -> list[str]:
    """The preprocessing options as the board's own bench takes them (the same option names)."""
    if prep.get("labels"):
        raise UsageError("--labels cannot be used with --host: the file is not on the boards",
                         "convert with the labels (they travel in the manifest), or bench without --host")
    args: list[str] = []
    for key, value in prep.items():
        if value is None or value is False:
            continue
        flag = "--" + key.replace("_", "-")
        args += [flag] if value is True else [flag, str(value)]
    return args


@app.command("report")
@click.argument("results", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=Path("edgecnn-out") / "report", show_default=True,
              help="Folder for report.json, report.md and report.html.")
@click.option("--force", is_flag=True, help="Overwrite existing outputs.")
@click.option("--json", "as_json", is_flag=True, help="Print the merged JSON instead of a table.")
def report_command(results, out, force, as_json) -> None:
    """Merge bench.json files (from several devices) into one comparison: JSON, Markdown and HTML."""
    from edgecnn.bench.report import merge_reports  # noqa: PLC0415

    paths = merge_reports(list(results), out, force=force)
    raw = json.loads(paths["json"].read_text(encoding="utf-8"))
    _show(raw, paths, as_json)


def _show(raw: dict, paths: dict, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(raw, indent=2))
        return
    from rich.table import Table  # noqa: PLC0415

    from edgecnn.bench.report import COLUMNS, _visible_columns, row_label, table_rows  # noqa: PLC0415

    wide = console.width >= WIDE_TERMINAL
    shown = TERMINAL_COLUMNS if wide else COMPACT_COLUMNS
    visible = [i for i in _visible_columns(raw) if COLUMNS[i] in shown]
    table = Table(title=f"edgecnn bench: {len(raw['rows'])} row(s)", show_lines=False, padding=(0, 1 if wide else 0))
    for i in visible:
        header = COLUMNS[i] if wide else SHORT_HEADERS.get(COLUMNS[i], COLUMNS[i])
        table.add_column(header, justify="left" if i < 4 else "right", overflow="fold")
    styles = {"ok": "", "failed": "red", "exported-but-failed-verification": "yellow"}
    for row, cells in zip(raw["rows"], table_rows(raw)):
        cells = [_compact(COLUMNS[i], cells[i], wide) for i in range(len(cells))]
        table.add_row(*(cells[i] for i in visible), style=styles.get(row["status"], ""))
    console.print(table)
    for row in raw["rows"]:
        if row["status"] != "ok" and not _host_failed(raw, row):
            console_err.print(f"[bold]{row['status']}[/] {row_label(row)}: {row['reason']}", highlight=False,
                              soft_wrap=True)
    for host, summary in raw.get("hosts", {}).items():  # a host that failed as a whole: one line, not one per row
        if summary["status"] == "failed":
            console_err.print(f"[bold]failed[/] {summary['reason']}", highlight=False, soft_wrap=True)
    for row in raw["rows"]:
        if not wide and (row.get("accuracy") or {}).get("top1") is not None:  # the column is too wide for 80
            console.print(f"{row_label(row)}: top-1 {row['accuracy']['top1']:.1%} with preprocessing "
                          f"{row.get('preprocessing') or '–'}", highlight=False, soft_wrap=True)
        for note in row.get("notes", []):
            console_err.print(f"note: {row_label(row)}: {note}", highlight=False, soft_wrap=True)
    for note in raw.get("notes", []):
        console_err.print(f"note: {note}", highlight=False, soft_wrap=True)
    console.print("results: " + ", ".join(str(p) for p in paths.values()), highlight=False, soft_wrap=True)


def _host_failed(raw: dict, row: dict) -> bool:
    return raw.get("hosts", {}).get(row.get("host"), {}).get("status") == "failed"


def _compact(column: str, cell: str, wide: bool) -> str:
    if wide:
        return cell
    if column == "stability":
        return "UNSTABLE" if cell.startswith("UNSTABLE") else cell.split(" ")[0]
    if column == "status" and cell == "exported-but-failed-verification":
        return "failed-verif."
    return cell


def _exit_code(raw: dict) -> Optional[int]:
    """1 when any row failed or failed verification (outputs are still written), else 0."""
    bad = [r for r in raw["rows"] if r["status"] != "ok"]
    if bad:
        console_err.print(f"{len(bad)} of {len(raw['rows'])} row(s) did not pass; see the table", highlight=False)
        return 1
    return 0
