"""MACs counted from the graph of real TFLite and ONNX artifacts, against hand-computed figures."""
from __future__ import annotations

import pytest

from edgecnn.bench.macs import count_macs, gmacs_per_s

# MNIST CNN: Conv 5x5x1 -> 32 on a 24x24 output, Dense 4608 -> 128, Dense 128 -> 10.
MNIST_CNN_MACS = 24 * 24 * 32 * 5 * 5 * 1 + 12 * 12 * 32 * 128 + 128 * 10


@pytest.mark.parametrize("name", ["tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx-fp32",
                                  "onnx-int8"])
def test_mnist_cnn_macs_from_every_format(mnist_convert, name):
    assert count_macs(mnist_convert.artifact_path(name)) == MNIST_CNN_MACS


def test_depthwise_and_strided_convs(tmp_path):
    import keras
    import tensorflow as tf

    model = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(8, 3, strides=2, padding="same"),  # 8x8x8 outputs, 3*3*3 each
        keras.layers.DepthwiseConv2D(3, padding="valid"),       # 6x6x8 outputs, 3*3 each
        keras.layers.Conv2D(4, 1),                              # 6x6x4 outputs, 8 each
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(5),                                  # 5 outputs, 4 each
    ])
    path = tmp_path / "small.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    expected = 8 * 8 * 8 * 27 + 6 * 6 * 8 * 9 + 6 * 6 * 4 * 8 + 5 * 4
    assert count_macs(path) == expected


def test_gmacs_per_s():
    assert gmacs_per_s(2_000_000, 1.0) == pytest.approx(2.0)
    assert gmacs_per_s(None, 1.0) is None and gmacs_per_s(10, 0.0) is None


# -- without the converters' packages ---------------------------------------------------------------------
def test_onnx_macs_without_the_onnx_package(mnist_convert):
    """What a device has: onnxruntime and protobuf, no onnx (made unimportable in a child)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    noimport = Path(__file__).parents[1] / "devices" / "noimport.py"
    paths = [str(mnist_convert.artifact_path(n)) for n in ("onnx-fp32", "onnx-int8", "tflite-int8")]
    code = ("import json, sys\nfrom edgecnn.bench.macs import count_macs_noted\n"
            f"print(json.dumps([count_macs_noted(p) for p in {paths!r}]))")
    proc = subprocess.run([sys.executable, str(noimport), "onnx,tensorflow", "-c", code], capture_output=True,
                          text=True, timeout=300)
    assert "NOIMPORT-OK" in proc.stderr, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert results == [[MNIST_CNN_MACS, ""]] * 3


def test_the_onnx_subset_schema_matches_onnx_proto():
    import onnx

    from edgecnn.devices.onnxgraph import SCHEMA

    proto = {"ModelProto": onnx.ModelProto, "StringStringEntryProto": onnx.StringStringEntryProto,
             "GraphProto": onnx.GraphProto, "NodeProto": onnx.NodeProto, "AttributeProto": onnx.AttributeProto,
             "TensorProto": onnx.TensorProto, "ValueInfoProto": onnx.ValueInfoProto, "TypeProto": onnx.TypeProto,
             "TypeProtoTensor": onnx.TypeProto.Tensor, "TensorShapeProto": onnx.TensorShapeProto,
             "Dimension": onnx.TensorShapeProto.Dimension}
    assert set(proto) == set(SCHEMA)
    for message, fields in SCHEMA.items():
        real = proto[message].DESCRIPTOR.fields_by_name
        for name, number, kind, repeated in fields:
            field = real[name]
            assert field.number == number, (message, name)
            is_repeated = field.is_repeated if hasattr(field, "is_repeated") else field.label == field.LABEL_REPEATED
            assert is_repeated == repeated, (message, name)
            wire_types = {"string": {field.TYPE_STRING}, "int64": {field.TYPE_INT64},
                          "int32": {field.TYPE_INT32, field.TYPE_ENUM}}.get(kind, {field.TYPE_MESSAGE})
            assert field.type in wire_types, (message, name)


def test_a_model_read_without_onnx_is_written_back_unchanged(mnist_convert):
    import onnx

    from edgecnn.devices.onnxgraph import parse_model

    for name in ("onnx-fp32", "onnx-int8"):
        path = mnist_convert.artifact_path(name)
        again = onnx.load_from_string(parse_model(path.read_bytes()).SerializeToString())
        assert again == onnx.load(str(path)), name


def test_work_that_cannot_be_counted_gives_no_figure_and_a_reason(tmp_path):
    """A custom operator (converted by TensorFlow with allow_custom_ops) and an ONNX input of dynamic size."""
    import onnx
    import tensorflow as tf
    from onnx import TensorProto, helper

    from edgecnn.bench.macs import count_macs_noted

    class Custom(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([1, 8, 8, 3], tf.float32)], autograph=False)
        def __call__(self, x):
            return tf.math.digamma(tf.nn.conv2d(x, tf.ones([3, 3, 3, 4]), 1, "SAME") + 2.0)

    module = Custom()
    converter = tf.lite.TFLiteConverter.from_concrete_functions([module.__call__.get_concrete_function()], module)
    converter.allow_custom_ops = True
    custom = tmp_path / "custom.tflite"
    custom.write_bytes(converter.convert())
    macs, note = count_macs_noted(custom)
    assert macs is None and "custom operator(s) Digamma" in note and note.startswith("MACs not counted")

    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"])], "dynamic",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w_dim"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 3, 3], [0.1] * 108)])
    dynamic = tmp_path / "dynamic.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(dynamic))
    macs, note = count_macs_noted(dynamic)
    assert macs is None and "dynamic dimension" in note

    broken = tmp_path / "broken.onnx"
    broken.write_bytes(dynamic.read_bytes()[:40])
    macs, note = count_macs_noted(broken)
    assert macs is None and note.startswith("MACs not counted")


def test_a_mac_count_that_fails_never_fails_the_row(mnist_convert, monkeypatch):
    """Fault injection: the counter raises a runtime's own error type; latency is still measured and reported."""
    from edgecnn.bench import macs
    from edgecnn.bench.harness import BenchOptions, bench

    def broken(path, *rest):
        raise RuntimeError("a runtime refused to list the operations")

    monkeypatch.setattr(macs, "count_macs", broken)
    result = bench([mnist_convert.artifact_path("tflite-int8")], devices=["cpu"],
                   options=BenchOptions(runs=10, progress=False))
    row = result.rows[0]
    assert row.ok and row.invoke is not None and row.macs is None and row.gmacs_per_s is None
    assert "MACs not counted: RuntimeError: a runtime refused to list the operations" in row.notes
