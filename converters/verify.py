"""Every artifact against the Keras model on the same samples: agreement, output error, accuracy, drop — and
the rule that refuses an artifact whose figures are wrong.

Image data runs through the device's own frame path: each sample is handed to the device Classifier
(edgecnn.devices.classify) as a camera frame arrives, BGR for a colour model, and classify()'s preparation
and encoding write it into the runtime's input tensor. A fault in that path (a colour swap, a wrong table, a
layout) is therefore a disagreement here, at conversion, not a surprise on the device. Float data (an array
already preprocessed) and runs on a cluster (``--ray``) go through the same runners with the one encoder
(edgecnn.preprocess.encode) instead. Outputs of both sides are read with the one decoder
(edgecnn.preprocess.decode_scores) and ranked with the one top-1 rule.

Ties are not disagreements: a sample where Keras's top-1 leads by no more than the artifact's numeric
error (a lead within one output quantization step for an integer output; a small multiple of the measured
typical difference, capped, for a float artifact) is left out of the agreement and counted as a tie.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edgecnn.manifest import ColorOrder, OutputKind, Preprocessing, TensorSpec, Verification
from edgecnn.preprocess import decode_scores, dequantize, encode, is_binary, top1

from edgecnn.converters.calibration import ModelInputs

BATCH = 250
Progress = Callable[[int], None]  # called with the number of samples just done
# Raw outputs of an artifact for encoded samples: (path, family, encoded, progress) -> outputs. The default runs
# here (_run_artifact); ``--ray`` passes one that runs the same batches as chunks on a cluster.
RunArtifact = Callable[[Path, str, np.ndarray, Optional[Progress]], np.ndarray]
FRAME_FAMILIES = ("tflite", "onnx")  # run on a device as frames; IMX500's model runs on the sensor
FLOAT_PRECISIONS = ("fp32", "fp16")
# How far a float artifact's raw outputs may stray from Keras, as a share of the output range.
FLOAT_REL_TOLERANCE = {"fp32": 1e-3, "fp16": 5e-2}
MIN_FLOAT_AGREEMENT = 0.99
CHANCE_KAPPA = 0.2        # Cohen's kappa below this is "slight" agreement at best: chance level
MIN_DECIDED_FOR_KAPPA = 20
MAX_CHANCE_PE = 0.95      # a reference that predicts one class for nearly every sample cannot show chance level
_FLOAT_TIE_FACTOR = 4.0   # ties: leads within this many typical differences
_TIE_FLOOR = 1e-7         # float32 resolution near 1


@dataclass(frozen=True)
class VerifyRule:
    """What makes an artifact a failed conversion (besides NaN/Inf outputs, which always do)."""

    min_float_agreement: float = MIN_FLOAT_AGREEMENT  # fp32/fp16 artifacts, on decided samples


def reference_outputs(model, data: ModelInputs) -> np.ndarray:
    """The float (Keras) model's raw outputs, (N, units)."""
    return model.predict(data.inputs)


def encode_inputs(data: ModelInputs, prep: Preprocessing, spec: TensorSpec) -> np.ndarray:
    """Samples in the artifact's input dtype: uint8 pixels through the device encoder, or float arrays."""
    encoded = encode(data.pixels if data.pixels is not None else data.inputs, prep, spec)
    return encoded.reshape(len(data), *data.inputs.shape[1:])


def verify_artifact(path: Path, family: str, input_spec: TensorSpec, output_spec: TensorSpec, data: ModelInputs,
                    prep: Preprocessing, reference: np.ndarray, progress: Optional[Progress] = None,
                    kind: OutputKind = OutputKind.PROBABILITIES, precision: str = "fp32",
                    run: Optional[RunArtifact] = None) -> Verification:
    """Run ``path`` on ``data`` and compare it with ``reference`` (the Keras raw outputs for the same samples).

    ``run``: how the artifact is run on the encoded samples (default: here, image data as camera frames
    through the device Classifier, float data through the device runner).
    """
    if run is None and data.pixels is not None and family in FRAME_FAMILIES:
        raw = run_frames(Path(path), family, data.pixels, prep, progress)
    else:
        raw = (run or _run_artifact)(Path(path), family, encode_inputs(data, prep, input_spec), progress)
    outputs = dequantize(raw, output_spec).reshape(len(data), -1)
    return compare(outputs, reference, data.labels, data.role, kind, tie_tolerance(outputs, reference, output_spec,
                                                                                  precision))


