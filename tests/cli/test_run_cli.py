"""`edgecnn run` from the command line, on the int8 artifact that `edgecnn convert` wrote (mnist_convert)."""
from __future__ import annotations

import json
import shutil

import cv2
import numpy as np
import pytest

from edgecnn.cli import main
from fixtures.video import digit_frames, write_video
from edgecnn.manifest import ColorOrder
from edgecnn.preprocess import InputEncoder, prepare_batch, to_float

FRAMES = 120


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames, labels = digit_frames(FRAMES, size=224, start=300)
    return write_video(frames, tmp_path_factory.mktemp("cli-run") / "digits.mkv", fps=25.0)


@pytest.fixture(scope="module")
def int8(mnist_convert):
    return mnist_convert.artifact_path("tflite-int8")


def decoded(path) -> np.ndarray:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while (got := cap.read())[0]:
        frames.append(got[1])
    cap.release()
    return np.stack(frames)


def jsonl_top1(path) -> np.ndarray:
    return np.asarray([json.loads(line)["top_k"][0]["index"] for line in open(path, encoding="utf-8")])


def test_cli_jsonl_matches_direct_litert_and_keras(tmp_path, video, int8, mnist_convert, mnist_keras_path):
    from ai_edge_litert.interpreter import Interpreter
    import keras

    from edgecnn.devices.litert import tensor_spec

    out = tmp_path / "frames.jsonl"
    assert main(["run", str(int8), "--source", str(video), "--jsonl", str(out), "--no-show", "-q"]) == 0
    top1 = jsonl_top1(out)
    frames = decoded(video)
    prep = mnist_convert.manifest.preprocessing
    pixels = prepare_batch(frames, prep, ColorOrder.BGR)
    interpreter = Interpreter(model_path=str(int8))
    interpreter.allocate_tensors()
    inp, outp = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    encoded = InputEncoder.build(prep, tensor_spec(inp))(pixels)
    direct = []
    for i in range(len(encoded)):
        interpreter.set_tensor(inp["index"], encoded[i:i + 1])
        interpreter.invoke()
        direct.append(int(np.argmax(interpreter.get_tensor(outp["index"]))))
    keras_top1 = np.argmax(keras.models.load_model(mnist_keras_path, safe_mode=True)
                           .predict(to_float(pixels, prep), verbose=0), axis=1)
    assert len(top1) == FRAMES
    assert np.array_equal(top1, np.asarray(direct))
    assert np.mean(top1 == keras_top1) >= 0.99


def test_jsonl_to_stdout_carries_only_json_and_the_summary_goes_to_stderr(video, int8, capsys):
    assert main(["run", str(int8), "--source", str(video), "--jsonl", "-", "--max-frames", "5", "--no-show"]) == 0
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert len(lines) == 5 and all(json.loads(line)["frame"] == i for i, line in enumerate(lines))
    assert "max-frames" in captured.err and "inference ms p50 / p90" in captured.err


def test_summary_table_and_record(tmp_path, video, int8, capsys):
    record = tmp_path / "annotated.mp4"
    assert main(["run", str(int8), "--source", str(video), "--max-frames", "10", "--record", str(record),
                 "--no-show"]) == 0
    out = capsys.readouterr().out
    assert "edgecnn run" in out and "frames" in out and "dropped frames" in out
    assert decoded(record).shape[0] == 10


def _without_embedded_manifest(source, target):
    """A copy of ``source`` whose metadata no longer holds edgecnn's manifest (a model converted elsewhere)."""
    from tensorflow.lite.tools import flatbuffer_utils

    from edgecnn.manifest import EMBEDDED_KEY

    model = flatbuffer_utils.read_model(str(source))
    model.metadata = [m for m in model.metadata or [] if m.name not in (EMBEDDED_KEY, EMBEDDED_KEY.encode())]
    flatbuffer_utils.write_model(model, str(target))
    return target


