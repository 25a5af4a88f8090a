"""`bash dev.sh arm64 fidelity DIR`: benchmarks/onnx_int8.py --fidelity-only in the emulated root, on the ONNX
artifacts that `benchmarks/onnx_int8.py` kept in DIR on x86, written to benchmarks/results/onnx_int8_arm64.md.

DIR holds <model>/inputs.npy, <model>/*.onnx (x86 settings), <model>/arm64/*.onnx (`--onnx-target arm64`) and
outputs-x86_64.npz (x86's outputs on the same inputs). A copy of what the fidelity run reads is made (DIR is
left as it is); onnx_int8.py runs there under the root's Python with only the device side installed, and its
fidelity-aarch64.json comes back. ONNX Runtime's arm64 kernels differ from x86's (int8 GEMM, float
accumulation order), so the figures are the honest difference a Pi user would see, not a tolerance check.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from tools.arm64emu.host import Log, last_line
from tools.arm64emu.session import CheckFailed, emulated_root
from tools.arm64emu.stages import Stages

SCRIPT = Path("benchmarks") / "onnx_int8.py"
READ = ("inputs.npy", "manifest.json", "*.onnx", "arm64/*.onnx", "arm64/manifest.json")


def stage(source: Path, share: Path) -> list[str]:
    """Copy of what the fidelity run reads; the models found. CheckFailed when DIR lacks the x86 outputs."""
    if not (source / "outputs-x86_64.npz").is_file():
        raise CheckFailed(f"{source} has no outputs-x86_64.npz: run `python benchmarks/onnx_int8.py --dir {source}` "
                          "on x86 first")
    models = sorted(p.parent.name for p in source.glob("*/inputs.npy"))
    if not models:
        raise CheckFailed(f"{source} has no <model>/inputs.npy: not a benchmarks/onnx_int8.py --dir folder")
    for model in models:
        for pattern in READ:
            for path in (source / model).glob(pattern):
                target = share / "kept" / path.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
    for path in source.glob("outputs-*.npz"):
        if path.name != "outputs-aarch64.npz":  # a previous arm64 run's outputs would only be overwritten
            shutil.copyfile(path, share / "kept" / path.name)
    return models


def uninformative(x86: np.ndarray) -> str:
    """Why x86's outputs of one artifact make agreement say little or nothing ("" when they do not): the same
    value for every input and class (a random-weight net whose activations vanished), one output (no top-1),
    or one top-1 class for every input."""
    if np.unique(x86).size == 1:
        return "x86 output is one constant for every input and class: agreement checks nothing"
    if x86.reshape(len(x86), -1).shape[1] == 1:
        return "one output (regression): top-1 agreement does not apply, max abs diff does"
    if np.unique(x86.reshape(len(x86), -1).argmax(1)).size == 1:
        return "x86 top-1 is the same class for every input: top-1 agreement says little, max abs diff applies"
    return ""


def annotate(rows: list[dict], x86_npz: Path) -> list[dict]:
    with np.load(x86_npz) as x86:
        return [{**r, "note": uninformative(x86[r["artifact"]]),
                 "x86_top1_classes": int(np.unique(x86[r["artifact"]].reshape(len(x86[r["artifact"]]), -1).argmax(1)).size)}
                for r in rows]


def problems_of(rows: list[dict]) -> list[str]:
    """Outputs that must not be reported as a figure: non-finite differences, none compared at all."""
    found = [f"{r['artifact']}: max |difference| {r['max_abs_diff']}" for r in rows
             if r["max_abs_diff"] is None or not math.isfinite(r["max_abs_diff"])]
    return found if rows else ["no artifact was compared (no x86 outputs with the same names)"]


def markdown(meta: dict, rows: list[dict], problems: list[str]) -> str:
    lines = ["# ONNX artifacts of benchmarks/onnx_int8.py on arm64 (emulated) against x86", "",
             f"Command: `{meta['command']}`  ", f"Date: {meta['date']}; code: {meta['source']}  ",
             f"x86 host: {meta['host']}; load average {meta['load'][0]} before, {meta['load'][1]} after (shared "
             "machine)  ", f"Emulation: QEMU {meta['qemu']} user mode, CPU model {meta['cpu']}; root: Debian "
             f"{meta['versions'].get('debian')}, Python {meta['versions'].get('python')}, onnxruntime "
             f"{meta['versions'].get('onnxruntime')} (x86 outputs from the run that built the artifacts).", "",
             "`python benchmarks/onnx_int8.py --fidelity-only` in the root: every ONNX artifact on its model's "
             "inputs.npy, 1 thread, against outputs-x86_64.npz. `*_int8.onnx`: the default (x86) settings, U8S8; "
             "`arm64/*`: `--onnx-target arm64` (S8S8), the artifact meant for a Pi. Random-weight seeds: only "
             "agreement means something, not accuracy. Timings are not taken here (emulation says nothing of Pi "
             "speed).", "",
             "| artifact | max abs diff | top-1 agreement | bit-identical | note |", "|---|---:|---:|---|---|"]
    for r in rows:
        note = r.get("note", "")
        diff = "n/a" if r["max_abs_diff"] is None or note.startswith("x86 output is one constant") \
            else f"{r['max_abs_diff']:.3g}"
        top1 = "n/a" if note else f"{r['top1_agreement']:.3f}"
        same = "n/a" if note.startswith("x86 output is one constant") else "yes" if r["identical"] else "no"
        lines.append(f"| {r['artifact']} | {diff} | {top1} | {same} | {note} |")
    informative = [r for r in rows if not r.get("note", "").startswith("x86 output is one constant")]
    classifiers = [r for r in informative if not r.get("note")]
    lines += ["", f"Informative outputs: {len(informative)} of {len(rows)}; {sum(r['identical'] for r in informative)} "
              f"of them bit-identical; lowest top-1 agreement over the classifiers "
              f"{min((r['top1_agreement'] for r in classifiers), default=float('nan')):.3f}.", ""]
    if problems:
        lines += ["**Problems:**", ""] + [f"- {p}" for p in problems] + [""]
    return "\n".join(lines)


def fidelity_command(project: Path, args, log: Log, console, source: str) -> int:
    import datetime as dt

    from edgecnn.fileio import write_text_atomic
    from tools.arm64emu import report

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="edgecnn-arm64-fidelity-") as tmp, \
            console.status("arm64: ONNX fidelity of the kept artifacts"):
        share = Path(tmp)
        stage(args.dir.resolve(), share)
        shutil.copyfile(project / SCRIPT, share / SCRIPT.name)
        with emulated_root(project, args.cpu, log, Stages(log), args.mirror) as (root, info):
            try:
                root.python([SCRIPT.name, "--fidelity-only", "--dir", "kept"], log, share=share, timeout=7200)
            except Exception as exc:  # CalledProcessError: the device side failed in the root
                raise CheckFailed(f"onnx_int8.py --fidelity-only failed in the arm64 root: "
                                  f"{last_line(exc) if hasattr(exc, 'stderr') else exc}") from None
        rows = annotate(json.loads((share / "kept" / "fidelity-aarch64.json").read_text())["rows"],
                        share / "kept" / "outputs-x86_64.npz")
    problems = problems_of(rows)
    meta = {"command": f"bash dev.sh arm64 fidelity {args.dir}" + (f" --cpu {args.cpu}" if args.cpu != "cortex-a72"
                                                                    else ""),
            "date": f"{dt.datetime.now():%Y-%m-%d %H:%M}", "source": source, "host": report.host_line(),
            "load": [round(load_before, 2), round(os.getloadavg()[0], 2)], "qemu": info["qemu"], "cpu": args.cpu,
            "versions": info["versions"]}
    args.results.mkdir(parents=True, exist_ok=True)
    md, js = args.results / "onnx_int8_arm64.md", args.results / "onnx_int8_arm64.json"
    write_text_atomic(js, json.dumps(report.finite({"meta": meta, "rows": rows, "problems": problems}), indent=2) + "\n")
    write_text_atomic(md, markdown(meta, rows, problems))
    console.print(f"{len(rows)} ONNX outputs compared, {sum(r['identical'] for r in rows)} bit-identical, "
                  f"{sum(bool(r['note']) for r in rows)} with a note: {md}", highlight=False)
    for problem in problems:
        console.print(f"  [red]{problem}[/]", highlight=False)
    return 1 if problems else 0
