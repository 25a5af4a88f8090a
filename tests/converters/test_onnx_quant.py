"""fp32 ONNX -> int8 QDQ ONNX with real ONNX Runtime static quantization of the trained MNIST CNN."""
from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from edgecnn.converters.calibration_methods import CalibrationMethod  # noqa: E402
from edgecnn.converters.onnx_export import INPUT_NAME, export_onnx, onnx_io_specs  # noqa: E402
from edgecnn.converters.onnx_quant import node_names, quantize_onnx  # noqa: E402
from edgecnn.data import mnist_sample  # noqa: E402
from edgecnn.errors import (  # noqa: E402
    DataError, InputPathError, ModelLoadError, OutputPathError, UnknownNameError, UsageError)

CALIB_SAMPLES = 300


def run_onnx(path, x):
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT_NAME: x})[0]


def load_graph(path):
    import onnx

    return onnx.load(str(path)).graph


def weight_scales(path):
    """Shape of the scale of every DequantizeLinear whose input is a stored int8 weight."""
    from onnx import numpy_helper

    graph = load_graph(path)
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    return {node.input[0]: inits[node.input[1]].shape for node in graph.node
            if node.op_type == "DequantizeLinear" and node.input[0] in inits and inits[node.input[0]].dtype == np.int8
            and inits[node.input[0]].ndim >= 2}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx_quant")


@pytest.fixture(scope="module")
def keras_outputs():
    """The trained MNIST CNN's float outputs on the 1,000 held-out digits, and those digits."""
    import keras

    from edgecnn.converters.zoo import trained_mnist_cnn

    model = keras.saving.load_model(trained_mnist_cnn(), safe_mode=True)
    val = mnist_sample("val")
    x = val.images.astype(np.float32) / 255.0
    return model, x, val.labels, model.predict(x, verbose=0)


@pytest.fixture(scope="module")
def fp32(keras_outputs, work):
    return export_onnx(keras_outputs[0], work / "mnist_fp32.onnx")


@pytest.fixture(scope="module")
def calib():
    return mnist_sample("train").images[:CALIB_SAMPLES].astype(np.float32) / 255.0


@pytest.fixture(scope="module")
def int8_models(fp32, calib, work):
    return {method: quantize_onnx(fp32, calib, work / f"mnist_int8_{method.value}.onnx", method=method)
            for method in CalibrationMethod}


