"""`edgecnn run network.rpk --device imx500`: the AI Camera runs the network, edgecnn decodes and labels it.

The camera (picamera2's Picamera2 and IMX500) is a stand-in, tests/devices/imx500_standin.py, whose "sensor"
runs the real int8 MNIST CNN in LiteRT on each frame it shows; everything on edgecnn's side is real: the
.rpk check, the device table, the live loop, the manifest checks, decoding with the manifest's labels.
"""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import edgecnn.devices.imx500 as imx500
from edgecnn.devices.base import RunnerOptions
from edgecnn.devices.live import RunOptions, run
from edgecnn.devices.modelcheck import ModelFormat, check_model, walk_rpk
from edgecnn.devices.runners import get_target, open_runner
from edgecnn.devices.sources import parse_source
from fixtures.video import digit_frames
from edgecnn.errors import DeviceError, ManifestError, ModelLoadError, RuntimeMissingError, UsageError
from edgecnn.manifest import Manifest, OutputKind

from imx500_standin import KPI_MS, StandInSensor, StandInWorld, imx500_manifest, stand_in_api, write_stand_in_rpk

HERE = Path(__file__).parent
FRAMES = 40


@pytest.fixture(scope="module")
def digits():
    return digit_frames(FRAMES, size=240)


@pytest.fixture(scope="module")
def sensor(device_models):
    return StandInSensor(device_models.int8, Manifest.read(device_models.manifest))


@pytest.fixture
def network(tmp_path, device_models):
    """A stand-in network.rpk with the manifest of an imx500 conversion of the MNIST CNN beside it."""
    rpk = write_stand_in_rpk(tmp_path / "network.rpk")
    manifest = imx500_manifest(Manifest.read(device_models.manifest))
    (tmp_path / "manifest.json").write_text(manifest.to_json(), encoding="utf-8")
    return rpk


@pytest.fixture
def world(monkeypatch, digits, sensor):
    """The stand-in camera shows real digits; edgecnn.devices.imx500 finds it instead of picamera2."""
    world = StandInWorld(frames=digits[0], sensor=sensor)
    monkeypatch.setattr(imx500, "camera_api", lambda: stand_in_api(world))
    return world


def test_rpk_files_are_recognised_and_bounds_checked(tmp_path):
    rpk = write_stand_in_rpk(tmp_path / "network.rpk", blocks=3)
    assert check_model(rpk) == ModelFormat.RPK and walk_rpk(rpk) == 3
    data = rpk.read_bytes()
    for name, content, match in [
        ("truncated.rpk", data[:100], "corrupt IMX500 network"),
        ("footerless.rpk", data.replace(b"3695", b"0000", 1), "corrupt IMX500 network"),
        ("notrpk.rpk", b"\0" * 200, "not an IMX500 network"),
    ]:
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ModelLoadError, match=match):
            check_model(tmp_path / name)
    (tmp_path / "renamed.tflite").write_bytes(data)
    with pytest.raises(ModelLoadError, match="holds a rpk model"):
        check_model(tmp_path / "renamed.tflite")


def test_the_device_table_knows_imx500_and_refuses_arrays(network, device_models):
    target = get_target("imx500")
    assert target.in_camera and target.format == ModelFormat.RPK
    with pytest.raises(UsageError, match="cannot be given arrays"):
        open_runner(network, "imx500")
    with pytest.raises(UsageError, match="use --device imx500"):
        open_runner(network, "cpu", RunnerOptions(probe=False))
    with pytest.raises(UsageError, match="runs rpk models"):
        open_runner(device_models.int8, "imx500", RunnerOptions(probe=False))


def test_run_labels_what_the_sensor_computed(network, world, digits, tmp_path):
    """Per frame: the labels and top-k come from the sensor's output tensor, decoded with the manifest."""
    records = []
    summary = run(network, "imx500", "picamera2", RunOptions(max_frames=FRAMES, top_k=3, print_every=0),
                  on_frame=records.append)
    assert summary.frames == FRAMES and world.opened == [str(network.resolve())] and world.closed == 1
    frames, labels = digits
    # Each record is the sensor's own answer for the frame it came with (capture_seq counts the frames shown).
    for r in records:
        scores = world.sensor.outputs(frames[(r["capture_seq"] - 1) % len(frames)])
        assert r["top_k"][0]["index"] == int(np.argmax(scores))
        assert r["top_k"][0]["score"] == pytest.approx(float(scores.max()), abs=1e-6)
    correct = sum(r["top_k"][0]["label"] == str(labels[(r["capture_seq"] - 1) % len(labels)]) for r in records)
    assert correct / len(records) >= 0.9, correct  # the MNIST CNN's accuracy, through the camera path
    assert all(len(r["top_k"]) == 3 and r["top_k"][0]["score"] >= r["top_k"][1]["score"] for r in records)
    assert all(r["ms"]["inference"] == KPI_MS and r["ms"]["preprocess"] == 0.0 for r in records)
    assert summary.runner["runtime"] == "IMX500 (picamera2)" and summary.runner["classes"] == 10


