"""Load the model to convert: a `.keras` file, a legacy Keras 2 `.h5` file, or a SavedModel directory.

Keras ``safe_mode`` stays on unless the caller passes ``unsafe=True``: a Lambda layer (arbitrary Python
bytecode) is refused with a message naming the layer. Every failure is a one-line ModelLoadError, never
a Keras traceback. TensorFlow/Keras are imported only when a model is actually loaded.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from edgecnn.errors import InputPathError, ModelLoadError, UnsafeModelError
from edgecnn.fileio import sha256_of

KERAS_SUFFIXES = (".keras",)
H5_SUFFIXES = (".h5", ".hdf5")
# Layers that only act in training; at inference (training=False) they are the identity.
TRAINING_ONLY_LAYERS = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "SpatialDropout3D", "GaussianNoise",
                        "GaussianDropout", "AlphaDropout", "RandomZoom", "RandomContrast", "RandomRotation",
                        "RandomFlip", "RandomTranslation", "RandomCrop", "RandomBrightness")


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to convert: a Keras model, or (for a SavedModel) its serving function."""

    path: Path
    name: str
    kind: str  # "keras" | "h5" | "savedmodel"
    sha256: str
    input_shape: tuple[int, ...]   # without the batch dimension
    output_shape: tuple[int, ...]  # without the batch dimension
    keras_model: Any = None        # keras.Model for .keras/.h5
    signature: Any = None          # the SavedModel's serving ConcreteFunction
    saved_object: Any = None       # what tf.saved_model.load returned: keeps the signature's variables alive
    layer_classes: tuple[str, ...] = field(default_factory=tuple)
    notes: tuple[str, ...] = ()    # what loading changed (a mixed-precision model rebuilt in float32)

    @property
    def num_outputs(self) -> int:
        return int(np.prod(self.output_shape)) if self.output_shape else 1

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Float model output for float input, in inference mode (Dropout/augmentation off)."""
        chunks = [self._predict_chunk(x[i:i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(chunks).reshape(len(x), -1) if chunks else np.zeros((0, self.num_outputs), np.float32)

    def _predict_chunk(self, chunk: np.ndarray) -> np.ndarray:
        if self.keras_model is not None:
            return np.asarray(self.keras_model(chunk, training=False), dtype=np.float32)
        import tensorflow as tf  # noqa: PLC0415

        result = self.signature(tf.constant(chunk, dtype=tf.float32))
        return np.asarray(next(iter(result.values())), dtype=np.float32)


def load_model(path: str | Path, unsafe: bool = False) -> LoadedModel:
    """Load ``path`` (.keras / .h5 / SavedModel dir) or raise a one-line ModelLoadError / InputPathError."""
    path = Path(path)
    if not path.exists():
        raise InputPathError(f"model path {path} does not exist", "give a .keras file, a .h5 file or a SavedModel folder")
    if path.is_dir():
        if not (path / "saved_model.pb").is_file():
            raise ModelLoadError(f"folder {path} is not a SavedModel (no saved_model.pb)",
                                 "give a .keras file, a .h5 file or a SavedModel folder")
        return _checked(_load_savedmodel(path))
    suffix = path.suffix.lower()
    if suffix in KERAS_SUFFIXES:
        config = _keras_zip_config(path)
    elif suffix in H5_SUFFIXES:
        config = _h5_config(path)
    else:
        raise ModelLoadError(f"{path} is not a Keras model file (suffix '{suffix or 'none'}')",
                             "give a .keras file, a .h5 file or a SavedModel folder")
    if not unsafe:
        _refuse_lambda(config, path)
    return _checked(_load_keras(path, unsafe, "keras" if suffix in KERAS_SUFFIXES else "h5", config))


def _checked(loaded: LoadedModel) -> LoadedModel:
    from edgecnn.converters.diagnose import preflight  # noqa: PLC0415

    return preflight(loaded)


def _keras_zip_config(path: Path) -> dict[str, Any]:
    """The model config inside a .keras zip; proves the file is whole before Keras touches it."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise ModelLoadError(f"{path} is corrupt (member {bad} fails its CRC check)", "re-save the model")
            return json.loads(archive.read("config.json"))
    except zipfile.BadZipFile:
        raise ModelLoadError(f"{path} is not a valid .keras file (not a zip archive, or truncated)",
                             "re-save it with model.save('model.keras')") from None
    except KeyError:
        raise ModelLoadError(f"{path} is a zip archive but holds no Keras config.json",
                             "re-save it with model.save('model.keras')") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError, EOFError) as exc:
        raise ModelLoadError(f"{path} has an unreadable model config ({type(exc).__name__})", "re-save the model") from None


def _h5_config(path: Path) -> dict[str, Any]:
    try:
        import h5py  # noqa: PLC0415 - ships with TensorFlow/Keras
    except ImportError:
        return {}
    try:
        with h5py.File(path, "r") as handle:
            raw = handle.attrs.get("model_config")
    except OSError:
        raise ModelLoadError(f"{path} is not a valid HDF5 model file (corrupt or truncated)",
                             "re-save it, or convert it to .keras") from None
    if raw is None:
        raise ModelLoadError(f"{path} holds weights only, no model config", "save the whole model (model.save)")
    try:
        return json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelLoadError(f"{path} has an unreadable model config", "re-save the model") from None


