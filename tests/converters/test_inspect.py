"""inspect: per-layer int8 error on the real broken-by-int8 model, TFLite (QuantizationDebugger) and ONNX
(ONNX Runtime qdq_loss_debug); the metrics on synthetic tensors; names and input checks."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgecnn.errors import DataError

SAMPLES = 100


@pytest.fixture(scope="module")
def broken():
    from fixtures.broken_model import trained_outlier_cnn
    from edgecnn.converters.keras_load import load_model

    return load_model(trained_outlier_cnn())


@pytest.fixture(scope="module")
def calib():
    from edgecnn.data import mnist_sample

    return mnist_sample("train").images[:SAMPLES].astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def tflite_result(broken, calib):
    from edgecnn.converters.inspect import inspect

    return inspect(broken, calib)


def test_tflite_names_the_outlier_layer_first(tflite_result):
    from fixtures.broken_model import GUILTY_LAYER

    worst = tflite_result.worst
    assert worst.layer == GUILTY_LAYER
    assert worst.op == "FULLY_CONNECTED"
    # Ordinary channels round to zero: their SQNR is ~0 dB while the outliers keep the tensor's SQNR high.
    assert worst.channel_sqnr_db < 3.0 < 20.0 < worst.sqnr_db
    assert worst.float_max > 100 * worst.scale  # the outlier range the table shows
    assert "classifier" in worst.keep_float  # its consumer must stay float too for the tensor to stay float
    assert tflite_result.samples == SAMPLES


def test_tflite_healthy_model_has_no_such_layer(mnist_keras_path, calib, tflite_result):
    from edgecnn.converters.inspect import inspect

    healthy = inspect(str(mnist_keras_path), calib)
    assert healthy.worst.harm_db > 20.0
    assert healthy.worst.harm_db > tflite_result.worst.harm_db + 20.0


def test_onnx_names_the_outlier_layer_first(broken, calib):
    from fixtures.broken_model import GUILTY_LAYER
    from edgecnn.converters.inspect import Family, InspectOptions, inspect

    result = inspect(broken, calib, options=InspectOptions(family=Family.ONNX))
    assert result.worst.layer == GUILTY_LAYER
    assert result.worst.channel_sqnr_db < 3.0
    assert "classifier" in result.worst.keep_float
    assert all(row.harm_db > 10.0 for row in result.layers[1:] if row.layer != GUILTY_LAYER)
    fusion = result.fusion[0]  # the int8 model inspected, as ONNX Runtime runs it here (x86 target settings)
    assert fusion.activations == ("uint8",) and fusion.fused_count > 0 and fusion.float_count == 0
    assert json.loads(json.dumps(result.to_dict()))["fusion"][0]["summary"] == fusion.summary()


def test_result_serialises_to_json(tflite_result):
    data = json.loads(json.dumps(tflite_result.to_dict()))
    assert data["layers"][0]["layer"] == tflite_result.worst.layer
    assert data["layers"][0]["harm_db"] == pytest.approx(tflite_result.worst.harm_db)


def test_metrics_separate_outlier_channels_from_rounding_noise():
    from edgecnn.converters.inspect import tensor_metrics

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(64, 32))
    x[:, 0] *= 1000.0  # one outlier channel
    scale = x.max() / 255.0
    q = np.round(x / scale) * scale
    m = tensor_metrics(x, q, scale, channel_axis=-1)
    assert m["sqnr_db"] > 30.0 and m["channel_sqnr_db"] < 3.0
    fine_scale = 1.0 / 255.0
    m2 = tensor_metrics(x[:, 1:], np.round(x[:, 1:] / fine_scale) * fine_scale, fine_scale, channel_axis=-1)
    assert m2["channel_sqnr_db"] > 35.0
    assert 0.2 < m2["rmse_scale"] < 0.35  # uniform rounding noise: 1/sqrt(12)


def test_layer_names_map_to_keras_layers():
    from edgecnn.converters.inspect import layer_of

    known = ("conv", "hidden", "conv2d_1", "classifier")
    assert layer_of("mnist_outlier_1/hidden_1/MatMul;mnist_outlier_1/hidden_1/Relu", known) == "hidden"
    assert layer_of("StatefulPartitionedCall/m_1/classifier_1/MatMul/MatMulAddFusion", known) == "classifier"
    assert layer_of("model_1/conv2d_1/Relu", known) == "conv2d_1"


def test_calibration_of_the_wrong_shape_is_a_data_error(broken):
    from edgecnn.converters.inspect import inspect

    with pytest.raises(DataError, match="shape"):
        inspect(broken, np.zeros((4, 32, 32, 3), np.float32))
    with pytest.raises(DataError, match="dtype"):
        inspect(broken, np.zeros((4, 28, 28, 1), np.uint8))


# -- the command line ------------------------------------------------------------------------------
def test_cli_inspect_json_flags_raw_pixels(tmp_path, capsys, calib):
    from edgecnn.cli import main
    from fixtures.broken_model import trained_outlier_cnn

    raw = tmp_path / "raw_pixels.npy"
    np.save(raw, (calib[:60] * 255.0).astype(np.float32))  # 0-255 floats for a model trained on 0-1
    code = main(["inspect", str(trained_outlier_cnn()), "--calib", str(raw), "--samples", "60", "--json"])
    data = json.loads(capsys.readouterr().out)["inspect"]
    assert code == 0
    assert data["samples"] == 60 and data["layers"][0]["harm_db"] <= data["layers"][-1]["harm_db"]
    findings = {f["check"]: (f["level"], f["message"]) for f in data["calibration_audit"]["findings"]}
    assert findings["preprocessing"][0] == "problem"
    assert "hold 0..255" in findings["preprocessing"][1] and "--scale 1" in findings["preprocessing"][1]


def test_cli_inspect_audit_flags_a_model_trained_on_0_255_fed_the_default(tmp_path, capsys):
    """A BatchNormalization CNN trained on raw 0..255 pixels, inspected from a labelled image folder at the
    default 1/255: the audit calls it a problem and names --scale 1 (it used to compare the range with itself)."""
    import cv2

    from edgecnn.cli import main
    from fixtures.prep_models import trained_prep_model
    from edgecnn.data import mnist_sample

    val = mnist_sample("val").head(120)
    for index, (image, label) in enumerate(zip(val.images, val.labels)):
        (tmp_path / "digits" / str(label)).mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(tmp_path / "digits" / str(label) / f"{index}.png"), image)
    model = str(trained_prep_model("raw"))
    code = main(["inspect", model, "--calib", str(tmp_path / "digits"), "--samples", "40", "--json"])
    findings = json.loads(capsys.readouterr().out)["inspect"]["calibration_audit"]["findings"]
    (found,) = [f for f in findings if f["check"] == "preprocessing"]
    assert code == 0 and found["level"] == "problem" and "fix: pass --scale 1 (Keras top-1" in found["message"], found
    code = main(["inspect", model, "--calib", str(tmp_path / "digits"), "--samples", "40", "--scale", "1", "--json"])
    findings = json.loads(capsys.readouterr().out)["inspect"]["calibration_audit"]["findings"]
    (found,) = [f for f in findings if f["check"] == "preprocessing"]
    assert code == 0 and found["level"] == "ok" and "consistent with training" in found["message"], found


def test_cli_edgetpu_from_keras_writes_the_ready_model(tmp_path, capsys, mnist_keras_path):
    from edgecnn.cli import main

    code = main(["inspect", str(mnist_keras_path), "--calib", "mnist", "--samples", "20", "--target", "edgetpu",
                 "--out", str(tmp_path), "--json"])
    data = json.loads(capsys.readouterr().out)["edgetpu"]
    assert code == 0
    assert data["prediction"]["fully_mapped"] is True and data["compiler"] is None
    assert (tmp_path / "mnist_cnn_int8_edgetpu_ready.tflite").is_file()
    assert main(["inspect", str(mnist_keras_path), "--calib", "mnist", "--target", "edgetpu", "--out",
                 str(tmp_path)]) == 2  # exists: refused without --force
    assert main(["inspect", str(mnist_keras_path), "--calib", "mnist", "--samples", "20", "--target", "edgetpu",
                 "--out", str(tmp_path), "--force", "--edgetpu-runtime", "13", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["edgetpu"]["prediction"]["runtime"] == 13
    assert main(["inspect", str(next(tmp_path.glob("*.tflite"))), "--target", "edgetpu", "--edgetpu-runtime", "9"]) == 2
    assert "runtime 9 is not one the compiler targets" in capsys.readouterr().err
    assert main(["inspect", str(next(tmp_path.glob("*.tflite")))]) == 2  # a .tflite needs --target edgetpu
    assert "--target edgetpu" in capsys.readouterr().err