def test_frames_before_the_network_is_loaded_are_skipped(network, world):
    world.frames_without_tensor = 5
    summary = run(network, "imx500", "0", RunOptions(max_frames=3, print_every=0))
    assert summary.frames == 3 and summary.runner["frames_without_tensor"] == 5


def test_a_network_that_never_answers_is_a_read_failure(network, world):
    world.frames_without_tensor = 10 ** 6
    events = []
    summary = run(network, "imx500", "picamera2", RunOptions(duration=1.0, print_every=1e-9, stall_timeout=30),
                  printer=events.append)
    assert summary.frames == 0
    assert any("without an output tensor" in e for e in events), events


def test_logits_are_decoded_by_the_shared_decoder(network, world, tmp_path):
    manifest = Manifest.read(network.parent / "manifest.json")
    logits = tmp_path / "logits.json"
    logits.write_text(manifest.to_json().replace('"output_kind": "probabilities"', '"output_kind": "logits"'))
    session = imx500.open_session(network, parse_source("picamera2"), manifest=logits)
    assert session.kind == OutputKind.LOGITS
    frame = imx500.SensorFrame.wrap(np.zeros((4, 4, 3), np.uint8), np.arange(10, dtype=np.float32), 1.0)
    top = session.classifier.classify(frame).top
    softmax = np.exp(np.arange(10) - 9.0) / np.exp(np.arange(10) - 9.0).sum()
    assert top[0].index == 9 and top[0].score == pytest.approx(softmax[9], rel=1e-6)


@pytest.mark.parametrize("kind, output, labels, top, over", [
    # (head, the sensor's output tensor, labels, expected top-k as (index, score), expected over 0.5)
    ("probabilities", [0.1, 0.7, 0.2], "abc", [(1, 0.7), (2, 0.2), (0, 0.1)], None),
    ("logits", [0.0, np.log(3.0)], "ab", [(1, 0.75), (0, 0.25)], None),
    ("logits", [np.log(4.0)], "ab", [(1, 0.8), (0, 0.2)], None),          # one logit: a binary head
    ("binary_sigmoid", [0.3], "ab", [(0, 0.7), (1, 0.3)], None),          # one unit, two classes
    ("multilabel_sigmoid", [0.9, 0.2, 0.6], "xyz", [(0, 0.9), (2, 0.6), (1, 0.2)], [(0, 0.9), (2, 0.6)]),
])
def test_every_head_kind_is_decoded_like_on_every_target(network, world, kind, output, labels, top, over):
    """Each output kind (edgecnn.manifest.OutputKind) of the sensor's tensor, decoded to the expected scores."""
    session = imx500.open_session(network, parse_source("picamera2"), labels=list(labels),
                                  output_kind=OutputKind(kind), top=3)
    frame = imx500.SensorFrame.wrap(np.zeros((4, 4, 3), np.uint8), np.asarray(output, np.float32), 1.0)
    result = session.classifier.classify(frame)
    assert [(p.index, p.label) for p in result.top] == [(i, labels[i]) for i, _ in top]
    assert [p.score for p in result.top] == pytest.approx([score for _, score in top], abs=1e-6)
    if over is None:
        assert result.over_threshold is None
    else:
        assert [(p.index, round(p.score, 6)) for p in result.over_threshold] == over


def test_a_multilabel_run_lists_the_classes_over_the_threshold(network, world, digits):
    """--output-kind multilabel_sigmoid --threshold 0.2 on the camera path: every class at or over 0.2, per frame."""
    records = []
    options = RunOptions(max_frames=8, top_k=2, print_every=0, threshold=0.2,
                         output_kind=OutputKind.MULTILABEL_SIGMOID)
    run(network, "imx500", "picamera2", options, on_frame=records.append)
    frames = digits[0]
    for r in records:
        scores = world.sensor.outputs(frames[(r["capture_seq"] - 1) % len(frames)])
        expected = sorted((int(i) for i in np.flatnonzero(scores >= 0.2)), key=lambda i: -scores[i])
        assert [p["index"] for p in r["over_threshold"]] == expected
    assert len(records) == 8 and any(r["over_threshold"] for r in records)


