"""Edge TPU readiness end to end: the compiler-ready model, ``edgetpu_compiler`` when it is installed (run with
the same ``-m`` and ``-a`` the prediction assumes), its log parsed into the same (operator, count, status) rows,
and the two compared row by row.

The compiler-ready model is full-integer int8 with every tensor size fixed (batch 1): a model exported with a
dynamic batch computes Flatten's shape at run time (SHAPE, STRIDED_SLICE and PACK on int32), which the Edge TPU
cannot run. From a Keras model it is written here; a .tflite that already is one is compiled as is; any other
.tflite (float, 16x8, dynamic sizes) cannot be made ready without its Keras model, and the result says why.
The compiler is an x86-64 Debian package from Coral's apt repository; without it the prediction stands alone.
Log format: as printed by compilers 14.1 to 16.0 in published logs (see edgecnn.devices.edgetpu_ops).
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecnn.devices.edgetpu_check import EdgeTpuOptions, EdgeTpuReport, check_edgetpu, load_graph, ready_as_is
from edgecnn.devices.edgetpu_ops import COMPILER_HELP, MAPPED
from edgecnn.errors import ConversionError

COMPILER = "edgetpu_compiler"
COMPILE_TIMEOUT_S = 600
READY_SUFFIX = "_int8_edgetpu_ready.tflite"
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
        return sum(count for _, count, status in self.rows if status == MAPPED)


@dataclass(frozen=True)
class EdgeTpuRequest:
    """Where the ready and compiled models go, whether they may be overwritten, and the compiler's -m / -a."""

    out_dir: Optional[Path] = None          # default: edgecnn-out/<model name> (Keras) or beside the .tflite
    force: bool = False
    options: EdgeTpuOptions = EdgeTpuOptions()


@dataclass(frozen=True)
class Readiness:
    prediction: EdgeTpuReport
    ready_model: Optional[Path]             # a file that exists: written here, or the input when ready as is
    ready_note: str                         # how it was made, or why none can be
    compiler: Optional[CompilerLog] = None
    compiled_model: Optional[Path] = None
    notes: tuple[str, ...] = field(default=())

    def comparison(self) -> list[tuple[str, str, int, int, str]]:
        """(operator, status, predicted count, compiler count, "yes" | "NO") per row of either table."""
        predicted = Counter({(name, status): count for name, count, status in self.prediction.summary()})
        compiled = Counter()
        for name, count, status in (self.compiler.rows if self.compiler else ()):
            compiled[(name, status)] += count
        keys = list(dict.fromkeys(list(predicted) + list(compiled)))
        return [(name, status, predicted[(name, status)], compiled[(name, status)],
                 "yes" if predicted[(name, status)] == compiled[(name, status)] else "NO") for name, status in keys]

    def ready_line(self) -> str:
        if self.ready_model is None:
            return f"no compiler-ready model: {self.ready_note}"
        return f"compiler-ready model: {self.ready_model} ({self.ready_note})"

    def to_dict(self) -> dict[str, Any]:
        from edgecnn.manifest import _to_jsonable  # noqa: PLC0415

        return {"ready_model": None if self.ready_model is None else str(self.ready_model),
                "ready_note": self.ready_note, "prediction": self.prediction.to_dict(),
                "compiler": None if self.compiler is None else _to_jsonable(self.compiler),
                "compiled_model": None if self.compiled_model is None else str(self.compiled_model),
                "comparison": [list(row) for row in self.comparison()] if self.compiler else [],
                "notes": list(self.notes)}


def find_compiler() -> Optional[str]:
    return shutil.which(COMPILER)