def tie_tolerance(outputs: np.ndarray, reference: np.ndarray, spec: TensorSpec, precision: str) -> float:
    """The artifact's numeric error in raw output units: leads within it are ties, not disagreements.

    An integer output rounds each value by up to half a quantization step, so two classes within one step
    of each other (a margin of half a step, see _margin) are a tie. A float artifact's error is
    measured (a multiple of its median difference from Keras) but capped at its precision's tolerance, so a
    broken artifact cannot excuse its own disagreements as ties.
    """
    if spec.quantized:
        return float(spec.scale) / 2.0
    finite = np.isfinite(outputs).all(axis=1)
    if precision not in FLOAT_PRECISIONS or not finite.any():
        return _TIE_FLOOR
    diff = np.abs(outputs[finite].astype(np.float64) - reference[finite].astype(np.float64))
    cap = FLOAT_REL_TOLERANCE[precision] * _output_range(reference, OutputKind.LOGITS)
    return float(min(max(_TIE_FLOOR, _FLOAT_TIE_FACTOR * float(np.median(diff))), cap))


def compare(outputs: np.ndarray, reference: np.ndarray, labels: Optional[np.ndarray], role: str,
            kind: OutputKind = OutputKind.PROBABILITIES, tolerance: float = _TIE_FLOOR) -> Verification:
    """Agreement of top-1 classes on decided samples, output differences, and (with labels) accuracies and drop.

    ``outputs`` and ``reference``: raw dequantized outputs (N, units) of the artifact and of Keras.
    """
    outputs = np.asarray(outputs, dtype=np.float64).reshape(len(outputs), -1)
    reference = np.asarray(reference, dtype=np.float64).reshape(len(reference), -1)
    finite = np.isfinite(outputs).all(axis=1)
    float_spec = TensorSpec(name="output", shape=(), dtype="float32")
    ref_scores = decode_scores(reference, float_spec, kind)
    theirs = top1(ref_scores)
    safe = np.where(finite[:, None], outputs, 0.0)
    ours = np.where(finite, top1(decode_scores(safe, float_spec, kind)), -1)
    decided = finite & (_margin(reference, kind) > tolerance)
    diff = np.abs(outputs[finite] - reference[finite])
    score_diff = np.abs(decode_scores(safe, float_spec, kind)[finite] - ref_scores[finite])
    agreement = float(np.mean(ours[decided] == theirs[decided])) if decided.any() else None
    max_diff = float(diff.max()) if diff.size else 0.0
    keras_acc = acc = drop = None
    if labels is not None:
        keras_acc = float(np.mean(theirs == labels))
        acc = float(np.mean(ours == labels))
        drop = round((keras_acc - acc) * 100.0, 4)
    return Verification(samples=int(len(outputs)), data=role, agreement=agreement, max_abs_diff=max_diff,
                        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
                        keras_accuracy=keras_acc, accuracy=acc, drop_pp=drop,
                        ties=int(np.sum(finite & ~decided)), nonfinite=int(np.sum(~finite)),
                        max_score_diff=float(score_diff.max()) if score_diff.size else 0.0,
                        rel_diff=max_diff / _output_range(reference, kind),
                        kappa=_kappa(ours[decided], theirs[decided], ref_scores.shape[1]))


def _margin(reference: np.ndarray, kind: OutputKind) -> np.ndarray:
    """How far each sample is from changing its top-1, in raw output units."""
    if is_binary(kind, reference.shape[1]):
        boundary = 0.0 if OutputKind(kind) == OutputKind.LOGITS else 0.5
        return np.abs(reference[:, 0] - boundary)
    if reference.shape[1] < 2:
        return np.full(len(reference), np.inf)
    top_two = -np.sort(-reference, axis=1)[:, :2]
    return (top_two[:, 0] - top_two[:, 1]) / 2.0  # each side moving half the lead flips it


def _output_range(reference: np.ndarray, kind: OutputKind) -> float:
    observed = float(np.ptp(reference)) if reference.size else 0.0
    bounded = OutputKind(kind) != OutputKind.LOGITS  # probabilities and sigmoid scores live in [0, 1]
    return max(observed, 1.0 if bounded else 1e-12)


def _kappa(ours: np.ndarray, theirs: np.ndarray, classes: int) -> Optional[float]:
    """Cohen's kappa of two label vectors: (observed - chance agreement) / (1 - chance agreement)."""
    if len(ours) < MIN_DECIDED_FOR_KAPPA:
        return None
    size = max(classes, int(max(ours.max(initial=0), theirs.max(initial=0))) + 1)
    p_ours = np.bincount(np.clip(ours, 0, None), minlength=size) / len(ours)
    p_theirs = np.bincount(theirs, minlength=size) / len(theirs)
    expected = float(np.dot(p_ours, p_theirs))
    if expected >= MAX_CHANCE_PE or p_theirs.max() >= MAX_CHANCE_PE:
        return None
    return (float(np.mean(ours == theirs)) - expected) / (1.0 - expected)


