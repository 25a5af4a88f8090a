"""Edge TPU readiness on real full-int8 .tflite files converted here, one tiny model per documented limitation
(one session fixture converts them all), the predicted partition (graph walk, -a, runtime -m), the
compiler-ready model, and the compiler's log parser on published logs. The compiler itself cannot be installed
here (Coral's apt repository); its absence is tested for real, its presence with a stand-in script named as such.
"""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edgecnn.devices.edgetpu_check import EdgeTpuOptions, OpVerdict, check_edgetpu, count_subgraphs, partition
from edgecnn.devices.edgetpu_ops import (AFTER_SPLIT, MAPPED, NOT_SUPPORTED, UNSPECIFIED, UNSUPPORTED_RANK,
                                         UNSUPPORTED_TYPE)
from edgecnn.errors import OutputExistsError, UsageError


def _calib(shape, count=8):
    return np.random.default_rng(0).uniform(0, 1, (count, *shape)).astype(np.float32)


def _limit_models():
    """name -> (keras model, input shape): each hits one documented limitation (and its allowed twin)."""
    import keras

    L = keras.layers  # noqa: N806
    made = {}
    x = keras.Input((12, 12, 4))
    made["dilations"] = (keras.Model(x, [L.Conv2D(4, 3, dilation_rate=d, name=f"d{d[0]}{d[1]}")(x)
                                         for d in ((1, 1), (2, 2), (2, 1), (1, 3))]), (12, 12, 4))
    x = keras.Input((8, 8, 3))
    branches = [L.Conv2D(z, 1, name=f"c{z}")(x) for z in (3, 4, 6, 8)]
    made["mean_z"] = (keras.Model(x, [L.Lambda(lambda t: keras.ops.mean(t, axis=-1, keepdims=True), name=f"mean{i}")(b)
                                      for i, b in enumerate(branches)] + [L.GlobalAveragePooling2D(name="gap")(branches[2])]),
                      (8, 8, 3))
    x = keras.Input((9, 8, 4))
    made["slices"] = (keras.Model(x, [L.Lambda(lambda t: t[:, 1:5], name="s1")(x), L.Lambda(lambda t: t[:, ::2], name="s2")(x),
                                      L.Lambda(lambda t: t[:, ::3], name="s3")(x)]), (9, 8, 4))
    x = keras.Input((6, 6, 3))
    c = L.Conv2D(3, 1, name="c")(x)
    made["pads"] = (keras.Model(x, [L.ZeroPadding2D(1, name="pad_xy")(c),
                                    L.Lambda(lambda t: keras.ops.pad(t, [[1, 0], [0, 0], [0, 0], [0, 0]]), name="pad_b")(c),
                                    L.Lambda(lambda t: keras.ops.pad(t, [[0, 0], [0, 0], [0, 0], [0, 1]]), name="pad_z")(c)]),
                    (6, 6, 3))
    x = keras.Input((4, 6, 3))
    made["shapes"] = (keras.Model(x, [L.Permute((2, 1, 3), name="permute")(x), L.Reshape((2, 2, 6, 3), name="rank5")(x)]),
                      (4, 6, 3))
    x = keras.Input((10, 10, 3))
    a = L.Conv2D(4, 3, name="conv_a")(x)
    b = L.Conv2D(4, 1, name="conv_b")(L.LeakyReLU(name="leaky")(a))
    made["branch"] = (keras.Model(x, L.Conv2D(2, 1, name="conv_d")(L.Concatenate(name="cat")([b, L.Conv2D(4, 1, name="conv_c")(a)]))),
                      (10, 10, 3))
    return made


def _convert_16x8(model, shape, path: Path) -> Path:
    """TFLite's 16x8 mode (int16 activations, int8 weights): a real conversion, not an Edge TPU model."""
    import tensorflow as tf

    saved = path.with_suffix(".savedmodel")
    model.export(str(saved), format="tf_saved_model", verbose=False, input_signature=[tf.TensorSpec((1, *shape))])
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    data = _calib(shape)
    converter.representative_dataset = lambda: ([data[i:i + 1]] for i in range(len(data)))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
    path.write_bytes(converter.convert())
    return path


