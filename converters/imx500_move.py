"""A Keras 3 model described as plain data (layer graph + weights) that tf.keras 2.15 rebuilds.

The IMX500 toolchain (MCT, imx500-converter) runs only on TensorFlow 2.15 / Keras 2, which cannot read a
Keras 3 ``.keras`` file. So the model crosses as a JSON graph of layers (class, the config keys that mean
the same in both Keras versions, input layer names) plus every layer's weights in an ``.npz``; the
toolchain side (imx500_worker.py) rebuilds it with the functional API and checks its outputs against
Keras 3's on the calibration samples.

Only layers in ``PORTABLE`` cross; anything else is refused with a message naming the layer. Layers that
act only in training (Dropout, Random* augmentation) are the identity at inference and are left out.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgecnn.errors import ConversionError

from edgecnn.converters.keras_load import TRAINING_ONLY_LAYERS

_CONV = ("kernel_size", "strides", "padding", "data_format", "dilation_rate", "activation", "use_bias")
_POOL = ("pool_size", "strides", "padding", "data_format")
# Layer class -> the config keys carried across (same meaning in Keras 3 and tf.keras 2.15).
PORTABLE: dict[str, tuple[str, ...]] = {
    "Conv2D": ("filters", "groups", *_CONV),
    "DepthwiseConv2D": ("depth_multiplier", *_CONV),
    "SeparableConv2D": ("filters", "depth_multiplier", *_CONV),
    "Dense": ("units", "activation", "use_bias"),
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "ReLU": ("max_value", "negative_slope", "threshold"),
    "LeakyReLU": ("negative_slope",),
    "Activation": ("activation",),
    "Softmax": ("axis",),
    "MaxPooling2D": _POOL,
    "AveragePooling2D": _POOL,
    "GlobalAveragePooling2D": ("data_format", "keepdims"),
    "GlobalMaxPooling2D": ("data_format", "keepdims"),
    "Flatten": ("data_format",),
    "Reshape": ("target_shape",),
    "ZeroPadding2D": ("padding", "data_format"),
    "UpSampling2D": ("size", "data_format", "interpolation"),
    "Add": (),
    "Subtract": (),
    "Multiply": (),
    "Average": (),
    "Maximum": (),
    "Minimum": (),
    "Concatenate": ("axis",),
    "Rescaling": ("scale", "offset"),
}
RENAMED = {("LeakyReLU", "negative_slope"): "alpha"}  # Keras 3 name -> tf.keras 2.15 name
# Activations tf.keras 2.15 knows by the same name (custom or newer ones do not cross).
ACTIVATIONS = ("linear", "relu", "relu6", "softmax", "sigmoid", "hard_sigmoid", "tanh", "elu", "selu", "softplus",
               "softsign", "swish", "silu", "gelu", "exponential", "leaky_relu", "mish")
MODEL_CLASSES = ("Functional", "Sequential", "Model")


@dataclass(frozen=True)
class MovedModel:
    """What crosses to the toolchain: ``graph`` (JSON-able) and ``weights`` ("<layer>/<i>" -> array)."""

    graph: dict[str, Any]
    weights: dict[str, np.ndarray]
    dropped: tuple[str, ...]  # training-only layers left out

    def write(self, folder: Path) -> tuple[Path, Path]:
        import json  # noqa: PLC0415

        graph_path, weights_path = Path(folder) / "graph.json", Path(folder) / "weights.npz"
        graph_path.write_text(json.dumps(self.graph), encoding="utf-8")
        np.savez(weights_path, **self.weights)
        return graph_path, weights_path


def describe(keras_model: Any, input_shape: tuple[int, ...]) -> MovedModel:
    """The layer graph and weights of a Keras 3 model; ConversionError naming the first layer that cannot move."""
    config = keras_model.get_config()
    nodes = list(_nodes(config))
    kept: list[dict[str, Any]] = []
    alias: dict[str, str] = {}  # a dropped layer's name -> the layer whose output it passed on
    dropped = []
    input_name = "input"
    for name, cls, layer_config, inputs in nodes:
        inputs = [alias.get(i, i) for i in inputs]
        if cls == "InputLayer":
            input_name = name
            continue
        if cls in TRAINING_ONLY_LAYERS:
            if len(inputs) != 1:
                raise _refuse(name, cls, "it has several inputs")
            alias[name] = inputs[0]
            dropped.append(name)
            continue
        kept.append({"name": name, "class": cls, "config": portable_config(name, cls, layer_config),
                     "inputs": inputs or [input_name]})
    if not kept:
        raise ConversionError("the model has no layer to convert for the IMX500")
    output = alias.get(_output_name(config, kept), _output_name(config, kept))
    graph = {"input": {"name": input_name, "shape": list(input_shape)}, "layers": kept, "output": output}
    weights = {f"{layer['name']}/{i}": np.asarray(w) for layer in kept
               for i, w in enumerate(keras_model.get_layer(layer["name"]).get_weights())}
    return MovedModel(graph, weights, tuple(dropped))


def portable_config(name: str, cls: str, config: dict[str, Any]) -> dict[str, Any]:
    """The config tf.keras 2.15 rebuilds ``cls`` from; ConversionError when the layer does not cross."""
    if cls in MODEL_CLASSES:
        raise _refuse(name, cls, "it is a nested model; build the network as one flat functional model")
    if cls not in PORTABLE:
        raise _refuse(name, cls, "tf.keras 2.15 has no equivalent layer edgecnn can rebuild")
    out: dict[str, Any] = {"name": name, "dtype": "float32"}
    for key in PORTABLE[cls]:
        if key in config:
            out[RENAMED.get((cls, key), key)] = config[key]
    activation = out.get("activation")
    if activation is not None and activation not in ACTIVATIONS:
        raise _refuse(name, cls, f"its activation {activation!r} is not a built-in tf.keras 2.15 activation")
    return out


def _refuse(name: str, cls: str, why: str) -> ConversionError:
    return ConversionError(f"layer '{name}' ({cls}) cannot be moved to the IMX500 toolchain: {why}",
                           "replace it with built-in layers (Conv2D, BatchNormalization, ReLU, pooling, Dense, ...)"
                           " or leave imx500 out of --formats")


def _nodes(config: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any], list[str]]]:
    """(name, class, config, input layer names) per layer, in order; Sequential layers feed each other."""
    layers = config.get("layers", [])
    sequential = not any("inbound_nodes" in layer for layer in layers)
    previous: list[str] = []
    for layer in layers:
        cls = str(layer.get("class_name"))
        layer_config = layer.get("config") or {}
        name = str(layer.get("name") or layer_config.get("name") or cls)
        if sequential:
            yield name, cls, layer_config, previous
            previous = [name]
            continue
        inbound = layer.get("inbound_nodes") or []
        if len(inbound) > 1:
            raise _refuse(name, cls, "it is shared (called more than once)")
        yield name, cls, layer_config, list(_history(inbound[0])) if inbound else []


def _history(value: Any) -> Iterator[str]:
    """The layer names in a Keras 3 node's arguments (its ``keras_history`` entries), in argument order."""
    if isinstance(value, dict):
        history = (value.get("config") or {}).get("keras_history") if value.get("class_name") == "__keras_tensor__" else None
        if history:
            yield str(history[0])
            return
        for item in value.values():
            yield from _history(item)
    elif isinstance(value, (list, tuple)):  # get_config() gives call arguments as tuples
        for item in value:
            yield from _history(item)


def _output_name(config: dict[str, Any], kept: list[dict[str, Any]]) -> str:
    outputs = config.get("output_layers")
    if outputs:
        first = outputs[0] if isinstance(outputs[0], (list, tuple)) else outputs
        return str(first[0])
    return kept[-1]["name"]
