"""Accuracy of an artifact and its loss against the fp32 reference, on the same samples.

The reference is the Keras fp32 model when TensorFlow is importable and the Keras file is known
(found beside the manifest by its sha256, or given explicitly); otherwise the fp32 artifact of the same
family, and the result says which. Accuracies are fractions (0..1); losses are percentage points.
"""
from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edgecnn.data import Dataset
from edgecnn.errors import DataError
from edgecnn.fileio import sha256_of
from edgecnn.manifest import Manifest, OutputKind, Preprocessing, TensorSpec
from edgecnn.preprocess import InputEncoder, decode_scores, encode_float, prepare_batch, ranking, to_float
from edgecnn.preprocess import top1 as top1_classes

WORST_CLASSES = 3
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


@dataclass(frozen=True)
class ClassLoss:
    label: str
    samples: int
    reference_accuracy: float
    accuracy: float
    lost_pp: float


@dataclass(frozen=True)
class AccuracyResult:
    samples: int
    labelled: bool
    reference: str  # "keras", "fp32-artifact", or "none"
    reference_file: Optional[str]
    reference_note: str
    top1: Optional[float] = None
    top5: Optional[float] = None
    reference_top1: Optional[float] = None
    reference_top5: Optional[float] = None
    drop_pp: Optional[float] = None  # (reference top-1 - top-1) x 100
    top5_drop_pp: Optional[float] = None
    agreement: Optional[float] = None  # top-1 agreement with the reference
    worst_classes: tuple[ClassLoss, ...] = ()
    finite: bool = True

    def to_dict(self) -> dict:
        out = {k: getattr(self, k) for k in ("samples", "labelled", "reference", "reference_file", "reference_note",
                                               "top1", "top5", "reference_top1", "reference_top5", "drop_pp",
                                               "top5_drop_pp", "agreement", "finite")}
        out["worst_classes"] = [c.__dict__.copy() for c in self.worst_classes]
        return out


# -- inputs and predictions ----------------------------------------------------------------------------
def pixels_for(dataset: Dataset, prep: Preprocessing) -> np.ndarray:
    """The dataset as (N, H, W, C) uint8 pixels in the model's geometry, or float model input if preprocessed."""
    if dataset.preprocessed:
        expected = tuple(prep.input_shape())
        if tuple(dataset.images.shape[1:]) != expected:
            raise DataError(f"float data {dataset.source} has samples of shape {tuple(dataset.images.shape[1:])}",
                            f"the model takes {expected}")
        return dataset.images
    return prepare_batch(dataset.images, prep)


def encode_inputs(pixels: np.ndarray, prep: Preprocessing, spec: TensorSpec) -> np.ndarray:
    """Pixels (or float input) -> the tensor dtype of ``spec`` via the shared encoder."""
    if pixels.dtype != np.uint8:
        return encode_float(pixels, spec)
    return InputEncoder.build(prep, spec)(pixels)


