"""benchmarks/results/arm64.md (+ .json): per model and format, arm64 (emulated) against x86."""
from __future__ import annotations

import json
import math
import os
import platform
from pathlib import Path

from tools.arm64emu.host import CPU_BOARDS

TIMING_WARNING = ("Emulated timings say nothing about Raspberry Pi speed: QEMU translates every arm64 instruction "
                  "on the x86 host, and the SIMD kernels a Pi runs natively are the slowest to translate. They "
                  "only show the check's own cost.")


def fmt_diff(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return "0" if value == 0 else f"{value:.1e}"


def fmt_count(agreement: dict | None) -> str:
    if agreement is None:
        return "not run"
    if not agreement["count"]:
        return "failed"
    ties = f" (+{agreement['ties']} tie)" if agreement["ties"] else ""
    return f"{agreement['top1_same']}/{agreement['count']}{ties}"


def fmt_ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}" if value < 100 else f"{value:.0f}"


def host_line() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), {platform.platform()}"


def agreement_table(records: list[dict]) -> list[str]:
    lines = ["| model | format | inputs: top-1 same | max \\|diff\\| | tol. | bit-identical | x86 classes | "
             "run: frames top-1 same | run max \\|diff\\| | ok |",
             "|---|---|---:|---:|---:|---|---:|---:|---:|---|"]
    for r in records:
        out, run = r["outputs"], r["run"]
        ok = out["ok"] and (run is None or run["ok"])
        same = "n/a (regression)" if r["classes"] == 1 else fmt_count(out)
        run_same = "n/a (regression)" if r["classes"] == 1 and run else fmt_count(run)
        identical = {True: "yes", False: "no", None: "n/a"}[out["bit_identical"]]
        lines.append(f"| {r['model']} | {r['format']} | {same} | {fmt_diff(out['max_abs_diff'])} | "
                     f"{fmt_diff(out.get('tolerance', 0.0))} | {identical} | "
                     f"{out['distinct_top1'] if r['classes'] > 1 else 'n/a'} | {run_same} | "
                     f"{fmt_diff(run['max_abs_diff']) if run else 'not run'} | {'yes' if ok else '**NO**'} |")
    return lines


def timing_table(records: list[dict]) -> list[str]:
    lines = ["| model | format | target (x86 / arm64) | x86 p50 ms | emulated arm64 p50 ms | emulated / x86 | "
             "arm64 bench row |", "|---|---|---|---:|---:|---:|---|"]
    for r in records:
        x86, arm = r["bench"]["x86"], r["bench"]["arm64"]
        status = arm["status"] if arm["status"] == "ok" else f"{arm['status']}: {arm.get('reason', '')}"
        slowdown = f"{r['bench']['slowdown']}x" if r["bench"]["slowdown"] else "n/a"
        lines.append(f"| {r['model']} | {r['format']} | {x86.get('target', '?')} / {arm.get('target', '?')} | "
                     f"{fmt_ms(x86.get('p50_ms'))} | {fmt_ms(arm.get('p50_ms'))} | {slowdown} | {status} |")
    return lines


