"""`bash dev.sh arm64`: the device side on emulated arm64 (Debian bookworm, the base of Raspberry Pi OS 64-bit)
against x86, model by model.

On x86: the seed models converted to every format (seeds.py), a lossless video of 60 held-out MNIST digits
and the same frames as prepared pixels. In the emulated root, with the project's wheel installed as a Pi user
installs it: `edgecnn doctor`, guest.py (every artifact on every prepared input, raw outputs saved),
`edgecnn run` on the video (JSON lines) and one `edgecnn bench` of every artifact. The x86 side runs the very
same guest.py, `edgecnn run` and `edgecnn bench` on the same files; compare.py judges the differences.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from tools.arm64emu import seeds
from tools.arm64emu.compare import Agreement, compare_outputs, compare_runs, dynamic_envelope
from tools.arm64emu.host import Log, last_line, run_tool
from tools.arm64emu.rootfs import VENV, Root
from tools.arm64emu.session import GUEST_EDGECNN, CheckFailed, emulated_root, prepare_host
from tools.arm64emu.stages import Stages

GUEST_SCRIPT = Path(__file__).with_name("guest.py")
MAX_TOP_K = 10
HELD_OUT = 1000  # digits in mnist_sample("val")
FRAME_SIDE = 112  # digits upscaled 4x: every model resizes the frames to its own input, up or down


@dataclass(frozen=True)
class CheckOptions:
    cpu: str = "cortex-a72"
    models: tuple[str, ...] = ("mnist_cnn", "mnist_mlp", "cifar10_vgg", "cifar10_cnn", "dave2", "mobilenet_v2")
    frames: int = 60
    run_formats: Optional[tuple[str, ...]] = None  # formats `edgecnn run` is compared on; None: every format
    bench_formats: Optional[tuple[str, ...]] = None  # formats `edgecnn bench` times; None: every format
    bench_runs: int = 30
    mirror: Optional[str] = None
    work: Optional[Path] = None  # keep the shared folder (artifacts, inputs, every output) here


@dataclass(frozen=True)
class Side:
    """How one side runs a command: x86 directly in the workstation venv, arm64 through the emulated root."""

    name: str
    edgecnn: list[str]
    python: list[str]
    tflite_target: str
    call: Callable[..., subprocess.CompletedProcess]


def x86_side(log: Log) -> Side:
    def call(argv: list[str], share: Path, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        return run_tool(argv, log, timeout=3600, cwd=share, ok=ok)

    edgecnn = str(Path(sys.executable).with_name("edgecnn"))
    return Side("x86", [edgecnn], [sys.executable, "-I"], "cpu", call)


def arm_side(root: Root, log: Log) -> Side:
    def call(argv: list[str], share: Path, ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess:
        return root.run(argv, log, share=share, timeout=3600, ok=ok)

    return Side("arm64", [GUEST_EDGECNN], [f"{VENV}/bin/python", "-I"], "pi", call)


def stage_inputs(models: list[seeds.SeedArtifacts], frame_count: int, share: Path) -> None:
    """models/<name>/ copies, digits.mkv, pixels.npz (one array per model) and guest.py in the shared folder."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the real-digit video fixture
    from fixtures.video import digit_frames, write_video

    every, _ = digit_frames(HELD_OUT, size=FRAME_SIDE)
    bgr = every[np.linspace(0, HELD_OUT - 1, frame_count).astype(int)]  # sorted by class: spread over all ten
    write_video(bgr, share / "digits.mkv")  # .mkv: FFV1, lossless, so both sides decode the same pixels
    arrays = {}
    for model in models:
        shutil.copytree(model.folder, share / "models" / model.name)
        arrays[model.name] = seeds.model_pixels(bgr, model.manifest)
    np.savez(share / "pixels.npz", **arrays)
    shutil.copyfile(GUEST_SCRIPT, share / "guest.py")


def relative(model: seeds.SeedArtifacts, file: str) -> str:
    return f"models/{model.name}/{file}"