def float_inputs(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    """What the Keras fp32 model is fed for the same samples."""
    return pixels.astype(np.float32) if pixels.dtype != np.uint8 else to_float(pixels, prep)


def predict(invoke: Callable[[np.ndarray], np.ndarray], encoded: np.ndarray, output: TensorSpec,
            kind: OutputKind) -> np.ndarray:
    """Class scores (N, C) from one invoke per sample: the single-image path the device uses."""
    rows = [decode_scores(invoke(encoded[i:i + 1]), output, kind)[0] for i in range(encoded.shape[0])]
    return np.stack(rows) if rows else np.zeros((0, 0), np.float32)


# -- the reference ---------------------------------------------------------------------------------------
def tensorflow_available() -> bool:
    return importlib.util.find_spec("tensorflow") is not None


def find_keras_source(manifest: Manifest, folder: Path, extra: Sequence[Path] = ()) -> Optional[Path]:
    """The Keras file whose sha256 is the manifest's source_sha256, looked for beside the manifest and in ``extra``.

    Matching by content means a renamed or moved reference is still found, and a different model with
    the same name is never taken for it.
    """
    candidates: list[Path] = []
    for place in (folder, folder.parent, *extra):
        place = Path(place)
        if place.is_file():
            candidates.append(place)
        elif place.is_dir():
            candidates += sorted(p for p in place.iterdir() if p.suffix.lower() in KERAS_SUFFIXES and p.is_file())
    for path in candidates:
        if sha256_of(path) == manifest.source_sha256:
            return path
    return None


def keras_scores(keras_path: Path, x_float: np.ndarray, kind: OutputKind, unsafe: bool = False) -> np.ndarray:
    """The Keras fp32 model's class scores (safe_mode unless ``unsafe``), in inference mode."""
    from edgecnn.converters.keras_load import load_model  # noqa: PLC0415 - TensorFlow side

    model = load_model(keras_path, unsafe=unsafe)
    return decode_scores(model.predict(x_float), TensorSpec(name="output", shape=(), dtype="float32"), kind)


# -- metrics ---------------------------------------------------------------------------------------------
def top1_correct(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return top1_classes(scores) == labels


def topk_correct(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    # The one ranking rule (edgecnn.preprocess.ranking), as `run` and convert's verification use.
    order = ranking(scores)[:, :k]
    return np.any(order == labels[:, None], axis=1)


def evaluate(scores: np.ndarray, labels: Optional[np.ndarray], reference: Optional[np.ndarray],
             class_names: Sequence[str], reference_kind: str, reference_file: Optional[str],
             note: str) -> AccuracyResult:
    """Top-1/top-5, drop against the reference, agreement with it, and the classes that lost most."""
    n = int(scores.shape[0])
    finite = bool(np.all(np.isfinite(scores)))
    base = dict(samples=n, labelled=labels is not None, reference=reference_kind if reference is not None else "none",
                reference_file=reference_file, reference_note=note, finite=finite)
    if n == 0:
        raise DataError("no samples to evaluate accuracy on")
    agreement = None
    if reference is not None:
        agreement = float(np.mean(top1_classes(scores) == top1_classes(reference)))
    if labels is None:
        return AccuracyResult(**base, agreement=agreement)
    classes = scores.shape[1]
    correct = top1_correct(scores, labels)
    top1 = float(np.mean(correct))
    top5 = float(np.mean(topk_correct(scores, labels, 5))) if classes >= 5 else None
    result = dict(base, top1=top1, top5=top5, agreement=agreement)
    if reference is not None:
        ref_correct = top1_correct(reference, labels)
        ref_top1 = float(np.mean(ref_correct))
        ref_top5 = float(np.mean(topk_correct(reference, labels, 5))) if classes >= 5 else None
        result.update(reference_top1=ref_top1, reference_top5=ref_top5,
                      drop_pp=drop_pp(int(ref_correct.sum()), int(correct.sum()), n),
                      top5_drop_pp=None if top5 is None else (ref_top5 - top5) * 100.0,
                      worst_classes=worst_classes(correct, ref_correct, labels, class_names))
    return AccuracyResult(**result)


def drop_pp(reference_correct: int, correct: int, samples: int) -> float:
    """Accuracy loss in percentage points, from counts (exact: no float accumulation)."""
    return (reference_correct - correct) * 100.0 / samples


def worst_classes(correct: np.ndarray, ref_correct: np.ndarray, labels: np.ndarray, class_names: Sequence[str],
                  count: int = WORST_CLASSES) -> tuple[ClassLoss, ...]:
    """The classes whose accuracy fell most against the reference (only those that lost)."""
    losses = []
    for cls in np.unique(labels):
        members = labels == cls
        size = int(members.sum())
        ref_acc = float(ref_correct[members].mean())
        acc = float(correct[members].mean())
        lost = (int(ref_correct[members].sum()) - int(correct[members].sum())) * 100.0 / size
        if lost > 0:
            name = class_names[cls] if cls < len(class_names) else str(int(cls))
            losses.append(ClassLoss(str(name), size, ref_acc, acc, lost))
    losses.sort(key=lambda c: (-c.lost_pp, c.label))
    return tuple(losses[:count])


def align_labels(dataset: Dataset, model_labels: Sequence[str], model_classes: int) -> Dataset:
    """Map the data's class names onto the model's label indices; refuse labels that cannot be this model's."""
    if dataset.labels is None:
        return dataset
    names = dataset.class_names
    if names and model_labels:
        missing = [n for n in names if n not in model_labels]
        if missing:
            shown = ", ".join(missing[:3]) + ("..." if len(missing) > 3 else "")
            raise DataError(f"data {dataset.source} has classes ({shown}) that are not among the model's "
                            f"{len(model_labels)} labels", "name the class folders after the manifest's labels")
        index = np.asarray([list(model_labels).index(n) for n in names], dtype=np.int64)
        dataset = Dataset(dataset.images, index[dataset.labels], tuple(model_labels), dataset.source,
                          dataset.preprocessed)
    if int(dataset.labels.min()) < 0 or int(dataset.labels.max()) >= model_classes:
        raise DataError(f"data {dataset.source} has label {int(dataset.labels.max())} but the model has "
                        f"{model_classes} classes", "give validation data labelled for this model")
    return dataset
