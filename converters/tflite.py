"""Keras / SavedModel -> TFLite: fp32, fp16, dynamic-range and full-integer int8.

The converter reads the model's SavedModel export (inference mode), so training-only layers (Dropout,
RandomZoom/Contrast/Rotation/Flip, ...) are the identity and never reach the flatbuffer. Full-integer int8 uses TFLITE_BUILTINS_INT8 (per-channel weights by default) with a
representative dataset taken from the calibration inputs.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from edgecnn.errors import ConversionError
from edgecnn.manifest import TensorSpec

from edgecnn.converters.formats import IoType
from edgecnn.converters.steps import BuildJob, BuiltArtifact, ensure_savedmodel

METADATA_NAME = "edgecnn_manifest"
_IO_DTYPES = {IoType.INT8: "int8", IoType.UINT8: "uint8", IoType.FLOAT: "float32"}


def build(job: BuildJob) -> BuiltArtifact:
    savedmodel = ensure_savedmodel(job)
    data = convert_bytes(savedmodel, job.fmt.precision, job.calib_inputs, job.io, job.per_channel, job.progress,
                         model=job.model)
    Path(job.out_path).write_bytes(data)
    inp, out = tflite_io_specs(job.out_path)
    notes = ()
    if job.fmt.precision == "int8" and job.per_channel is False:
        notes = ("per-tensor weights",)
    return BuiltArtifact(fmt=job.fmt, path=job.out_path, input=inp, output=out, notes=notes)


def convert_bytes(savedmodel_dir: Path, precision: str, calib_inputs: np.ndarray, io: IoType = IoType.INT8,
                  per_channel: bool = True, progress=None, model: Any = None) -> bytes:
    """The TFLite flatbuffer of a SavedModel at ``precision``: fp32 | fp16 | dynamic | int8.

    ``model`` (the LoadedModel, optional) lets a failure name the Keras layer behind an unsupported op.
    Raises ConversionError naming the cause (edgecnn.converters.diagnose), also for a flatbuffer whose
    variables were not frozen.
    """
    import tensorflow as tf  # noqa: PLC0415

    from edgecnn.converters import diagnose  # noqa: PLC0415
    from edgecnn.native_log import active  # noqa: PLC0415

    converter = _converter(tf, savedmodel_dir)
    if precision == "fp16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        _set_full_integer(tf, converter, calib_inputs, io, per_channel, progress)
    elif precision != "fp32":
        raise ConversionError(f"unknown TFLite precision '{precision}'")
    log = active()
    mark = log.size() if log is not None else 0
    try:
        data = bytes(converter.convert())
    except Exception as exc:  # noqa: BLE001 - the converter raises ConverterError, RuntimeError, ValueError...
        text = log.text(since=mark) if log is not None else ""
        raise diagnose.conversion_error(exc, f"TFLite {precision}", model, text) from None
    diagnose.check_frozen(data, f"TFLite {precision}")
    return data


def _converter(tf, savedmodel_dir: Path):
    # Keras 3 models are exported first (model.export): a concrete function traced here would keep its
    # weights as resource variables the converter does not freeze. The export runs in inference mode.
    return tf.lite.TFLiteConverter.from_saved_model(str(savedmodel_dir), signature_keys=[tflite_signature(savedmodel_dir)])


def tflite_signature(savedmodel_dir: Path) -> str:
    """edgecnn's own export carries a static batch-1 signature for TFLite; other SavedModels use their default."""
    from tensorflow.python.saved_model import loader_impl  # noqa: PLC0415 - reads the proto, loads no graph

    from edgecnn.converters.steps import STATIC_BATCH_SIGNATURE  # noqa: PLC0415

    keys = loader_impl.parse_saved_model(str(savedmodel_dir)).meta_graphs[0].signature_def.keys()
    return STATIC_BATCH_SIGNATURE if STATIC_BATCH_SIGNATURE in keys else "serving_default"


def _set_full_integer(tf, converter, calib_inputs: np.ndarray, io: IoType, per_channel: bool, progress=None) -> None:
    if calib_inputs is None or len(calib_inputs) == 0:
        raise ConversionError("int8 conversion needs calibration data", "pass --calib DATA")
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: _representative(calib_inputs, progress)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    io_type = {IoType.INT8: tf.int8, IoType.UINT8: tf.uint8, IoType.FLOAT: tf.float32}[IoType(io)]
    converter.inference_input_type = io_type
    converter.inference_output_type = io_type
    if not per_channel:
        converter._experimental_disable_per_channel = True  # noqa: SLF001 - the converter's only switch for it


def _representative(calib_inputs: np.ndarray, progress=None) -> Iterator[list[np.ndarray]]:
    total = len(calib_inputs)
    for i in range(total):
        yield [np.asarray(calib_inputs[i:i + 1], dtype=np.float32)]
        if progress is not None:
            progress(i + 1, total)


def tflite_io_specs(path: Path) -> tuple[TensorSpec, TensorSpec]:
    """Input and output TensorSpec (shape with batch 1, dtype, scale/zero point) as the interpreter sees them."""
    interpreter = make_interpreter(Path(path))
    return _spec(interpreter.get_input_details()[0]), _spec(interpreter.get_output_details()[0])


def _spec(detail: dict) -> TensorSpec:
    scale, zero = detail.get("quantization", (0.0, 0))
    shape = tuple(int(d) for d in detail["shape"])
    return TensorSpec(name=str(detail["name"]), shape=(1, *shape[1:]), dtype=np.dtype(detail["dtype"]).name,
                      scale=float(scale), zero_point=int(zero))


def make_interpreter(path: Path, threads: int | None = None):
    """A LiteRT interpreter (ai_edge_litert, else tflite_runtime, else tf.lite), tensors allocated."""
    try:
        from ai_edge_litert.interpreter import Interpreter  # noqa: PLC0415
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # noqa: PLC0415
        except ImportError:
            import tensorflow as tf  # noqa: PLC0415

            Interpreter = tf.lite.Interpreter  # noqa: N806
    interpreter = Interpreter(model_path=str(path), num_threads=threads)
    interpreter.allocate_tensors()
    return interpreter


def embed_metadata(path: Path, text: str) -> bool:
    """Add ``text`` (the manifest JSON) in a named metadata buffer of the flatbuffer (what the TFLite
    metadata tools read); returns False when this TensorFlow lacks the flatbuffer utilities."""
    try:
        from tensorflow.lite.python import schema_py_generated as schema  # noqa: PLC0415
        from tensorflow.lite.tools import flatbuffer_utils  # noqa: PLC0415
    except ImportError:
        return False
    model = flatbuffer_utils.read_model(str(path))
    model.metadata = [m for m in (model.metadata or []) if _decode(m.name) != METADATA_NAME]
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
    model.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name = METADATA_NAME
    entry.buffer = len(model.buffers) - 1
    model.metadata.append(entry)
    flatbuffer_utils.write_model(model, str(path))
    return True


def read_metadata(path: Path) -> dict[str, Any] | None:
    """The manifest mapping ``embed_metadata`` stored, or None."""
    from tensorflow.lite.tools import flatbuffer_utils  # noqa: PLC0415

    model = flatbuffer_utils.read_model(str(path))
    for entry in model.metadata or []:
        if _decode(entry.name) == METADATA_NAME:
            return json.loads(bytes(model.buffers[entry.buffer].data).decode("utf-8"))
    return None


def _decode(name: Any) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)
