"""ONNX Runtime int8 / fp32 latency on MobileNetV2 and the seed models, 1 and 2 threads, next to LiteRT's ratio.

Every model goes through `edgecnn convert` (tflite-fp32, tflite-int8, onnx-fp32, onnx-int8 for the default
x86 target) and once more for `onnx-int8 --onnx-target arm64` (S8S8: shows what the x86 single-consumer limit
costs here). The MNIST CNN is the trained demo (calibrated on mnist:train, verified on the 1,000 held-out
digits); the other seeds are random-initialised (weights=None for MobileNetV2) and calibrated on seeded
random images: their latency is real, their accuracy means nothing. Each artifact is timed through the
project's runners (`edgecnn.devices.runners.open_runner`, invoke() on one sample) in interleaved rounds: in
each round every model x threads x artifact gets a median of runs; ratios are taken within a round, and the
median ratio over rounds is reported. ONNX Runtime's fused-vs-float node counts (edgecnn inspect) are listed.

The artifacts, their model-ready inputs and this machine's ONNX outputs stay in --dir, so the same files
can be re-run elsewhere (the arm64 emulation) for fidelity, not speed:

    .venv/bin/python benchmarks/onnx_int8.py                            # build (once) + time + results
    .venv/bin/python benchmarks/onnx_int8.py --models mobilenet_v2,mnist_cnn --rounds 3
    python benchmarks/onnx_int8.py --fidelity-only --dir DIR            # elsewhere: outputs vs DIR/outputs-x86_64.npz

--fidelity-only needs only numpy, onnxruntime and edgecnn's device side (no TensorFlow): it runs every ONNX
artifact in DIR on DIR/<model>/inputs.npy, saves outputs-<machine>.npz and writes DIR/fidelity-<machine>.md
comparing them with the outputs of every other machine found there (max |diff|, top-1 agreement).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
MODELS = ("mobilenet_v2", "mnist_cnn", "mnist_mlp", "cifar10_vgg", "cifar10_cnn", "dave2")
ARTIFACTS = {"onnx-fp32": "onnx-cpu", "onnx-int8": "onnx-cpu", "onnx-int8-arm64": "onnx-cpu",
             "tflite-fp32": "cpu", "tflite-int8": "cpu"}
FIDELITY_SAMPLES = 32
GOAL = 0.5  # MobileNetV2 onnx-int8 / onnx-fp32 at 1 thread


# -- build ------------------------------------------------------------------------------------------
def build(name: str, root: Path, samples: int) -> dict[str, Path]:
    """Convert ``name`` into root/name (skipped when already there); returns artifact name -> path."""
    folder = root / name
    if not (folder / "arm64" / "manifest.json").is_file():
        _convert(name, folder, samples)
    manifest = json.loads((folder / "manifest.json").read_text())
    paths = {a["name"]: folder / a["file"] for a in manifest["artifacts"]}
    arm = json.loads((folder / "arm64" / "manifest.json").read_text())["artifacts"][0]
    paths["onnx-int8-arm64"] = folder / "arm64" / arm["file"]
    return paths


def _convert(name: str, folder: Path, samples: int) -> None:
    import keras

    from edgecnn.converters import calibration as cal
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.converters.zoo import SEED_MODELS, build_seed, trained_mnist_cnn
    from edgecnn.data import load_dataset

    folder.mkdir(parents=True, exist_ok=True)
    if name == "mnist_cnn":
        model, calib, val, fidelity = trained_mnist_cnn(), "mnist", "mnist", "mnist"
    else:
        keras.utils.set_random_seed(0)
        model = folder / f"{name}.keras"
        build_seed(name).save(model)
        calib, val, fidelity = folder / "calib.npy", None, folder / "fidelity_images.npy"
        shape = SEED_MODELS[name].input_shape
        np.save(calib, _random_images(shape, samples, seed=0))
        np.save(fidelity, _random_images(shape, FIDELITY_SAMPLES, seed=1))
    options = ConvertOptions(formats="tflite-fp32,tflite-int8,onnx-fp32,onnx-int8", calib_samples=samples,
                             force=True, progress=False)
    result = convert(model, calib=calib, val=val, out=folder, options=options)
    from dataclasses import replace

    convert(model, calib=calib, val=val, out=folder / "arm64",
            options=replace(options, formats="onnx-int8", onnx_target="arm64"))
    data = load_dataset(fidelity, mnist_split="val")
    inputs = cal.model_inputs(data, result.manifest.preprocessing, result.manifest.input_shape, "fidelity").inputs
    np.save(folder / "inputs.npy", inputs[:FIDELITY_SAMPLES].astype(np.float32))


def _random_images(shape: tuple[int, ...], count: int, seed: int) -> np.ndarray:
    if len(shape) == 1:  # the MLP takes flattened square grey images
        side = int(round(shape[0] ** 0.5))
        shape = (side, side, 1)
    return np.random.default_rng(seed).integers(0, 256, size=(count, *shape), dtype=np.uint8)


# -- run --------------------------------------------------------------------------------------------
def open_all(paths: dict[str, Path], threads: int) -> dict[str, object]:
    from edgecnn.devices.base import RunnerOptions
    from edgecnn.devices.runners import open_runner

    return {name: open_runner(path, ARTIFACTS[name], RunnerOptions(threads=threads, probe=False))
            for name, path in paths.items()}


def encode(runner: object, x: np.ndarray) -> np.ndarray:
    """One float sample in the runner's input type (int8/uint8 through its scale and zero point)."""
    spec = runner.input
    if spec.dtype in ("float32", "float"):
        return x.astype(np.float32)
    info = np.iinfo(np.dtype(spec.dtype))
    return np.clip(np.round(x / spec.scale + spec.zero_point), info.min, info.max).astype(spec.dtype)


