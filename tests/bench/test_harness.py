"""bench() on real artifacts: the accuracy loss equals an independent evaluation, rows fail in isolation,
the JSON matches its schema, and the raw-inference figure agrees with a plain perf_counter loop."""
from __future__ import annotations

import shutil
import time

import numpy as np
import pytest

from edgecnn.bench.harness import BenchOptions, bench
from edgecnn.bench.result import Status, validate_result

FORMATS = ("tflite-fp32", "tflite-fp16", "tflite-dynamic", "tflite-int8", "onnx-fp32", "onnx-int8")


def _row(result, fmt):
    return next(r for r in result.rows if r.format == fmt)


def test_every_format_is_measured(mnist_bench):
    assert sorted(r.format for r in mnist_bench.rows) == sorted(FORMATS)
    for row in mnist_bench.rows:
        assert row.status == Status.OK, row.reason
        assert row.target == ("cpu" if row.family == "tflite" else "onnx-cpu")
        assert row.invoke.count == 60 and row.step.count == 60
        assert 0 < row.invoke.min <= row.invoke.p50 <= row.invoke.p90 <= row.invoke.p99 <= row.invoke.max
        # The whole step does everything the raw inference does, and more.
        assert row.step.p50 > row.invoke.min
        assert row.load_ms > 0 and row.first_inference_ms > 0 and row.peak_rss_mb > 0
        assert row.offline.batch == 4 and row.offline.images_per_s > 0
        assert row.macs == 1_051_904 and row.gmacs_per_s > 0
        assert row.runtime["threads"] == 1
        assert len(row.samples_ms) == 60
    assert _row(mnist_bench, "tflite-fp32").p50_vs_fp32 == 1.0
    int8 = _row(mnist_bench, "tflite-int8")
    assert int8.p50_vs_fp32 == pytest.approx(int8.invoke.p50 / _row(mnist_bench, "tflite-fp32").invoke.p50)
    assert _row(mnist_bench, "onnx-fp32").runtime["providers"][0] == "CPUExecutionProvider"


def test_result_json_matches_its_schema(mnist_bench):
    raw = mnist_bench.to_dict()
    validate_result(raw)
    env = raw["environment"]
    assert env["cpu_cores_logical"] >= 1 and env["versions"]["onnxruntime"]
    broken = dict(raw, rows=[dict(raw["rows"][0], status="fine")])
    with pytest.raises(Exception, match="schema"):
        validate_result(broken)


def _independent_predictions(keras_path, tflite_path, x_float):
    """Keras and the LiteRT interpreter called directly, with scale/zero point applied by hand."""
    import keras
    from ai_edge_litert.interpreter import Interpreter

    keras_pred = np.argmax(keras.models.load_model(keras_path).predict(x_float, verbose=0), axis=1)
    interpreter = Interpreter(model_path=str(tflite_path))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    preds = []
    for sample in x_float:
        x = sample[None]
        if inp["dtype"] != np.float32:
            scale, zero = inp["quantization"]
            x = np.clip(np.round(x / scale + zero), -128, 127).astype(inp["dtype"])
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        y = interpreter.get_tensor(out["index"]).astype(np.float32)
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        preds.append(int(np.argmax(y)))
    return keras_pred, np.asarray(preds)


@pytest.mark.parametrize("fmt", ["tflite-int8", "tflite-fp32"])
def test_accuracy_loss_equals_an_independent_evaluation(mnist_bench, mnist_convert, mnist_keras_path, fmt):
    from edgecnn.data import mnist_sample

    val = mnist_sample("val")
    assert len(val) == 1000
    x = val.images.astype(np.float32) / 255.0
    keras_pred, lite_pred = _independent_predictions(mnist_keras_path, mnist_convert.artifact_path(fmt), x)
    keras_acc = float(np.mean(keras_pred == val.labels))
    lite_acc = float(np.mean(lite_pred == val.labels))
    acc = _row(mnist_bench, fmt).accuracy
    assert acc.reference == "keras" and acc.samples == 1000
    assert acc.reference_top1 == keras_acc
    assert acc.top1 == lite_acc
    assert acc.drop_pp == (int((keras_pred == val.labels).sum()) - int((lite_pred == val.labels).sum())) / 10
    assert acc.agreement == float(np.mean(keras_pred == lite_pred))
    assert acc.top5 is not None and acc.top5 >= acc.top1


def test_raw_inference_p50_agrees_with_a_plain_loop(mnist_convert):
    """Loose and robust: same model, same process, interleaved; a broken harness is off by far more than 2x."""
    from ai_edge_litert.interpreter import Interpreter

    path = mnist_convert.artifact_path("tflite-fp32")
    options = BenchOptions(runs=300, step=False, progress=False)
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], np.zeros((1, 28, 28, 1), np.float32))
    ratios = []
    for _ in range(2):
        plain = []
        for _ in range(30):
            interpreter.invoke()
        for _ in range(300):
            start = time.perf_counter()
            interpreter.invoke()
            plain.append(time.perf_counter() - start)
        harness = bench([path], ["cpu"], [1], options=options).rows[0].invoke.p50
        ratios.append(harness / (np.median(plain) * 1e3))
    assert 0.5 < min(ratios) < 2.0, ratios


