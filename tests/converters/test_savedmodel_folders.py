"""SavedModel folders of every kind convert through the one SavedModel export: a folder written by
``tf.saved_model.save(keras_model)`` (whose raw TFLite conversion keeps the weights as uninitialised
variables: NaN outputs, agreement 0.10 before), by ``model.export``, or by ``tf.saved_model.save`` of a
tf.Module; every float artifact agrees >= 99 % with the float model and int8 stays accurate."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import numpy as np
import pytest

from edgecnn.errors import ConversionError

ALL = ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx-fp32", "onnx-int8")
FLOAT = {"tflite-fp32", "tflite-fp16", "onnx-fp32"}
ROOT = Path(__file__).resolve().parents[2]


def _save(model, kind: str, folder: Path) -> Path:
    import tensorflow as tf

    if kind == "tf.saved_model.save":
        tf.saved_model.save(model, str(folder))
    elif kind == "model.export":
        model.export(str(folder), format="tf_saved_model", verbose=False)
    else:  # a tf.Module wrapping the model, with its own serving signature (a dict output)
        class Classifier(tf.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            @tf.function(input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32, name="pixels")])
            def serve(self, pixels):
                return {"scores": self.net(pixels, training=False)}

        module = Classifier(model)
        tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})
    return folder


@pytest.fixture(scope="module")
def saved_folders(digit_cnn, tmp_path_factory):
    root = tmp_path_factory.mktemp("savedmodels")
    return {kind: _save(digit_cnn, kind, root / re.sub(r"\W", "_", kind))
            for kind in ("tf.saved_model.save", "model.export", "tf.Module")}


def test_the_raw_tf_saved_model_save_folder_is_caught_not_frozen(saved_folders):
    """The mechanism: converted as it is, the folder's weights stay resource variables (VAR_HANDLE /
    READ_VARIABLE) that nothing initialises; the after-check refuses such a flatbuffer by name."""
    from edgecnn.converters.tflite import convert_bytes

    with pytest.raises(ConversionError, match="variables were not frozen") as caught:
        convert_bytes(saved_folders["tf.saved_model.save"], "fp32", None)
    assert "VAR_HANDLE" in str(caught.value) or "READ_VARIABLE" in str(caught.value)


@pytest.mark.parametrize("kind,formats", [("tf.saved_model.save", ALL),
                                          ("model.export", ("tflite-fp32", "onnx-fp32")),
                                          ("tf.Module", ("tflite-fp32", "onnx-fp32"))])
def test_savedmodel_folders_convert_and_agree(saved_folders, digit_cnn, tmp_path, kind, formats):
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.data import mnist_sample

    result = convert(saved_folders[kind], calib="mnist", val="mnist", out=tmp_path / "out",
                     options=ConvertOptions(formats=",".join(formats), progress=False))
    assert tuple(e.name for e in result.manifest.artifacts) == formats
    for entry in result.manifest.artifacts:
        check = entry.verification
        assert check.samples == 1000 and np.isfinite(check.max_abs_diff), entry.name
        floor = 0.99 if entry.name in FLOAT else 0.97
        assert check.agreement >= floor, (kind, entry.name, check.agreement)
        assert abs(check.drop_pp) <= (0.5 if entry.name in FLOAT else 2.0), (kind, entry.name)
    # the float reference itself is the trained model's, not a broken signature's
    val = mnist_sample("val")
    keras_top1 = np.argmax(np.asarray(digit_cnn(val.images.astype("float32") / 255.0, training=False)), axis=1)
    assert result.manifest.artifacts[0].verification.keras_accuracy == pytest.approx(
        float(np.mean(keras_top1 == val.labels)), abs=1e-6)
    assert result.manifest.artifacts[0].verification.keras_accuracy > 0.8
    fp32 = result.artifact_path("tflite-fp32")
    assert _input_shape(fp32) == [1, 28, 28, 1], "TFLite gets the static batch-1 signature"
    assert (result.out_dir / "convert.log").is_file()


def _input_shape(path: Path) -> list[int]:
    from ai_edge_litert.interpreter import Interpreter

    return [int(d) for d in Interpreter(model_path=str(path)).get_input_details()[0]["shape"]]


def test_the_edge_tpu_ready_model_of_a_savedmodel_folder(saved_folders, tmp_path):
    """The Edge TPU path uses the same export: a tf.saved_model.save folder gives a static, frozen int8 model."""
    from edgecnn.converters.edgetpu_check import check_edgetpu
    from edgecnn.converters.edgetpu_compiler import compiler_ready_model
    from edgecnn.data import mnist_sample

    calib = mnist_sample("train").head(50).images.astype(np.float32) / 255.0
    ready = compiler_ready_model(saved_folders["tf.saved_model.save"], calib, tmp_path / "ready.tflite")
    assert _input_shape(ready) == [1, 28, 28, 1]
    report = check_edgetpu(ready)
    assert report.problems == () and report.fully_mapped


def _savedmodel_writes(source: str) -> list[str]:
    """Calls in ``source`` that write a SavedModel: x.export(...), ExportArchive(...), saved_model.save(...)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        owner = getattr(func, "value", None)
        owner_name = getattr(owner, "attr", getattr(owner, "id", ""))
        if name in ("export", "ExportArchive") or (name == "save" and owner_name == "saved_model"):
            found.append(name)
    return found


def test_only_steps_exports_savedmodels():
    """One home: no other product module writes a SavedModel (model.export, ExportArchive, tf.saved_model.save)."""
    writers = sorted(str(path.relative_to(ROOT)) for folder in ("converters", "edgecnn", "devices")
                     for path in (ROOT / folder).rglob("*.py") if _savedmodel_writes(path.read_text()))
    assert writers == ["converters/steps.py"], writers