def edgetpu_readiness(model: Any, samples: Optional[np.ndarray] = None,
                      request: EdgeTpuRequest = EdgeTpuRequest()) -> Readiness:
    """Readiness of ``model``: a .tflite path, or a Keras model / LoadedModel with ``samples`` (float32 model
    input, (N, *input shape), the representative dataset of its full-int8 conversion).

    Raises OutputExistsError when an output exists and ``request.force`` is False, ConversionError when the
    conversion or the compiler fails, ModelLoadError for an unreadable .tflite."""
    from edgecnn.fileio import check_writable_dir, refuse_overwrite  # noqa: PLC0415

    path = getattr(model, "path", model)
    if isinstance(path, (str, Path)) and str(path).lower().endswith(".tflite"):
        out_dir = Path(request.out_dir or Path(path).parent)
        ready, note = _tflite_ready(Path(path))
        if ready is not None and find_compiler():
            refuse_overwrite(compiled_outputs(ready, out_dir), request.force)
        return _finish(Path(path), ready, note, out_dir, request)
    if samples is None:
        raise ConversionError("the Edge TPU check of a Keras model needs calibration samples",
                              "pass --calib DATA (images, .npy/.npz, or mnist)")
    name = getattr(model, "name", "model")
    out_dir = Path(request.out_dir or Path("edgecnn-out") / name)
    ready = out_dir / f"{name}{READY_SUFFIX}"
    refuse_overwrite([ready] + (compiled_outputs(ready, out_dir) if find_compiler() else []), request.force)
    check_writable_dir(out_dir)
    compiler_ready_model(model, samples, ready)
    note = "written: full int8, static batch 1"
    return _finish(ready, ready, note, out_dir, request)


def _tflite_ready(path: Path) -> tuple[Optional[Path], str]:
    ok, why = ready_as_is(load_graph(path))
    if ok:
        return path, "already full int8 with static shapes: compiled as is"
    return None, (f"{path.name} cannot be made compiler-ready without its Keras model ({why}); run "
                  "edgecnn inspect MODEL.keras --target edgetpu --calib DATA, which writes a full-int8 batch-1 copy")


def _finish(checked: Path, ready: Optional[Path], note: str, out_dir: Path, request: EdgeTpuRequest) -> Readiness:
    options = request.options
    prediction = check_edgetpu(checked, options)
    if ready is None:
        return Readiness(prediction, None, note)
    floats = [p for p in prediction.problems if p.startswith("not fully int8")]
    if floats:
        note += f"; but {floats[0]}"
    compiler = find_compiler()
    if compiler is None:
        return Readiness(prediction, ready, note, notes=(
            f"{COMPILER} is not on PATH: the partition is predicted from Coral's documented requirements; to "
            f"compile, {COMPILER_HELP}",))
    log, compiled = run_compiler(compiler, ready, out_dir, options, request.force)
    return Readiness(prediction, ready, note, log, compiled,
                     (f"compiled with {COMPILER} {log.version} {' '.join(options.compiler_args())}",))


def run_compiler(compiler: str, model: Path, out_dir: Path, options: EdgeTpuOptions = EdgeTpuOptions(),
                 force: bool = False) -> tuple[CompilerLog, Path]:
    """Run ``edgetpu_compiler -s -m N [-a]`` on ``model``; its .tflite and .log land in ``out_dir`` only
    when it succeeds (it writes into a scratch folder first), and never over existing ones without ``force``."""
    from edgecnn.fileio import refuse_overwrite  # noqa: PLC0415

    out_dir.mkdir(parents=True, exist_ok=True)
    outputs = compiled_outputs(model, out_dir)
    refuse_overwrite(outputs, force)
    with tempfile.TemporaryDirectory(prefix=".edgetpu-", dir=out_dir) as scratch:
        command = [compiler, "-s", *options.compiler_args(), "-o", scratch, str(model)]
        try:
            done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S)
        except subprocess.CalledProcessError as exc:
            lines = (exc.stdout or "").strip().splitlines() or (exc.stderr or "").strip().splitlines() or ["?"]
            raise ConversionError(f"{COMPILER} failed on {model.name} (exit {exc.returncode}: {lines[-1][:200]})",
                                  "see the prediction table for the operations it cannot map") from None
        except subprocess.TimeoutExpired:
            raise ConversionError(f"{COMPILER} did not finish within {COMPILE_TIMEOUT_S} s on {model.name}") from None
        log_file = Path(scratch) / outputs[1].name
        text = done.stdout + ("\n" + log_file.read_text(errors="replace") if log_file.is_file() else "")
        for made, final in zip((Path(scratch) / outputs[0].name, log_file), outputs):
            if made.is_file():
                os.replace(made, final)
    return parse_compiler_log(text), outputs[0]


def compiled_outputs(model: Path, out_dir: Path) -> list[Path]:
    """The compiled model and the operation log edgetpu_compiler writes for ``model`` into ``out_dir``."""
    return [out_dir / f"{model.stem}_edgetpu.tflite", out_dir / f"{model.stem}_edgetpu.log"]


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