def median_ms(runner: object, batch: np.ndarray, budget_s: float) -> tuple[float, float]:
    """Median wall time and median CPU time of this thread per invoke(), in ms.

    With 1 thread ONNX Runtime and LiteRT compute on the calling thread, so its CPU time is the work of one
    inference without the time other processes held the core: on a shared machine it is the steadier figure.
    """
    for _ in range(3):
        runner.invoke(batch)
    start = time.perf_counter()
    runner.invoke(batch)
    runs = int(min(400, max(20, budget_s / max(time.perf_counter() - start, 1e-6))))
    wall, cpu = [], []
    for _ in range(runs):
        start, start_cpu = time.perf_counter(), time.thread_time()
        runner.invoke(batch)
        cpu.append(time.thread_time() - start_cpu)
        wall.append(time.perf_counter() - start)
    return statistics.median(wall) * 1e3, statistics.median(cpu) * 1e3


def time_all(built: dict[str, dict[str, Path]], rounds: int, budget_s: float) -> tuple[dict, dict]:
    """Wall and thread-CPU ms, each {model: {threads: {artifact: [ms per round]}}}, interleaved: every round
    visits every model, thread count and artifact."""
    runners = {(m, t): open_all(paths, t) for m, paths in built.items() for t in (1, 2)}
    inputs = {m: np.load(paths["onnx-fp32"].parent / "inputs.npy")[:1] for m, paths in built.items()}
    wall: dict = {m: {t: {a: [] for a in built[m]} for t in (1, 2)} for m in built}
    cpu: dict = {m: {t: {a: [] for a in built[m]} for t in (1, 2)} for m in built}
    for round_no in range(rounds):
        for (model, threads), group in runners.items():
            for name, runner in group.items():
                w, c = median_ms(runner, encode(runner, inputs[model]), budget_s)
                wall[model][threads][name].append(w)
                cpu[model][threads][name].append(c)
        print(f"round {round_no + 1}/{rounds} done", flush=True)
    for group in runners.values():
        for runner in group.values():
            runner.close()
    return wall, cpu


