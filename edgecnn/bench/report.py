"""Reports from result JSON: a Markdown table, a self-contained HTML page with plots, and merging of results.

Everything works on the JSON dict (schema.json), so results from several devices merge into one
comparison without the runtimes that made them. Plots are PNGs drawn with matplotlib's Agg backend and
embedded as base64, so the HTML file needs nothing beside it.
"""
from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any, Optional, Sequence

from edgecnn.errors import DataError, InputPathError, UsageError
from edgecnn.fileio import check_writable_dir, refuse_overwrite, write_json_atomic, write_text_atomic

OUTPUT_NAMES = ("json", "md", "html")


# -- formatting -----------------------------------------------------------------------------------------
def _ms(value: Optional[float]) -> str:
    if value is None:
        return "–"
    return f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _pct(value: Optional[float], digits: int = 1) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def _num(value: Optional[float], fmt: str = "{:.2f}") -> str:
    return "–" if value is None else fmt.format(value)


def _size(value: Optional[int]) -> str:
    if value is None:
        return "–"
    return f"{value / 1024:.0f} KiB" if value < 1024 * 1024 else f"{value / 2**20:.2f} MiB"


def row_label(row: dict[str, Any]) -> str:
    source = f"{row['source']}: " if row.get("source") else ""
    return f"{source}{row['model']} {row['format']} @{row['target']} x{row['threads']}"


COLUMNS = ("source", "model", "format", "target", "threads", "status", "size", "load ms", "first ms", "p50 ms",
           "p90 ms", "p99 ms", "img/s", "step p50 ms", "p50 vs fp32", "MMAC", "GMAC/s", "top-1", "preprocessing",
           "drop pp", "agreement", "stability")


def table_rows(raw: dict[str, Any]) -> list[list[str]]:
    """One list of cells per result row, in COLUMNS order (the terminal, Markdown and HTML tables share it)."""
    out = []
    for row in raw["rows"]:
        inv, step, acc = row.get("invoke"), row.get("step"), row.get("accuracy") or {}
        stability = "–" if not inv else (f"UNSTABLE ({inv['variation']:.0%})" if inv["unstable"]
                                          else f"ok ({inv['variation']:.1%})")
        out.append([
            row.get("source", ""), row["model"], row["format"], row["target"], str(row["threads"]), row["status"],
            _size(row.get("size_bytes")), _ms(row.get("load_ms")), _ms(row.get("first_inference_ms")),
            _ms(inv and inv["p50"]), _ms(inv and inv["p90"]), _ms(inv and inv["p99"]),
            _num(inv and inv["images_per_s"], "{:.0f}"), _ms(step and step["p50"]),
            _num(row.get("p50_vs_fp32"), "{:.2f}x"), _num(row["macs"] / 1e6 if row.get("macs") else None, "{:.1f}"),
            _num(row.get("gmacs_per_s")), _top1(row, acc), _preprocessing(row, acc), _num(acc.get("drop_pp")),
            _pct(acc.get("agreement")), stability])
    return out


def _top1(row: dict[str, Any], acc: dict[str, Any]) -> str:
    if acc.get("top1") is None and row.get("accuracy_note"):
        return "n/a"
    return _pct(acc.get("top1"))


def _preprocessing(row: dict[str, Any], acc: dict[str, Any]) -> str:
    """Beside every accuracy: the preprocessing it was measured with (a figure means nothing without it)."""
    return row.get("preprocessing") or "–" if acc else "–"


def _visible_columns(raw: dict[str, Any]) -> list[int]:
    has_source = any(row.get("source") for row in raw["rows"])
    has_accuracy = any(row.get("accuracy") for row in raw["rows"])
    return [i for i, name in enumerate(COLUMNS)
            if (name != "source" or has_source) and (name != "preprocessing" or has_accuracy)]