def test_binary_labels_are_checked_against_the_head_not_the_unit_count(network, world):
    session = imx500.open_session(network, parse_source("picamera2"), labels=["cat", "dog", "eel"],
                                  output_kind=OutputKind.BINARY_SIGMOID)
    frame = imx500.SensorFrame.wrap(np.zeros((4, 4, 3), np.uint8), np.asarray([0.9], np.float32), 1.0)
    with pytest.raises(ManifestError, match=r"has 2 classes \(binary_sigmoid head of 1 output\(s\)\) but there are 3"):
        session.classifier.classify(frame)


@pytest.mark.parametrize("source", ["1", "clip.mp4", "rtsp://127.0.0.1/x"])
def test_only_the_camera_itself_is_a_source(network, world, tmp_path, source):
    if source == "clip.mp4":
        source = str(tmp_path / source)
        Path(source).write_bytes(b"x")
    with pytest.raises(UsageError, match="classifies what the AI Camera sees"):
        run(network, "imx500", source, RunOptions(max_frames=1))
    assert world.opened == []


def test_a_manifest_for_another_conversion_is_refused(network, world, device_models):
    (network.parent / "manifest.json").write_text(Manifest.read(device_models.manifest).to_json())
    with pytest.raises(ManifestError, match="lists no imx500 artifact"):
        run(network, "imx500", "picamera2", RunOptions(max_frames=1))


def test_a_network_of_another_input_size_is_refused(network, world):
    world.input_size = (32, 32)
    with pytest.raises(ManifestError, match="takes 32x32 images but the manifest is for 28x28"):
        run(network, "imx500", "picamera2", RunOptions(max_frames=1))
    assert world.closed == 0  # refused before the camera started


def test_labels_that_do_not_match_the_output_are_refused(network, world, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join("abcde"))
    with pytest.raises(ManifestError, match=r"has 10 classes \(probabilities head of 10 output\(s\)\) but there are 5 labels"):
        run(network, "imx500", "picamera2", RunOptions(max_frames=1, labels=str(labels)))


def test_no_camera_is_one_line(network, world):
    world.camera_present = False
    with pytest.raises(DeviceError, match="no IMX500 AI Camera could load network.rpk"):
        run(network, "imx500", "picamera2", RunOptions(max_frames=1))


def test_without_picamera2_the_install_line_is_given(network):
    if importlib.util.find_spec("picamera2") is not None:
        pytest.skip("picamera2 is installed here")
    with pytest.raises(RuntimeMissingError, match="apt install imx500-all python3-picamera2"):
        run(network, "imx500", "picamera2", RunOptions(max_frames=1))


def test_cli_run_on_imx500_without_tensorflow(network, device_models):
    """`edgecnn run network.rpk --device imx500 --jsonl -` in a process where TensorFlow cannot be imported."""
    code = ("import sys; sys.path[:0] = [{here!r}, {tests!r}]; import numpy as np\n"
            "import edgecnn.devices.imx500 as imx500\n"
            "from edgecnn.manifest import Manifest\n"
            "from fixtures.video import digit_frames\n"
            "from imx500_standin import StandInSensor, StandInWorld, stand_in_api\n"
            "world = StandInWorld(digit_frames(5, size=64)[0], StandInSensor({int8!r}, Manifest.read({manifest!r})))\n"
            "imx500.camera_api = lambda: stand_in_api(world)\n"
            "from edgecnn.cli import main\n"
            "sys.exit(main(['run', {rpk!r}, '--device', 'imx500', '--max-frames', '5', '--jsonl', '-', '--no-show']))\n"
            ).format(here=str(HERE), tests=str(HERE.parent), int8=str(device_models.int8), manifest=str(device_models.manifest), rpk=str(network))
    proc = subprocess.run([sys.executable, str(HERE / "noimport.py"), "tensorflow,keras,tf2onnx,tf_keras", "-c", code],
                          capture_output=True, text=True, timeout=240)
    assert "NOIMPORT-OK" in proc.stderr, proc.stderr[-2000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and len(lines) == 5, proc.stderr[-2000:]
    assert {line["top_k"][0]["label"] for line in lines} <= set("0123456789")
