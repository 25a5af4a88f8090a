"""The device side works with TensorFlow made unimportable (as on a Pi with only `edgecnn[device]`).

Each case runs in a subprocess under noimport.py, which installs a meta-path blocker for TensorFlow (and
Keras, tf2onnx) and reports at exit whether any of them got into sys.modules anyway. To cover another
command, add a line to CLI_CASES; the models fixture gives real .tflite/.onnx files with their manifest.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

import edgecnn.devices

HERE = Path(__file__).parent
BLOCKED = "tensorflow,keras,tf2onnx,tf_keras"
DEVICES_DIR = Path(edgecnn.devices.__file__).parent
FORBIDDEN = ("tensorflow", "keras", "tf2onnx", "edgecnn.converters", "converters")


def _run_blocked(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, str(HERE / "noimport.py"), BLOCKED, *args], capture_output=True,
                          text=True, timeout=timeout, env={**__import__("os").environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert "NOIMPORT-OK" in proc.stderr, proc.stderr[-2000:]
    return proc


@pytest.fixture(scope="module")
def digit_folder(tmp_path_factory):
    """Five real MNIST digits as 96x96 PNG frames, a source for `edgecnn run`."""
    from edgecnn.data import mnist_sample

    folder = tmp_path_factory.mktemp("digits")
    val = mnist_sample("val")
    for i in range(5):
        cv2.imwrite(str(folder / f"{i}.png"), cv2.resize(val.images[i], (96, 96), interpolation=cv2.INTER_NEAREST))
    return folder


# (name, argv after `edgecnn`, check on stdout). {int8}/{onnx}/{digits} are filled in from the fixtures.
CLI_CASES = [
    ("doctor", ["doctor", "--json"], lambda out: json.loads(out)["checks"]),
    ("run", ["run", "{int8}", "--source", "{digits}", "--max-frames", "5", "--jsonl", "-", "--no-show"],
     lambda out: len([line for line in out.splitlines() if line.startswith("{")]) == 5),
    ("inspect-edgetpu", ["inspect", "{int8}", "--target", "edgetpu", "--json"],
     lambda out: (lambda tpu: tpu["prediction"]["mapped"] >= 2 and tpu["ready_model"] is None
                  and "batch dimension is dynamic" in tpu["ready_note"])(json.loads(out)["edgetpu"])),
]


@pytest.mark.parametrize("name,argv,check", CLI_CASES, ids=[c[0] for c in CLI_CASES])
def test_cli_without_tensorflow(device_models, digit_folder, name, argv, check):
    fill = {"int8": str(device_models.int8), "onnx": str(device_models.onnx), "digits": str(digit_folder)}
    proc = _run_blocked(["-m", "edgecnn.cli", *[a.format(**fill) for a in argv]])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert check(proc.stdout), proc.stdout[-2000:]


def test_runners_and_classifier_without_tensorflow(device_models):
    code = f"""
import json, numpy as np
from edgecnn.data import Dataset
from edgecnn.devices.classify import Classifier
from edgecnn.devices.runners import open_runner
from edgecnn.manifest import ColorOrder
try:
    import tensorflow
    raise SystemExit("tensorflow imported")
except ImportError:
    pass
frame = np.zeros((480, 640, 3), np.uint8)
frame[140:340, 220:420] = 255
out = {{}}
for path, target in (({str(device_models.int8)!r}, "cpu"), ({str(device_models.onnx)!r}, "onnx-cpu")):
    with open_runner(path, target) as runner:
        out[target + "-runtime"] = runner.describe()["runtime"]
    with Classifier.open(path, target, top_k=3) as classifier:
        result = classifier.classify(frame, ColorOrder.BGR)
        out[target] = [p.index for p in result.top]
print(json.dumps(out))
"""
    proc = _run_blocked(["-c", code])
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["cpu-runtime"] == "ai_edge_litert" and out["onnx-cpu-runtime"] == "onnxruntime"
    assert len(out["cpu"]) == len(out["onnx-cpu"]) == 3


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            names.add("." * node.level + (node.module or ""))
    return names


def test_no_device_module_imports_tensorflow_or_converters():
    offenders = []
    for path in sorted(DEVICES_DIR.rglob("*.py")):
        for name in _imports(path):
            if any(name == f or name.startswith(f + ".") for f in FORBIDDEN) or name.startswith(".."):
                offenders.append(f"{path.name}: {name}")
    assert not offenders, offenders
    assert len(list(DEVICES_DIR.glob("*.py"))) >= 8  # the scan really saw the device modules


def test_run_on_a_video_file_with_every_output_without_tensorflow(device_models, tmp_path):
    """`edgecnn run --max-frames` on a video file, with --jsonl, --record and --serve (the whole live path)."""
    from edgecnn.devices.videofile import digit_frames, write_video

    frames, _ = digit_frames(12, size=224)
    video = write_video(frames, tmp_path / "digits.mkv", fps=25.0)
    record = tmp_path / "annotated.avi"
    proc = _run_blocked(["-m", "edgecnn.cli", "run", str(device_models.int8), "--source", str(video), "--max-frames",
                         "8", "--jsonl", "-", "--record", str(record), "--serve", "127.0.0.1:0", "--no-show"])
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [line["frame"] for line in lines] == list(range(8))
    assert record.is_file() and "max-frames" in proc.stderr