def run_outputs(side: Side, models: list[seeds.SeedArtifacts], share: Path) -> Optional[str]:
    specs = [f"{relative(m, e.file)}={m.name}" for m in models for e in m.manifest.artifacts]
    try:
        side.call([*side.python, "guest.py", "--inputs", "pixels.npz", "--out", f"{side.name}-outputs.npz",
                   "--tflite-target", side.tflite_target, *specs], share)
    except subprocess.CalledProcessError as exc:
        return f"guest.py failed on {side.name}: {last_line(exc)}"
    return None


def run_videos(side: Side, models: list[seeds.SeedArtifacts], formats: Optional[tuple[str, ...]],
               share: Path) -> dict[str, str]:
    """`edgecnn run` of each chosen artifact on the video; {artifact: error} for those that failed."""
    errors = {}
    for model in models:
        classes = len(model.manifest.labels) or 1
        for entry in model.manifest.artifacts:
            if formats is not None and entry.name not in formats:
                continue
            device = side.tflite_target if entry.file.endswith(".tflite") else "onnx-cpu"
            out = Path(side.name) / model.name / f"{entry.file}.jsonl"
            (share / out).parent.mkdir(parents=True, exist_ok=True)
            try:
                side.call([*side.edgecnn, "run", relative(model, entry.file), "--device", device, "--source",
                           "digits.mkv", "--jsonl", str(out), "--top-k", str(min(classes, MAX_TOP_K)), "--quiet",
                           "--no-show", "--force"], share)
            except subprocess.CalledProcessError as exc:
                errors[relative(model, entry.file)] = f"edgecnn run failed on {side.name}: {last_line(exc)}"
    return errors


def merge_errors(into: dict[str, str], more: dict[str, str]) -> None:
    """Both sides' failures of one artifact are kept, not the second over the first."""
    for key, text in more.items():
        into[key] = f"{into[key]}; {text}" if key in into else text


def run_bench(side: Side, models: list[seeds.SeedArtifacts], formats: Optional[tuple[str, ...]], runs: int,
              share: Path) -> dict:
    """One `edgecnn bench` of the chosen artifacts at 1 thread; its bench.json (failed rows included)."""
    devices = f"{side.tflite_target},onnx-cpu"
    out = f"bench-{side.name}"
    if formats is None:
        chosen = [f"models/{m.name}" for m in models]
    else:
        chosen = [relative(m, e.file) for m in models for e in m.manifest.artifacts if e.name in formats]
    try:
        side.call([*side.edgecnn, "bench", *chosen, "--device", devices,
                   "--threads", "1", "--runs", str(runs), "--warmup", "10", "--no-step", "--out", out, "--force",
                   "--json"], share, ok=(0, 1))
    except subprocess.CalledProcessError as exc:
        return {"error": f"edgecnn bench failed on {side.name}: {last_line(exc)}", "rows": []}
    return json.loads((share / out / "bench.json").read_text())


def run_doctor(side: Side, share: Path) -> dict:
    """`edgecnn doctor --json`: {"checks": [{"name", "status", "found", "fix"}...], "python": ...}."""
    try:
        done = side.call([*side.edgecnn, "doctor", "--json"], share)
        return json.loads(done.stdout)
    except subprocess.CalledProcessError as exc:
        return {"error": f"edgecnn doctor failed on {side.name}: {last_line(exc)}"}
    except ValueError as exc:
        return {"error": f"edgecnn doctor --json printed no JSON on {side.name} ({exc})"}


def doctor_problems(doctor: dict) -> list[str]:
    """What a working arm64 device side must report: aarch64 Python, LiteRT + XNNPACK, ONNX Runtime."""
    if "error" in doctor:
        return [doctor["error"]]
    checks = {c["name"]: c for c in doctor["checks"]}
    problems = []
    if "aarch64" not in checks.get("python", {}).get("found", ""):
        problems.append(f"doctor's python is not aarch64: {checks.get('python')}")
    for name in ("LiteRT runtime", "XNNPACK", "ONNX Runtime", "OpenCV"):
        if checks.get(name, {}).get("status") != "ok":
            problems.append(f"doctor: {name} is {checks.get(name, {}).get('status', 'absent')}")
    return problems


