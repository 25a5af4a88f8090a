"""The fp32 reference each artifact's accuracy is measured against, computed once and shared by all rows.

With labelled data: Keras fp32 when TensorFlow is importable and the Keras file is known (``--reference``,
or found by the manifest's source_sha256 beside the convert output or in the model cache); otherwise the
fp32 artifact of the same family from the manifest, and the result says so; otherwise none (accuracy
only, no loss). With unlabelled data: agreement with the fp32 artifact (Keras only when there is none).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgecnn.bench.accuracy import (AccuracyResult, align_labels, decode_rows, evaluate, find_keras_source,
                                    float_inputs, keras_scores, pixels_for, predict, tensorflow_available)
from edgecnn.bench.jobs import Artifact
from edgecnn.data import Dataset
from edgecnn.errors import EdgecnnError
from edgecnn.manifest import OutputKind, Preprocessing
from edgecnn.preprocess import encode



class Reference:
    def __init__(self, scores: Optional[np.ndarray], kind: str, file: Optional[str], note: str) -> None:
        self.scores, self.kind, self.file, self.note = scores, kind, file, note


class ReferenceBook:
    """Prepared inputs and reference scores per model, cached for the whole bench run."""

    def __init__(self, dataset: Optional[Dataset], keras_path: Optional[str], unsafe: bool, probe: bool,
                 cluster: Any = None) -> None:
        self.dataset = dataset
        self.cluster = cluster  # edgecnn.devices.cluster.Cluster for --ray, else None
        # (description, chunks) -> advance(n): a progress line for a --ray run's chunks
        self.chunk_progress: Callable[[str, int], Callable[[int], None]] = lambda text, total: (lambda n: None)
        self.keras_path = Path(keras_path) if keras_path else None
        self.unsafe = unsafe
        self.probe = probe
        self.notes: list[str] = []
        self._pixels: dict[Preprocessing, np.ndarray] = {}
        self._refs: dict[tuple, Reference] = {}

    def pixels(self, prep: Preprocessing) -> np.ndarray:
        if prep not in self._pixels:
            self._pixels[prep] = pixels_for(self.dataset, prep)
        return self._pixels[prep]

    def scores(self, runner: Any, encoded: np.ndarray, kind: OutputKind) -> np.ndarray:
        """Class scores (N, C) of ``runner``'s model, one invoke per sample as on the device: here, or with
        --ray as chunks on the cluster, each node running the same file on the same target."""
        if self.cluster is None:
            return predict(runner.invoke, encoded, runner.output, kind)
        path = Path(runner.model_path)
        advance = self.chunk_progress(f"accuracy of {path.name} on Ray (chunks)", self.cluster.chunk_count(len(encoded), 1))
        raw, _ = self.cluster.run(path, runner.target, encoded, 1, advance)
        return decode_rows(raw, runner.output, kind)

    def reference_for(self, art: Artifact, prep: Preprocessing, kind: OutputKind) -> Reference:
        manifest = art.manifest
        key = (manifest.source_sha256 if manifest else str(art.path), art.family, prep)
        if key not in self._refs:
            self._refs[key] = self._find(art, prep, kind)
        return self._refs[key]

    def _find(self, art: Artifact, prep: Preprocessing, kind: OutputKind) -> Reference:
        fp32 = self._fp32_artifact(art)
        if self.dataset is not None and self.dataset.labels is None and fp32 is not None:
            # Without labels there is no accuracy to lose, only agreement: with the fp32 artifact, no TensorFlow.
            scores = self._artifact_scores(fp32, art.family, prep, kind)
            return Reference(scores, "fp32-artifact", str(fp32), f"fp32 artifact {fp32.name} (unlabelled data)")
        keras_file = self._keras_file(art)
        if keras_file is not None:
            scores = keras_scores(keras_file, float_inputs(self.pixels(prep), prep), kind, self.unsafe)
            return Reference(scores, "keras", str(keras_file), "Keras fp32 model")
        why = "TensorFlow is not importable" if not tensorflow_available() else "the Keras source was not found"
        if fp32 is None:
            self._note(f"{art.model_name}: no fp32 reference ({why}, and no {art.family}-fp32 artifact)")
            return Reference(None, "none", None, f"no reference: {why} and no fp32 artifact")
        scores = self._artifact_scores(fp32, art.family, prep, kind)
        self._note(f"{art.model_name}: reference is the {art.family}-fp32 artifact ({why})")
        return Reference(scores, "fp32-artifact", str(fp32), f"fp32 artifact {fp32.name}, because {why}")

    def _keras_file(self, art: Artifact) -> Optional[Path]:
        if not tensorflow_available():
            return None
        if self.keras_path is not None:
            return self.keras_path
        if art.manifest is None:
            return None
        from edgecnn.converters.zoo import cache_dir  # noqa: PLC0415 - the trained default lives there

        return find_keras_source(art.manifest, art.path.parent, extra=(cache_dir(),))

    def _fp32_artifact(self, art: Artifact) -> Optional[Path]:
        if art.manifest is None:
            return None
        for entry in art.manifest.artifacts:
            if entry.name == f"{art.family}-fp32":
                path = art.path.parent / entry.file
                return path if path.is_file() else None
        return None

    def _artifact_scores(self, path: Path, family: str, prep: Preprocessing, kind: OutputKind) -> np.ndarray:
        from edgecnn.devices.base import RunnerOptions  # noqa: PLC0415
        from edgecnn.devices.runners import cpu_target, open_runner  # noqa: PLC0415

        with open_runner(path, cpu_target(family), RunnerOptions(probe=self.probe)) as runner:
            return self.scores(runner, encode(self.pixels(prep), prep, runner.input), kind)

    def _note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)


def evaluate_artifact(art: Artifact, classifier: Any, dataset: Dataset, book: ReferenceBook) -> AccuracyResult:
    """Top-1/top-5 of the artifact (one sample per invoke, as on the device) and its loss against the reference."""
    prep = classifier.prep
    pixels = book.pixels(prep)
    runner = classifier.runner
    scores = book.scores(runner, encode(pixels, prep, runner.input), classifier.output_kind)
    labelled = align_labels(dataset, classifier.labels, scores.shape[1], classifier.manifest is not None) \
        if dataset.labels is not None else dataset
    try:
        ref = book.reference_for(art, prep, classifier.output_kind)
    except EdgecnnError as exc:  # a reference that cannot run: the artifact's own accuracy still counts
        ref = Reference(None, "none", None, f"reference failed: {exc.one_line()}")
    if ref.file is not None and Path(ref.file).resolve() == art.path.resolve():
        note = f"{ref.note} (this artifact is the reference)"
    else:
        note = ref.note
    return evaluate(scores, labelled.labels, ref.scores, classifier.labels, ref.kind, ref.file, note)
