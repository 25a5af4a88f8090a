"""What a classifier's output means (edgecnn.manifest.OutputKind), decided once at conversion.

Two witnesses: the exported graph's final op (Softmax, Sigmoid, or something else: logits), read from the
frozen inference graph so nested Sequential/Functional sub-models and a separate ``Activation("softmax")``
or ``Softmax`` layer all look the same; and the float model's outputs on the calibration data (rows that
sum to 1 are probabilities, values in [0, 1] that do not are sigmoid scores, anything else logits).
``--output-kind`` overrides both; when the graph and the numbers disagree the graph wins and the
conversion warns, naming both.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

from edgecnn.manifest import OutputKind

# Ops that pass the final activation through unchanged in value (or only in dtype / shape).
_PASS_THROUGH = frozenset({"Identity", "IdentityN", "Cast", "Reshape", "Squeeze", "StopGradient", "EnsureShape",
                           "PreventGradient", "Snapshot"})
_PROB_TOLERANCE = 1e-3  # rows summing to 1 within this are probabilities
_RANGE_TOLERANCE = 1e-4


@dataclass(frozen=True)
class HeadDecision:
    kind: OutputKind
    final_op: Optional[str]           # the graph's final op type, None when the graph could not be read
    numeric: Optional[OutputKind]     # what the float outputs look like, None without data
    notes: tuple[str, ...] = ()       # for the manifest / the convert summary
    warnings: tuple[str, ...] = ()    # printed: a contradiction or a degenerate head


def kind_of_op(op: Optional[str], units: int) -> Optional[OutputKind]:
    """The output kind a graph's final op type implies, or None when unknown."""
    if op is None:
        return None
    if op == "Softmax":
        return OutputKind.PROBABILITIES  # LogSoftmax falls through to logits: softmax of log-probabilities
    if op in ("Sigmoid", "Logistic"):
        return OutputKind.BINARY_SIGMOID if units == 1 else OutputKind.MULTILABEL_SIGMOID
    return OutputKind.LOGITS


def kind_of_values(outputs: np.ndarray) -> Optional[OutputKind]:
    """The output kind float outputs (N, units) look like, or None when there are none (or not finite)."""
    outputs = np.asarray(outputs, dtype=np.float64)
    if outputs.size == 0 or not np.all(np.isfinite(outputs)):
        return None
    outputs = outputs.reshape(len(outputs), -1)
    units = outputs.shape[1]
    in_unit_range = outputs.min() >= -_RANGE_TOLERANCE and outputs.max() <= 1.0 + _RANGE_TOLERANCE
    if not in_unit_range:
        return OutputKind.LOGITS
    if units == 1:
        return OutputKind.BINARY_SIGMOID
    if np.allclose(outputs.sum(axis=1), 1.0, atol=_PROB_TOLERANCE):
        return OutputKind.PROBABILITIES
    return OutputKind.MULTILABEL_SIGMOID


def decide(loaded: Any, outputs: Optional[np.ndarray], override: Optional[OutputKind] = None) -> HeadDecision:
    """The model's output kind: ``override`` if given, else the graph's final op, confirmed by ``outputs``
    (the float model's raw outputs on calibration data, (N, units)), which decide alone when the graph
    cannot be read."""
    units = int(loaded.num_outputs)
    op = final_op(loaded)
    graph_kind = kind_of_op(op, units)
    numeric = kind_of_values(outputs) if outputs is not None else None
    warnings: list[str] = []
    if units == 1 and op == "Softmax":
        warnings.append("the model ends in a softmax over one unit, which is 1.0 for every input: it cannot tell "
                        "classes apart (a binary head is Dense(1, activation='sigmoid') or Dense(2) + softmax)")
    if override is not None:
        kind = OutputKind(override)
        notes = (f"output kind {kind.value} (given with --output-kind)",)
        return HeadDecision(kind, op, numeric, notes, tuple(warnings))
    kind = graph_kind or numeric or OutputKind.PROBABILITIES
    if graph_kind is not None and numeric is not None and graph_kind != numeric:
        warnings.append(f"the graph ends in {op} ({graph_kind.value}) but the float outputs on the calibration "
                        f"data look like {numeric.value} ({_describe(numeric)}); using {kind.value}: pass "
                        f"--output-kind {numeric.value} if the numbers are right")
    source = f"the graph's final op {op}" if graph_kind is not None else (
        "the float outputs" if numeric is not None else "a default (no graph, no data)")
    return HeadDecision(kind, op, numeric, (f"output kind {kind.value}, from {source}",), tuple(warnings))


def _describe(kind: OutputKind) -> str:
    return {OutputKind.PROBABILITIES: "rows summing to 1", OutputKind.LOGITS: "values outside [0, 1]",
            OutputKind.BINARY_SIGMOID: "one value in [0, 1]",
            OutputKind.MULTILABEL_SIGMOID: "values in [0, 1] not summing to 1"}[kind]


def final_op(loaded: Any) -> Optional[str]:
    """The op type that produces the model's output in its frozen inference graph, past Identity/Cast/Reshape.

    Works for Keras models (traced with training=False) and SavedModel signatures alike; None when the graph
    cannot be traced or frozen.
    """
    try:
        graph_def, output = _frozen_graph(loaded)
    except Exception:  # noqa: BLE001 - an untraceable graph only loses one witness; the numbers still decide
        return None
    nodes = {node.name: node for node in graph_def.node}
    node = nodes.get(output)
    for _ in range(64):
        if node is None or node.op not in _PASS_THROUGH or not node.input:
            break
        node = nodes.get(node.input[0].split(":")[0].lstrip("^"))
    return None if node is None else str(node.op)


def _frozen_graph(loaded: Any) -> tuple[Any, str]:
    import tensorflow as tf  # noqa: PLC0415
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2  # noqa: PLC0415

    if loaded.keras_model is not None:
        model = loaded.keras_model
        function = tf.function(lambda x: model(x, training=False))
        concrete = function.get_concrete_function(tf.TensorSpec((1, *loaded.input_shape), tf.float32))
    else:
        concrete = loaded.signature
    frozen = convert_variables_to_constants_v2(concrete)
    outputs = tf.nest.flatten(frozen.outputs)
    return frozen.graph.as_graph_def(), outputs[0].name.split(":")[0]
