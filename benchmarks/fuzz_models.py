"""Fuzz the model loaders with thousands of hostile files; count crashes, hangs and unclear errors.

Every case is a real artifact of the trained default (converted with ``edgecnn.converters.pipeline``)
broken one way (tests/reliability/hostile.py ``MUTATIONS``), or a valid file of another format under
the wrong extension, loaded in a child worker (so a native crash is counted, not suffered):

- .tflite through ``open_runner(..., "cpu")`` and .onnx through ``open_runner(..., "onnx-cpu")`` without
  the child-process probe (the static checks alone must protect LiteRT / ONNX Runtime), plus a sample
  through the default path with the probe, as ``edgecnn run`` loads them;
- .keras / .h5 / SavedModel through ``converters.keras_load.load_model`` (safe mode).

    nice -n 10 .venv/bin/python benchmarks/fuzz_models.py --cases 3000 --keras-cases 300

Writes benchmarks/results/fuzz_models.json (and any crashing or hanging input under
benchmarks/results/fuzz_failures/ to reproduce it). Exit status 1 when anything crashed, hung or was unclear.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "reliability"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hostile import MUTATIONS, Outcome, Worker, make_keras_variants, mutate  # noqa: E402

DEVICE_BASES = {"tflite-int8": "cpu", "tflite-fp32": "cpu", "tflite-fp16": "cpu", "tflite-dynamic": "cpu",
                "onnx-fp32": "onnx-cpu", "onnx-int8": "onnx-cpu"}
SUFFIX_TARGET = {".tflite": "cpu", ".onnx": "onnx-cpu"}


def artifacts(folder: Path | None) -> Path:
    """A folder of converted artifacts with a manifest: the given one, or the trained default converted once."""
    if folder is not None:
        return folder
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.converters.zoo import cache_dir, trained_mnist_cnn
    from edgecnn.fileio import sha256_of

    keras_path = trained_mnist_cnn()
    out = cache_dir() / "fuzz-artifacts" / sha256_of(keras_path)[:12]
    if not (out / "manifest.json").is_file():
        convert(keras_path, calib="mnist", val="mnist", out=out, options=ConvertOptions(progress=False, force=True))
    return out


def device_bases(folder: Path) -> dict[str, Path]:
    from edgecnn.manifest import Manifest

    manifest = Manifest.read(folder / "manifest.json")
    return {entry.name: folder / entry.file for entry in manifest.artifacts if entry.name in DEVICE_BASES}


class Tally:
    def __init__(self, failures: Path) -> None:
        self.rows: dict[tuple[str, str, str], Counter] = defaultdict(Counter)
        self.failures = failures
        self.examples: list[dict] = []
        self.slowest = 0.0

    def add(self, loader: str, base: str, mutation: str, outcome: Outcome, case: Path,
            reference: Optional[str] = None) -> None:
        row = self.rows[(loader, base, mutation)]
        row["cases"] += 1
        row[outcome.kind if outcome.kind != "error" or outcome.clear else "unclear"] += 1
        if outcome.kind == "loaded" and reference is not None and outcome.message.startswith("top1:"):
            row["loaded_same_top1" if outcome.message == reference else "loaded_changed_top1"] += 1
        self.slowest = max(self.slowest, outcome.seconds)
        if outcome.kind in ("crash", "hang", "unclear") or (outcome.kind == "error" and not outcome.clear):
            self.failures.mkdir(parents=True, exist_ok=True)
            keep = self.failures / f"{len(self.examples):04d}-{base}-{mutation}{case.suffix if case.is_file() else ''}"
            if case.is_dir():
                shutil.copytree(case, keep, dirs_exist_ok=True)
            else:
                shutil.copyfile(case, keep)
            self.examples.append({"loader": loader, "base": base, "mutation": mutation, "outcome": outcome.kind,
                                  "type": outcome.type, "message": outcome.message[:300], "file": str(keep)})

    def totals(self) -> Counter:
        total = Counter()
        for row in self.rows.values():
            total.update(row)
        return total


def fuzz_device(worker: Worker, tally: Tally, bases: dict[str, Path], cases: int, rng, work: Path,
                loader: str, mutations: tuple[str, ...] = MUTATIONS, digits: Optional[Path] = None) -> None:
    """Mutated artifacts; with ``digits``, a loaded one's top-1 on real digits is compared with the original's
    (a different answer is silent damage that only the manifest's sha256 can reveal)."""
    names = sorted(bases)
    reference = {name: worker.load(bases[name], "runner", DEVICE_BASES[name], digits=digits).message
                 for name in names} if digits else {}
    for i in range(cases):
        base = names[i % len(names)]
        mutation = mutations[(i // len(names)) % len(mutations)]
        path = bases[base]
        case = work / f"case{path.suffix}"
        case.write_bytes(mutate(path.read_bytes(), mutation, rng))
        outcome = worker.load(case, loader, DEVICE_BASES[base], digits=digits)
        tally.add(loader, base, mutation, outcome, case, reference.get(base))


def fuzz_wrong_extension(worker: Worker, tally: Tally, files: dict[str, Path], work: Path) -> None:
    """Each valid file of one format, renamed to every device suffix it is not."""
    for name, path in files.items():
        for suffix, target in SUFFIX_TARGET.items():
            if path.is_file() and path.suffix != suffix:
                case = work / f"wrong{suffix}"
                shutil.copyfile(path, case)
                tally.add("runner", name, f"renamed{suffix}", worker.load(case, "runner", target), case)


def fuzz_keras(worker: Worker, tally: Tally, variants: dict[str, Path], cases: int, rng, work: Path) -> None:
    kinds = [m for m in MUTATIONS if m != "zero_bytes"] + ["zero_bytes"]
    for i in range(cases):
        base = ("keras", "h5", "savedmodel")[i % 3]
        mutation = kinds[(i // 3) % len(kinds)]
        source = variants[base]
        if base == "savedmodel":
            case = work / "sm"
            shutil.rmtree(case, ignore_errors=True)
            shutil.copytree(source, case)
            pb = case / "saved_model.pb"
            pb.write_bytes(mutate(pb.read_bytes(), mutation, rng))
        else:
            case = work / f"case{source.suffix}"
            case.write_bytes(mutate(source.read_bytes(), mutation, rng))
        tally.add("keras", base, mutation, worker.load(case, "keras"), case)
    for name, path in variants.items():  # valid files of the wrong kind under a Keras suffix
        for suffix in (".keras", ".h5"):
            if path.is_file() and path.suffix != suffix:
                case = work / f"wrong{suffix}"
                shutil.copyfile(path, case)
                tally.add("keras", name, f"renamed{suffix}", worker.load(case, "keras"), case)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=3000, help="mutated .tflite/.onnx files (static checks path)")
    parser.add_argument("--probe-cases", type=int, default=60, help="mutated files through the default probe path")
    parser.add_argument("--keras-cases", type=int, default=300, help="mutated .keras/.h5/SavedModel inputs")
    parser.add_argument("--digits", type=int, default=50, help="real digits classified by each loaded mutant")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--artifacts", type=Path, default=None, help="a folder written by edgecnn convert")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "fuzz_models.json")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    folder = artifacts(args.artifacts)
    bases = device_bases(folder)
    failures = args.out.parent / "fuzz_failures"
    tally = Tally(failures)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="edgecnn-fuzz-") as tmp:
        work = Path(tmp)
        with Worker() as worker:
            digits = work / "digits.npy"
            from edgecnn.data import mnist_sample

            np.save(digits, mnist_sample("val").images[:args.digits])
            fuzz_device(worker, tally, bases, args.cases, rng, work, "runner", digits=digits)
            # The probe path costs a process per file that passes the static checks: spend it on the
            # mutations that get that far.
            fuzz_device(worker, tally, bases, args.probe_cases, rng, work, "runner_probe",
                        ("bitflip", "overwrite_u32", "truncate", "bitflip", "keep_header_random"))
            from edgecnn.converters.zoo import cache_dir, trained_mnist_cnn
            from edgecnn.fileio import sha256_of

            keras_path = trained_mnist_cnn()
            variants = make_keras_variants(keras_path, cache_dir() / "reliability-models" / sha256_of(keras_path)[:12])
            others = {**{k: v for k, v in bases.items()}, "keras": variants["keras"], "h5": variants["h5"],
                      "manifest": folder / "manifest.json"}
            fuzz_wrong_extension(worker, tally, others, work)
        with Worker(keras=True) as worker:
            fuzz_keras(worker, tally, variants, args.keras_cases, rng, work)
    totals = tally.totals()
    report = {
        "benchmark": "fuzz_models", "seed": args.seed, "seconds": round(time.time() - started, 1),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_avg_at_end": os.getloadavg()},
        "totals": dict(totals), "slowest_case_s": round(tally.slowest, 3),
        "rows": [{"loader": k[0], "base": k[1], "mutation": k[2], **dict(v)} for k, v in sorted(tally.rows.items())],
        "failures": tally.examples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({"totals": dict(totals), "seconds": report["seconds"], "failures": len(tally.examples)}))
    bad = totals["crash"] + totals["hang"] + totals["unclear"]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
