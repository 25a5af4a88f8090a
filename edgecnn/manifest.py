"""The manifest: the one description of an artifact's input, pre/post-processing and provenance.

Written by ``edgecnn convert`` beside the artifacts (``manifest.json``) and read by every runner, so a
device feeds the model exactly what training fed it. It is data only: JSON, parsed into frozen
dataclasses and validated; nothing in it is ever executed.
"""
from __future__ import annotations

import dataclasses
import json
import math
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


class Interpolation(str, Enum):
    # Bilinear is what Keras resizes with (image_dataset_from_directory, the Resizing layer, tf.image.resize:
    # no antialiasing); area averaging suits pipelines that shrank with OpenCV's INTER_AREA or PIL's box filter.
    LINEAR = "linear"
    AREA = "area"


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
    interpolation: Interpolation = Interpolation.LINEAR  # how a larger frame is shrunk; enlarging is bilinear
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
    checks: dict[str, Any] = field(default_factory=dict)  # convert's preprocessing checks (converters/prep_check.py)

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
        if isinstance(version, bool) or version != SCHEMA_VERSION:
            raise ManifestError(f"manifest schema_version {version!r} is not supported",
                                f"this edgecnn reads version {SCHEMA_VERSION}; re-run edgecnn convert")
        try:
            _known_fields(raw, cls, "manifest")
            prep = _known_fields(_object(raw["preprocessing"], "preprocessing"), Preprocessing, "preprocessing")
            manifest = cls(
                model_name=_text(raw["model_name"], "model_name"),
                source_sha256=_text(raw["source_sha256"], "source_sha256"),
                input_shape=_int_tuple(raw["input_shape"], "input_shape"),
                preprocessing=Preprocessing(
                    height=_int(prep["height"], "height"), width=_int(prep["width"], "width"),
                    color=ColorOrder(prep.get("color", "rgb")), resize=ResizeMode(prep.get("resize", "stretch")),
                    interpolation=Interpolation(prep.get("interpolation", "linear")),
                    scale=_float(prep.get("scale", 1 / 255), "scale"),
                    mean=tuple(_float(v, "mean") for v in _array(prep.get("mean", [0.0]), "mean")),
                    std=tuple(_float(v, "std") for v in _array(prep.get("std", [1.0]), "std")),
                    invert=_bool(prep.get("invert", False), "invert"),
                    flatten=_bool(prep.get("flatten", False), "flatten")),
                labels=tuple(_text(label, "label") for label in _array(raw["labels"], "labels")),
                output_kind=OutputKind(raw.get("output_kind", "probabilities")),
                artifacts=tuple(_artifact_from_dict(a) for a in _array(raw.get("artifacts", []), "artifacts")),
                versions={str(k): _text(v, "version") for k, v in _object(raw.get("versions", {}), "versions").items()},
                calibration=dict(_object(raw.get("calibration", {}), "calibration")),
                created=_text(raw.get("created", ""), "created"),
                checks=dict(_object(raw.get("checks", {}), "checks")),
            )
        except (KeyError, TypeError, ValueError, OverflowError) as exc:
            raise ManifestError(f"manifest is malformed ({type(exc).__name__}: {exc})",
                                "re-run edgecnn convert to write a new one") from None
        manifest.validate()
        return manifest

    @classmethod
    def read(cls, path: Path) -> "Manifest":
        path = Path(path)
        try:
            text = path.read_bytes()
        except OSError as exc:
            raise ManifestError(f"cannot read manifest {path} ({exc.strerror or exc})") from None
        try:
            raw = json.loads(text)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ManifestError(f"manifest {path} is not valid JSON ({exc})") from None
        except RecursionError:
            raise ManifestError(f"manifest {path} is nested too deeply to be a manifest") from None
        return cls.from_dict(raw)


def find_manifest(model_path: Path) -> Optional[Path]:
    """The sidecar manifest of an artifact: ``manifest.json`` in the artifact's folder, if there."""
    candidate = Path(model_path).parent / MANIFEST_NAME
    return candidate if candidate.is_file() else None


def _artifact_from_dict(raw: Any) -> ArtifactEntry:
    raw = _known_fields(_object(raw, "artifact"), ArtifactEntry, "artifact")
    verification = raw.get("verification")
    return ArtifactEntry(
        name=_text(raw["name"], "artifact name"), file=_text(raw["file"], "artifact file"),
        size_bytes=_int(raw["size_bytes"], "size_bytes"), sha256=_text(raw["sha256"], "sha256"),
        input=_tensor_from_dict(raw["input"]), output=_tensor_from_dict(raw["output"]),
        precision=_text(raw.get("precision", "fp32"), "precision"),
        verification=_verification_from_dict(verification) if verification is not None else None,
        notes=tuple(_text(n, "note") for n in _array(raw.get("notes", []), "notes")),
    )


def _verification_from_dict(raw: Any) -> Verification:
    raw = _object(raw, "verification")
    optional = ("keras_accuracy", "accuracy", "drop_pp")
    _known_fields(raw, Verification, "verification")
    return Verification(
        samples=_int(raw["samples"], "samples"), data=_text(raw["data"], "data"),
        agreement=_float(raw["agreement"], "agreement"), max_abs_diff=_float(raw["max_abs_diff"], "max_abs_diff"),
        mean_abs_diff=_float(raw["mean_abs_diff"], "mean_abs_diff"),
        **{k: (None if raw.get(k) is None else _float(raw[k], k)) for k in optional})


def _tensor_from_dict(raw: Any) -> TensorSpec:
    raw = _known_fields(_object(raw, "tensor"), TensorSpec, "tensor")
    return TensorSpec(name=_text(raw["name"], "tensor name"), shape=_int_tuple(raw["shape"], "tensor shape"),
                      dtype=_text(raw["dtype"], "dtype"), scale=_float(raw.get("scale", 0.0), "tensor scale"),
                      zero_point=_int(raw.get("zero_point", 0), "zero_point"))


# Strict JSON field parsers: a manifest is data, so a wrong type is an error, never coerced
# (``bool("false")`` is True, ``tuple("28")`` is ('2', '8')).
def _object(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"{what} must be a JSON object, not {type(value).__name__}")
    return value


def _known_fields(raw: dict[str, Any], kind: type, what: str) -> dict[str, Any]:
    """Refuse keys this schema version does not define (a typo, or content that is not ours)."""
    unknown = sorted(str(k) for k in set(raw) - {f.name for f in dataclasses.fields(kind)})
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise ValueError(f"{what} has unknown field(s) {shown}")
    return raw


def _array(value: Any, what: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"{what} must be a JSON array, not {type(value).__name__}")
    return list(value)


def _text(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise TypeError(f"{what} must be a string, not {type(value).__name__}")
    return str(value)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be an integer, not {type(value).__name__}")
    if isinstance(value, float) and not (math.isfinite(value) and value.is_integer()):
        raise ValueError(f"{what} must be an integer, not {value}")
    return int(value)


def _float(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a number, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be finite, not {value}")
    return float(value)


def _bool(value: Any, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be true or false, not {value!r}"[:120])
    return value


def _int_tuple(values: Any, what: str = "shape") -> tuple[int, ...]:
    return tuple(_int(v, what) for v in _array(values, what))


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