@pytest.fixture(scope="session")
def limits(tmp_path_factory) -> dict[str, Path]:
    """Every limitation model converted once, full int8 through the project's convert path (and one 16x8)."""
    from edgecnn.converters.edgetpu_compiler import compiler_ready_model
    from edgecnn.converters import zoo

    folder = tmp_path_factory.mktemp("edgetpu-limits")
    paths = {name: compiler_ready_model(model, _calib(shape), folder / f"{name}.tflite")
             for name, (model, shape) in _limit_models().items()}
    paths["int16x8"] = _convert_16x8(zoo.build_seed("mnist_cnn"), (28, 28, 1), folder / "int16x8.tflite")
    return paths


def _by_layer(report) -> dict[str, OpVerdict]:
    return {op.layer: op for op in report.ops}


def test_conv_needs_the_same_dilation_in_x_and_y(limits):
    ops = _by_layer(check_edgetpu(limits["dilations"]))
    assert ops["d11"].on_edgetpu and ops["d22"].on_edgetpu
    for name, dims in (("d21", "2x1"), ("d13", "1x3")):
        assert (ops[name].status, ops[name].on_edgetpu) == (UNSPECIFIED, False)
        assert ops[name].reason == f"CONV_2D with dilation {dims} (height x width): x and y must use the same dilation"


def test_mean_over_z_needs_a_multiple_of_4(limits):
    report = check_edgetpu(limits["mean_z"])
    means = [op for op in report.ops if op.op == "MEAN"]
    assert len(means) == 5
    refused = sorted(op.reason for op in means if not op.supported)
    assert refused == [f"MEAN reduces over z of size {z}: a z-reduction needs z a multiple of 4" for z in (3, 6)]
    assert sum(op.on_edgetpu for op in means) == 3  # z = 4, z = 8, and the x/y mean of GlobalAveragePooling2D
    assert all(op.status == UNSPECIFIED for op in means if not op.supported)


def test_strided_slice_needs_all_strides_1(limits):
    slices = [op for op in check_edgetpu(limits["slices"]).ops if op.op in ("STRIDED_SLICE", "SLICE")]
    assert len(slices) == 3 and sum(op.on_edgetpu for op in slices) == 1
    assert sorted(op.reason for op in slices if not op.supported) == [
        f"STRIDED_SLICE with strides [1, {s}, 1, 1]: all strides must be 1" for s in (2, 3)]


def test_pad_on_the_batch_and_the_older_runtime_rule(limits):
    pads = [op for op in check_edgetpu(limits["pads"]).ops if op.op == "PAD"]
    assert sum(op.on_edgetpu for op in pads) == 2  # x/y and z padding
    (batch,) = [op for op in pads if not op.supported]
    assert batch.status == UNSPECIFIED and batch.reason == "PAD pads the batch dimension (paddings [[1, 0], [0, 0], [0, 0], [0, 0]])"
    old = [op for op in check_edgetpu(limits["pads"], EdgeTpuOptions(runtime=12)).ops if op.op == "PAD"]
    assert [op.on_edgetpu for op in old].count(True) == 1  # runtime <= 12 pads along x and/or y only
    assert any(op.reason == "PAD along dimensions [3]: runtime 12 pads along x and/or y only" for op in old)


def test_runtime_version_makes_newer_ops_unsupported(limits):
    for runtime in (10, 11, 12, 13, 14):
        report = check_edgetpu(limits["shapes"], EdgeTpuOptions(runtime=runtime))
        transpose = next(op for op in report.ops if op.op == "TRANSPOSE")
        assert transpose.on_edgetpu == (runtime >= 14)
        if runtime < 14:
            assert (transpose.status, transpose.reason) == (NOT_SUPPORTED, f"TRANSPOSE needs Edge TPU runtime 14 or later (-m {runtime})")
        assert f"Edge TPU runtime {runtime} (edgetpu_compiler -m {runtime})" in report.assumption()
    rank5 = next(op for op in check_edgetpu(limits["shapes"]).ops if op.op == "RESHAPE")
    assert (rank5.status, rank5.reason) == (UNSUPPORTED_RANK, "tensor [1, 2, 2, 6, 3] has more than 3 dimensions larger than 1")
    with pytest.raises(UsageError, match="runtime 15 is not one the compiler targets"):
        EdgeTpuOptions(runtime=15)


