"""Keras -> fp32 ONNX through a SavedModel and tf2onnx, plus reading an ONNX model's I/O and metadata.

tf2onnx's ``from_keras`` does not handle Keras 3 models and tf2onnx 1.17 has no ``from_saved_model``
in its convert API, so the model is exported as a SavedModel, frozen by ``tf2onnx.tf_loader`` and
converted by ``tf2onnx.convert.from_graph_def`` in this process (a child running ``python -m
tf2onnx.convert`` would import TensorFlow a second time: 3 to 10 s on a 2-core machine).
``from_graph_def`` keeps ops it cannot convert as TensorFlow ops, so the result is checked against the
ONNX operator schemas and the ONNX checker: such an op is a ConversionError, not a file no runtime loads.

Keras 3's augmentation layers still build random ops into an inference-mode graph (tf2onnx then writes
ops ONNX does not have), so before export the training-only layers are swapped for Identity in a clone
that shares the original weights. A SavedModel folder is converted as it is.

The ONNX model keeps the Keras layout: one NHWC float32 input named ``input`` whose batch dimension is
dynamic (a symbolic dim, reported as -1 by :func:`onnx_io_specs`), and one output named ``output``.
Runners may feed any batch size.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
from pathlib import Path
from typing import Any, Iterator

from edgecnn.errors import ConversionError, InputPathError, ModelLoadError, OutputPathError
from edgecnn.fileio import atomic_path
from edgecnn.manifest import TensorSpec

INPUT_NAME = "input"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 17  # per-channel QDQ needs >= 13; a runtime older than opset 17 can be given a lower --opset
MANIFEST_KEY = "edgecnn_manifest"
# Layers that are the identity at inference. RandomCrop is not here: at inference it crops/resizes.
TRAINING_ONLY_LAYERS = frozenset({
    "Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "AlphaDropout", "GaussianDropout",
    "GaussianNoise", "ActivityRegularization",
    "RandomFlip", "RandomRotation", "RandomZoom", "RandomContrast", "RandomTranslation", "RandomBrightness",
    "RandomHue", "RandomSaturation", "RandomSharpness", "RandomShear", "RandomGrayscale", "RandomColorJitter",
    "RandomColorDegeneration", "RandomPosterization", "RandomInvert", "RandomErasing", "RandomGaussianBlur",
    "RandomPerspective", "RandomElasticTransform", "AugMix", "RandAugment", "CutMix", "MixUp",
})


def export_onnx(model: Any, out_path: Path, opset: int | None = None) -> Path:
    """Convert a loaded Keras 3 model, or a SavedModel folder, to fp32 ONNX at ``out_path`` (atomically).

    Input: NHWC float32 named ``input`` with a dynamic batch dimension; output named ``output``.
    """
    out_path = Path(out_path)
    opset = DEFAULT_OPSET if opset is None else int(opset)
    with tempfile.TemporaryDirectory(prefix="edgecnn-onnx-") as work:
        saved_model = _as_saved_model(model, Path(work) / "saved_model")
        raw = Path(work) / "raw.onnx"
        _convert_saved_model(saved_model, raw, opset)
        try:
            with atomic_path(out_path) as tmp:
                _write_renamed(raw, tmp)
        except OSError as exc:
            raise OutputPathError(f"cannot write {out_path} ({exc.strerror or exc})", "choose a writable folder") from None
    return out_path


def onnx_io_specs(path: Path) -> tuple[TensorSpec, TensorSpec]:
    """The model's one input and one output: name, shape (a symbolic or unknown dim as -1), dtype."""
    model = _load(path)
    initializers = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    outputs = list(model.graph.output)
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(f"ONNX model {path} has {len(inputs)} inputs and {len(outputs)} outputs",
                             "edgecnn handles models with one input and one output")
    return _tensor_spec(inputs[0]), _tensor_spec(outputs[0])


def embed_metadata(path: Path, mapping: dict[str, str]) -> None:
    """Set ONNX ``metadata_props`` entries (replacing same-named ones) and rewrite the file atomically."""
    import onnx  # noqa: PLC0415

    model = _load(path)
    merged = {prop.key: prop.value for prop in model.metadata_props}
    merged.update({str(key): str(value) for key, value in mapping.items()})
    del model.metadata_props[:]
    for key, value in merged.items():
        model.metadata_props.add(key=key, value=value)
    try:
        with atomic_path(Path(path)) as tmp:
            onnx.save(model, str(tmp))
    except OSError as exc:
        raise OutputPathError(f"cannot rewrite {path} ({exc.strerror or exc})", "check the folder's permissions") from None


def read_metadata(path: Path) -> dict[str, str]:
    """The model's ``metadata_props`` as a dict (the manifest JSON lives under ``edgecnn_manifest``)."""
    return {prop.key: prop.value for prop in _load(path).metadata_props}


# -- helpers -------------------------------------------------------------------------------------
def _as_saved_model(model: Any, work_dir: Path) -> Path:
    """A SavedModel folder for ``model``: the folder itself when given one, else a fresh export."""
    if isinstance(model, (str, Path)):
        return _check_saved_model_dir(Path(model))
    if not callable(getattr(model, "export", None)):
        raise ConversionError(f"cannot export a {type(model).__name__} to ONNX",
                              "pass a loaded Keras 3 model or a SavedModel folder")
    from edgecnn.converters.steps import export_savedmodel  # noqa: PLC0415 - the one SavedModel export

    export_savedmodel(_inference_model(model), work_dir)
    return work_dir


