"""--fallback auto on the real broken-by-int8 model: TFLite (debugger denylisted nodes) and ONNX
(nodes_to_exclude) come back within 0.5 pp of Keras on the held-out digits, and an unmeetable budget
fails with the report kept."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgecnn.errors import AccuracyBudgetError


@pytest.fixture(scope="module")
def broken():
    from fixtures.broken_model import trained_outlier_cnn
    from edgecnn.converters.keras_load import load_model

    return load_model(trained_outlier_cnn())


@pytest.fixture(scope="module")
def data():
    from edgecnn.data import mnist_sample

    val = mnist_sample("val")
    calib = mnist_sample("train").images[:200].astype(np.float32) / 255.0
    return calib, val.images.astype(np.float32) / 255.0, val.labels


@pytest.mark.parametrize("family,suffix", [("tflite", ".tflite"), ("onnx", ".onnx")])
def test_fallback_brings_int8_within_budget(broken, data, tmp_path, family, suffix):
    from fixtures.broken_model import GUILTY_LAYER
    from edgecnn.converters.fallback import auto_fallback, report_path

    calib, val_x, val_y = data
    out = tmp_path / f"broken_int8{suffix}"
    report = auto_fallback(broken, family, calib, val_x, val_y, max_drop=0.5, out_path=out)
    assert report.steps[0].keep_float == () and report.steps[0].drop_pp > 30.0  # int8 really broke it
    assert report.met and report.steps[-1].drop_pp <= 0.5
    assert GUILTY_LAYER in report.kept_float
    assert all(step.size_bytes > 0 and step.latency_ms > 0 for step in report.steps)
    saved = json.loads(report_path(out).read_text())
    assert saved["kept_float"] == list(report.kept_float) and saved["met"] is True
    assert out.stat().st_size == report.steps[-1].size_bytes
    if family == "tflite":  # the written artifact is still int8 at its edges and runs
        from edgecnn.devices.flatbuf import read_graph
        from edgecnn.devices.litert import make_interpreter

        interp = make_interpreter(out, threads=1)
        assert interp.get_input_details()[0]["dtype"] == np.int8
        assert "DEQUANTIZE" in {op.name for op in read_graph(out.read_bytes()).operators}  # the float island


def test_unmeetable_budget_fails_and_keeps_the_report(broken, data, tmp_path):
    from edgecnn.converters.fallback import auto_fallback, report_path

    calib, val_x, val_y = data
    out = tmp_path / "m.tflite"
    with pytest.raises(AccuracyBudgetError, match="max-drop") as info:
        auto_fallback(broken, "tflite", calib, val_x[:300], val_y[:300], max_drop=-5.0, out_path=out)
    report = info.value.report
    assert not report.met and len(report.steps) >= 2
    assert report_path(out).is_file() and out.is_file()


def test_cumulative_groups_skip_repeats():
    from edgecnn.converters.fallback import cumulative

    assert cumulative([("a", "b"), ("b",), ("c",)]) == [(), ("a", "b"), ("a", "b", "c")]


def test_convert_pipeline_wires_fallback_auto(broken, tmp_path):
    """`edgecnn convert --max-drop 0.5 --fallback auto` as a library call: the manifest's figures come from the
    pipeline's own verification (device runners, uint8 pixels through the manifest's preprocessing)."""
    from fixtures.broken_model import GUILTY_LAYER, trained_outlier_cnn
    from edgecnn.converters.pipeline import ConvertOptions, FallbackMode, convert

    options = ConvertOptions(formats="tflite-int8", max_drop=0.5, fallback=FallbackMode.AUTO, progress=False)
    result = convert(trained_outlier_cnn(), calib="mnist", val="mnist", out=tmp_path / "out", options=options)
    entry = result.manifest.artifact("tflite-int8")
    assert entry.verification.drop_pp <= 0.5 and result.over_budget == ()
    note = next(n for n in entry.notes if n.startswith("--fallback auto"))
    assert GUILTY_LAYER in note and "within" in note
    assert (tmp_path / "out" / f"{entry.file}.fallback.json").is_file()


def test_fallback_auto_without_a_budget_is_a_usage_error(tmp_path):
    from edgecnn.converters.pipeline import ConvertOptions, FallbackMode, convert
    from edgecnn.errors import UsageError

    with pytest.raises(UsageError, match="--max-drop"):
        convert(None, out=tmp_path / "x", options=ConvertOptions(fallback=FallbackMode.AUTO, progress=False))
    assert not (tmp_path / "x").exists()