def test_a_16x8_model_is_not_an_edge_tpu_model(limits):
    from edgecnn.devices.base import RunnerOptions
    from edgecnn.devices.runners import open_runner

    report = check_edgetpu(limits["int16x8"])
    assert report.mapped == 0 and report.ops
    assert {op.op: op.status for op in report.ops if op.status != UNSUPPORTED_TYPE} == {"DEQUANTIZE": NOT_SUPPORTED}
    conv = next(op for op in report.ops if op.op == "CONV_2D")
    assert conv.reason == "CONV_2D works on 16-bit activations (a 16x8 model); the Edge TPU takes only 8-bit tensors"
    assert any(p.startswith("16-bit activations (a 16x8 model)") for p in report.problems)
    assert not any(p.startswith("Model not quantized") for p in report.problems)
    with pytest.raises(UsageError, match=r"not a full-int8 model \(it has .*int16.*\) and the Edge TPU runs only 8-bit"):
        open_runner(limits["int16x8"], "edgetpu", RunnerOptions(allow_cpu_fallback=True))


def test_a_branch_after_an_unsupported_op_is_walked_on_the_graph(limits):
    report = check_edgetpu(limits["branch"])
    ops = _by_layer(report)
    assert (ops["leaky"].status, ops["leaky"].reason) == (NOT_SUPPORTED, "LEAKY_RELU is not in the Edge TPU's "
                                                          "supported-operations table")
    assert ops["conv_a"].on_edgetpu and ops["conv_c"].on_edgetpu  # conv_c comes after LEAKY_RELU in op order
    assert ops["conv_c"].index > ops["leaky"].index
    assert [op.status for op in report.ops if op.layer in ("conv_b", "cat", "conv_d")] == [AFTER_SPLIT] * 3
    assert report.subgraphs == 1
    multi = check_edgetpu(limits["branch"], EdgeTpuOptions(multiple_subgraphs=True))
    assert [op.on_edgetpu for op in multi.ops] == [op.op != "LEAKY_RELU" for op in multi.ops]
    assert multi.subgraphs == 2 and "multiple Edge TPU subgraphs (-a)" in multi.assumption()


