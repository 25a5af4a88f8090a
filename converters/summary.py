"""The table `edgecnn convert` ends with: artifact, size, size vs fp32, agreement, accuracy, drop."""
from __future__ import annotations

from typing import Any, Optional

from edgecnn.manifest import Manifest

from edgecnn.converters.formats import FORMATS, fp32_reference


def summary_rows(manifest: Manifest) -> list[dict[str, Any]]:
    """One plain dict per artifact (what the table shows and --json prints)."""
    sizes = {entry.name: entry.size_bytes for entry in manifest.artifacts}
    rows = []
    for entry in manifest.artifacts:
        family = FORMATS[entry.name].family if entry.name in FORMATS else entry.name.split("-")[0]
        reference = sizes.get(fp32_reference(family))
        check = entry.verification
        rows.append({
            "artifact": entry.name, "file": entry.file, "size_bytes": entry.size_bytes,
            "size_vs_fp32": round(entry.size_bytes / reference, 4) if reference else None,
            "agreement": check.agreement if check else None,
            "max_abs_diff": check.max_abs_diff if check else None,
            "keras_accuracy": check.keras_accuracy if check else None,
            "accuracy": check.accuracy if check else None,
            "drop_pp": check.drop_pp if check else None,
            "samples": check.samples if check else 0,
            "data": check.data if check else None,
            "ties": check.ties if check else 0,
            "max_score_diff": check.max_score_diff if check else None,
            "status": "ok",
        })
    for failure in manifest.failed:
        check = failure.verification
        rows.append({"artifact": failure.name, "file": None, "size_bytes": None, "size_vs_fp32": None,
                     "agreement": check.agreement if check else None,
                     "max_abs_diff": check.max_abs_diff if check else None,
                     "keras_accuracy": check.keras_accuracy if check else None,
                     "accuracy": check.accuracy if check else None, "drop_pp": check.drop_pp if check else None,
                     "samples": check.samples if check else 0, "data": check.data if check else None,
                     "ties": check.ties if check else 0,
                     "max_score_diff": check.max_score_diff if check else None,
                     "status": "failed", "reason": failure.reason})
    return rows


def summary_table(manifest: Manifest, title: Optional[str] = None):
    from rich.table import Table  # noqa: PLC0415

    rows = summary_rows(manifest)
    data = next((r for r in rows if r["data"]), None)
    caption = (f"verified on {data['samples']} {data['data']} samples; agree: same top-1 as Keras; max diff: of "
               f"dequantized outputs; drop: accuracy lost, in pp") if data else "not verified (no data)"
    keras = next((r["keras_accuracy"] for r in rows if r["keras_accuracy"] is not None), None)
    if keras is not None:
        caption += f"; Keras top-1 {keras * 100:.1f}%"
    ties = max((r["ties"] for r in rows), default=0)
    if ties:
        caption += f"; up to {ties} tie(s) (Keras's lead within the artifact's numeric error) left out of agree"
    caption += f"; head: {manifest.output_kind.value}"
    if any(r["status"] == "failed" for r in rows):
        caption += "; FAILED: refused, not written (reason below)"
    table = Table(title=title or f"edgecnn convert: {manifest.model_name}", caption=caption)
    table.add_column("artifact", no_wrap=True, min_width=14)
    for column in ("size", "vs fp32", "agree", "max diff", "accuracy", "drop"):
        table.add_column(column, justify="right", no_wrap=True)
    for row in rows:
        size = "FAILED" if row["status"] == "failed" else _size(row["size_bytes"])
        table.add_row(row["artifact"], size, _ratio(row["size_vs_fp32"]), _pct(row["agreement"]),
                      _num(row["max_abs_diff"]), _pct(row["accuracy"]), _drop(row["drop_pp"]),
                      style="red" if row["status"] == "failed" else None)
    return table


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def _ratio(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 100:.1f}%"


def _num(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:.2g}"


def _drop(value: Optional[float]) -> str:
    return "-" if value is None else f"{value:+.1f}"
