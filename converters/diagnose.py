"""Why a conversion fails, named before and after the converter runs, as one-line typed errors with the fix.

Before (``preflight``, on the loaded model): a channels-first layout is refused, a mixed-precision model
(layers computing in float16/bfloat16) is rebuilt under float32 with its float32 weights copied, and
unknown dimensions are named (``check_known_dims``). After: ``conversion_error`` turns the TFLite
converter's exception and its log into the cause (an op TFLite builtins lack, named with the Keras layer
that produced it; a graph computing in float16), and ``check_frozen`` refuses a flatbuffer that still reads
resource variables (weights that were never frozen: its outputs are garbage).
"""
from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterable, Iterator, Optional, Sequence

from edgecnn.errors import ConversionError, ModelLoadError

HALF_DTYPES = ("float16", "bfloat16")
# BuiltinOperator codes of TFLite's resource-variable ops (schema.fbs): a frozen model has none.
VARIABLE_OPS = {142: "VAR_HANDLE", 143: "READ_VARIABLE", 144: "ASSIGN_VARIABLE"}
CHANNELS_FIRST_HINT = ("rebuild the model channels_last (keras.config.set_image_data_format('channels_last') "
                       "before building it, or data_format='channels_last' in each layer), copy the weights "
                       "and save it again: edgecnn feeds (H, W, C) images")
_UNSUPPORTED = re.compile(r"'tf\.(\w+)' op is neither a custom op nor a flex op")
_OP_LIST = re.compile(r"^(?:TF Select ops|Custom ops|Flex ops): (.+)$", re.MULTILINE)
_LOCATION = re.compile(r'fused\["(\w+):", "([^"@]+)')
_HALF_TENSOR = re.compile(r"tensor<[^>]*x(?:f16|bf16)>")


# -- before the converter ------------------------------------------------------------------------
def preflight(loaded: Any) -> Any:
    """``loaded`` checked for the layouts edgecnn cannot feed, and rebuilt in float32 when it uses a
    mixed-precision policy (the returned LoadedModel's ``notes`` say so).

    Raises ModelLoadError for a channels-first model.
    """
    refuse_channels_first(loaded)
    model = getattr(loaded, "keras_model", None)
    names = mixed_precision_layers(model) if model is not None else []
    if not names:
        return loaded
    rebuilt = as_float32(model)
    note = (f"the model computes in {names[0][1]} under a mixed-precision policy ({len(names)} layer(s), "
            f"e.g. '{names[0][0]}'): rebuilt in float32 with its float32 weights copied, then converted")
    return dataclasses.replace(loaded, keras_model=rebuilt, notes=tuple(getattr(loaded, "notes", ())) + (note,))


def refuse_channels_first(loaded: Any) -> None:
    """Raise ModelLoadError (message contains "channels_first") for channels-first layers or an input shaped
    (C, H, W) with C in 1 or 3 and H, W > 4."""
    for layer in all_layers(getattr(loaded, "keras_model", None)):
        if getattr(layer, "data_format", None) == "channels_first":
            raise ModelLoadError(f"layer '{layer.name}' ({type(layer).__name__}) uses data_format='channels_first'",
                                 CHANNELS_FIRST_HINT)
    shape = tuple(loaded.input_shape)
    if len(shape) == 3 and shape[0] in (1, 3) and shape[1] > 4 and shape[2] > 4:
        raise ModelLoadError(f"the model input {shape} looks channels_first (C, H, W)", CHANNELS_FIRST_HINT)


def mixed_precision_layers(model: Any) -> list[tuple[str, str]]:
    """(layer name, compute dtype) of every layer that computes in float16 or bfloat16."""
    found = []
    for layer in all_layers(model):
        policy = getattr(layer, "dtype_policy", None)
        compute = str(getattr(policy, "compute_dtype", "") or "")
        if compute in HALF_DTYPES:
            found.append((layer.name, compute))
    return found


def as_float32(model: Any) -> Any:
    """The same architecture with every dtype policy float32 and the same (float32) weights."""
    import keras  # noqa: PLC0415

    config = _float32_config(keras.saving.serialize_keras_object(model))
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")  # the global policy may still be mixed in this process
    try:
        rebuilt = keras.saving.deserialize_keras_object(config)
    finally:
        keras.config.set_dtype_policy(previous)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _float32_config(config: Any) -> Any:
    """``config`` with mixed/half dtype policies replaced by float32 (nested models included)."""
    text = json.dumps(config)
    for name in ("mixed_float16", "mixed_bfloat16", "float16", "bfloat16"):
        text = text.replace(f'"{name}"', '"float32"')
    return json.loads(text)