def markdown(result: dict) -> str:
    info, opts = result["info"], result["options"]
    versions = info.get("versions", {})
    cpuinfo = info.get("cpuinfo", {})
    passed = not result["problems"]
    weights = {r["model"]: r["weights"] for r in result["records"]}
    lines = [
        "# arm64 (Raspberry Pi OS 64-bit base, emulated) against x86", "",
        f"Command: `{result['command']}`  ", f"Date: {result['date']}; code: {result.get('source', '?')}  ",
        f"x86 host: {result['host']}; load average {result['load'][0]} before, {result['load'][1]} after "
        "(the machine was shared with other work)", "",
        f"Emulation: QEMU {info.get('qemu')} user mode, CPU model **{opts['cpu']}** "
        f"({CPU_BOARDS.get(opts['cpu'], '')}); the guest's /proc/cpuinfo: CPU part {cpuinfo.get('part')}, "
        f"{cpuinfo.get('cpus')} CPUs, features `{cpuinfo.get('features')}`.  ",
        f"Root: Debian {versions.get('debian')} arm64 (debootstrap minbase), {versions.get('glibc')}, Python "
        f"{versions.get('python')}; `pip install {' '.join(info.get('pip_install', []))}` from the project's wheel: edgecnn "
        f"{versions.get('edgecnn')}, numpy {versions.get('numpy')}, ai-edge-litert {versions.get('ai-edge-litert')}, "
        f"onnxruntime {versions.get('onnxruntime')}, opencv-python-headless {versions.get('opencv-python-headless')}; "
        f"tensorflow {versions.get('tensorflow')}, onnx {versions.get('onnx')}.", "",
        f"**Verdict: {'PASS' if passed else 'FAIL'}**" + ("" if passed else ":"), ""]
    lines += [f"- {p}" for p in result["problems"]] + ([""] if result["problems"] else [])
    lines += [
        "## Agreement, per model and format", "",
        f"Same artifacts, same inputs on both sides. *inputs*: guest.py runs every artifact on {opts['frames']} "
        "held-out MNIST digits prepared for the model (the Classifier's encoder and runner, one image per invoke). "
        f"*run*: `edgecnn run` on a lossless video of the same {opts['frames']} digits, frame for frame from the JSON "
        "lines (scores with 6 decimals, top-k up to 10). Targets: `pi` on arm64, `cpu` on x86 (LiteRT + XNNPACK, "
        "2 threads both), `onnx-cpu` on both. *x86 classes*: how many different top-1 classes x86 gives over the "
        "inputs (1 would make top-1 agreement say little). Pass: quantized outputs bit-identical, float scores "
        "within 1e-5, top-1 equal except where x86 itself scores both classes within that tolerance (a tie). "
        "Dynamic-range artifacts quantize activations with each CPU's own float arithmetic: their scores may "
        "differ by up to twice x86's own largest difference from the float32 artifact on the same inputs "
        "(+1e-5); *tol.* gives it.", ""]
    lines += agreement_table(result["records"])
    lines += ["", "Weights: " + "; ".join(f"{name}: {text}" for name, text in weights.items()) + ".", "",
              "## Emulated timings", "", f"**{TIMING_WARNING}**", "",
              f"`edgecnn bench` of every artifact, 1 thread, {opts['bench_runs']} timed runs after 10 warm-up runs, "
              "raw inference p50.", ""]
    lines += timing_table(result["records"])
    lines += ["", "## Time of each stage", "",
              "Wall-clock seconds on this (shared) machine, and CPU seconds of the tool and every process it waited "
              "for (QEMU included): on an idle 2-core machine a stage takes about max(CPU / 2, its waits).", "",
              "| stage | wall s | CPU s |", "|---|---:|---:|"]
    lines += [f"| {name} | {t['wall_s']:.1f} | {t['cpu_s']:.1f} |" for name, t in result["stages"].items()]
    lines += ["", f"Whole command: {result.get('wall_s', 0):.0f} s wall."]
    return "\n".join(lines) + "\n"


def terminal_table(result: dict):
    """The agreement, narrow enough for 80 columns."""
    from rich.table import Table

    table = Table(title=f"arm64 ({result['options']['cpu']}, emulated) vs x86", title_justify="left")
    for column in ("model", "format", "top-1", "max |diff|", "run top-1", "emul. ms"):
        table.add_column(column, justify="left" if column in ("model", "format") else "right")
    for r in result["records"]:
        ok = r["outputs"]["ok"] and (r["run"] is None or r["run"]["ok"])
        style = "" if ok else "red"
        table.add_row(r["model"], r["format"], "n/a" if r["classes"] == 1 else fmt_count(r["outputs"]),
                      fmt_diff(r["outputs"]["max_abs_diff"]),
                      "n/a" if r["classes"] == 1 and r["run"] else fmt_count(r["run"]),
                      fmt_ms(r["bench"]["arm64"].get("p50_ms")), style=style)
    return table


def finite(value):
    """NaN and infinities as null: the JSON stays standard."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def write(result: dict, folder: Path, name: str = "arm64") -> tuple[Path, Path]:
    from edgecnn.fileio import write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / f"{name}.md", folder / f"{name}.json"
    write_text_atomic(js, json.dumps(finite(result), indent=2, default=str) + "\n")
    write_text_atomic(md, markdown(result))
    return md, js