def judge(name: str, precision: str, verification: Verification, rule: VerifyRule = VerifyRule()) -> Optional[str]:
    """Why ``verification`` makes this artifact a failed conversion (one line naming its figure), or None."""
    v = verification
    if v.nonfinite:
        return f"{name}: outputs hold NaN or Inf on {v.nonfinite} of {v.samples} samples"
    if precision in FLOAT_PRECISIONS:
        if v.agreement is not None and v.agreement < rule.min_float_agreement:
            return (f"{name}: a {precision} artifact agrees with Keras on only {v.agreement:.1%} of "
                    f"{v.samples - v.ties} decided samples (at least {rule.min_float_agreement:.0%} required)")
        limit = FLOAT_REL_TOLERANCE[precision]
        if v.rel_diff is not None and v.rel_diff > limit:
            return (f"{name}: outputs differ from Keras by up to {v.rel_diff:.1%} of the output range "
                    f"(a {precision} artifact stays within {limit:.1%})")
    if v.kappa is not None and v.kappa < CHANCE_KAPPA:
        return (f"{name}: top-1 agreement with Keras {v.agreement:.1%} is at chance level "
                f"(kappa {v.kappa:.2f} on {v.samples - v.ties} decided samples)")
    return None


def cluster_run(cluster, placements: Optional[list] = None) -> Optional[RunArtifact]:
    """A RunArtifact that runs the local run's batches as chunks on ``cluster`` (edgecnn.devices.cluster.Cluster),
    appending each run's Placement (where its chunks ran) to ``placements``; None without a cluster."""
    if cluster is None:
        return None

    from edgecnn.devices.runners import cpu_target  # noqa: PLC0415

    def run(path: Path, family: str, batch: np.ndarray, progress: Optional[Progress] = None) -> np.ndarray:
        raw, placement = cluster.run(path, cpu_target(family), batch, BATCH, progress)
        if placements is not None:
            placements.append(placement)
        return raw

    return run


def camera_frame(pixels: np.ndarray, prep: Preprocessing) -> tuple[np.ndarray, ColorOrder]:
    """(frame, its colour order) as a camera hands one to the device: BGR for a colour model, whatever order
    the model takes, so that the Classifier's own colour handling is exercised; a grey model gets (H, W)."""
    if prep.channels == 1:
        return pixels.reshape(pixels.shape[0], pixels.shape[1]), ColorOrder.GRAY
    if ColorOrder(prep.color) == ColorOrder.RGB:
        return np.ascontiguousarray(pixels[:, :, ::-1]), ColorOrder.BGR
    return pixels, ColorOrder.BGR


def run_frames(path: Path, family: str, pixels: np.ndarray, prep: Preprocessing,
               progress: Optional[Progress] = None) -> np.ndarray:
    """Raw outputs (N, *output shape), in the output's dtype, of the artifact for (N, H, W, C) uint8 pixels in
    the model's colour order, each taken as a camera frame by the device Classifier (Classifier.raw_output)."""
    from edgecnn.devices.base import RunnerOptions  # noqa: PLC0415
    from edgecnn.devices.classify import Classifier  # noqa: PLC0415
    from edgecnn.devices.runners import cpu_target, open_runner  # noqa: PLC0415

    # probe=False: the file was written by this process a moment ago, there is no untrusted input to isolate.
    runner = open_runner(path, cpu_target(family), RunnerOptions(probe=False))
    try:
        classifier = Classifier(runner, prep, labels=())
    except BaseException:
        runner.close()
        raise
    with classifier:
        rows = []
        for start in range(0, len(pixels), BATCH):
            rows.extend(classifier.raw_output(*camera_frame(image, prep)) for image in pixels[start:start + BATCH])
            if progress is not None:
                progress(min(BATCH, len(pixels) - start))
    return np.concatenate(rows)


def _run_artifact(path: Path, family: str, batch: np.ndarray, progress: Optional[Progress]) -> np.ndarray:
    """Raw outputs of the artifact for ``batch``, in chunks, through the device runner for its format."""
    if family == "imx500":
        # The sensor cannot be fed arrays; MCT's quantized model, the one converted, runs on the host instead.
        from edgecnn.converters.imx500 import run_host  # noqa: PLC0415

        return run_host(path, batch, progress)
    from edgecnn.devices.base import RunnerOptions  # noqa: PLC0415
    from edgecnn.devices.runners import cpu_target, open_runner  # noqa: PLC0415

    target = cpu_target(family)
    # probe=False: the file was written by this process a moment ago, there is no untrusted input to isolate.
    with open_runner(path, target, RunnerOptions(probe=False)) as runner:
        chunks = []
        for start in range(0, len(batch), BATCH):
            chunk = batch[start:start + BATCH]
            chunks.append(np.asarray(runner.invoke(np.ascontiguousarray(chunk))))
            if progress is not None:
                progress(len(chunk))
    return np.concatenate(chunks)
