"""Label-free preprocessing evidence: BatchNormalization statistics seen by the data vs those stored in training.

A trained BatchNormalization layer keeps the running mean and variance of its input over the training data
(``moving_mean``, ``moving_variance``). Feed the float model data preprocessed the way training did and the
first few such layers see inputs with about those statistics; feed pixels 255 times too large, or in
[-1, 1] instead of [0, 1], and the inputs of the first layers move by many standard deviations or change
their variance by a large factor. Per layer and channel the observed input is standardized by the stored
statistics, z = (x - moving_mean) / sqrt(moving_variance + epsilon), and compared with N(0, 1) by the
Kullback-Leibler divergence of a Gaussian with z's mean and variance (0 when they match, in nats).

A layer still at its initial statistics (moving mean 0, variance 1: untrained, or a model built with
weights=None) says nothing about training data and is skipped.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Iterator, Optional, Sequence

import numpy as np

FIRST_LAYERS = 3        # the layers nearest the input react to the input scale most directly
PROBE_SAMPLES = 64      # per preprocessing compared: tens of thousands of activations per channel and layer
CHUNK_BYTES = 8 << 20   # of model input per forward pass (224x224x3 float32: 13 samples). MobileNetV2 with 32 MiB
                        # chunks peaked at 6.8 GB RSS in eager mode, with 8 MiB at 2.1 GB, for 30 % more CPU time
MIN_VAR_RATIO = 1e-6    # a channel whose input is constant (dead) is floored here instead of ln(0)


@dataclass(frozen=True)
class LayerDivergence:
    """One BatchNormalization layer's input statistics vs its stored ones, summarised over channels."""

    layer: str
    channels: int
    mean_shift: float     # median over channels of |mean(z)|, in stored standard deviations
    log_var_ratio: float  # median over channels of ln(var(z)): 0 when the variance matches, ln(255^2) = 11 at x255
    divergence: float     # median over channels of KL(N(mean z, var z) || N(0, 1)), nats


@dataclass(frozen=True)
class BatchNormEvidence:
    """The first trained BatchNormalization layers as one preprocessing's data sees them."""

    layers: tuple[LayerDivergence, ...]
    skipped_initial: int = 0  # layers at their initial statistics, ignored

    @property
    def score(self) -> float:
        """Mean divergence over the layers (nats); NaN when no trained layer was seen."""
        return float(np.mean([layer.divergence for layer in self.layers])) if self.layers else math.nan


class _Enough(Exception):
    """Raised inside the forward pass once the wanted layers have been seen: the rest need not run."""


def trained_batchnorm_layers(model: Any) -> tuple[list[Any], int]:
    """(BatchNormalization layers with trained statistics, count of those still at their initial ones)."""
    import keras  # noqa: PLC0415

    trained, initial = [], 0
    for layer in _walk(model):
        if not isinstance(layer, keras.layers.BatchNormalization) or not layer.built:
            continue
        mean = np.asarray(layer.moving_mean, dtype=np.float64)
        var = np.asarray(layer.moving_variance, dtype=np.float64)
        if np.allclose(mean, 0.0, atol=1e-6) and np.allclose(var, 1.0, atol=1e-6):
            initial += 1
        else:
            trained.append(layer)
    return trained, initial


