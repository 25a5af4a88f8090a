"""`edgecnn inspect`: which layers does int8 quantization hurt, and by how much.

For every quantized activation tensor the int8 model is compared with the float computation on the
calibration samples: TFLite through ``tf.lite.experimental.QuantizationDebugger`` (its NumericVerify debug
model: each quantized op beside its float twin fed the same input), ONNX through ONNX Runtime's QDQ
debugging helpers (the tensor before and after its QuantizeLinear/DequantizeLinear pair). Per tensor:

* ``rmse/scale``: the debugger's own metric; about 0.29 for uniform rounding noise, far more is bad;
* ``SQNR``: signal-to-quantization-noise ratio of the whole tensor, in dB;
* ``channel SQNR``: the median over channels of the per-channel SQNR. A few outlier channels widen the
  one per-tensor scale until every ordinary channel rounds to zero: the whole-tensor SQNR stays high
  (the outliers dominate the power) while the median channel SQNR falls to about 0 dB. This is what
  names a layer with activation outliers as the guilty one.

Rows are ranked by ``harm_db = min(SQNR, channel SQNR)``, worst first. Each row also names the layers
that must stay in float to keep that tensor unquantized (its producer and its consumers): that is the
unit ``--fallback auto`` works with.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Optional

import numpy as np

from edgecnn.devices.flatbuf import layer_of  # noqa: F401 - re-exported: the inspect modules name layers with it
from edgecnn.errors import DataError, UsageError

SQNR_CAP_DB = 120.0  # an exact tensor (no rounding error at all) reports this instead of infinity
DEFAULT_SAMPLES = 100


class Family(str, Enum):
    TFLITE = "tflite"
    ONNX = "onnx"


class Target(str, Enum):
    EDGETPU = "edgetpu"


@dataclass(frozen=True)
class InspectOptions:
    family: Family = Family.TFLITE
    samples: int = DEFAULT_SAMPLES   # calibration samples the int8 model is compared on
    top: int = 10                    # rows in the printed table
    per_channel: bool = True         # per-channel weights, as the convert pipeline builds them
    calib_method: str = "minmax"     # ONNX activation ranges
    edgetpu: Any = None              # target='edgetpu': an edgecnn.converters.edgetpu_compiler.EdgeTpuRequest
    onnx_target: str = "x86"         # ONNX int8 settings (edgecnn.converters.onnx_targets), as convert --onnx-target
    onnx_full_int8: bool = False     # as convert --onnx-full-int8
    prep: Any = None                 # a data-source ``calib``: calibration.PrepRequest (None: the model's defaults)
    unsafe: bool = False             # load model files with custom code (only trusted files)


@dataclass(frozen=True)
class LayerError:
    """The quantization error of one activation tensor, float vs int8, on the calibration samples."""

    tensor: str
    layer: str                       # the Keras layer that produces it
    op: str                          # the runtime op (CONV_2D, Conv, ...)
    rmse_scale: float
    sqnr_db: float
    channel_sqnr_db: float
    float_min: float
    float_max: float
    scale: float
    keep_float: tuple[str, ...] = ()  # layers to keep in float so this tensor is never quantized

    @property
    def harm_db(self) -> float:
        return min(self.sqnr_db, self.channel_sqnr_db)


@dataclass(frozen=True)
class InspectResult:
    family: Family
    model_name: str
    samples: int
    layers: tuple[LayerError, ...]   # worst first
    notes: tuple[str, ...] = ()
    audit: Any = None                # edgecnn.converters.calib_audit.CalibrationAudit, when the CLI ran one
    edgetpu: Any = None              # edgecnn.converters.edgetpu_compiler.Readiness for target='edgetpu'
    fusion: tuple = ()               # edgecnn.converters.onnx_graph.FusionReport per ONNX int8 model

    @property
    def worst(self) -> Optional[LayerError]:
        return self.layers[0] if self.layers else None

    def to_dict(self) -> dict[str, Any]:
        from edgecnn.manifest import _to_jsonable  # noqa: PLC0415 - the one dataclass -> JSON walker

        out = {"family": self.family.value, "model": self.model_name, "samples": self.samples,
               "layers": [dict(_to_jsonable(row), harm_db=row.harm_db) for row in self.layers],
               "notes": list(self.notes)}
        if self.audit is not None:
            out["calibration_audit"] = self.audit.to_dict()
        if self.edgetpu is not None:
            out["edgetpu"] = self.edgetpu.to_dict()
        if self.fusion:
            out["fusion"] = [dict(_to_jsonable(report), fused_count=report.fused_count,
                                  float_count=report.float_count, summary=report.summary()) for report in self.fusion]
        return out


def inspect(model: Any, calib: Any, target: Optional[Target | str] = None,
            options: InspectOptions = InspectOptions()) -> InspectResult:
    """Per-layer int8 error of ``model`` (a LoadedModel, keras.Model or model path) on ``calib`` samples.

    ``calib``: float32 model input (N, *input shape), or a ModelInputs. With ``target='edgetpu'`` the model
    may also be a .tflite path (``calib`` unused); ``options.edgetpu`` (an EdgeTpuRequest) says where the
    compiler-ready model goes, ``force``, and the compiler's runtime (-m) and -a. The result's ``edgetpu`` is
    then an edgecnn.converters.edgetpu_compiler.Readiness and ``layers`` is empty. With ``options.family``
    ONNX the result also carries the fusion report of the int8 model built. An ``.onnx`` file, or a folder of
    them (edgecnn convert's output), needs no ``calib``: the result is each model's fusion report (quantized
    nodes fused into integer kernels vs run in float on this machine).

    ``calib`` may also be a data source as convert takes it (an image folder, .npy/.npz, "mnist"): it is then
    read and preprocessed as ``options.prep`` says (the model's defaults otherwise), the preprocessing is
    checked against the model (converters/prep_check.py) and the result carries the calibration audit.

    Raises DataError (calibration samples of the wrong shape or dtype), UsageError (an unknown model or
    target, a .tflite without target='edgetpu', no calibration data), OutputExistsError (an output exists, no
    force), ConversionError, ModelLoadError.
    """
    edgetpu = target is not None and Target(str(getattr(target, "value", target)).lower()) == Target.EDGETPU
    if isinstance(model, (str, Path)) and str(model).lower().endswith(".tflite"):
        if not edgetpu:
            raise UsageError("a .tflite file can only be checked for the Edge TPU",
                             "add --target edgetpu, or inspect the Keras model layer by layer")
        return _inspect_edgetpu(model, None, options)  # already int8: no calibration data needed
    if isinstance(calib, (str, Path)):
        return _inspect_data(model, calib, edgetpu, options)
    if edgetpu:
        return _inspect_edgetpu(model, calib, options)
    artifacts = onnx_artifacts(model)
    if artifacts:
        from edgecnn.converters.onnx_graph import fusion_report  # noqa: PLC0415

        return InspectResult(Family.ONNX, _stem(str(model)), 0, (), (),
                             fusion=tuple(fusion_report(path) for path in artifacts))
    if options.family == Family.ONNX:
        from edgecnn.converters.onnx_targets import onnx_settings  # noqa: PLC0415

        onnx_settings(options.onnx_target)  # an unknown target fails before the model is loaded
    if calib is None:
        raise UsageError("inspect needs calibration data", "pass --calib DATA (image folder, .npy/.npz, or mnist)")
    loaded = _as_loaded(model)
    samples = calib_array(calib, loaded.input_shape)[: options.samples]
    fusion: tuple = ()
    if options.family == Family.ONNX:
        from edgecnn.converters.inspect_onnx import onnx_layer_errors  # noqa: PLC0415

        rows, notes, fusion = onnx_layer_errors(loaded, samples, options)
    else:
        from edgecnn.converters.inspect_tflite import tflite_layer_errors  # noqa: PLC0415

        rows, notes = tflite_layer_errors(loaded, samples, options)
    return InspectResult(Family(options.family), loaded.name, len(samples), rank(rows), tuple(notes), fusion=fusion)


def onnx_artifacts(model: Any) -> list:
    """The .onnx files ``model`` names: itself, or those in a folder that is not a SavedModel; else []."""
    from pathlib import Path  # noqa: PLC0415

    if not isinstance(model, (str, Path)):
        return []
    path = Path(model)
    if path.suffix.lower() == ".onnx":
        if not path.is_file():
            from edgecnn.errors import InputPathError  # noqa: PLC0415

            raise InputPathError(f"{path} does not exist", "give an .onnx file from edgecnn convert")
        return [path]
    if path.is_dir() and not (path / "saved_model.pb").exists():
        return sorted(path.glob("*.onnx"))
    return []


def _inspect_data(model: Any, source: Any, edgetpu: bool, options: InspectOptions) -> InspectResult:
    """``inspect`` on a data source: read and preprocess it as convert would, check that preprocessing against
    the model, quantize and compare, and attach the calibration audit."""
    from dataclasses import replace  # noqa: PLC0415

    from edgecnn.data import load_dataset  # noqa: PLC0415

    from edgecnn.converters import calibration as cal  # noqa: PLC0415
    from edgecnn.converters.calib_audit import audit  # noqa: PLC0415
    from edgecnn.converters.keras_load import load_model  # noqa: PLC0415
    from edgecnn.converters.prep_check import check_preprocessing  # noqa: PLC0415

    loaded = load_model(model, unsafe=options.unsafe) if isinstance(model, (str, Path)) else _as_loaded(model)
    prep, _ = cal.build_preprocessing(loaded.input_shape, options.prep or cal.PrepRequest(), loaded.layer_classes,
                                      loaded.keras_model)
    dataset = load_dataset(source, mnist_split="train")
    inputs = cal.model_inputs(dataset, prep, loaded.input_shape, "calibration")
    if edgetpu:
        return _inspect_edgetpu(loaded, inputs.inputs, options)
    rescales_itself = any(name in cal.RESCALING_LAYERS for name in loaded.layer_classes)
    prep_report = check_preprocessing(loaded, prep, inputs, None, rescales_itself, (dataset,))
    report = audit(inputs.inputs, dataset.labels, loaded.num_outputs, loaded.keras_model, prep_report)
    return replace(inspect(loaded, inputs.inputs, None, options), audit=report)


def _inspect_edgetpu(model: Any, calib: Any, options: InspectOptions) -> InspectResult:
    from edgecnn.converters.edgetpu_compiler import EdgeTpuRequest, edgetpu_readiness  # noqa: PLC0415

    request = options.edgetpu or EdgeTpuRequest()
    path = str(getattr(model, "path", model))
    if isinstance(model, (str, Path)) and path.lower().endswith(".tflite"):
        result = edgetpu_readiness(Path(path), request=request)
        return InspectResult(Family.TFLITE, Path(path).stem, 0, (), (result.ready_line(),), edgetpu=result)
    loaded = _as_loaded(model)
    samples = calib_array(calib, loaded.input_shape)[: options.samples]
    result = edgetpu_readiness(loaded, samples, request)
    return InspectResult(Family.TFLITE, loaded.name, len(samples), (), (result.ready_line(),), edgetpu=result)


def rank(rows: Iterable[LayerError]) -> tuple[LayerError, ...]:
    """Worst first: lowest harm_db, ties broken by the larger rmse/scale."""
    return tuple(sorted(rows, key=lambda r: (r.harm_db, -r.rmse_scale)))


# -- metrics ---------------------------------------------------------------------------------------
def tensor_metrics(floats: np.ndarray, dequant: np.ndarray, scale: float, channel_axis: int) -> dict[str, float]:
    """rmse/scale, SQNR and median channel SQNR of one tensor; arrays are (N, ...) float."""
    f = np.asarray(floats, dtype=np.float64)
    d = np.asarray(dequant, dtype=np.float64)
    err = (f - d) ** 2
    axis = channel_axis % f.ndim
    moved_f = np.moveaxis(f, axis, -1).reshape(-1, f.shape[axis]) if f.ndim > 1 else f.reshape(-1, 1)
    moved_e = np.moveaxis(err, axis, -1).reshape(-1, f.shape[axis]) if f.ndim > 1 else err.reshape(-1, 1)
    signal, noise = (moved_f ** 2).mean(axis=0), moved_e.mean(axis=0)
    live = signal > 0
    per_channel = [sqnr_db(s, n) for s, n in zip(signal[live], noise[live])]
    return {"rmse_scale": float(math.sqrt(err.mean()) / scale) if scale > 0 else 0.0,
            "sqnr_db": sqnr_db(float((f ** 2).sum()), float(err.sum())),
            "channel_sqnr_db": float(np.median(per_channel)) if per_channel else SQNR_CAP_DB,
            "float_min": float(f.min()) if f.size else 0.0, "float_max": float(f.max()) if f.size else 0.0}


def sqnr_db(signal: float, noise: float) -> float:
    if noise <= 0:
        return SQNR_CAP_DB
    if signal <= 0:
        return 0.0
    return float(min(SQNR_CAP_DB, 10.0 * math.log10(signal / noise)))


# -- names -----------------------------------------------------------------------------------------
def keras_layer_names(loaded: Any) -> tuple[str, ...]:
    model = getattr(loaded, "keras_model", None)
    if model is None:
        return ()
    names: list[str] = []
    stack = list(getattr(model, "layers", []))
    while stack:
        layer = stack.pop(0)
        names.append(layer.name)
        stack.extend(getattr(layer, "layers", []))
    return tuple(names)


# -- data ------------------------------------------------------------------------------------------
def calib_array(calib: Any, input_shape: tuple[int, ...]) -> np.ndarray:
    """Calibration samples as float32 model input, checked against the model's input shape."""
    array = getattr(calib, "inputs", calib)
    if not isinstance(array, np.ndarray) or array.ndim == 0 or len(array) == 0:
        raise DataError("inspect needs calibration samples", "pass --calib DATA (images, .npy/.npz, or mnist)")
    if array.dtype.kind != "f":
        raise DataError(f"calibration samples have dtype {array.dtype}", "preprocess them to float32 model input")
    if tuple(array.shape[1:]) != tuple(input_shape):
        raise DataError(f"calibration samples have shape {tuple(array.shape[1:])} but the model takes {tuple(input_shape)}",
                        "preprocess them to the model's input size")
    return np.ascontiguousarray(array, dtype=np.float32)


def _as_loaded(model: Any) -> Any:
    if hasattr(model, "input_shape") and hasattr(model, "keras_model"):
        return model
    from edgecnn.converters.keras_load import LoadedModel, load_model  # noqa: PLC0415

    if isinstance(model, (str, Path)):
        return load_model(model)
    if hasattr(model, "layers") and hasattr(model, "inputs"):  # a keras.Model in memory
        shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        out = tuple(int(d) for d in model.outputs[0].shape[1:])
        return LoadedModel(path=Path(model.name), name=model.name, kind="keras", sha256="", input_shape=shape,
                           output_shape=out, keras_model=model)
    raise UsageError(f"cannot inspect a {type(model).__name__}", "give a Keras model file or a loaded model")


def _stem(path: str) -> str:
    from pathlib import Path  # noqa: PLC0415

    return Path(path).stem


def table_rows(result: InspectResult, top: int) -> list[tuple[str, ...]]:
    rows = []
    for rank_no, row in enumerate(result.layers[:top], start=1):
        rows.append((str(rank_no), row.layer, row.op, f"{row.rmse_scale:.3f}", f"{row.sqnr_db:.1f}",
                     f"{row.channel_sqnr_db:.1f}", f"[{row.float_min:.3g}, {row.float_max:.3g}]", f"{row.scale:.3g}",
                     ", ".join(row.keep_float)))
    return rows


TABLE_HEADERS = ("#", "layer", "op", "rmse/scale", "SQNR dB", "chan SQNR dB", "float range", "scale", "keep in float")