def test_qdq_model_has_quant_nodes_int8_per_channel_weights_and_float_io(int8_models, fp32):
    path = int8_models[CalibrationMethod.MINMAX]
    ops = [node.op_type for node in load_graph(path).node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 6
    scales = weight_scales(path)
    # conv 32 filters, dense 128, dense 10: one scale per output channel each
    assert sorted(shape for shape in scales.values()) == [(10,), (32,), (128,)]
    spec_in, spec_out = onnx_io_specs(path)
    assert spec_in == onnx_io_specs(fp32)[0] and spec_in.dtype == "float32"
    assert spec_out.dtype == "float32" and spec_out.shape == (-1, 10)
    assert path.stat().st_size < fp32.stat().st_size / 3


@pytest.mark.parametrize("method", list(CalibrationMethod), ids=lambda m: m.value)
def test_int8_agrees_with_keras_on_the_held_out_digits(int8_models, keras_outputs, method):
    _, x, labels, expected = keras_outputs
    got = run_onnx(int8_models[method], x)
    agreement = float((got.argmax(1) == expected.argmax(1)).mean())
    drop_pp = 100 * float((expected.argmax(1) == labels).mean() - (got.argmax(1) == labels).mean())
    assert agreement >= 0.98, f"{method.value}: top-1 agreement {agreement:.3f}"
    assert drop_pp <= 1.0, f"{method.value}: accuracy drop {drop_pp:.2f} pp"
    assert np.abs(got - expected).max() < 0.5


def test_per_tensor_weights_when_per_channel_is_off(fp32, calib, work):
    path = quantize_onnx(fp32, calib[:64], work / "per_tensor.onnx", per_channel=False)
    assert sorted(weight_scales(path).values()) == [(), (), ()]


def test_excluded_node_stays_float_and_the_rest_is_quantized(fp32, calib, keras_outputs, work):
    last_matmul = [name for name in node_names(fp32) if name.endswith("/MatMul")][-1]
    path = quantize_onnx(fp32, calib[:64], work / "excluded.onnx", method="minmax", nodes_to_exclude=[last_matmul])
    graph = load_graph(path)
    float_inits = {init.name for init in graph.initializer if init.data_type == 1}  # 1: FLOAT
    kept = [node for node in graph.node if node.name.startswith(last_matmul)]
    assert kept and all(node.op_type not in ("QuantizeLinear", "DequantizeLinear") for node in kept)
    assert kept[0].input[1] in float_inits  # the weight is read as float, not through DequantizeLinear
    assert len(weight_scales(path)) == 2  # the other two layers still have int8 weights
    _, x, _, expected = keras_outputs
    assert (run_onnx(path, x).argmax(1) == expected.argmax(1)).mean() >= 0.98


def test_progress_reports_every_sample_and_ort_chatter_is_dropped(fp32, calib, work, capsys):
    calls = []

    def progress(done, total):
        calls.append((done, total))
        print(f"calibrated {done}/{total}")

    quantize_onnx(fp32, calib[:100], work / "progress.onnx", method="entropy", progress=progress)
    assert calls[-1] == (100, 100)
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    printed = capsys.readouterr().out
    assert "calibrated 100/100" in printed  # the caller's own output still gets through
    assert "Collecting tensor data" not in printed and "Number of tensors" not in printed


@pytest.mark.parametrize("bad, error", [
    (np.zeros((0, 28, 28, 1), np.float32), "no samples"),
    (np.zeros((4, 32, 32, 1), np.float32), "shape"),
    (np.zeros((4, 28, 28, 1), np.uint8), "dtype"),
    (np.full((4, 28, 28, 1), np.nan, np.float32), "NaN"),
    ([[0.0] * 784], "numpy array"),
], ids=["empty", "shape", "dtype", "nan", "list"])
def test_bad_calibration_data_is_a_one_line_data_error(fp32, work, bad, error):
    out = work / "bad.onnx"
    with pytest.raises(DataError, match=error) as raised:
        quantize_onnx(fp32, bad, out)
    assert "\n" not in str(raised.value) and not out.exists()


def test_bad_paths_names_and_methods_are_typed_errors(fp32, calib, work, tmp_path):
    out = tmp_path / "out.onnx"
    with pytest.raises(InputPathError):
        quantize_onnx(tmp_path / "missing.onnx", calib[:8], out)
    (tmp_path / "truncated.onnx").write_bytes(fp32.read_bytes()[:5000])
    with pytest.raises(ModelLoadError):
        quantize_onnx(tmp_path / "truncated.onnx", calib[:8], out)
    with pytest.raises(UnknownNameError, match="did you mean 'entropy'"):
        quantize_onnx(fp32, calib[:8], out, method="entropi")
    with pytest.raises(UnknownNameError, match="no node"):
        quantize_onnx(fp32, calib[:8], out, nodes_to_exclude=["no/such/node"])
    fused_add = [name for name in node_names(fp32) if name.endswith("/BiasAdd")][-1]
    with pytest.raises(UsageError, match="fused"):
        quantize_onnx(fp32, calib[:8], out, nodes_to_exclude=[fused_add])
    (tmp_path / "a_file").write_text("not a folder")
    with pytest.raises(OutputPathError):
        quantize_onnx(fp32, calib[:8], tmp_path / "a_file" / "out.onnx")
    assert not out.exists() and sorted(os.listdir(tmp_path)) == ["a_file", "truncated.onnx"]


# -- settings per target, the float head -------------------------------------------------------------
def quantized_weights(path):
    """Every stored quantized weight (int8 initializers read through a DequantizeLinear), as arrays."""
    from onnx import numpy_helper

    graph = load_graph(path)
    inits = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
    return [inits[n.input[0]] for n in graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
            and inits[n.input[0]].dtype == np.int8]


def producer_of(graph, tensor):
    return next(node for node in graph.node if tensor in node.output)


@pytest.fixture(scope="module")
def target_models(fp32, calib, work):
    from edgecnn.converters.onnx_targets import ONNX_TARGETS, onnx_settings

    return {name: quantize_onnx(fp32, calib, work / f"target_{name}.onnx", settings=onnx_settings(name))
            for name in ONNX_TARGETS}


def test_every_target_writes_its_activation_type_and_int8_per_channel_weights(target_models, keras_outputs):
    from edgecnn.converters.onnx_graph import qdq_facts
    from edgecnn.converters.onnx_targets import ONNX_TARGETS

    _, x, _, expected = keras_outputs
    assert set(target_models) == {"x86", "x86-avx2", "arm64"}
    for name, path in target_models.items():
        facts = qdq_facts(path)
        assert facts.activations == (ONNX_TARGETS[name].activations,), name
        assert facts.weights == ("int8",) and facts.weights_per_channel, name
        weights = np.concatenate([w.reshape(-1) for w in quantized_weights(path)])
        # reduce_range keeps weights in 7 bits (ONNX Runtime: symmetric +-64); otherwise the int8 range to +-127
        assert np.abs(weights.astype(int)).max() == (64 if ONNX_TARGETS[name].reduce_range else 127), name
        got = run_onnx(path, x)
        assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.995, name
        # 7-bit weights round twice as coarsely: 0.028 measured on this model
        assert np.abs(got - expected).max() <= (0.05 if ONNX_TARGETS[name].reduce_range else 0.02), name


def test_default_is_x86_uint8_activations(target_models, int8_models):
    from edgecnn.converters.onnx_graph import qdq_facts

    assert qdq_facts(int8_models[CalibrationMethod.MINMAX]).activations == ("uint8",)
    assert load_graph(int8_models[CalibrationMethod.MINMAX]) == load_graph(target_models["x86"])


def test_softmax_and_logits_stay_float_and_probabilities_are_within_0_02_of_keras(int8_models, keras_outputs):
    path = int8_models[CalibrationMethod.MINMAX]
    graph = load_graph(path)
    softmax = producer_of(graph, graph.output[0].name)
    assert softmax.op_type == "Softmax"
    logits = producer_of(graph, softmax.input[0])
    assert logits.op_type == "Gemm"  # fed directly by the dense layer, no DequantizeLinear between
    assert any(producer_of(graph, i).op_type == "DequantizeLinear" for i in logits.input[:2])  # itself int8
    _, x, labels, expected = keras_outputs
    got = run_onnx(path, x)
    assert np.abs(got - expected).max() <= 0.02
    assert (got.argmax(1) == expected.argmax(1)).mean() >= 0.999
    assert (got.argmax(1) == labels).mean() >= (expected.argmax(1) == labels).mean()


def test_full_int8_quantizes_the_softmax_into_256_levels(fp32, calib, keras_outputs, work):
    from edgecnn.converters.onnx_targets import onnx_settings

    path = quantize_onnx(fp32, calib, work / "full_int8.onnx", settings=onnx_settings("x86", full_int8=True))
    graph = load_graph(path)
    last = producer_of(graph, graph.output[0].name)
    assert last.op_type == "DequantizeLinear" and producer_of(graph, last.input[0]).op_type == "QuantizeLinear"
    _, x, _, expected = keras_outputs
    from onnx import numpy_helper

    scale = float(numpy_helper.to_array(next(i for i in graph.initializer if i.name == last.input[1])))
    assert scale == pytest.approx(1 / 255, rel=1e-3)  # the quantizer gives Softmax the range [0, 1]
    got = run_onnx(path, x)
    steps = got / scale
    assert np.abs(steps - np.round(steps)).max() < 1e-3  # probabilities on a grid of 256 levels
    float_head = run_onnx(quantize_onnx(fp32, calib, work / "float_head.onnx"), x)
    assert np.abs(float_head - expected).max() < np.abs(got - expected).max()


@pytest.mark.parametrize("name, close", [("arm", "arm64"), ("x68", "x86"), ("X86-AVX", "x86-avx2")])
def test_unknown_target_is_an_unknown_name_with_did_you_mean(name, close):
    from edgecnn.converters.onnx_targets import onnx_settings

    with pytest.raises(UnknownNameError, match=f"did you mean '{close}'"):
        onnx_settings(name)


def test_settings_record_what_the_manifest_needs():
    from edgecnn.converters.onnx_targets import onnx_settings

    record = onnx_settings("arm64").record(per_channel=False)
    assert record["target"] == "arm64" and record["activations"] == "int8" and record["weights"] == "int8"
    assert record["format"] == "QDQ" and record["weights_per_channel"] is False and record["float_head"] is True
    assert "Softmax and logits in float" in onnx_settings().describe()
    assert "full int8" in onnx_settings(full_int8=True).describe()