def batchnorm_evidence(model: Any, sets: list[np.ndarray], layers: Optional[list[Any]] = None,
                       skipped_initial: int = 0, first: int = FIRST_LAYERS) -> list[BatchNormEvidence]:
    """For each input set, the statistics of the inputs of the first ``first`` trained BatchNormalization layers.

    ``model``: a keras.Model (nested models such as keras.applications inside a Sequential included);
    ``sets``: float32 inputs (N, *input shape), already preprocessed, one per preprocessing to compare (arrays,
    or anything sliced like one); at most PROBE_SAMPLES of each are used. All sets go through the model together,
    in inference mode, in chunks of at most CHUNK_BYTES, and each pass stops after the last wanted layer.
    """
    if layers is None:
        layers, skipped_initial = trained_batchnorm_layers(model)
    if not layers or not sets:
        return [BatchNormEvidence((), skipped_initial) for _ in sets]
    lengths = [min(len(s), PROBE_SAMPLES) for s in sets]
    sums: dict[tuple[int, int], list] = {}
    order: list[Any] = []
    wanted = min(first, len(layers))
    chunk = {"owner": np.zeros(0, dtype=np.int64)}
    originals = {id(layer): layer.call for layer in layers}

    def recorder(layer):
        original = originals[id(layer)]

        def call(inputs, *args, **kwargs):
            _accumulate(sums, order, layer, np.asarray(inputs), chunk["owner"])
            if len(order) >= wanted and layer is order[wanted - 1]:
                raise _Enough()
            return original(inputs, *args, **kwargs)
        return call

    # Keras 3 has no forward hooks: each layer's bound ``call`` is shadowed for the probe, and always restored.
    for layer in layers:
        object.__setattr__(layer, "call", recorder(layer))
    try:
        with warnings.catch_warnings():  # Keras warns that a bare array is not its ['image'] input structure
            warnings.simplefilter("ignore")
            for owner, rows in packed_chunks(sets, lengths):
                chunk["owner"] = owner
                try:
                    model(rows, training=False)
                except _Enough:
                    pass
    finally:
        for layer in layers:
            object.__delattr__(layer, "call")
    return [BatchNormEvidence(tuple(_divergence(layer, sums[(id(layer), index)]) for layer in order[:wanted]
                                    if (id(layer), index) in sums), skipped_initial) for index in range(len(sets))]


def packed_chunks(sets: Sequence[Any], lengths: Sequence[int]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(owning set per row, float32 rows): the first ``lengths[i]`` rows of each set, packed into model batches of
    at most CHUNK_BYTES. A set is anything sliced like an array (``set[a:b]``), made on demand, so a large model
    input (224x224x3 under seven preprocessings) never sits in memory all at once."""
    if not sets:
        return
    step = max(1, CHUNK_BYTES // max(np.asarray(sets[0][0:1], dtype=np.float32).nbytes, 1))
    owners, rows, count = [], [], 0
    for index, (source, length) in enumerate(zip(sets, lengths)):
        start = 0
        while start < length:
            take = min(length - start, step - count)
            rows.append(np.asarray(source[start:start + take], dtype=np.float32))
            owners.append(np.full(take, index))
            count, start = count + take, start + take
            if count == step:
                yield np.concatenate(owners), np.concatenate(rows)
                owners, rows, count = [], [], 0
    if rows:
        yield np.concatenate(owners), np.concatenate(rows)


def _accumulate(sums: dict, order: list, layer: Any, x: np.ndarray, owner: np.ndarray) -> None:
    if not any(seen is layer for seen in order):
        order.append(layer)
    axis = layer.axis if isinstance(layer.axis, int) else layer.axis[0]
    for index in np.unique(owner):
        part = x[owner == index]
        moved = np.moveaxis(part, axis, -1).reshape(-1, x.shape[axis])
        entry = sums.setdefault((id(layer), int(index)), [np.zeros(moved.shape[1]), np.zeros(moved.shape[1]), 0])
        entry[0] += moved.sum(axis=0, dtype=np.float64)
        entry[1] += np.einsum("ij,ij->j", moved, moved, dtype=np.float64)
        entry[2] += moved.shape[0]


def _divergence(layer: Any, entry: list) -> LayerDivergence:
    total, squares, count = entry[0], entry[1], max(entry[2], 1)
    mean = total / count
    var = np.maximum(squares / count - mean ** 2, 0.0)
    moving_mean = np.asarray(layer.moving_mean, dtype=np.float64)
    scale = np.asarray(layer.moving_variance, dtype=np.float64) + float(layer.epsilon)
    z_mean = (mean - moving_mean) / np.sqrt(scale)
    z_var = np.maximum(var / scale, MIN_VAR_RATIO)
    kl = 0.5 * (z_var + z_mean ** 2 - 1.0 - np.log(z_var))
    return LayerDivergence(layer=layer.name, channels=int(len(mean)), mean_shift=float(np.median(np.abs(z_mean))),
                           log_var_ratio=float(np.median(np.log(z_var))), divergence=float(np.median(kl)))


def _walk(model: Any) -> Iterator[Any]:
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from _walk(layer)
