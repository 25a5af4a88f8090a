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

SCHEMA_VERSION = 2
# Version 1 (no layout, two output kinds, no failed list) still reads: its fields are a subset of version 2's.
READABLE_SCHEMA_VERSIONS = (1, 2)
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
    """What the model's output means; edgecnn.preprocess.decode_scores turns it into class scores.

    With one output unit, ``logits`` is a binary logit z (scores [1 - sigmoid(z), sigmoid(z)]) and
    ``binary_sigmoid`` a probability p (scores [1 - p, p]); both have two classes, decided at p >= 0.5.
    """

    PROBABILITIES = "probabilities"          # ends in softmax: scores as they are
    LOGITS = "logits"                        # unnormalised: softmax (one unit: sigmoid) after dequantizing
    BINARY_SIGMOID = "binary_sigmoid"        # Dense(1, sigmoid): two classes [1 - p, p]
    MULTILABEL_SIGMOID = "multilabel_sigmoid"  # Dense(N, sigmoid): independent scores, never softmaxed


class Layout(str, Enum):
    """How the model's input tensor holds an image (batch axis first, not listed)."""

    NHWC = "nhwc"  # (H, W, C): Keras' channels_last
    NCHW = "nchw"  # (C, H, W): PyTorch-exported ONNX models
    HW = "hw"      # (H, W): a grey image without a channel axis (Input((28, 28)) -> Flatten)
    FLAT = "flat"  # (H * W * C,): an MLP on a flattened image


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
    layout: Layout = Layout.NHWC

    @property
    def channels(self) -> int:
        return 1 if self.color == ColorOrder.GRAY else 3

    @property
    def flatten(self) -> bool:
        return self.layout == Layout.FLAT

    def input_shape(self) -> tuple[int, ...]:
        """The model input this preprocessing produces, without the batch axis."""
        h, w, c = self.height, self.width, self.channels
        return {Layout.NHWC: (h, w, c), Layout.NCHW: (c, h, w), Layout.HW: (h, w),
                Layout.FLAT: (h * w * c,)}[Layout(self.layout)]

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
        if Layout(self.layout) == Layout.HW and self.channels != 1:
            raise ManifestError("an (H, W) input without a channel axis is a grey image", "use color gray")


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
    """An artifact compared with the Keras model on the same preprocessed samples.

    ``agreement`` counts only decided samples: those where Keras's top-1 leads its runner-up by more than the
    artifact's numeric error (``ties`` is how many were not); None when every sample was a tie (an untrained
    model), and the artifact is then judged by its output difference alone.
    """

    samples: int
    data: str  # "validation" or "calibration"
    agreement: Optional[float]  # top-1 agreement with Keras on decided samples, 0..1
    max_abs_diff: float  # of the dequantized raw outputs (finite samples)
    mean_abs_diff: float
    keras_accuracy: Optional[float] = None  # top-1, 0..1, when labels are known
    accuracy: Optional[float] = None
    drop_pp: Optional[float] = None  # (keras - artifact) * 100
    ties: int = 0  # samples left out of the agreement: Keras's lead within the artifact's numeric error
    nonfinite: int = 0  # samples whose outputs hold NaN or Inf
    max_score_diff: Optional[float] = None  # of the decoded class scores (probabilities), 0..1
    rel_diff: Optional[float] = None  # max_abs_diff / the reference's output range
    kappa: Optional[float] = None  # Cohen's kappa of the top-1 agreement: 0 is chance level, 1 perfect


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
class FailedArtifact:
    """A format that was built or verified and refused: not published, listed with the reason."""

    name: str  # format key
    reason: str  # one line
    verification: Optional[Verification] = None


@dataclass(frozen=True)
class Manifest:
    model_name: str
    source_sha256: str
    input_shape: tuple[int, ...]  # the model's input without the batch dimension
    preprocessing: Preprocessing
    labels: tuple[str, ...]
    output_kind: OutputKind = OutputKind.PROBABILITIES
    artifacts: tuple[ArtifactEntry, ...] = ()
    failed: tuple[FailedArtifact, ...] = ()
    versions: dict[str, str] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    schema_version: int = SCHEMA_VERSION

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def with_failed(self, failed: tuple[FailedArtifact, ...]) -> "Manifest":
        return dataclasses.replace(self, failed=tuple(failed))

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
        if isinstance(version, bool) or version not in READABLE_SCHEMA_VERSIONS:
            raise ManifestError(f"manifest schema_version {version!r} is not supported",
                                f"this edgecnn reads version {SCHEMA_VERSION}; re-run edgecnn convert")
        try:
            _known_fields(raw, cls, "manifest")
            prep = _known_fields(_object(raw["preprocessing"], "preprocessing"), Preprocessing, "preprocessing",
                                 legacy=("flatten",))
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
                    invert=_bool(prep.get("invert", False), "invert"), layout=_layout(prep)),
                labels=tuple(_text(label, "label") for label in _array(raw["labels"], "labels")),
                output_kind=OutputKind(raw.get("output_kind", "probabilities")),
                artifacts=tuple(_artifact_from_dict(a) for a in _array(raw.get("artifacts", []), "artifacts")),
                failed=tuple(_failed_from_dict(f) for f in _array(raw.get("failed", []), "failed")),
                versions={str(k): _text(v, "version") for k, v in _object(raw.get("versions", {}), "versions").items()},
                calibration=dict(_object(raw.get("calibration", {}), "calibration")),
                created=_text(raw.get("created", ""), "created"),
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


def _failed_from_dict(raw: Any) -> FailedArtifact:
    raw = _known_fields(_object(raw, "failed artifact"), FailedArtifact, "failed artifact")
    verification = raw.get("verification")
    return FailedArtifact(name=_text(raw["name"], "failed artifact name"), reason=_text(raw["reason"], "reason"),
                          verification=_verification_from_dict(verification) if verification is not None else None)


def _layout(prep: dict[str, Any]) -> "Layout":
    if "layout" in prep:
        return Layout(prep["layout"])
    return Layout.FLAT if _bool(prep.get("flatten", False), "flatten") else Layout.NHWC  # schema version 1


def _verification_from_dict(raw: Any) -> Verification:
    raw = _object(raw, "verification")
    optional = ("agreement", "keras_accuracy", "accuracy", "drop_pp", "max_score_diff", "rel_diff", "kappa")
    _known_fields(raw, Verification, "verification")
    return Verification(
        samples=_int(raw["samples"], "samples"), data=_text(raw["data"], "data"),
        max_abs_diff=_float(raw["max_abs_diff"], "max_abs_diff"),
        mean_abs_diff=_float(raw["mean_abs_diff"], "mean_abs_diff"),
        ties=_int(raw.get("ties", 0), "ties"), nonfinite=_int(raw.get("nonfinite", 0), "nonfinite"),
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


def _known_fields(raw: dict[str, Any], kind: type, what: str, legacy: tuple[str, ...] = ()) -> dict[str, Any]:
    """Refuse keys this schema version does not define (a typo, or content that is not ours); ``legacy``
    names keys of an older schema version that are still read."""
    unknown = sorted(str(k) for k in set(raw) - {f.name for f in dataclasses.fields(kind)} - set(legacy))
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
