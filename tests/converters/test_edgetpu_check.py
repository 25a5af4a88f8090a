"""Edge TPU readiness: the static check on real full-int8 .tflite files (seed models all mapped; a dynamic
batch and an unsupported op flagged at the right layer), the predicted partition, and the compiler's log
parser on a log in the compiler's real format. The compiler itself cannot be installed here (Coral's apt
repository); its absence is tested for real, its presence with a stand-in script named as such."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from edgecnn.converters.edgetpu_check import AFTER_SPLIT, MAPPED, OpVerdict, check_edgetpu, partition


def _calib(shape, count=8):
    return np.random.default_rng(0).uniform(0, 1, (count, *shape)).astype(np.float32)


@pytest.fixture(scope="module")
def ready_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("edgetpu")


@pytest.mark.parametrize("name,expected", [
    ("mnist_cnn", {"CONV_2D": 1, "MAX_POOL_2D": 1, "RESHAPE": 1, "FULLY_CONNECTED": 2, "SOFTMAX": 1}),
    ("mnist_mlp", {"FULLY_CONNECTED": 2, "SOFTMAX": 1}),
    ("cifar10_cnn", {"CONV_2D": 4, "MAX_POOL_2D": 2, "RESHAPE": 1, "FULLY_CONNECTED": 2, "SOFTMAX": 1}),
])
def test_seed_models_map_entirely(ready_dir, name, expected):
    from edgecnn.converters import zoo
    from edgecnn.converters.edgetpu_compiler import compiler_ready_model

    path = compiler_ready_model(zoo.build_seed(name), _calib(zoo.SEED_MODELS[name].input_shape), ready_dir / f"{name}.tflite")
    report = check_edgetpu(path)
    assert report.problems == ()
    assert report.fully_mapped and report.first_unsupported is None
    assert {op: count for op, count, status in report.summary() if status == MAPPED} == expected


def test_dynamic_batch_is_flagged_at_flatten(ready_dir):
    """The pipeline's int8 from a SavedModel with a dynamic batch computes Flatten's shape at run time."""
    from edgecnn.converters import zoo
    from edgecnn.converters.tflite import convert_bytes

    model = zoo.build_seed("mnist_cnn")
    saved = ready_dir / "dyn_savedmodel"
    model.export(str(saved), format="tf_saved_model", verbose=False)
    path = ready_dir / "dynamic_int8.tflite"
    path.write_bytes(convert_bytes(saved, "int8", _calib((28, 28, 1))))
    report = check_edgetpu(path)
    first = report.first_unsupported
    assert first is not None and first.layer.startswith("flatten")
    assert [op.on_edgetpu for op in report.ops[:first.index]] == [True] * first.index  # conv, pool mapped
    assert not any(op.on_edgetpu for op in report.ops[first.index:])
    assert all(op.status == AFTER_SPLIT for op in report.ops[first.index:] if op.supported)
    assert any(op.reason.startswith("Dynamic-sized tensor") or "not supported" in op.reason for op in report.ops)


def test_unsupported_op_is_flagged_at_its_layer(ready_dir):
    import keras

    from edgecnn.converters.edgetpu_compiler import compiler_ready_model

    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(8, 3, name="conv"),
                              keras.layers.LeakyReLU(name="leaky"), keras.layers.Conv2D(8, 3, name="conv_after"),
                              keras.layers.GlobalAveragePooling2D(name="gap"), keras.layers.Dense(4, name="head")])
    report = check_edgetpu(compiler_ready_model(model, _calib((16, 16, 3)), ready_dir / "leaky.tflite"))
    first = report.first_unsupported
    assert (first.op, first.layer) == ("LEAKY_RELU", "leaky")
    assert report.ops[0].op == "CONV_2D" and report.ops[0].on_edgetpu
    after = report.ops[first.index + 1:]
    assert after and all(not op.on_edgetpu and op.status == AFTER_SPLIT for op in after)


def test_float_model_is_not_quantized(ready_dir):
    import tensorflow as tf

    from edgecnn.converters import zoo

    path = ready_dir / "float.tflite"
    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(zoo.build_seed("mnist_mlp")).convert())
    report = check_edgetpu(path)
    assert any(p.startswith("Model not quantized") for p in report.problems)
    assert report.mapped == 0


def test_partition_keeps_leading_cpu_ops_in_front():
    ops = [OpVerdict(0, "QUANTIZE", "in", False, "float input"), OpVerdict(1, "CONV_2D", "c", True, ""),
           OpVerdict(2, "ELU", "e", False, "Operation not supported"), OpVerdict(3, "CONV_2D", "d", True, "")]
    placed = partition(ops)
    assert [p.on_edgetpu for p in placed] == [False, True, False, False]
    assert [p.status for p in placed] == ["float input", MAPPED, "Operation not supported", AFTER_SPLIT]


REAL_FORMAT_LOG = """Edge TPU Compiler version 16.0.384591198
Started a compilation timeout timer of 180 seconds.

