"""`edgecnn bench` / `edgecnn report` through edgecnn.cli.main: outputs, exit codes, one-line errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from edgecnn.cli import main


def _one_line_error(capsys, code, expected_code=2):
    captured = capsys.readouterr()
    assert code == expected_code, captured
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), captured.err
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def test_bench_writes_json_markdown_html(mnist_convert, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["bench", str(mnist_convert.artifact_path("tflite-int8")), "--device", "cpu", "--runs", "15",
            "--no-step", "--data", "mnist", "--samples", "100", "--out", str(out)]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "edgecnn bench: 1 row(s)" in stdout and "bench.html" in stdout
    raw = json.loads((out / "bench.json").read_text())
    assert raw["rows"][0]["status"] == "ok" and raw["rows"][0]["accuracy"]["samples"] == 100
    assert raw["command"].startswith("edgecnn bench")
    assert (out / "bench.md").is_file() and (out / "bench.html").is_file()
    code = main(args)  # outputs exist: refused before any work
    assert "--force" in _one_line_error(capsys, code)


def test_report_command_merges(mnist_bench, tmp_path, capsys):
    first = tmp_path / "a" / "bench.json"
    first.parent.mkdir()
    first.write_text(json.dumps(mnist_bench.to_dict()))
    assert main(["report", str(first), str(first), "--out", str(tmp_path / "merged"), "--json"]) == 0
    merged = json.loads(capsys.readouterr().out)
    assert len(merged["rows"]) == 2 * len(mnist_bench.rows)


def test_missing_model(tmp_path, capsys):
    code = main(["bench", str(tmp_path / "nope.tflite"), "--out", str(tmp_path / "o")])
    assert "does not exist" in _one_line_error(capsys, code)


def test_corrupt_model(tmp_path, capsys):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    code = main(["bench", str(bad), "--runs", "10", "--out", str(tmp_path / "o")])
    line = _one_line_error(capsys, code, expected_code=1)
    assert "every row failed" in line and "bad.tflite" in line


def test_unknown_target_suggests_the_closest(mnist_convert, tmp_path, capsys):
    code = main(["bench", str(mnist_convert.artifact_path("tflite-int8")), "--device", "onnx-cpuu",
                 "--out", str(tmp_path / "o")])
    line = _one_line_error(capsys, code)
    assert "unknown device 'onnx-cpuu'" in line and "did you mean 'onnx-cpu'" in line


def test_labels_that_do_not_match(mnist_convert, tmp_path, capsys):
    import cv2

    for name in ("cat", "dog"):
        (tmp_path / "data" / name).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "data" / name / "a.png"), np.zeros((28, 28), np.uint8))
    code = main(["bench", str(mnist_convert.out_dir), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "o")])
    line = _one_line_error(capsys, code)
    assert "cat, dog" in line and "10 labels" in line
    np.savez(tmp_path / "wrong.npz", x=np.zeros((3, 28, 28), np.uint8), y=np.array([1, 2, 12]))
    code = main(["bench", str(mnist_convert.out_dir), "--data", str(tmp_path / "wrong.npz"), "--out", str(tmp_path / "o")])
    assert "label 12" in _one_line_error(capsys, code)


def test_empty_data_folder(mnist_convert, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code = main(["bench", str(mnist_convert.out_dir), "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "o")])
    assert "holds no images" in _one_line_error(capsys, code)


@pytest.mark.parametrize("args, expected", [
    (["--runs", "10", "--duration", "1"], "not both"),
    (["--warmup", "3"], "warm-up"),
    (["--threads", "0"], "not positive"),
    (["--threads", "two"], "not a whole number"),
])
def test_bad_options(mnist_convert, tmp_path, capsys, args, expected):
    code = main(["bench", str(mnist_convert.artifact_path("tflite-int8")), *args, "--out", str(tmp_path / "o")])
    assert expected in _one_line_error(capsys, code)


def test_format_that_fits_no_device(mnist_convert, tmp_path, capsys):
    onnx = tmp_path / "m.onnx"
    shutil.copy(mnist_convert.artifact_path("onnx-fp32"), onnx)
    code = main(["bench", str(onnx), "--device", "cpu", "--out", str(tmp_path / "o")])
    assert "onnx-cpu" in _one_line_error(capsys, code)