def _inference_model(model: Any) -> Any:
    """``model`` with every training-only layer (also in nested models) replaced by Identity.

    The other layers are the original objects, so the weights are shared, not copied. A subclassed
    model cannot be cloned and is exported as it is.
    """
    import keras  # noqa: PLC0415

    if not _has_training_only_layer(model):
        return model

    def swap(layer: Any) -> Any:
        if type(layer).__name__ in TRAINING_ONLY_LAYERS:
            return keras.layers.Identity(name=layer.name)
        return layer

    try:
        return keras.models.clone_model(model, clone_function=swap, recursive=True)
    except (ValueError, TypeError):
        return model


def _has_training_only_layer(model: Any) -> bool:
    for layer in getattr(model, "layers", ()):
        if type(layer).__name__ in TRAINING_ONLY_LAYERS or _has_training_only_layer(layer):
            return True
    return False


def _check_saved_model_dir(path: Path) -> Path:
    if not path.exists():
        raise InputPathError(f"model path {path} does not exist", "give a SavedModel folder or a loaded Keras model")
    if not path.is_dir() or not (path / "saved_model.pb").is_file():
        raise ModelLoadError(f"{path} is not a SavedModel folder (no saved_model.pb)",
                             "load .keras/.h5 files with Keras and pass the model")
    return path


def _convert_saved_model(saved_model: Path, out: Path, opset: int) -> None:
    import onnx  # noqa: PLC0415
    from tf2onnx import tf_loader  # noqa: PLC0415
    from tf2onnx.convert import from_graph_def  # noqa: PLC0415

    try:
        with _quiet_loggers():
            graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
                str(saved_model), None, None, signatures=_signatures(saved_model),
                return_tensors_to_rename=True)
            proto, _ = from_graph_def(graph_def, name=saved_model.name, input_names=inputs, output_names=outputs,
                                      opset=opset, tensors_to_rename=renames)
    except Exception as exc:  # noqa: BLE001 - TensorFlow and tf2onnx raise many types; report one line
        raise ConversionError(f"tf2onnx failed to convert the SavedModel ({type(exc).__name__}: "
                              f"{_first_line(str(exc))})",
                              "see whether every layer has an ONNX equivalent, or try another --opset") from None
    _refuse_unconverted(proto)
    onnx.save(proto, str(out))


def _refuse_unconverted(proto: Any) -> None:
    """Raise if tf2onnx left TensorFlow ops that no ONNX runtime can run (it keeps going past them)."""
    import onnx  # noqa: PLC0415

    left = sorted({node.op_type for node in proto.graph.node if not onnx.defs.has(node.op_type, node.domain)})
    if left:
        raise ConversionError(f"tf2onnx cannot convert the TensorFlow op(s) {', '.join(left)}",
                              "remove or replace the layers that use them (training-only layers are dropped "
                              "automatically for Keras models, not for SavedModel folders)")


@contextlib.contextmanager
def _quiet_loggers() -> Iterator[None]:
    """Silence tf2onnx's notes and errors and TensorFlow's v1-API deprecation warnings while converting."""
    loggers = [logging.getLogger(name) for name in ("tf2onnx", "tensorflow")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)  # failures come back as one ConversionError instead
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _write_renamed(raw: Path, dest: Path) -> None:
    """Give the single input and output stable names, check the graph, and save it to ``dest``."""
    import onnx  # noqa: PLC0415

    model = onnx.load(str(raw))
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = [value for value in graph.input if value.name not in initializers]
    if len(inputs) == 1:
        _rename_tensor(graph, inputs[0].name, INPUT_NAME)
    if len(graph.output) == 1:
        _rename_tensor(graph, graph.output[0].name, OUTPUT_NAME)
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise ConversionError(f"tf2onnx produced an invalid ONNX model ({_first_line(str(exc))})") from None
    onnx.save(model, str(dest))


def _rename_tensor(graph: Any, old: str, new: str) -> None:
    if old == new:
        return
    for value in list(graph.input) + list(graph.output) + list(graph.value_info):
        if value.name == old:
            value.name = new
    for node in graph.node:
        node.input[:] = [new if name == old else name for name in node.input]
        node.output[:] = [new if name == old else name for name in node.output]


def _load(path: Path) -> Any:
    import onnx  # noqa: PLC0415

    path = Path(path)
    if not path.is_file():
        raise InputPathError(f"ONNX model {path} does not exist", "give the path of a .onnx file")
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises DecodeError and friends
        raise ModelLoadError(f"{path} is not a readable ONNX model ({type(exc).__name__})",
                             "re-export it, or check that the file is complete") from None


def _tensor_spec(value: Any) -> TensorSpec:
    import onnx  # noqa: PLC0415

    tensor_type = value.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(tensor_type.elem_type).name
    shape = tuple(dim.dim_value if dim.HasField("dim_value") else -1 for dim in tensor_type.shape.dim)
    return TensorSpec(name=value.name, shape=shape, dtype=dtype)


def _first_line(text: str) -> str:
    stripped = text.strip()
    return stripped.splitlines()[0][:300] if stripped else "no message"


def _signatures(saved_model: Path) -> list[str] | None:
    """Convert only the default signature: edgecnn's export also carries a batch-1 one for TFLite."""
    from tensorflow.python.saved_model import loader_impl  # noqa: PLC0415 - reads the proto, loads no graph

    keys = list(loader_impl.parse_saved_model(str(saved_model)).meta_graphs[0].signature_def.keys())
    keys = [k for k in keys if not k.startswith("__")]
    return ["serving_default"] if "serving_default" in keys and len(keys) > 1 else None
