"""One format built from one model: the per-format step of the pipeline.

``build_artifact`` is deliberately small so that the fallback search (``--fallback auto``, issue 5) can
wrap it: call it again with ``job.keep_float`` naming layers to keep in float until --max-drop is met.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgecnn.errors import ConversionError, EdgecnnError
from edgecnn.fileio import atomic_path
from edgecnn.manifest import TensorSpec

from edgecnn.converters.formats import FormatSpec, IoType
from edgecnn.converters.onnx_targets import OnnxInt8Settings


@dataclass(frozen=True)
class BuildJob:
    """Everything a format builder needs. ``workdir`` is scratch space shared by the formats of one run."""

    model: Any                     # edgecnn.converters.keras_load.LoadedModel
    fmt: FormatSpec
    out_path: Path                 # where the builder writes (a temporary path; renamed into place after)
    calib_inputs: np.ndarray       # float32 model-ready inputs (N, *input_shape)
    workdir: Path
    io: IoType = IoType.INT8
    calib_method: str = "minmax"
    per_channel: bool = True
    keep_float: tuple[str, ...] = ()  # layer/node names to leave in float (the fallback hook)
    opset: Optional[int] = None
    onnx: OnnxInt8Settings = OnnxInt8Settings()  # onnx-int8: activation type and float head, per target
    shared: dict = field(default_factory=dict, compare=False)  # cache across formats (SavedModel, fp32 ONNX)
    metadata: str = ""             # JSON embedded in the artifact (the manifest without artifact entries)
    progress: Optional[Callable[[int, int], None]] = field(default=None, compare=False)  # calibration (done, total)


@dataclass(frozen=True)
class BuiltArtifact:
    fmt: FormatSpec
    path: Path
    input: TensorSpec
    output: TensorSpec
    notes: tuple[str, ...] = ()


Builder = Callable[[BuildJob], BuiltArtifact]


def build_artifact(job: BuildJob, final_path: Path) -> BuiltArtifact:
    """Build ``job.fmt`` and move it atomically to ``final_path``; a failure leaves nothing behind."""
    builder: Builder = job.fmt.resolve_builder()
    with atomic_path(final_path) as tmp:
        try:
            built = builder(replace(job, out_path=tmp))
            notes = embed_metadata(job.fmt.family, tmp, job.metadata) if job.metadata else ()
        except EdgecnnError:
            raise
        except Exception as exc:  # noqa: BLE001 - converters raise anything; report it as one line
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:240]
            if os.environ.get("EDGECNN_DEBUG"):
                raise
            raise ConversionError(f"{job.fmt.name} conversion failed ({type(exc).__name__}: {first})",
                                  "set EDGECNN_DEBUG=1 for details, or leave this format out with --formats") from None
    return replace(built, path=final_path, notes=built.notes + notes)


def embed_metadata(family: str, path: Path, text: str) -> tuple[str, ...]:
    """Embed the manifest JSON in the artifact; returns notes for the manifest."""
    if family == "onnx":
        from edgecnn.converters.onnx_step import embed  # noqa: PLC0415

        embed(path, text)
        return ("manifest embedded in metadata_props['edgecnn_manifest']",)
    from edgecnn.converters.tflite import METADATA_NAME, embed_metadata as embed_tflite  # noqa: PLC0415

    if embed_tflite(path, text):
        return (f"manifest embedded as TFLite metadata '{METADATA_NAME}'",)
    return ("manifest not embedded: this TensorFlow lacks the flatbuffer tools; see manifest.json",)


STATIC_BATCH_SIGNATURE = "serve_batch1"


def ensure_savedmodel(job: BuildJob) -> Path:
    """The model as a SavedModel (inference mode), exported once per run into ``job.workdir``; both the
    TFLite converter and tf2onnx read it. A SavedModel folder is exported again too (see export_savedmodel)."""
    cached = job.shared.get("savedmodel")
    if cached is not None:
        return cached
    target = Path(job.workdir) / "savedmodel"
    export_savedmodel(job.model, target)
    job.shared["savedmodel"] = target
    return target


def export_savedmodel(model: Any, target: Path) -> None:
    """The one SavedModel export: a "serve" signature with a dynamic batch (the default one, read by tf2onnx)
    and a static batch-1 "serve_batch1" one (read by the TFLite converter), input named ``input``.

    ``model``: a keras.Model, an edgecnn LoadedModel, or a SavedModel folder. A Keras model is called with
    ``training=False``: model.export alone traces the Random* augmentation layers as random ops (unsupported
    by TFLite, wrong at inference). A SavedModel folder is re-saved from its loaded serving signature: a
    ``tf.saved_model.save(keras_model)`` folder holds two resource handles per weight (the signature reads
    one, the checkpoint restores the other), so the TFLite converter, which restores the checkpoint and
    freezes by handle, keeps the weights as uninitialised variables (NaN outputs). Re-saved, every weight
    has one handle and freezes. Raises ConversionError when the export fails.
    """
    keras_model = getattr(model, "keras_model", None) if not _is_keras(model) else model
    try:
        if keras_model is not None:
            _export_keras(keras_model, Path(target))
        else:
            loaded = _as_loaded(model)  # held here: its signature's variables live as long as it does
            _export_signature(loaded.signature, Path(target))
    except EdgecnnError:
        raise
    except Exception as exc:  # noqa: BLE001 - Keras and TensorFlow raise many types; report one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        raise ConversionError(f"the model could not be exported as a SavedModel ({type(exc).__name__}: {first})",
                              "check that the model is built and has a fixed input size") from None


def _is_keras(model: Any) -> bool:
    return hasattr(model, "layers") and hasattr(model, "inputs")


def _export_keras(keras_model: Any, target: Path) -> None:
    import contextlib  # noqa: PLC0415
    import io  # noqa: PLC0415

    import keras  # noqa: PLC0415
    import tensorflow as tf  # noqa: PLC0415

    shape = tuple(keras_model.inputs[0].shape[1:])
    archive = keras.export.ExportArchive()
    archive.track(keras_model)
    # "serve" (the default signature, dynamic batch) feeds ONNX; "serve_batch1" feeds TFLite, whose edge
    # runtimes want static shapes: the Edge TPU compiler refuses a dynamic batch, and a dynamic batch adds
    # SHAPE ops in front of Flatten/Reshape that run on the CPU.
    archive.add_endpoint(name="serve", fn=lambda x: keras_model(x, training=False),
                         input_signature=[tf.TensorSpec((None, *shape), tf.float32, name="input")])
    archive.add_endpoint(name=STATIC_BATCH_SIGNATURE, fn=lambda x: keras_model(x, training=False),
                         input_signature=[tf.TensorSpec((1, *shape), tf.float32, name="input")])
    # write_out prints a summary of endpoints to stdout; it is noise in a CLI run.
    with contextlib.redirect_stdout(io.StringIO()):
        archive.write_out(str(target), verbose=False)


def _as_loaded(model: Any) -> Any:
    """A LoadedModel of the SavedModel kind (``.signature``): ``model`` itself, or its folder loaded."""
    if getattr(model, "signature", None) is not None:
        return model
    from edgecnn.converters.keras_load import load_model  # noqa: PLC0415

    path = getattr(model, "path", model)
    if not isinstance(path, (str, Path)):
        raise ConversionError(f"cannot export a {type(model).__name__} as a SavedModel",
                              "pass a Keras model, a loaded model or a SavedModel folder")
    return load_model(path)


def _export_signature(signature: Any, target: Path) -> None:
    import tensorflow as tf  # noqa: PLC0415

    (name, spec), = signature.structured_input_signature[1].items()
    shape = tuple(spec.shape[1:])
    batch = spec.shape[0]

    def call(x):
        return next(iter(signature(**{name: tf.cast(x, spec.dtype)}).values()))

    module = tf.Module()
    module.captured_variables = list(signature.variables)  # tracked, so the new SavedModel carries them once each
    module.serve = tf.function(call, input_signature=[tf.TensorSpec((batch, *shape), tf.float32, name="input")])
    module.serve_batch1 = tf.function(call, input_signature=[
        tf.TensorSpec((1 if batch is None else batch, *shape), tf.float32, name="input")])
    serve = module.serve.get_concrete_function()
    tf.saved_model.save(module, str(target), signatures={
        "serving_default": serve, "serve": serve,
        STATIC_BATCH_SIGNATURE: module.serve_batch1.get_concrete_function()})