def _walk_layers(config: Any) -> Iterator[dict[str, Any]]:
    """Every nested dict with a class_name, depth first (layers inside models inside models)."""
    if isinstance(config, dict):
        if "class_name" in config:
            yield config
        for value in config.values():
            yield from _walk_layers(value)
    elif isinstance(config, list):
        for value in config:
            yield from _walk_layers(value)


def _refuse_lambda(config: dict[str, Any], path: Path) -> None:
    for layer in _walk_layers(config):
        if layer.get("class_name") == "Lambda":
            name = (layer.get("config") or {}).get("name", "?")
            raise UnsafeModelError(f"{path} has a Lambda layer '{name}', which runs arbitrary code when loaded",
                                   "refused under safe mode; pass --unsafe only if you trust this file")


def _load_keras(path: Path, unsafe: bool, kind: str, config: dict[str, Any]) -> LoadedModel:
    keras = _import_keras()
    try:
        model = keras.models.load_model(str(path), compile=False, safe_mode=not unsafe)
    except (TypeError, ValueError) as exc:
        raise _explain_keras_error(path, exc, config) from None
    except (OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelLoadError(f"cannot load {path} ({type(exc).__name__}: {_first_line(exc)})",
                             "the file may be truncated or not a Keras model") from None
    if not isinstance(model, keras.Model) or len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ModelLoadError(f"{path} must be a model with one input and one output", "edgecnn converts single-input classifiers")
    return LoadedModel(path=path, name=_model_name(model.name, path), kind=kind, sha256=sha256_of(path),
                       input_shape=_shape(model.inputs[0].shape, "input"), output_shape=_shape(model.outputs[0].shape, "output"),
                       keras_model=model, layer_classes=tuple(type(layer).__name__ for layer in _all_layers(model)))


def _custom_layers(config: dict[str, Any]) -> list[str]:
    """'name (class)' of layers whose class is registered outside Keras (package>Class) or from another module."""
    found = []
    for layer in _walk_layers(config):
        registered = str(layer.get("registered_name") or "")
        module = str(layer.get("module") or "keras")
        if ">" in registered or not module.startswith(("keras", "tf_keras", "tensorflow")):
            name = (layer.get("config") or {}).get("name", "?") if isinstance(layer.get("config"), dict) else "?"
            found.append(f"'{name}' ({registered or layer.get('class_name')})")
    return found


def _explain_keras_error(path: Path, exc: Exception, config: dict[str, Any]) -> ModelLoadError:
    text = _first_line(exc)
    custom = _custom_layers(config)
    if custom:
        return ModelLoadError(f"{path} uses custom layer {', '.join(custom[:3])} that Keras cannot rebuild",
                              "edgecnn converts models made of built-in Keras layers")
    if "safe_mode" in str(exc) or "lambda" in text.lower():
        return UnsafeModelError(f"{path} needs code execution to load ({text})",
                                "refused under safe mode; pass --unsafe only if you trust this file")
    if "Could not locate" in str(exc) or "Unknown layer" in str(exc) or "custom" in text.lower():
        return ModelLoadError(f"{path} uses a custom layer or object Keras cannot find ({text})",
                              "edgecnn converts models made of built-in Keras layers")
    return ModelLoadError(f"cannot load {path} ({type(exc).__name__}: {text})", "re-save the model with Keras 3")


def _load_savedmodel(path: Path) -> LoadedModel:
    tf = _import_tf()
    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:  # noqa: BLE001 - TF raises many unrelated types for a bad SavedModel
        raise ModelLoadError(f"cannot load SavedModel {path} ({type(exc).__name__}: {_first_line(exc)})",
                             "re-export it with model.export(dir)") from None
    signature = getattr(loaded, "signatures", {}).get("serving_default")
    if signature is None:
        raise ModelLoadError(f"SavedModel {path} has no 'serving_default' signature", "re-export it with model.export(dir)")
    inputs = [spec for spec in signature.structured_input_signature[1].values()]
    outputs = list(signature.structured_outputs.values())
    if len(inputs) != 1 or len(outputs) != 1:
        raise ModelLoadError(f"SavedModel {path} must have one input and one output", "edgecnn converts single-input classifiers")
    return LoadedModel(path=path, name=_model_name("", path), kind="savedmodel", sha256=sha256_of(path),
                       input_shape=_shape(inputs[0].shape, "input"), output_shape=_shape(outputs[0].shape, "output"),
                       signature=signature, saved_object=loaded)


def _all_layers(model: Any) -> Iterator[Any]:
    for layer in getattr(model, "layers", []):
        yield layer
        if hasattr(layer, "layers"):
            yield from _all_layers(layer)


def _shape(shape: Any, what: str) -> tuple[int, ...]:
    from edgecnn.converters.diagnose import check_known_dims  # noqa: PLC0415

    return check_known_dims(tuple(shape), what)


def _model_name(name: Optional[str], path: Path) -> str:
    stem = path.name if path.is_dir() else path.stem
    return (name if name and not name.startswith(("sequential", "functional", "model")) else stem) or "model"


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:200]


def _import_keras():
    try:
        import keras  # noqa: PLC0415
    except ImportError:
        from edgecnn.errors import RuntimeMissingError  # noqa: PLC0415

        raise RuntimeMissingError("converting needs TensorFlow/Keras", "pip install 'edgecnn[convert]'") from None
    return keras


def _import_tf():
    try:
        import tensorflow as tf  # noqa: PLC0415
    except ImportError:
        from edgecnn.errors import RuntimeMissingError  # noqa: PLC0415

        raise RuntimeMissingError("converting needs TensorFlow", "pip install 'edgecnn[convert]'") from None
    return tf