def ratio(rounds: dict[str, list[float]], num: str, den: str) -> float:
    return statistics.median(a / b for a, b in zip(rounds[num], rounds[den]))


# -- fidelity ---------------------------------------------------------------------------------------
def onnx_outputs(root: Path) -> dict[str, np.ndarray]:
    from edgecnn.devices.base import RunnerOptions
    from edgecnn.devices.runners import open_runner

    outputs = {}
    for inputs_file in sorted(root.glob("*/inputs.npy")):
        x = np.load(inputs_file)
        for path in sorted(inputs_file.parent.glob("*.onnx")) + sorted(inputs_file.parent.glob("arm64/*.onnx")):
            with open_runner(path, "onnx-cpu", RunnerOptions(threads=1, probe=False)) as runner:
                outputs[str(path.relative_to(root))] = runner.invoke(x)
    return outputs


def fidelity(root: Path, machine: str) -> list[dict]:
    """This machine's ONNX outputs vs every other machine's saved in ``root``."""
    mine = onnx_outputs(root)
    np.savez(root / f"outputs-{machine}.npz", **mine)
    rows = []
    for other_file in sorted(root.glob("outputs-*.npz")):
        other = other_file.stem.removeprefix("outputs-")
        if other == machine:
            continue
        theirs = np.load(other_file)
        for key, out in mine.items():
            if key in theirs.files:
                ref = theirs[key]
                rows.append({"artifact": key, "machines": f"{machine} vs {other}",
                             "max_abs_diff": float(np.abs(out - ref).max()),
                             "top1_agreement": float((out.reshape(len(out), -1).argmax(1)
                                                      == ref.reshape(len(ref), -1).argmax(1)).mean()),
                             "identical": bool(np.array_equal(out, ref))})
    return rows


# -- report -----------------------------------------------------------------------------------------
def fusion_summaries(built: dict[str, dict[str, Path]]) -> dict[str, dict[str, str]]:
    try:
        import onnx  # noqa: F401 - the graph reader needs it

        from edgecnn.converters.onnx_graph import fusion_report
    except ImportError:  # the device side has no onnx package: counts are then left out
        return {}
    return {m: {a: fusion_report(p).summary() for a, p in paths.items() if a.startswith("onnx-int8")}
            for m, paths in built.items()}


def machine_info() -> dict[str, str]:
    import onnxruntime

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    return {"machine": platform.machine(), "cpu": cpu, "cores": str(os.cpu_count()),
            "vnni": str("avx512_vnni" in flags or "avx_vnni" in flags), "onnxruntime": onnxruntime.__version__}


def uptime() -> str:
    return subprocess.run(["uptime"], check=True, capture_output=True, text=True).stdout.strip()