# -- Markdown -------------------------------------------------------------------------------------------
def to_markdown(raw: dict[str, Any]) -> str:
    cols = _visible_columns(raw)
    lines = [f"# edgecnn bench: {len(raw['rows'])} row(s)", "", *_summary_lines(raw), ""]
    lines.append("| " + " | ".join(COLUMNS[i] for i in cols) + " |")
    lines.append("|" + "|".join("---" for _ in cols) + "|")
    for cells in table_rows(raw):
        lines.append("| " + " | ".join(cells[i].replace("|", "\\|") for i in cols) + " |")
    lines += ["", *_detail_lines(raw)]
    return "\n".join(lines).rstrip() + "\n"


def _summary_lines(raw: dict[str, Any]) -> list[str]:
    lines = []
    for label, env in _environments(raw):
        versions = env.get("versions", {})
        runtimes = ", ".join(f"{k} {v}" for k, v in versions.items() if k in ("ai-edge-litert", "tflite-runtime",
                                                                                "onnxruntime", "tensorflow"))
        load = env.get("load_average")
        lines.append(f"- {label}{env.get('cpu_model', '?')}, {env.get('cpu_cores_usable') or env.get('cpu_cores_logical')} "
                     f"core(s), governor {env.get('frequency_governor') or 'n/a'}, {env.get('os_release') or env.get('os')}, "
                     f"Python {env.get('python')}; {runtimes}"
                     + (f"; load average at start {load[0]:.2f}" if load else ""))
        if env.get("raspberry_pi"):
            pi = env["raspberry_pi"]
            lines.append(f"  - {pi.get('model')}: {pi.get('temperature_c')} °C, throttling {pi.get('throttled')}")
    for host, summary in raw.get("hosts", {}).items():  # bench --host: what happened on each board
        lines.append(f"- {host}: " + (f"failed: {summary['reason']}" if summary["status"] == "failed" else
                                      f"edgecnn {summary.get('edgecnn')}, {summary.get('copied', 0)} file(s) copied, "
                                      f"{summary.get('already_there', 0)} already there"))
    options = raw.get("options", {})
    lines.append(f"- Timing: {options.get('warmup')} warm-up runs, then "
                 + (f"{options['duration_s']} s" if options.get("duration_s") else f"{options.get('runs')} runs")
                 + " of back-to-back single-image inferences per row; raw = tensor in/out, step = uint8 image to top-5.")
    if raw.get("data"):
        lines.append(f"- Accuracy data: {raw['data']}")
    lines += [f"- Note: {note}" for note in raw.get("notes", [])]
    return lines


