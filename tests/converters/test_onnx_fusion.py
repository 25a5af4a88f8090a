"""Which quantized nodes ONNX Runtime really fuses, read from its optimized graph, on CNNs with residual branches.

A residual block's input tensor feeds two consumers (the block's first conv and its Add). With int8 (S8S8)
activations, ONNX Runtime on x86 converts Q/DQ pairs to uint8 before fusing them only where a QuantizeLinear
has one consumer, so every node touching such a tensor (its producer and both consumers) runs in float:
for B blocks, B + 1 convs (the stem and each block's first conv) and B Adds. With uint8 activations (the x86
target) everything fuses. Real Keras models, real tf2onnx export, real ONNX Runtime quantization and
optimization.
"""
from __future__ import annotations

import json
import platform

import numpy as np
import pytest

from edgecnn.cli import main
from edgecnn.converters.onnx_export import export_onnx
from edgecnn.converters.onnx_graph import fusion_report, qdq_facts
from edgecnn.converters.onnx_quant import quantize_onnx
from edgecnn.converters.onnx_targets import onnx_settings

BLOCKS = (1, 2, 3)
X86 = platform.machine() in ("x86_64", "AMD64")


def residual_cnn(blocks: int):
    """Stem conv, ``blocks`` residual blocks (conv-relu-conv + Add of the block input), GAP, Dense softmax."""
    import keras

    layers = keras.layers
    keras.utils.set_random_seed(blocks)
    inp = keras.Input((16, 16, 3), name="image")
    x = layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")(inp)
    for i in range(blocks):
        y = layers.Conv2D(8, 3, padding="same", activation="relu", name=f"b{i}_a")(x)
        y = layers.Conv2D(8, 3, padding="same", name=f"b{i}_b")(y)
        x = layers.Add(name=f"b{i}_add")([x, y])
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(4, activation="softmax", name="head")(x), name=f"residual{blocks}")


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{(blocks, target): int8 model path} and the fp32 paths, for every block count and target."""
    work = tmp_path_factory.mktemp("fusion")
    calib = np.random.default_rng(0).random((32, 16, 16, 3), dtype=np.float32)
    models = {}
    for blocks in BLOCKS:
        fp32 = export_onnx(residual_cnn(blocks), work / f"residual{blocks}_fp32.onnx")
        models[(blocks, "fp32")] = fp32
        for target in ("x86", "arm64"):
            models[(blocks, target)] = quantize_onnx(fp32, calib, work / f"residual{blocks}_{target}_int8.onnx",
                                                     settings=onnx_settings(target))
    return models


@pytest.mark.parametrize("blocks", BLOCKS)
def test_uint8_activations_fuse_every_conv_and_residual_add(built, blocks):
    report = fusion_report(built[(blocks, "x86")])
    assert report.in_float == {} and report.float_count == 0, report.float_nodes
    assert report.fused["QLinearConv"] == 2 * blocks + 1
    assert report.fused["QLinearAdd"] == blocks
    assert report.activations == ("uint8",)
    assert report.summary() == f"{report.fused_count} of {report.fused_count} quantized nodes fused into integer kernels"


@pytest.mark.skipif(not X86, reason="the single-consumer limit is ONNX Runtime's x86 QDQ transformer's")
@pytest.mark.parametrize("blocks", BLOCKS)
def test_int8_activations_fall_back_to_float_around_every_two_consumer_tensor_on_x86(built, blocks):
    s8s8, u8s8 = fusion_report(built[(blocks, "arm64")]), fusion_report(built[(blocks, "x86")])
    assert s8s8.activations == ("int8",)
    assert s8s8.in_float == {"Conv": blocks + 1, "Add": blocks}
    assert s8s8.fused.get("QLinearConv", 0) == (2 * blocks + 1) - (blocks + 1)
    assert "QLinearAdd" not in s8s8.fused
    # the same quantized nodes either way: fused + in float adds up to what uint8 fuses
    assert s8s8.fused_count + s8s8.float_count == u8s8.fused_count
    assert s8s8.qdq_left > u8s8.qdq_left
    assert f"{blocks + 1} Conv, {blocks} Add run in float" in s8s8.summary()
    assert "--onnx-target x86" in s8s8.hint() and u8s8.hint() == ""
    names = " ".join(s8s8.float_nodes)
    assert "stem" in names and all(f"b{i}_a" in names and f"b{i}_add" in names for i in range(blocks))
    assert not any(f"b{i}_b" in names for i in range(blocks)), "single-consumer convs still fuse"


def test_a_float_model_has_no_quantized_nodes(built):
    report = fusion_report(built[(1, "fp32")])
    assert report.fused_count == report.float_count == 0 and report.activations == ()
    assert report.summary() == "no quantized nodes"


def test_qdq_facts_name_the_types_and_the_float_head(built):
    u8s8, s8s8 = qdq_facts(built[(2, "x86")]), qdq_facts(built[(2, "arm64")])
    assert u8s8.activations == ("uint8",) and s8s8.activations == ("int8",)
    assert u8s8.weights == s8s8.weights == ("int8",) and u8s8.weights_per_channel
    assert [name.split()[0] for name in u8s8.float_nodes] == ["Softmax"]
    assert [name.split()[0] for name in u8s8.float_outputs] == ["MatMul"]  # the logits


@pytest.mark.skipif(not X86, reason="the single-consumer limit is ONNX Runtime's x86 QDQ transformer's")
def test_inspect_cli_shows_the_convs_in_float_before_any_benchmark(built, capsys):
    folder = built[(3, "arm64")].parent
    assert main(["inspect", str(built[(3, "arm64")])]) == 0
    captured = capsys.readouterr()
    assert "4 Conv, 3 Add run in float" in captured.out
    assert "--onnx-target x86" in captured.err
    assert main(["inspect", str(folder), "--json"]) == 0
    reports = {r["model"]: r for r in json.loads(capsys.readouterr().out)["inspect"]["fusion"]}
    assert len(reports) == 3 * len(BLOCKS)  # every .onnx in the folder, fp32 included
    assert reports["residual3_arm64_int8.onnx"]["float_count"] == 7
    assert reports["residual3_x86_int8.onnx"]["float_count"] == 0
    assert reports["residual3_x86_int8.onnx"]["fused"]["QLinearAdd"] == 3


def test_inspect_cli_refuses_a_missing_onnx_file(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "gone.onnx")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and "does not exist" in err[0]


def test_inspect_cli_refuses_a_damaged_onnx_file(tmp_path, built, capsys):
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(built[(1, "x86")].read_bytes()[:3000])
    code = main(["inspect", str(damaged)])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "damaged.onnx" in err[0], err