def write_results(folder: Path, meta: dict, times: dict, cpu: dict, fusion: dict) -> list[dict]:
    rows = []
    for model, by_threads in times.items():
        for threads, rounds in by_threads.items():
            med = {a: statistics.median(v) for a, v in rounds.items()}
            cpu_rounds = cpu[model][threads]
            rows.append({"model": model, "threads": threads, "median_ms": med,
                         "onnx_int8_vs_fp32": ratio(rounds, "onnx-int8", "onnx-fp32"),
                         "onnx_int8_arm64_settings_vs_fp32": ratio(rounds, "onnx-int8-arm64", "onnx-fp32"),
                         "tflite_int8_vs_fp32": ratio(rounds, "tflite-int8", "tflite-fp32"),
                         "cpu_onnx_int8_vs_fp32": ratio(cpu_rounds, "onnx-int8", "onnx-fp32") if threads == 1 else None,
                         "cpu_tflite_int8_vs_fp32": ratio(cpu_rounds, "tflite-int8", "tflite-fp32")
                         if threads == 1 else None,
                         "median_cpu_ms": {a: statistics.median(v) for a, v in cpu_rounds.items()} if threads == 1 else None,
                         "rounds_ms": rounds, "rounds_cpu_ms": cpu_rounds if threads == 1 else None})
    mb2 = next((r for r in rows if r["model"] == "mobilenet_v2" and r["threads"] == 1), None)
    meta["goal"] = f"MobileNetV2 onnx-int8 / onnx-fp32 at 1 thread <= {GOAL}"
    meta["goal_met"] = None if mb2 is None else mb2["onnx_int8_vs_fp32"] <= GOAL
    meta["goal_met_cpu_time"] = None if mb2 is None else mb2["cpu_onnx_int8_vs_fp32"] <= GOAL
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "onnx_int8.json").write_text(json.dumps({"meta": meta, "rows": rows, "fusion": fusion}, indent=2) + "\n")
    lines = ["# ONNX Runtime int8 / fp32 vs LiteRT int8 / fp32 (x86 target: U8S8 QDQ, Softmax and logits float)", "",
             f"Command: `{meta['command']}` — {meta['date']}", "",
             f"Machine: {meta['machine']['cpu']} ({meta['machine']['machine']}, {meta['machine']['cores']} cores, "
             f"VNNI {meta['machine']['vnni']}), onnxruntime {meta['machine']['onnxruntime']}; shared with other "
             f"engineers' jobs.", f"Load before: `{meta['load_before']}`", f"Load after: `{meta['load_after']}`", "",
             f"{meta['rounds']} interleaved rounds; each cell is the median over rounds of the per-round median of "
             "one-sample `invoke()` through edgecnn's runners; ratios are per round (same moment), then the median.",
             "`arm64 set.`: the `--onnx-target arm64` artifact (int8 activations) run here on x86, for comparison.",
             "`CPU`: the same ratios from the calling thread's CPU time (1 thread only: both runtimes then compute "
             "on that thread), which time spent waiting for a busy core does not inflate.", "",
             "| model | thr | ORT fp32 ms | ORT int8 ms | ORT int8/fp32 | CPU | arm64 set./fp32 | LiteRT fp32 ms | "
             "LiteRT int8 ms | LiteRT int8/fp32 | CPU |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        m = r["median_ms"]
        cpu_ort = "" if r["cpu_onnx_int8_vs_fp32"] is None else f"{r['cpu_onnx_int8_vs_fp32']:.2f}"
        cpu_lite = "" if r["cpu_tflite_int8_vs_fp32"] is None else f"{r['cpu_tflite_int8_vs_fp32']:.2f}"
        lines.append(f"| {r['model']} | {r['threads']} | {m['onnx-fp32']:.3f} | {m['onnx-int8']:.3f} | "
                     f"**{r['onnx_int8_vs_fp32']:.2f}** | {cpu_ort} | {r['onnx_int8_arm64_settings_vs_fp32']:.2f} | "
                     f"{m['tflite-fp32']:.3f} | {m['tflite-int8']:.3f} | {r['tflite_int8_vs_fp32']:.2f} | {cpu_lite} |")
    if fusion:
        lines += ["", "ONNX Runtime on this machine (`edgecnn inspect <artifact>.onnx`):", "",
                  "| model | onnx-int8 (x86) | onnx-int8 (arm64 settings) |", "|---|---|---|"]
        lines += [f"| {m} | {f.get('onnx-int8', '')} | {f.get('onnx-int8-arm64', '')} |" for m, f in fusion.items()]
    verdict = {None: "not measured (MobileNetV2 not in this run)", True: "**met**", False: "**NOT met**"}
    lines += ["", f"Goal ({meta['goal']}): wall time {verdict[meta['goal_met']]}" +
              (f" ({mb2['onnx_int8_vs_fp32']:.2f}x); CPU time {verdict[meta['goal_met_cpu_time']]} "
               f"({mb2['cpu_onnx_int8_vs_fp32']:.2f}x)." if mb2 else "."), ""]
    (folder / "onnx_int8.md").write_text("\n".join(lines) + "\n")
    return rows


def write_fidelity(root: Path, machine: str, rows: list[dict]) -> None:
    """The comparison, and when the onnx package is there, what ONNX Runtime fuses on this machine."""
    built = {folder.name: {a: p for a, p in (("onnx-int8", next(iter(sorted(folder.glob("*_int8.onnx"))), None)),
                                            ("onnx-int8-arm64", next(iter(sorted(folder.glob("arm64/*.onnx"))), None)))
                           if p is not None} for folder in sorted(root.iterdir()) if (folder / "inputs.npy").is_file()}
    fusion = fusion_summaries(built)
    (root / f"fidelity-{machine}.json").write_text(json.dumps({"rows": rows, "fusion": fusion}, indent=2) + "\n")
    lines = [f"# ONNX outputs on {machine} vs other machines ({datetime.date.today()})", "",
             "| artifact | machines | max abs diff | top-1 agreement | identical |", "|---|---|---:|---:|---|"]
    lines += [f"| {r['artifact']} | {r['machines']} | {r['max_abs_diff']:.3g} | {r['top1_agreement']:.3f} | "
              f"{r['identical']} |" for r in rows]
    if fusion:
        lines += ["", f"ONNX Runtime on {machine}:", "", "| model | onnx-int8 (x86 settings) | onnx-int8 (arm64 settings) |",
                  "|---|---|---|"]
        lines += [f"| {m} | {f.get('onnx-int8', '')} | {f.get('onnx-int8-arm64', '')} |" for m, f in fusion.items()]
    (root / f"fidelity-{machine}.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--dir", type=Path, default=Path("/tmp/edgecnn-onnx-int8"), help="artifacts and inputs")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--budget", type=float, default=0.25, help="seconds of runs per measurement")
    parser.add_argument("--samples", type=int, default=64, help="calibration images for the random-weight seeds")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--fidelity-only", action="store_true", help="only run the saved ONNX artifacts and compare")
    args = parser.parse_args(argv)
    machine = platform.machine()
    if args.fidelity_only:
        rows = fidelity(args.dir, machine)
        write_fidelity(args.dir, machine, rows)
        print(f"{len(rows)} comparisons written to {args.dir}/fidelity-{machine}.md")
        return 0
    names = [n.strip() for n in args.models.split(",") if n.strip()]
    built = {name: build(name, args.dir, args.samples if name != "mnist_cnn" else 200) for name in names}
    fusion = fusion_summaries(built)
    before = uptime()
    times, cpu = time_all(built, args.rounds, args.budget)
    after = uptime()
    meta = {"command": "python benchmarks/onnx_int8.py " + " ".join(argv if argv is not None else sys.argv[1:]),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="minutes"),
            "machine": machine_info(), "load_before": before, "load_after": after, "rounds": args.rounds,
            "artifacts_dir": str(args.dir)}
    rows = write_results(args.results, meta, times, cpu, fusion)
    np.savez(args.dir / f"outputs-{machine}.npz", **onnx_outputs(args.dir))
    for r in rows:
        cpu_text = f" CPU {r['cpu_onnx_int8_vs_fp32']:.2f}" if r["cpu_onnx_int8_vs_fp32"] is not None else ""
        print(f"{r['model']:>13} {r['threads']} thr  ORT int8/fp32 {r['onnx_int8_vs_fp32']:.2f}{cpu_text}  "
              f"(arm64 settings {r['onnx_int8_arm64_settings_vs_fp32']:.2f})  LiteRT {r['tflite_int8_vs_fp32']:.2f}")
    print(f"load before: {before}\nload after:  {after}")
    return 0 if meta["goal_met"] is not False else 1


if __name__ == "__main__":
    sys.exit(main())