def _environments(raw: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    if raw.get("environments"):
        return [(f"{name}: ", env) for name, env in raw["environments"].items()]
    return [("", raw.get("environment", {}))]


def _detail_lines(raw: dict[str, Any]) -> list[str]:
    lines = []
    for row in raw["rows"]:
        if row["status"] != "ok":
            lines.append(f"- **{row['status']}** {row_label(row)}: {row['reason']}")
        if row.get("accuracy_note"):
            lines.append(f"- {row_label(row)}: accuracy {row['accuracy_note']}")
        lines += [f"- {row_label(row)}: {note}" for note in row.get("notes", [])]
        acc = row.get("accuracy") or {}
        worst = acc.get("worst_classes") or []
        if worst:
            shown = ", ".join(f"{c['label']} (-{c['lost_pp']:.1f} pp)" for c in worst)
            lines.append(f"- {row_label(row)}: classes that lost most: {shown}")
    ratios = [r for r in raw["rows"] if r.get("p50_vs_fp32") is not None and r["precision"] != "fp32"]
    if ratios:
        lines += ["", "p50 relative to the fp32 artifact (same model, family, target, threads):", ""]
        lines += [f"- {row_label(r)}: {r['p50_vs_fp32']:.2f}x" for r in ratios]
    return lines


# -- HTML -----------------------------------------------------------------------------------------------
def to_html(raw: dict[str, Any]) -> str:
    cols = _visible_columns(raw)
    head = "".join(f"<th>{html.escape(COLUMNS[i])}</th>" for i in cols)
    body = "".join("<tr class='{}'>".format(html.escape(cells[5] if cells[5] else "")) +
                   "".join(f"<td>{html.escape(cells[i])}</td>" for i in cols) + "</tr>" for cells in table_rows(raw))
    summary = "".join(f"<li>{html.escape(line.lstrip('- '))}</li>" for line in _summary_lines(raw))
    details = "".join(f"<li>{html.escape(line.lstrip('- '))}</li>" if line.startswith("- ")
                      else f"</ul><p>{html.escape(line)}</p><ul>" for line in _detail_lines(raw) if line.strip())
    figures = _figures(raw)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>edgecnn bench</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}th{{background:#eee}}
tr.failed td{{background:#fdd}}tr.exported-but-failed-verification td{{background:#ffe9c4}}
img.plot{{max-width:100%;border:1px solid #ddd}}</style></head><body>
<h1>edgecnn bench: {len(raw['rows'])} row(s)</h1>
<p>Result schema version {raw.get('schema_version')}, created {html.escape(str(raw.get('created', '')))}.
Command: <code>{html.escape(str(raw.get('command', '')))}</code></p>
<ul>{summary}</ul>
<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>
<ul>{details}</ul>
{figures}
</body></html>
"""


def _figures(raw: dict[str, Any]) -> str:
    """The plots as inline PNGs; on a device without matplotlib, a line saying so (the tables are complete)."""
    from edgecnn.errors import RuntimeMissingError  # noqa: PLC0415

    try:
        plots = [("Raw-inference latency distribution per row", plot_latency(raw)),
                 ("Accuracy against latency", plot_accuracy(raw))]
    except RuntimeMissingError as exc:
        return f"<p class='noplot'>No plots: {html.escape(exc.one_line())}.</p>"
    return "".join(
        f"<figure><img class='plot' alt='{html.escape(title)}' src='data:image/png;base64,{png}'>"
        f"<figcaption>{html.escape(title)}</figcaption></figure>" if png else
        f"<p class='noplot'>{html.escape(title)}: no data to plot</p>" for title, png in plots)


def _matplotlib():
    try:
        import matplotlib  # noqa: PLC0415
    except ImportError:
        from edgecnn.errors import RuntimeMissingError  # noqa: PLC0415

        raise RuntimeMissingError("the HTML report's plots need matplotlib", "pip install 'edgecnn[report]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def plot_latency(raw: dict[str, Any]) -> Optional[str]:
    """Box plot of each row's raw-inference samples (log scale when rows differ by more than 20x)."""
    rows = [r for r in raw["rows"] if r.get("samples_ms")]
    if not rows:
        return None
    plt = _matplotlib()
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(rows) + 1.2))
    ax.boxplot([r["samples_ms"] for r in rows], vert=False, showfliers=True, flierprops={"markersize": 2})
    ax.set_yticks(range(1, len(rows) + 1), [row_label(r) for r in rows], fontsize=7)
    lows = [min(r["samples_ms"]) for r in rows]
    highs = [max(r["samples_ms"]) for r in rows]
    if min(lows) > 0 and max(highs) / min(lows) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("raw inference latency, ms")
    ax.invert_yaxis()
    try:
        return _png(fig)
    finally:
        plt.close(fig)


def plot_accuracy(raw: dict[str, Any]) -> Optional[str]:
    """Top-1 (or agreement with the reference, without labels) against raw-inference p50, one point per row."""
    points = []
    for r in raw["rows"]:
        acc, inv = r.get("accuracy") or {}, r.get("invoke")
        value = acc.get("top1") if acc.get("top1") is not None else acc.get("agreement")
        if inv and value is not None:
            points.append((inv["p50"], value * 100, row_label(r)))
    if not points:
        return None
    plt = _matplotlib()
    fig, ax = plt.subplots(figsize=(9, 5))
    markers = "osD^v<>phX*"
    for i, (x, y, label) in enumerate(points):  # a legend, not annotations: rows often share a point
        ax.scatter([x], [y], s=30, marker=markers[i % len(markers)], label=label, alpha=0.8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel("raw inference p50, ms")
    labelled = any((r.get("accuracy") or {}).get("top1") is not None for r in raw["rows"])
    ax.set_ylabel("top-1 accuracy, %" if labelled else "top-1 agreement with the reference, %")
    ax.grid(alpha=0.3)
    try:
        return _png(fig)
    finally:
        plt.close(fig)


# -- files ------------------------------------------------------------------------------------------------
def output_paths(out_dir: Path, stem: str = "bench") -> dict[str, Path]:
    return {kind: Path(out_dir) / f"{stem}.{kind}" for kind in OUTPUT_NAMES}


def write_reports(raw: dict[str, Any], out_dir: Path, force: bool = False, stem: str = "bench") -> dict[str, Path]:
    """Write JSON, Markdown and HTML atomically; existing files are kept unless ``force``."""
    paths = output_paths(out_dir, stem)
    refuse_overwrite(list(paths.values()), force)
    check_writable_dir(Path(out_dir))
    texts = {"md": to_markdown(raw), "html": to_html(raw)}  # render everything before writing anything
    write_json_atomic(paths["json"], raw)
    write_text_atomic(paths["md"], texts["md"])
    write_text_atomic(paths["html"], texts["html"])
    return paths


def read_result(path: Path) -> dict[str, Any]:
    """A result file, validated against the schema: one-line errors for missing, non-JSON or foreign files."""
    from edgecnn.bench.result import validate_result  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise InputPathError(f"result file {path} does not exist", "give bench.json files written by edgecnn bench")
    try:
        raw = json.loads(path.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as exc:
        raise DataError(f"{path} is not valid JSON ({str(exc)[:120]})", "give bench.json files written by edgecnn bench") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path} is not an edgecnn bench result (not a JSON object)")
    validate_result(raw)
    return raw


def merge_results(raws: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """One comparison: every row tagged with the host/file it came from; each environment kept by name."""
    if not raws:
        raise UsageError("no result files to merge", "give one or more bench.json files")
    rows, environments, hosts = [], {}, {}
    for raw, name in zip(raws, names):
        for row in raw["rows"]:
            rows.append({**row, "source": row.get("source") or name})
        if raw.get("environments"):  # a merged or fleet result: keep each board's fingerprint under its name
            environments.update(raw["environments"])
        else:
            environments[name] = raw.get("environment", {})
        hosts.update(raw.get("hosts", {}))
    first = raws[0]
    return {"schema_version": first["schema_version"], "created": first["created"],
            "command": "edgecnn report " + " ".join(names), "data": first.get("data"),
            "environment": first.get("environment", {}), "options": first.get("options", {}),
            "notes": [note for raw in raws for note in raw.get("notes", [])], "rows": rows,
            "merged_from": list(names), "environments": environments, **({"hosts": hosts} if hosts else {})}


def source_names(paths: Sequence[Path], raws: Sequence[dict[str, Any]]) -> list[str]:
    """A short unique name per file: the host name, else the file's parent folder, else the path."""
    names = []
    for path, raw in zip(paths, raws):
        name = raw.get("environment", {}).get("hostname") or Path(path).parent.name or str(path)
        if name in names:
            name = f"{name}/{Path(path).parent.name}/{Path(path).stem}"
        while name in names:
            name = f"{name}'"
        names.append(name)
    return names


def merge_reports(paths: Sequence[str | Path], out: str | Path, force: bool = False) -> dict[str, Path]:
    """``edgecnn report A.json B.json --out DIR``: read bench.json files, validate them against the schema, merge
    their rows (each keeping its source and environment) and write report.json, report.md and report.html in
    ``out``. Returns {"json"|"md"|"html": path}. Raises InputPathError/DataError (a missing or invalid file) and
    OutputExistsError (an output exists and ``force`` is False)."""
    paths = [Path(p) for p in paths]
    raws = [read_result(p) for p in paths]
    merged = merge_results(raws, source_names(paths, raws))
    return write_reports(merged, Path(out), force=force, stem="report")