def bench_rows(bench: dict) -> dict[tuple[str, str], dict]:
    return {(Path(r["artifact"]).name, r["format"]): r for r in bench.get("rows", [])}


def agreements(models: list[seeds.SeedArtifacts], share: Path, options: CheckOptions, failures: dict[str, str],
               bench: dict[str, dict]) -> list[dict]:
    """One record per model and format: outputs, run and bench, both sides."""
    x86_rows, arm_rows = bench_rows(bench["x86"]), bench_rows(bench["arm64"])
    records = []
    for model in models:
        classes = len(model.manifest.labels) or 1
        for entry in model.manifest.artifacts:
            path = relative(model, entry.file)
            quantized = bool(entry.output.quantized)
            envelope, no_envelope = dynamic_tolerance(model, entry, share / "x86-outputs.npz")
            outputs = failed_agreement("outputs", path, quantized, failures.get("outputs") or no_envelope) \
                or compare_outputs(share / "x86-outputs.npz", share / "arm64-outputs.npz", path, path, quantized,
                                   envelope)
            run: Optional[Agreement] = None
            if options.run_formats is None or entry.name in options.run_formats:
                run = failed_agreement("run", path, quantized, failures.get(path) or no_envelope) or compare_runs(
                    share / "x86" / model.name / f"{entry.file}.jsonl",
                    share / "arm64" / model.name / f"{entry.file}.jsonl", path, classes, quantized, envelope)
            records.append({"model": model.name, "weights": model.weights, "format": entry.name, "file": entry.file,
                            "quantized_output": quantized, "classes": classes, "outputs": outputs.to_dict(),
                            "run": run.to_dict() if run else None,
                            "bench": bench_pair(x86_rows.get((entry.file, entry.name)),
                                                arm_rows.get((entry.file, entry.name)),
                                                options.bench_formats is None or entry.name in options.bench_formats)})
    return records


def dynamic_tolerance(model: seeds.SeedArtifacts, entry, x86_npz: Path) -> tuple[float, Optional[str]]:
    """(envelope, None) for a dynamic-range artifact, from its float32 sibling's x86 outputs (compare.py says
    why); (0.0, None) for any other artifact; (0.0, reason) when the envelope cannot be taken."""
    if entry.precision != "dynamic":
        return 0.0, None
    family = entry.name.split("-")[0]
    sibling = next((e for e in model.manifest.artifacts if e.name == f"{family}-fp32"), None)
    if sibling is None:
        return 0.0, f"no {family}-fp32 artifact to take the dynamic-range tolerance from"
    try:
        return dynamic_envelope(x86_npz, relative(model, entry.file), relative(model, sibling.file)), None
    except (KeyError, ValueError, OSError) as exc:
        return 0.0, f"no dynamic-range tolerance: {exc}"


def failed_agreement(what: str, path: str, quantized: bool, error: Optional[str]) -> Optional[Agreement]:
    if error is None:
        return None
    return Agreement(what, path, 0, 0, 0, 0, float("nan"), None, quantized, False, error)


def bench_pair(x86: Optional[dict], arm: Optional[dict], wanted: bool) -> dict:
    def summary(row: Optional[dict]) -> dict:
        if row is None:
            return {"status": "missing" if wanted else "not run"}
        invoke = row.get("invoke") or {}
        return {"status": row["status"], "reason": row.get("reason", ""), "target": row["target"],
                "p50_ms": invoke.get("p50"), "load_ms": row.get("load_ms"),
                "first_inference_ms": row.get("first_inference_ms"), "runtime": row.get("runtime", {})}
    pair = {"x86": summary(x86), "arm64": summary(arm)}
    p50s = (pair["x86"].get("p50_ms"), pair["arm64"].get("p50_ms"))
    pair["slowdown"] = round(p50s[1] / p50s[0], 1) if all(p50s) else None
    return pair