def test_a_failing_row_does_not_stop_the_others(mnist_convert, tmp_path):
    good = tmp_path / "good.tflite"
    shutil.copy(mnist_convert.artifact_path("tflite-int8"), good)
    bad = tmp_path / "truncated.tflite"
    bad.write_bytes(good.read_bytes()[:5000])
    result = bench([bad, good], ["cpu"], [1], options=BenchOptions(runs=20, progress=False))
    statuses = {r.artifact.split("/")[-1]: r for r in result.rows}
    assert statuses["good.tflite"].status == Status.OK
    assert statuses["truncated.tflite"].status == Status.FAILED
    assert "truncated.tflite" in statuses["truncated.tflite"].reason
    assert "\n" not in statuses["truncated.tflite"].reason
    assert "no manifest" in statuses["good.tflite"].notes[0]


def test_judge_marks_failed_verification():
    from edgecnn.bench.accuracy import AccuracyResult
    from edgecnn.bench.harness import judge
    from edgecnn.bench.jobs import Artifact

    art = Artifact(path=__import__("pathlib").Path("m.tflite"), family="tflite")
    good = AccuracyResult(samples=10, labelled=True, reference="keras", reference_file=None, reference_note="",
                          top1=0.9, agreement=0.95, drop_pp=1.0)
    assert judge(good, art, BenchOptions()) == (Status.OK, "")
    status, reason = judge(good, art, BenchOptions(min_agreement=0.99))
    assert status == Status.FAILED_VERIFICATION and "95.0%" in reason
    status, reason = judge(good, art, BenchOptions(max_drop_pp=0.5))
    assert status == Status.FAILED_VERIFICATION and "1.00 pp" in reason
    nan = AccuracyResult(samples=10, labelled=False, reference="none", reference_file=None, reference_note="",
                         finite=False)
    assert judge(nan, art, BenchOptions())[0] == Status.FAILED_VERIFICATION


def test_low_agreement_is_reported_as_failed_verification(mnist_convert):
    options = BenchOptions(runs=20, step=False, min_agreement=1.0, max_samples=300, progress=False)
    result = bench([mnist_convert.artifact_path("tflite-int8"), mnist_convert.artifact_path("tflite-fp32")],
                   ["cpu"], [1], data="mnist", options=options)
    by_format = {r.format: r for r in result.rows}
    fp32, int8 = by_format["tflite-fp32"], by_format["tflite-int8"]
    assert fp32.status == Status.OK and fp32.accuracy.agreement == 1.0
    assert int8.accuracy.samples == 300
    if int8.accuracy.agreement < 1.0:
        assert int8.status == Status.FAILED_VERIFICATION and "agreement" in int8.reason
    else:
        assert int8.status == Status.OK


def test_without_tensorflow_the_fp32_artifact_is_the_reference(mnist_convert, monkeypatch):
    import edgecnn.bench.reference as reference

    monkeypatch.setattr(reference, "tensorflow_available", lambda: False)
    options = BenchOptions(runs=10, step=False, max_samples=200, progress=False)
    result = bench([mnist_convert.artifact_path("tflite-int8")], ["cpu"], [1], data="mnist", options=options)
    acc = result.rows[0].accuracy
    assert acc.reference == "fp32-artifact"
    assert acc.reference_file.endswith("_fp32.tflite")
    assert "TensorFlow is not importable" in acc.reference_note
    assert any("reference is the tflite-fp32 artifact" in note for note in result.notes)


def test_bench_runs_where_tensorflow_cannot_be_imported(mnist_convert):
    """A Pi has no TensorFlow: bench must still run, with the fp32 artifact as the reference."""
    import json
    import subprocess
    import sys

    code = f"""
import sys, json
sys.modules["tensorflow"] = None  # import tensorflow now raises ImportError
sys.modules["keras"] = None
from edgecnn.bench.harness import BenchOptions, bench
result = bench([{str(mnist_convert.artifact_path("tflite-int8"))!r}], ["cpu"], [1], data="mnist",
               options=BenchOptions(runs=10, step=False, max_samples=100, progress=False))
row = result.rows[0]
print(json.dumps({{"status": row.status.value, "reference": row.accuracy.reference, "reason": row.reason}}))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out == {"status": "ok", "reference": "fp32-artifact", "reason": ""}


def test_unlabelled_data_gives_agreement_with_the_fp32_artifact(mnist_convert, tmp_path):
    from edgecnn.data import mnist_sample

    np.save(tmp_path / "digits.npy", mnist_sample("val").images[:120, :, :, 0])  # no labels
    options = BenchOptions(runs=10, step=False, progress=False)
    result = bench([mnist_convert.artifact_path("tflite-int8")], ["cpu"], [1], data=tmp_path / "digits.npy",
                   options=options)
    acc = result.rows[0].accuracy
    assert acc.samples == 120 and not acc.labelled
    assert acc.top1 is None and acc.drop_pp is None
    assert acc.reference == "fp32-artifact" and 0.9 <= acc.agreement <= 1.0
