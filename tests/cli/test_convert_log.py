"""`edgecnn convert` in a real process with TensorFlow's logging at its most verbose: no line of TensorFlow,
absl, converter or tf2onnx output reaches the terminal; it is in convert.log beside the artifacts (or, when
the conversion fails and nothing is published, in a temporary log named in the error)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

EDGECNN = str(Path(sys.executable).with_name("edgecnn"))
NOISE = ("absl", "I0000", "W0000", "E0000", "WARNING: All log messages", "cuInit", "oneDNN", "fully_quantize",
         "XNNPACK", "tf2onnx", "site-packages", "Warning:", "Traceback")


def _run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TF_CPP_MAX_VLOG_LEVEL")}
    env["COLUMNS"] = "120"
    return subprocess.run([EDGECNN, "convert", *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=600)


def _noise(text: str) -> list[str]:
    return [line for line in text.splitlines() if any(marker in line for marker in NOISE)]


def test_convert_prints_no_tensorflow_log_and_writes_convert_log(mnist_keras_path, tmp_path):
    done = _run(str(mnist_keras_path), "--calib", "mnist", "--val", "mnist", "--formats", "tflite-int8,onnx-int8",
                "--out", "out", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert _noise(done.stdout) == [] and _noise(done.stderr) == [], _noise(done.stdout + done.stderr)
    assert "tflite-int8" in done.stdout and "converter log: out/convert.log" in done.stderr
    log = (tmp_path / "out" / "convert.log").read_text(errors="replace")
    assert "WARNING: All log messages before absl::InitializeLog()" in log, "TensorFlow's import lines"
    assert "fully_quantize" in log, "the TFLite converter's C++ output (descriptor 1)"
    assert "XNNPACK" in log, "LiteRT's output while verifying"


def test_a_failed_conversion_keeps_its_log_and_names_it(tmp_path):
    import keras

    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Resizing(32, 32, interpolation="bicubic",
                                                                              name="upsize"),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.save(tmp_path / "bicubic.keras")
    done = _run("bicubic.keras", "--calib", "mnist", "--formats", "tflite-fp32", "--out", "out", cwd=tmp_path)
    assert done.returncode == 2, done.stderr[-3000:]
    assert _noise(done.stdout) == [] and _noise(done.stderr) == [], _noise(done.stdout + done.stderr)
    error = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "layer 'upsize' (Resizing) produces TF op 'ResizeBicubic'" in error[0]
    log = Path(error[0].rpartition("convert log: ")[2].strip())
    try:
        assert log.is_file() and "ResizeBicubic" in log.read_text(errors="replace")
    finally:
        log.unlink(missing_ok=True)