def check_known_dims(shape: Sequence[Optional[int]], what: str) -> tuple[int, ...]:
    """``shape`` (with the batch dimension) without it, all known; else a ModelLoadError naming each
    unknown dimension ("height (dimension 1)")."""
    dims = tuple(shape)[1:]
    unknown = [i + 1 for i, d in enumerate(dims) if d is None]
    if unknown:
        named = [_dim_name(i, len(dims), what) for i in unknown]
        names = " and ".join([", ".join(named[:-1]), named[-1]] if len(named) > 1 else named)
        raise ModelLoadError(f"the model {what} shape {tuple(shape)} has unknown {names}",
                             "give the model a fixed input size (keras.Input((H, W, C))) and save it again")
    return tuple(int(d) for d in dims)


def _dim_name(index: int, rank: int, what: str) -> str:
    if what == "input" and rank == 3:
        return f"{('height', 'width', 'channels')[index - 1]} (dimension {index})"
    return f"dimension {index}"


def all_layers(model: Any) -> Iterator[Any]:
    """Every layer of ``model``, nested models' layers included, depth first."""
    for layer in getattr(model, "layers", None) or ():
        yield layer
        yield from all_layers(layer)


# -- after the converter -------------------------------------------------------------------------
def conversion_error(exc: BaseException, what: str, model: Any = None, log_text: str = "") -> ConversionError:
    """The ConversionError that names why ``what`` (e.g. "TFLite int8") failed, from the converter's
    exception, its log, and the model's layers (to map a TF op to the Keras layer that produced it)."""
    text = f"{exc}\n{log_text}"
    ops = unsupported_ops(text)
    if _HALF_TENSOR.search(text):
        return ConversionError(f"{what} conversion failed: the graph computes in float16 (a mixed-precision "
                               f"policy{', ops ' + ', '.join(sorted(ops)) if ops else ''})",
                               "save the model again after keras.mixed_precision.set_global_policy('float32'), or "
                               "give its .keras file (edgecnn rebuilds such a model in float32)")
    if ops:
        culprits = _culprits(text, ops, model)
        return ConversionError(f"{what} conversion failed: {culprits}",
                               "replace that layer with one TFLite supports (tensorflow.org/lite/guide/op_select_"
                               "allowlist lists the builtins), or leave this format out with --formats")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
    return ConversionError(f"{what} conversion failed ({type(exc).__name__}: {first})",
                           "the converter's own output is in the conversion log")


def unsupported_ops(text: str) -> set[str]:
    """TF op names the converter reported as neither a builtin, a custom op nor a flex op."""
    ops = set(_UNSUPPORTED.findall(text))
    for listed in _OP_LIST.findall(text):
        ops.update(name.strip() for name in listed.split(",") if name.strip())
    return ops


def _culprits(text: str, ops: Iterable[str], model: Any) -> str:
    classes = layer_classes(model)
    found: dict[str, tuple[str, str]] = {}
    for op, node in _LOCATION.findall(text):
        if op in ops and op not in found:
            found[op] = (_layer_of(node, classes), node)
    parts = []
    for op in sorted(ops):
        layer, node = found.get(op, ("", ""))
        if layer:
            kind = f" ({classes[layer]})" if layer in classes else ""
            parts.append(f"layer '{layer}'{kind} produces TF op '{op}' that TFLite builtins do not support")
        else:
            parts.append(f"TF op '{op}'{' (at ' + node + ')' if node else ''} is not supported by TFLite builtins")
    return "; ".join(parts)


def layer_classes(model: Any) -> dict[str, str]:
    """Keras layer name -> class name, nested layers included ({} for a SavedModel)."""
    keras_model = getattr(model, "keras_model", model)
    return {layer.name: type(layer).__name__ for layer in all_layers(keras_model)}


def _layer_of(node: str, classes: dict[str, str]) -> str:
    """The Keras layer whose name scope holds ``node`` ("sequential_1/upsize_1/resize/Op" -> "upsize")."""
    from edgecnn.converters.inspect import layer_of  # noqa: PLC0415 - the one tensor-name -> layer mapping

    if not classes:
        parts = [p for p in node.split("/") if p]
        return re.sub(r"_\d+$", "", parts[1]) if len(parts) > 2 else ""
    layer = layer_of(node, tuple(classes), innermost=True)
    return layer if layer in classes else ""


def check_frozen(flatbuffer: bytes, what: str) -> None:
    """Raise ConversionError when the TFLite model still reads resource variables: its weights were not
    frozen into constants, so at run time they are uninitialised (NaN or garbage outputs)."""
    from edgecnn.devices.flatbuf import walk_tflite  # noqa: PLC0415 - the one TFLite graph reader

    found = sorted(VARIABLE_OPS[code] for code in walk_tflite(flatbuffer).builtin_codes if code in VARIABLE_OPS)
    if found:
        raise ConversionError(f"{what}: the model's variables were not frozen (the flatbuffer holds "
                              f"{', '.join(found)} ops, so its weights are uninitialised at run time)",
                              "give the .keras file, or re-save the SavedModel with model.export(folder)")
