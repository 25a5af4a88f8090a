"""The Edge TPU compiler: a compiler-ready model, running ``edgetpu_compiler`` when it is installed, and
parsing its log into the same (operator, count, status) table as the static prediction.

The compiler-ready model is full-integer int8 with every tensor size fixed (batch 1): a model exported
with a dynamic batch computes Flatten's shape at run time (SHAPE, STRIDED_SLICE and PACK on int32),
which the Edge TPU cannot run. The compiler is an x86-64 Debian package from Coral's apt repository;
without it the prediction stands alone, and the report says how to get the compiler.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecnn.converters.edgetpu_check import COMPILER_HELP, EdgeTpuReport, check_edgetpu
from edgecnn.errors import ConversionError

COMPILER = "edgetpu_compiler"
COMPILE_TIMEOUT_S = 600
_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")


@dataclass(frozen=True)
class CompilerLog:
    """What ``edgetpu_compiler`` reported: its version, the per-operator table and the counts."""

    version: str
    rows: tuple[tuple[str, int, str], ...]   # (operator, count, status) as printed
    edgetpu_ops: Optional[int] = None        # "Number of operations that will run on Edge TPU"
    cpu_ops: Optional[int] = None
    subgraphs: Optional[int] = None
    total_ops: Optional[int] = None

    def mapped(self) -> int:
        return sum(count for _, count, status in self.rows if status.startswith("Mapped to Edge TPU"))


@dataclass(frozen=True)
class Readiness:
    ready_model: Path
    prediction: EdgeTpuReport
    compiler: Optional[CompilerLog] = None
    compiled_model: Optional[Path] = None
    notes: tuple[str, ...] = field(default=())

    def comparison(self) -> list[tuple[str, int, int, str]]:
        """(operator, predicted on Edge TPU, compiler on Edge TPU, agree?) per operator type."""
        predicted: dict[str, int] = {}
        for op in self.prediction.ops:
            predicted[op.op] = predicted.get(op.op, 0) + int(op.on_edgetpu)
        compiled: dict[str, int] = {}
        for name, count, status in (self.compiler.rows if self.compiler else ()):
            compiled[name] = compiled.get(name, 0) + (count if status.startswith("Mapped") else 0)
        names = list(dict.fromkeys(list(predicted) + list(compiled)))
        return [(n, predicted.get(n, 0), compiled.get(n, 0), "yes" if predicted.get(n, 0) == compiled.get(n, 0) else "NO")
                for n in names]

    def to_dict(self) -> dict[str, Any]:
        from edgecnn.manifest import _to_jsonable  # noqa: PLC0415

        return {"ready_model": str(self.ready_model), "prediction": self.prediction.to_dict(),
                "compiler": None if self.compiler is None else _to_jsonable(self.compiler),
                "compiled_model": None if self.compiled_model is None else str(self.compiled_model),
                "notes": list(self.notes)}


def find_compiler() -> Optional[str]:
    return shutil.which(COMPILER)


def readiness(ready_model: Path, out_dir: Path) -> Readiness:
    """Predict the partition of ``ready_model``; compile it too when the compiler is on PATH."""
    prediction = check_edgetpu(ready_model)
    compiler = find_compiler()
    if compiler is None:
        return Readiness(Path(ready_model), prediction,
                         notes=(f"{COMPILER} is not on PATH: the partition is predicted from Coral's documented "
                                f"requirements; to compile, {COMPILER_HELP}",))
    log, compiled = run_compiler(compiler, Path(ready_model), Path(out_dir))
    return Readiness(Path(ready_model), prediction, log, compiled, (f"compiled with {COMPILER} {log.version}",))


def run_compiler(compiler: str, model: Path, out_dir: Path) -> tuple[CompilerLog, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run([compiler, "-s", "-o", str(out_dir), str(model)], check=True, capture_output=True,
                              text=True, timeout=COMPILE_TIMEOUT_S)
    except subprocess.CalledProcessError as exc:
        last = (exc.stdout or "").strip().splitlines()[-1:] or (exc.stderr or "").strip().splitlines()[-1:] or ["?"]
        raise ConversionError(f"{COMPILER} failed on {model.name} (exit {exc.returncode}: {last[0][:200]})",
                              "see the prediction table for the operations it cannot map") from None
    except subprocess.TimeoutExpired:
        raise ConversionError(f"{COMPILER} did not finish within {COMPILE_TIMEOUT_S} s on {model.name}") from None
    log_file = out_dir / f"{model.stem}_edgetpu.log"
    text = done.stdout + ("\n" + log_file.read_text(errors="replace") if log_file.is_file() else "")
    return parse_compiler_log(text), out_dir / f"{model.stem}_edgetpu.tflite"


def parse_compiler_log(text: str) -> CompilerLog:
    """Parse the compiler's stdout (``-s``) and/or its ``*_edgetpu.log`` into a CompilerLog.

    The table may appear twice (stdout summary and log file); rows are taken from the last complete table.
    """
    version = _search(r"Edge TPU Compiler version (\S+)", text) or "unknown"
    tables: list[list[tuple[str, int, str]]] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("Operator") and "Count" in stripped and "Status" in stripped:
            tables.append([])
            continue
        match = _ROW.match(stripped)
        if match and tables:
            tables[-1].append((match.group(1), int(match.group(2)), match.group(3)))
    rows = next((t for t in reversed(tables) if t), [])
    return CompilerLog(version=version, rows=tuple(rows), edgetpu_ops=_int(r"will run on Edge TPU:\s*(\d+)", text),
                       cpu_ops=_int(r"will run on CPU:\s*(\d+)", text), subgraphs=_int(r"Edge TPU subgraphs:\s*(\d+)", text),
                       total_ops=_int(r"Total number of operations:\s*(\d+)", text))


def compiler_ready_model(loaded: Any, samples: np.ndarray, out_path: Path, io_type: str = "int8") -> Path:
    """Write the full-int8, batch-1, static-shape .tflite that the compiler accepts, from a Keras model, a
    LoadedModel or a SavedModel folder (through the one SavedModel export and the pipeline's int8 converter)."""
    from edgecnn.converters.formats import IoType  # noqa: PLC0415
    from edgecnn.converters.steps import export_savedmodel  # noqa: PLC0415
    from edgecnn.converters.tflite import convert_bytes  # noqa: PLC0415
    from edgecnn.fileio import write_bytes_atomic  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="edgecnn-edgetpu-") as work:
        saved = Path(work) / "savedmodel"
        export_savedmodel(loaded, saved)  # its "serve_batch1" signature: every tensor size fixed
        flat = convert_bytes(saved, "int8", np.ascontiguousarray(samples, dtype=np.float32), IoType(io_type),
                             model=loaded)
    write_bytes_atomic(Path(out_path), flat)
    return Path(out_path)


def _search(pattern: str, text: str) -> Optional[str]:
    match = re.search(pattern, text)
    return match.group(1) if match else None


def _int(pattern: str, text: str) -> Optional[int]:
    found = _search(pattern, text)
    return int(found) if found is not None else None
