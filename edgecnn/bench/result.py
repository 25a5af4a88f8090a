"""The result of a benchmark: one row per artifact x target x thread count, plus the environment.

Rows are plain frozen dataclasses; ``BenchResult.to_dict`` gives the JSON described by schema.json
(``RESULT_SCHEMA_VERSION``). Reports and ``merge_reports`` work on that JSON, so results written on a
Pi and on a workstation merge without either side importing the other's runtime.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from importlib import resources
from typing import Any, Optional

from edgecnn.bench.accuracy import AccuracyResult
from edgecnn.bench.stats import LatencyStats

RESULT_SCHEMA_VERSION = 1
SAMPLES_KEPT = 2000  # raw latency samples kept per row for the distribution plot


class Status(str, Enum):
    OK = "ok"
    FAILED_VERIFICATION = "exported-but-failed-verification"  # it runs, but its outputs fail the accuracy check
    FAILED = "failed"  # it could not be loaded or run on this target


@dataclass(frozen=True)
class Offline:
    batch: int
    images_per_s: float
    batch_latency: LatencyStats

    def to_dict(self) -> dict[str, Any]:
        return {"batch": self.batch, "images_per_s": self.images_per_s, "batch_latency": self.batch_latency.to_dict()}


@dataclass(frozen=True)
class BenchRow:
    model: str  # the model's name (manifest) or the file's stem
    artifact: str  # the file benchmarked
    format: str  # "tflite-int8", ... (manifest name) or the file suffix
    family: str  # tflite | onnx
    precision: str  # fp32 | fp16 | dynamic | int8 | uint8 | int16x8 (read from a file without a manifest) | unknown
    target: str
    threads: int
    status: Status
    reason: str = ""  # why it failed, or why verification failed
    size_bytes: Optional[int] = None
    load_ms: Optional[float] = None  # runner construction: file read, graph preparation, delegate set-up
    first_inference_ms: Optional[float] = None
    invoke: Optional[LatencyStats] = None  # raw inference: encoded tensor in, raw output tensor out
    step: Optional[LatencyStats] = None  # whole step: uint8 image -> preprocess -> inference -> top-5
    offline: Optional[Offline] = None
    macs: Optional[int] = None
    gmacs_per_s: Optional[float] = None  # at the p50 of the raw inference
    p50_vs_fp32: Optional[float] = None  # this row's p50 / the fp32 artifact's p50, same model/family/target/threads
    accuracy: Optional[AccuracyResult] = None
    preprocessing: str = ""  # how images were fed (edgecnn.prepchoice.describe_prep); "(assumed)" when guessed
    accuracy_note: str = ""  # why accuracy does not apply ("n/a: ... not a single-output image classifier ...")
    rss_mb: Optional[float] = None  # resident memory after the row's measurements
    load_rss_mb: Optional[float] = None  # resident memory the load added
    peak_rss_mb: Optional[float] = None  # the process's peak so far (includes earlier rows)
    runtime: dict[str, Any] = field(default_factory=dict)  # Runner.describe(): runtime, delegates / providers used
    samples_ms: tuple[float, ...] = ()  # raw-inference samples in measurement order (at most SAMPLES_KEPT)
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if hasattr(value, "to_dict"):
                value = value.to_dict()
            elif isinstance(value, Enum):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = _jsonable(value)
        return out


@dataclass(frozen=True)
class BenchResult:
    created: str
    command: str
    environment: dict[str, Any]
    options: dict[str, Any]
    rows: tuple[BenchRow, ...]
    data: Optional[str] = None
    notes: tuple[str, ...] = ()
    schema_version: int = RESULT_SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": self.schema_version, "created": self.created, "command": self.command,
                "data": self.data, "environment": _jsonable(self.environment), "options": _jsonable(self.options),
                "notes": list(self.notes), "rows": [row.to_dict() for row in self.rows]}


def _jsonable(value: Any) -> Any:
    """Tuples -> lists, numpy scalars -> Python numbers, NaN/inf -> None (JSON has none of them)."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Enum):
        return value.value
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and (value != value or value in (float("inf"), float("-inf"))):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def load_schema() -> dict[str, Any]:
    """The JSON Schema of the result file (package data)."""
    text = resources.files("edgecnn.bench").joinpath("schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def validate_result(raw: dict[str, Any]) -> None:
    """Validate a result dict against schema.json (needs jsonschema); raises DataError with the first problem."""
    from edgecnn.errors import DataError, RuntimeMissingError  # noqa: PLC0415

    try:
        import jsonschema  # noqa: PLC0415
    except ImportError:
        raise RuntimeMissingError("validating a result needs jsonschema", "pip install 'edgecnn[report]'") from None
    try:
        jsonschema.validate(raw, load_schema())
    except jsonschema.ValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path) or "(root)"
        raise DataError(f"result does not match schema version {RESULT_SCHEMA_VERSION} at {where}: {exc.message}"[:300],
                        "was it written by another edgecnn version?") from None
