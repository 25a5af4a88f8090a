"""Every artifact against the Keras model on the same samples: agreement, output error, accuracy, drop.

Artifacts run through the device runners (edgecnn.devices.runners.open_runner), so verification
exercises exactly the code a device runs, including input encoding with the manifest's preprocessing
(edgecnn.preprocess.InputEncoder from uint8 pixels, as on a camera frame).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

import numpy as np

from edgecnn.manifest import Preprocessing, TensorSpec, Verification
from edgecnn.preprocess import InputEncoder, dequantize, encode_float

from edgecnn.converters.calibration import ModelInputs

BATCH = 250
Progress = Callable[[int], None]  # called with the number of samples just done


def reference_outputs(model, data: ModelInputs) -> np.ndarray:
    """The float (Keras) model's outputs, (N, classes)."""
    return model.predict(data.inputs)


def encode_inputs(data: ModelInputs, prep: Preprocessing, spec: TensorSpec) -> np.ndarray:
    """Samples in the artifact's input dtype: uint8 pixels through the device encoder, or float arrays."""
    if data.pixels is not None:
        encoded = InputEncoder.build(prep, spec)(data.pixels)
    else:
        encoded = encode_float(data.inputs, spec)
    return encoded.reshape(len(data), *data.inputs.shape[1:])


def verify_artifact(path: Path, family: str, input_spec: TensorSpec, output_spec: TensorSpec, data: ModelInputs,
                    prep: Preprocessing, reference: np.ndarray, progress: Optional[Progress] = None) -> Verification:
    """Run ``path`` on ``data`` and compare it with ``reference`` (the Keras outputs for the same samples)."""
    batch = encode_inputs(data, prep, input_spec)
    raw = _run_artifact(Path(path), family, batch, progress)
    outputs = dequantize(raw, output_spec).reshape(len(data), -1)
    return compare(outputs, reference, data.labels, data.role)


def compare(outputs: np.ndarray, reference: np.ndarray, labels: Optional[np.ndarray], role: str) -> Verification:
    """Agreement of top-1 classes, output differences and (with labels) accuracies and drop in pp."""
    diff = np.abs(outputs.astype(np.float64) - reference.astype(np.float64))
    ours, theirs = _top1(outputs), _top1(reference)
    keras_acc = acc = drop = None
    if labels is not None:
        keras_acc = float(np.mean(theirs == labels))
        acc = float(np.mean(ours == labels))
        drop = round((keras_acc - acc) * 100.0, 4)
    return Verification(samples=int(len(outputs)), data=role, agreement=float(np.mean(ours == theirs)),
                        max_abs_diff=float(diff.max()) if diff.size else 0.0,
                        mean_abs_diff=float(diff.mean()) if diff.size else 0.0,
                        keras_accuracy=keras_acc, accuracy=acc, drop_pp=drop)


def _top1(scores: np.ndarray) -> np.ndarray:
    # One output (a regressor such as DAVE-2): "top-1" is the sign, so agreement still means something.
    return (scores[:, 0] > 0).astype(np.int64) if scores.shape[1] == 1 else scores.argmax(axis=1)


def _run_artifact(path: Path, family: str, batch: np.ndarray, progress: Optional[Progress]) -> np.ndarray:
    """Raw outputs of the artifact for ``batch``, in chunks, through the device runner for its format."""
    if family == "imx500":
        # The sensor cannot be fed arrays; MCT's quantized model, the one converted, runs on the host instead.
        from edgecnn.converters.imx500 import run_host  # noqa: PLC0415

        return run_host(path, batch, progress)
    from edgecnn.devices.base import RunnerOptions  # noqa: PLC0415
    from edgecnn.devices.runners import open_runner  # noqa: PLC0415

    target = "cpu" if family == "tflite" else "onnx-cpu"
    # probe=False: the file was written by this process a moment ago, there is no untrusted input to isolate.
    with open_runner(path, target, RunnerOptions(probe=False)) as runner:
        chunks = []
        for start in range(0, len(batch), BATCH):
            chunk = batch[start:start + BATCH]
            chunks.append(np.asarray(runner.invoke(np.ascontiguousarray(chunk))))
            if progress is not None:
                progress(len(chunk))
    return np.concatenate(chunks)