def test_model_without_manifest_runs_on_what_the_file_says(tmp_path, video, int8, capsys):
    lone = tmp_path / "lone" / int8.name
    lone.parent.mkdir()
    shutil.copy(int8, lone)  # alone, but carrying the manifest convert embedded in it: that is enough
    lone_out = tmp_path / "lone.jsonl"
    assert main(["run", str(lone), "--source", str(video), "--max-frames", "30", "--jsonl", str(lone_out),
                 "--no-show", "-q"]) == 0
    capsys.readouterr()
    alone = _without_embedded_manifest(int8, tmp_path / "model.tflite")
    assert main(["run", str(alone), "--source", str(video), "--max-frames", "3", "--no-show", "-q"]) == 0
    captured = capsys.readouterr()  # runs on what the file says, and says what it assumed (even with -q)
    assert "note: model.tflite has no manifest: preprocessing assumed (scale 1/255" in captured.out + captured.err
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]))
    out = tmp_path / "f.jsonl"
    assert main(["run", str(alone), "--source", str(video), "--max-frames", "30", "--size", "28x28", "--color", "gray",
                 "--labels", str(labels), "--jsonl", str(out), "--no-show", "-q"]) == 0
    records = [json.loads(line) for line in open(out, encoding="utf-8")]
    assert records[0]["top_k"][0]["label"] in labels.read_text().split()
    with_manifest = tmp_path / "m.jsonl"
    assert main(["run", str(int8), "--source", str(video), "--max-frames", "30", "--jsonl", str(with_manifest),
                 "--no-show", "-q"]) == 0
    assert np.array_equal(jsonl_top1(out), jsonl_top1(with_manifest))  # same preprocessing, given by hand
    assert np.array_equal(jsonl_top1(lone_out), jsonl_top1(with_manifest))  # the embedded manifest's