@pytest.mark.parametrize("name,expected", [
    ("mnist_cnn", {"CONV_2D": 1, "MAX_POOL_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 2, "SOFTMAX": 1}),
    ("mnist_mlp", {"FULLY_CONNECTED": 2, "SOFTMAX": 1}),
    ("cifar10_cnn", {"CONV_2D": 4, "MAX_POOL_2D": 2, "RESHAPE": 1, "FULLY_CONNECTED": 2, "SOFTMAX": 1}),
])
def test_seed_models_map_entirely(tmp_path_factory, name, expected):
    from edgecnn.converters import zoo
    from edgecnn.converters.edgetpu_compiler import compiler_ready_model, edgetpu_readiness

    path = tmp_path_factory.mktemp("seeds") / f"{name}.tflite"
    compiler_ready_model(zoo.build_seed(name), _calib(zoo.SEED_MODELS[name].input_shape), path)
    report = check_edgetpu(path)
    assert report.problems == () and report.fully_mapped and report.subgraphs == 1
    assert {op: count for op, count, status in report.summary() if status == MAPPED} == expected
    reshape = [op for op in report.ops if op.op == "RESHAPE"]
    assert all(op.may_not_map.startswith("Certain reshapes might not be mapped") for op in reshape)
    result = edgetpu_readiness(path)
    assert result.ready_model == path and "compiled as is" in result.ready_line()


def test_dynamic_batch_and_float_models_cannot_be_made_ready(tmp_path):
    import tensorflow as tf

    from edgecnn.converters import zoo
    from edgecnn.converters.edgetpu_compiler import edgetpu_readiness
    from edgecnn.converters.tflite import convert_bytes

    model = zoo.build_seed("mnist_cnn")
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    dynamic = tmp_path / "dynamic_int8.tflite"
    dynamic.write_bytes(convert_bytes(tmp_path / "saved", "int8", _calib((28, 28, 1))))
    result = edgetpu_readiness(dynamic, request=_request(tmp_path / "out"))
    first = result.prediction.first_unsupported
    assert first is not None and first.layer.startswith("flatten") and first.op == "SHAPE"
    assert all(not op.on_edgetpu for op in result.prediction.ops[first.index:])
    assert result.ready_model is None and "batch dimension is dynamic" in result.ready_line()
    assert "cannot be made compiler-ready without its Keras model" in result.ready_line()
    floats = tmp_path / "float.tflite"
    floats.write_bytes(tf.lite.TFLiteConverter.from_keras_model(zoo.build_seed("mnist_mlp")).convert())
    result = edgetpu_readiness(floats, request=_request(tmp_path / "out"))
    assert result.ready_model is None and "Model not quantized" in result.ready_line()
    assert result.prediction.mapped == 0 and not (tmp_path / "out").exists()


def _request(out_dir, force=False, **options):
    from edgecnn.converters.edgetpu_compiler import EdgeTpuRequest

    return EdgeTpuRequest(out_dir=out_dir, force=force, options=EdgeTpuOptions(**options))


def test_partition_units_chain_branch_and_multiple_subgraphs():
    chain = [OpVerdict(0, "QUANTIZE", "in", False, "float input", status=UNSUPPORTED_TYPE),
             OpVerdict(1, "CONV_2D", "c", True), OpVerdict(2, "ELU", "e", False, "no", status=NOT_SUPPORTED),
             OpVerdict(3, "CONV_2D", "d", True)]
    placed = partition(chain)
    assert [p.on_edgetpu for p in placed] == [False, True, False, False]
    assert [p.status for p in placed] == [UNSUPPORTED_TYPE, MAPPED, NOT_SUPPORTED, AFTER_SPLIT]
    # 3 reads only 0 (a branch beside the unsupported op 2): mapped on the graph, though later in op order
    parents = [(), (0,), (1,), (1,), (2, 3)]
    ops = chain + [OpVerdict(4, "ADD", "a", True)]
    placed = partition(ops, parents)
    assert [p.on_edgetpu for p in placed] == [False, True, False, True, False]
    assert count_subgraphs(placed, parents) == 1
    multi = partition(ops, parents, multiple_subgraphs=True)
    assert [p.on_edgetpu for p in multi] == [False, True, False, True, True]
    assert count_subgraphs(multi, parents) == 2


# Published compiler output, verbatim: rajansaini691/retinanet-model-tflite, tiny_yolo_edgetpu.log (compiler 14.1),
# and the -s summary quoted in google-coral/edgetpu#342 (2021-03-21).
PUBLISHED_LOG = """Edge TPU Compiler version 14.1.317412892
Input: tiny_yolo.tflite
Output: tiny_yolo_edgetpu.tflite

Operator                       Count      Status

CONCATENATION                  1          More than one subgraph is not supported
MAX_POOL_2D                    6          Mapped to Edge TPU
RESIZE_NEAREST_NEIGHBOR        1          Operation version not supported
CONV_2D                        11         Mapped to Edge TPU
CONV_2D                        2          More than one subgraph is not supported
QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
QUANTIZE                       1          More than one subgraph is not supported
QUANTIZE                       2          Mapped to Edge TPU
"""
PUBLISHED_SUMMARY = """Number of operations that will run on Edge TPU: 2
Number of operations that will run on CPU: 153

Operator                       Count      Status


TRANSPOSE                      70         Operation not supported
FULLY_CONNECTED                1          More than one subgraph is not supported
PAD                            1          Mapped to Edge TPU
PAD                            17         More than one subgraph is not supported
ADD                            10         More than one subgraph is not supported
MEAN                           2          More than one subgraph is not supported
CONV_2D                        35         More than one subgraph is not supported
QUANTIZE                       1          Mapped to Edge TPU
QUANTIZE                       1          Operation is otherwise supported, but not mapped due to some unspecified limitation
DEPTHWISE_CONV_2D              17         More than one subgraph is not supported
"""


def test_compiler_log_parser_reads_published_logs():
    from edgecnn.converters.edgetpu_compiler import parse_compiler_log
    from edgecnn.devices import edgetpu_ops

    log = parse_compiler_log(PUBLISHED_LOG)
    assert log.version == "14.1.317412892" and len(log.rows) == 8 and log.mapped() == 19
    assert log.rows[5] == ("QUANTIZE", 1, edgetpu_ops.UNSPECIFIED)
    summary = parse_compiler_log(PUBLISHED_SUMMARY)
    assert (summary.edgetpu_ops, summary.cpu_ops, summary.mapped()) == (2, 153, 2)
    assert sum(count for _, count, _ in summary.rows) == 155
    statuses = {status for _, _, status in log.rows + summary.rows}
    assert statuses - set(edgetpu_ops.STATUSES) == {"Operation version not supported"}  # the others: our wording


def test_without_the_compiler_the_prediction_stands_and_says_how(limits, tmp_path, monkeypatch):
    from edgecnn.converters.edgetpu_compiler import edgetpu_readiness

    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    result = edgetpu_readiness(limits["dilations"], request=_request(tmp_path))
    assert result.compiler is None and result.compiled_model is None and result.ready_model == limits["dilations"]
    assert "apt" in result.notes[0] and "coral.ai" in result.notes[0] and not list(tmp_path.iterdir())


STAND_IN = """#!/bin/sh
# Stand-in for edgetpu_compiler (Coral's package cannot be installed here): records its arguments, writes
# outputs where -o says, and prints a log in the compiler's format whose rows follow the flat op order.
echo "$@" > "{record}"
out=""; prev=""
for a in "$@"; do [ "$prev" = "-o" ] && out="$a"; prev="$a"; done
printf 'fake' > "$out/branch_edgetpu.tflite"
cat "{log}" > "$out/branch_edgetpu.log"
cat "{log}"
"""
STAND_IN_LOG = """Edge TPU Compiler version 16.0.384591198
Number of Edge TPU subgraphs: 1
Total number of operations: 6
Number of operations that will run on Edge TPU: 1
Number of operations that will run on CPU: 5

Operator                       Count      Status

CONV_2D                        1          Mapped to Edge TPU
LEAKY_RELU                     1          Operation not supported
CONV_2D                        3          More than one subgraph is not supported
CONCATENATION                  1          More than one subgraph is not supported
"""


def test_a_compiler_on_path_runs_with_the_same_m_and_a_and_is_compared(limits, tmp_path, monkeypatch):
    from edgecnn.converters.edgetpu_compiler import edgetpu_readiness

    bindir = tmp_path / "stand-in-bin"
    bindir.mkdir()
    (bindir / "log.txt").write_text(STAND_IN_LOG)
    script = bindir / "edgetpu_compiler"
    script.write_text(STAND_IN.format(record=bindir / "args.txt", log=bindir / "log.txt"))
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    result = edgetpu_readiness(limits["branch"], request=_request(out, runtime=13, multiple_subgraphs=False))
    assert (bindir / "args.txt").read_text().split()[:3] == ["-s", "-m", "13"]
    assert result.compiler.version == "16.0.384591198" and result.compiled_model == out / "branch_edgetpu.tflite"
    assert sorted(p.name for p in out.iterdir()) == ["branch_edgetpu.log", "branch_edgetpu.tflite"]  # no scratch left
    rows = {(name, status): (pred, comp, agree) for name, status, pred, comp, agree in result.comparison()}
    assert rows[("LEAKY_RELU", NOT_SUPPORTED)] == (1, 1, "yes")
    assert rows[("CONV_2D", MAPPED)] == (2, 1, "NO") and rows[("CONV_2D", AFTER_SPLIT)] == (2, 3, "NO")
    with pytest.raises(OutputExistsError, match="branch_edgetpu"):
        edgetpu_readiness(limits["branch"], request=_request(out))
    multi = edgetpu_readiness(limits["branch"], request=_request(out, force=True, multiple_subgraphs=True))
    assert "-a" in (bindir / "args.txt").read_text().split() and multi.prediction.subgraphs == 2
    assert json.loads(json.dumps(multi.to_dict()))["comparison"]


def test_api_inspect_edgetpu_writes_the_ready_model_and_respects_force(tmp_path):
    import edgecnn
    from edgecnn.converters import zoo
    from edgecnn.converters.inspect import InspectOptions

    model = zoo.build_seed("mnist_mlp")
    calib = _calib(zoo.SEED_MODELS["mnist_mlp"].input_shape, 16)
    options = InspectOptions(samples=8, edgetpu=_request(tmp_path))
    result = edgecnn.inspect(model, calib, target="edgetpu", options=options)
    ready = result.edgetpu.ready_model
    assert ready == tmp_path / f"{model.name}_int8_edgetpu_ready.tflite" and ready.is_file()
    assert result.samples == 8 and result.edgetpu.prediction.fully_mapped
    assert result.notes == (result.edgetpu.ready_line(),) and "written: full int8, static batch 1" in result.notes[0]
    with pytest.raises(OutputExistsError):
        edgecnn.inspect(model, calib, target="edgetpu", options=options)
    forced = InspectOptions(samples=8, edgetpu=_request(tmp_path, force=True))
    assert edgecnn.inspect(model, calib, target="edgetpu", options=forced).edgetpu.ready_model == ready
    from_file = edgecnn.inspect(ready, None, target="edgetpu")
    assert from_file.edgetpu.ready_model == ready and from_file.edgetpu.prediction.fully_mapped