Model compiled successfully in 1179 ms.

Input model: leaky.tflite
Input size: 5.98KiB
Output model: leaky_edgetpu.tflite
Output size: 36.00KiB
On-chip memory used for caching model parameters: 3.25KiB
On-chip memory remaining for caching model parameters: 7.98MiB
Off-chip memory used for streaming uncached model parameters: 0.00B
Number of Edge TPU subgraphs: 1
Total number of operations: 5
Operation log: leaky_edgetpu.log

Model successfully compiled but not all operations are supported by the Edge TPU. A percentage of the model will instead run on the CPU, which is slower. If possible, consider updating your model to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.
Number of operations that will run on Edge TPU: 1
Number of operations that will run on CPU: 4

Operator                       Count      Status

CONV_2D                        1          Mapped to Edge TPU
CONV_2D                        1          More than one subgraph is not supported
LEAKY_RELU                     1          Operation not supported
MEAN                           1          More than one subgraph is not supported
FULLY_CONNECTED                1          More than one subgraph is not supported
Compilation child process completed within timeout period.
Compilation succeeded!
"""


def test_compiler_log_parser_reads_the_real_format():
    from edgecnn.converters.edgetpu_compiler import parse_compiler_log

    log = parse_compiler_log(REAL_FORMAT_LOG)
    assert log.version == "16.0.384591198"
    assert (log.edgetpu_ops, log.cpu_ops, log.subgraphs, log.total_ops) == (1, 4, 1, 5)
    assert log.rows[2] == ("LEAKY_RELU", 1, "Operation not supported")
    assert log.mapped() == 1 and sum(c for _, c, _ in log.rows) == 5


def test_without_the_compiler_the_prediction_stands_and_says_how(ready_dir, monkeypatch):
    from edgecnn.converters.edgetpu_compiler import readiness

    monkeypatch.setenv("PATH", str(ready_dir / "empty-bin"))
    model = next(ready_dir.glob("mnist_cnn.tflite"), None) or pytest.skip("seed test did not run")
    result = readiness(model, ready_dir / "compiled")
    assert result.compiler is None and result.compiled_model is None
    assert "apt" in result.notes[0] and "coral.ai" in result.notes[0]
    assert result.prediction.fully_mapped


def test_with_a_compiler_on_path_its_log_is_compared(ready_dir, monkeypatch):
    """A stand-in ``edgetpu_compiler`` script (the real one cannot be installed here) prints the real format."""
    from edgecnn.converters.edgetpu_compiler import readiness

    bindir = ready_dir / "fake-bin"
    bindir.mkdir(exist_ok=True)
    script = bindir / "edgetpu_compiler"
    (bindir / "log.txt").write_text(REAL_FORMAT_LOG)
    script.write_text(f"#!/bin/sh\ncat '{bindir / 'log.txt'}'\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    model = Path(ready_dir / "leaky.tflite")
    if not model.is_file():
        pytest.skip("unsupported-op test did not run")
    result = readiness(model, ready_dir / "compiled")
    assert result.compiler.version == "16.0.384591198"
    table = {name: (pred, comp, agree) for name, pred, comp, agree in result.comparison()}
    assert table["LEAKY_RELU"] == (0, 0, "yes") and table["CONV_2D"] == (1, 1, "yes")