@pytest.mark.parametrize("args,message", [
    (["--source", "no/such/video.mp4"], "is not a camera"),
    (["--serve", "notaport"], "[HOST:]PORT"),
    (["--size", "28"], "HxW"),
    (["--capture-size", "640"], "WxH"),
    (["--color", "rgb"], "preprocessing produces (28, 28, 3) but"),  # over the manifest's: refused by the model
    (["--size", "32x32"], "preprocessing produces (32, 32, 1) but"),
    (["--scale", "1/0"], "is not a number"),
    (["--top-k", "0"], "--top-k"),
    (["--device", "cpx"], "did you mean 'cpu'"),
    (["--show"], "no GUI support"),
])
def test_bad_options_are_one_line_errors(args, message, video, int8, capsys):
    argv = ["run", str(int8), "--source", str(video), "--max-frames", "2"] + args
    if "--show" not in args:
        argv.append("--no-show")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_ctrl_c_on_the_real_process_ends_with_the_summary_and_a_complete_jsonl(tmp_path, video, int8):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "frames.jsonl"
    proc = subprocess.Popen([sys.executable, "-c", "from edgecnn.cli import run; run()", "run", str(int8),
                             "--source", str(video), "--loop", "--realtime", "--jsonl", str(out), "--no-show"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        if any(p.name.startswith(f".{out.name}.partial") for p in tmp_path.iterdir()):
            time.sleep(1.0)  # running and writing
            break
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    assert "interrupted" in stdout and "frames" in stdout
    lines = out.read_text().splitlines()
    assert lines and all(json.loads(line)["frame"] == i for i, line in enumerate(lines))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames.jsonl"]


def test_unknown_device_is_named_before_the_source_is_opened(capsys):
    from edgecnn.cli import main

    code = main(["run", "model.tflite", "--device", "gpuu", "--source", "no-such-source"])
    err = capsys.readouterr().err
    assert code == 2
    assert "unknown device 'gpuu'" in err and "did you mean 'gpu'" in err and "Traceback" not in err


def test_run_starts_without_rich_or_the_other_commands(int8, tmp_path):
    """The start path stays lean (benchmarks/startup.py): rich, TensorFlow, onnx, difflib made unimportable,
    and the other commands' modules never loaded."""
    import subprocess
    import sys
    from pathlib import Path

    image = tmp_path / "digit.png"
    frames, _ = digit_frames(1, size=64)
    cv2.imwrite(str(image), frames[0])
    noimport = Path(__file__).parents[1] / "devices" / "noimport.py"
    code = (f"import sys\nfrom edgecnn.cli import main\n"
            f"code = main(['run', {str(int8)!r}, '--source', {str(image)!r}, '--no-show'])\n"
            "loaded = sorted(m for m in sys.modules if m.startswith('edgecnn.cli.') and m not in "
            "('edgecnn.cli.app', 'edgecnn.cli.run_cmd', 'edgecnn.cli.prep_options'))\n"
            "print('LOADED', loaded)\nsys.exit(code)")
    proc = subprocess.run([sys.executable, str(noimport), "rich,tensorflow,keras,onnx,difflib,matplotlib", "-c", code],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and "NOIMPORT-OK" in proc.stderr, proc.stderr[-2000:]
    assert "LOADED []" in proc.stdout
    assert "edgecnn run" in proc.stdout and "ended by" in proc.stdout  # the summary, printed without rich


def test_error_hints_keep_their_brackets(monkeypatch, capsys, int8):
    """An error's hint goes through rich markup: "pip install 'edgecnn[onnx-cpu]'" must not lose "[onnx-cpu]"."""
    import edgecnn.devices.live as live
    from edgecnn.errors import RuntimeMissingError

    def missing(*args, **kwargs):
        raise RuntimeMissingError("ONNX Runtime is not installed", "pip install 'edgecnn[onnx-cpu]'")

    monkeypatch.setattr(live, "run", missing)
    assert main(["run", str(int8), "--source", "0"]) == 2
    assert "pip install 'edgecnn[onnx-cpu]'" in capsys.readouterr().err


def test_run_in_process_leaves_the_collector_as_it_found_it(int8, video, monkeypatch):
    """`run` switches cyclic collection off while it starts and freezes what it made once the model and the
    source are open (benchmarks/startup.py). The console command keeps that to its exit; a caller in the same
    process (this test, a notebook) gets the collector back as it was, with nothing left frozen."""
    import gc

    from edgecnn.devices import live

    assert gc.isenabled() and gc.get_freeze_count() == 0
    seen = {}
    real_run = live.run

    def watching_run(*args, on_ready=None, **kwargs):
        def ready():
            seen["disabled_while_starting"] = not gc.isenabled()
            on_ready()
            seen["frozen"], seen["enabled_after"] = gc.get_freeze_count(), gc.isenabled()
        return real_run(*args, on_ready=ready, **kwargs)

    monkeypatch.setattr(live, "run", watching_run)
    argv = ["run", str(int8), "--source", str(video), "--max-frames", "3", "--no-show", "-q"]
    try:
        assert main(argv) == 0
        assert seen["disabled_while_starting"] and seen["frozen"] > 1000 and seen["enabled_after"]
        assert gc.isenabled() and gc.get_freeze_count() == 0
        assert main(argv, process=True) == 0
        assert gc.isenabled() and gc.get_freeze_count() > 1000  # the console command's: it exits now
    finally:
        gc.unfreeze()


@pytest.mark.parametrize("given", [None, "3"])
def test_console_run_keeps_openblas_to_one_thread_unless_the_user_chose(int8, video, given):
    # numpy's OpenBLAS starts a spinning worker per core as numpy loads; the console `edgecnn run` (numpy not
    # loaded yet) asks for one thread, which is all the device side needs, and keeps a value the user set.
    import os
    import subprocess
    import sys

    code = ("import os, sys\nfrom edgecnn.cli import main\n"
            f"code = main(['run', {str(int8)!r}, '--source', {str(video)!r}, '--max-frames', '2', '--no-show', '-q'],"
            " process=True)\n"
            "import numpy\n"
            "print('OPENBLAS', os.environ.get('OPENBLAS_NUM_THREADS'), numpy.__name__)\nsys.exit(code)\n")
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    if given is not None:
        env["OPENBLAS_NUM_THREADS"] = given
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-800:]
    assert f"OPENBLAS {given or '1'} numpy" in done.stdout


def test_in_process_run_leaves_the_environment_alone(int8, video, monkeypatch):
    import os

    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    assert main(["run", str(int8), "--source", str(video), "--max-frames", "2", "--no-show", "-q"]) == 0
    assert "OPENBLAS_NUM_THREADS" not in os.environ
