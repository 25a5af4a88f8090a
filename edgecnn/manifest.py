"""The manifest: the one description of an artifact's input, pre/post-processing and provenance.

Written by ``edgecnn convert`` beside the artifacts (``manifest.json``) and read by every runner, so a
device feeds the model exactly what training fed it. It is data only: JSON, parsed into frozen
dataclasses and validated; nothing in it is ever executed.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from edgecnn.errors import ManifestError

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"


class ColorOrder(str, Enum):
    RGB = "rgb"
    BGR = "bgr"
    GRAY = "gray"


class ResizeMode(str, Enum):
    STRETCH = "stretch"          # resize to H x W, ignoring aspect ratio (what most training pipelines did)
    CENTER_CROP = "center_crop"  # crop the largest centred square/aspect first, then resize
    LETTERBOX = "letterbox"      # fit inside, pad with zeros


class OutputKind(str, Enum):
    PROBABILITIES = "probabilities"  # the model ends in softmax
    LOGITS = "logits"                # apply softmax after dequantizing


@dataclass(frozen=True)
class Preprocessing:
    """How a raw uint8 image becomes the model's float input: x = (pixel * scale - mean) / std."""

    height: int
    width: int
    color: ColorOrder = ColorOrder.RGB
    resize: ResizeMode = ResizeMode.STRETCH
    scale: float = 1.0 / 255.0
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    invert: bool = False  # MNIST-style white digit on black: invert a dark-on-light camera image
    flatten: bool = False  # the model takes a flat vector (an MLP on 28x28 -> 784)

    @property
    def channels(self) -> int:
        return 1 if self.color == ColorOrder.GRAY else 3

    def input_shape(self) -> tuple[int, ...]:
        shape = (self.height, self.width, self.channels)
        return (self.height * self.width * self.channels,) if self.flatten else shape

    def validate(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ManifestError(f"preprocessing size {self.height}x{self.width} is not positive")
        for name, values in (("mean", self.mean), ("std", self.std)):
            if len(values) not in (1, self.channels):
                raise ManifestError(f"preprocessing {name} has {len(values)} values for {self.channels} channel(s)",
                                    "give one value or one per channel")
        if any(s == 0 for s in self.std):
            raise ManifestError("preprocessing std contains 0", "std values must be non-zero")
        if self.scale == 0:
            raise ManifestError("preprocessing scale is 0")


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the runtime sees it; scale/zero_point only for quantized tensors."""

    name: str
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name: float32, int8, uint8, float16
    scale: float = 0.0
    zero_point: int = 0

    @property
    def quantized(self) -> bool:
        return self.dtype in ("int8", "uint8", "int16") and self.scale > 0


@dataclass(frozen=True)
class Verification:
    """An artifact compared with the Keras model on the same preprocessed samples."""

    samples: int
    data: str  # "validation" or "calibration"
    agreement: float  # top-1 agreement with Keras, 0..1
    max_abs_diff: float  # of the dequantized outputs
    mean_abs_diff: float
    keras_accuracy: Optional[float] = None  # top-1, 0..1, when labels are known
    accuracy: Optional[float] = None
    drop_pp: Optional[float] = None  # (keras - artifact) * 100


@dataclass(frozen=True)
class ArtifactEntry:
    name: str  # format key, e.g. "tflite-int8"
    file: str  # relative to the manifest's folder
    size_bytes: int
    sha256: str
    input: TensorSpec
    output: TensorSpec
    precision: str = "fp32"  # fp32 | fp16 | dynamic | int8
    verification: Optional[Verification] = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Manifest:
    model_name: str
    source_sha256: str
    input_shape: tuple[int, ...]  # the model's input without the batch dimension
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    output_kind: OutputKind = OutputKind.PROBABILITIES
    artifacts: tuple[ArtifactEntry, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def artifact(self, file_or_name: str) -> ArtifactEntry:
        for entry in self.artifacts:
            if entry.name == file_or_name or entry.file == file_or_name or Path(entry.file).name == Path(file_or_name).name:
                return entry
        names = ", ".join(e.name for e in self.artifacts) or "none"
        raise ManifestError(f"the manifest has no artifact '{file_or_name}'", f"it lists: {names}")

    def with_artifacts(self, artifacts: tuple[ArtifactEntry, ...]) -> "Manifest":
        return dataclasses.replace(self, artifacts=tuple(artifacts))

    def validate(self) -> None:
        self.preprocessing.validate()
        if tuple(self.preprocessing.input_shape()) != tuple(self.input_shape):
            raise ManifestError(f"preprocessing produces {self.preprocessing.input_shape()} but the model takes {self.input_shape}")
        if not self.labels:
            raise ManifestError("the manifest has no labels")

    # -- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return _to_jsonable(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, raw: Any) -> "Manifest":
        if not isinstance(raw, dict):
            raise ManifestError("manifest is not a JSON object")
        version = raw.get("schema_version")
        if version != SCHEMA_VERSION:
            raise ManifestError(f"manifest schema_version {version!r} is not supported",
                                f"this edgecnn reads version {SCHEMA_VERSION}; re-run edgecnn convert")
        try:
            prep = raw["preprocessing"]
            manifest = cls(
                model_name=str(raw["model_name"]),
                source_sha256=str(raw["source_sha256"]),
                input_shape=_int_tuple(raw["input_shape"]),
                preprocessing=Preprocessing(
                    height=int(prep["height"]), width=int(prep["width"]),
                    color=ColorOrder(prep.get("color", "rgb")), resize=ResizeMode(prep.get("resize", "stretch")),
                    scale=float(prep.get("scale", 1 / 255)),
                    mean=tuple(float(v) for v in prep.get("mean", (0.0,))),
                    std=tuple(float(v) for v in prep.get("std", (1.0,))),
                    invert=bool(prep.get("invert", False)), flatten=bool(prep.get("flatten", False))),
                labels=tuple(str(label) for label in raw["labels"]),
                output_kind=OutputKind(raw.get("output_kind", "probabilities")),
                artifacts=tuple(_artifact_from_dict(a) for a in raw.get("artifacts", [])),
                versions={str(k): str(v) for k, v in dict(raw.get("versions", {})).items()},
                calibration=dict(raw.get("calibration", {})),
                created=str(raw.get("created", "")),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ManifestError(f"manifest is malformed ({type(exc).__name__}: {exc})",
                                "re-run edgecnn convert to write a new one") from None
        manifest.validate()
        return manifest

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ManifestError(f"cannot read manifest {path} ({exc.strerror or exc})") from None
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest {path} is not valid JSON ({exc})") from None
        return cls.from_dict(raw)


def find_manifest(model_path: Path) -> Optional[Path]:
    """The sidecar manifest of an artifact: ``manifest.json`` in the artifact's folder, if there."""
    candidate = Path(model_path).parent / MANIFEST_NAME
    return candidate if candidate.is_file() else None


def _artifact_from_dict(raw: dict[str, Any]) -> ArtifactEntry:
    verification = raw.get("verification")
    return ArtifactEntry(
        name=str(raw["name"]), file=str(raw["file"]), size_bytes=int(raw["size_bytes"]), sha256=str(raw["sha256"]),
        input=_tensor_from_dict(raw["input"]), output=_tensor_from_dict(raw["output"]),
        precision=str(raw.get("precision", "fp32")),
        verification=Verification(**verification) if verification else None,
        notes=tuple(str(n) for n in raw.get("notes", ())),
    )


def _tensor_from_dict(raw: dict[str, Any]) -> TensorSpec:
    return TensorSpec(name=str(raw["name"]), shape=_int_tuple(raw["shape"]), dtype=str(raw["dtype"]),
                      scale=float(raw.get("scale", 0.0)), zero_point=int(raw.get("zero_point", 0)))


def _int_tuple(values: Any) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def _to_jsonable(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: _to_jsonable(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, Enum):
        return obj.value
    if isinstance(obj, (tuple, list)):
        return [_to_jsonable(v) for v in obj]
    if isinstance(obj, dict):
        return {str(k): _to_jsonable(v) for k, v in obj.items()}
    return obj