def verdict(records: list[dict], doctor: list[str]) -> list[str]:
    """Every reason the check fails; empty when arm64 agrees with x86 everywhere."""
    problems = list(doctor)
    for r in records:
        for what in ("outputs", "run"):
            if r[what] is not None and not r[what]["ok"]:
                problems.append(f"{r['model']} {r['format']} {what}: {r[what]['reason']}")
        arm = r["bench"]["arm64"]
        if arm["status"] not in ("ok", "not run"):
            problems.append(f"{r['model']} {r['format']} bench on arm64: {arm['status']} {arm.get('reason', '')}".strip())
    return problems


def check(project: Path, options: CheckOptions, log: Log, progress: Callable[[str], None]) -> dict:
    """The whole comparison; returns the result record (report.py writes it). Raises InfraSkip or CheckFailed."""
    stages = Stages(log)
    progress("checking the host (root, QEMU, binfmt_misc)")
    prepare_host(log, stages, options.mirror)
    progress(f"training / converting {len(options.models)} seed models on x86 (cached after the first run)")
    with stages("x86: train + convert the seed models"):
        models = seeds.convert_seeds(options.models, seeds_cache(), project, log)
    with work_folder(options.work) as share:
        stage_inputs(models, options.frames, share)
        progress("building the wheel and the arm64 root (cached), installing edgecnn[device] there")
        with emulated_root(project, options.cpu, log, stages, options.mirror) as (root, info):
            failures: dict[str, str] = {}
            bench: dict[str, dict] = {}
            progress("arm64: edgecnn doctor")
            with stages("arm64: edgecnn doctor"):
                doctor = run_doctor(arm_side(root, log), share)
            for side in (x86_side(log), arm_side(root, log)):
                progress(f"{side.name}: every artifact on {options.frames} inputs (guest.py)")
                with stages(f"{side.name}: guest.py, every artifact on every input"):
                    error = run_outputs(side, models, share)
                if error:
                    failures["outputs"] = error
                progress(f"{side.name}: edgecnn run on the video")
                with stages(f"{side.name}: edgecnn run, one per artifact"):
                    merge_errors(failures, run_videos(side, models, options.run_formats, share))
                progress(f"{side.name}: edgecnn bench")
                with stages(f"{side.name}: edgecnn bench"):
                    bench[side.name] = run_bench(side, models, options.bench_formats, options.bench_runs, share)
        records = agreements(models, share, options, failures, bench)
        machines = {name: machine_of(share / f"{name}-outputs.npz") for name in ("x86", "arm64")}
    problems = verdict(records, doctor_problems(doctor)) + [b["error"] for b in bench.values() if "error" in b]
    if machines["arm64"] != "aarch64" or machines["x86"] == "aarch64":
        problems.append(f"the outputs did not come from arm64 and x86: {machines}")
    return {"options": {**options.__dict__, "models": list(options.models)}, "info": {**info, "machines": machines},
            "doctor": doctor, "stages": stages.seconds, "records": records, "problems": problems}


@contextmanager
def work_folder(keep: Optional[Path]) -> Iterator[Path]:
    """The folder both sides share: kept at ``keep`` (emptied first), else a temporary one."""
    if keep is None:
        with tempfile.TemporaryDirectory(prefix="edgecnn-arm64-") as tmp:
            yield Path(tmp)
        return
    if keep.exists():
        shutil.rmtree(keep)
    keep.mkdir(parents=True)
    yield keep


def machine_of(npz: Path) -> str:
    """platform.machine() of the side that wrote guest.py's outputs ("" when there are none)."""
    if not npz.is_file():
        return ""
    with np.load(npz) as data:
        return str(data["__machine__"]) if "__machine__" in data.files else ""


def seeds_cache() -> Path:
    from edgecnn.converters.zoo import cache_dir

    return cache_dir() / "arm64-seeds"


__all__ = ["CheckFailed", "CheckOptions", "check"]
