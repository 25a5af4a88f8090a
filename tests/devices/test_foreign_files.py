"""Model files edgecnn did not make (tests/data/foreign, see NOTICE there): read what the file says, refuse what is
not a classifier in one line, feed channels-first inputs, and classify as the model's own reference code does.

The text-direction classifier is PaddleOCR's (shipped in RapidOCR's wheel): NCHW, dynamic height and width,
trained on BGR text lines resized to height 48 keeping the aspect ratio (width at most 192), padded on the right,
normalised to (x/255 - 0.5)/0.5. ``rapidocr_resize_norm_img`` below is RapidOCR 1.4.4's own preprocessing
(ch_ppocr_cls/text_cls.py, TextClassifier.resize_norm_img), copied unchanged but for the names, as the reference.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgecnn.cli import main
from edgecnn.devices.classify import Classifier, NotAClassifierError
from edgecnn.errors import ManifestError, UsageError
from edgecnn.manifest import ColorOrder, Layout, OutputKind, ResizeMode
from edgecnn.prepchoice import PrepChoice

FOREIGN = Path(__file__).resolve().parent.parent / "data" / "foreign"
FACE = FOREIGN / "face_detection_short_range.tflite"
SELFIE = FOREIGN / "selfie_segmentation.tflite"
TEXT_CLS = FOREIGN / "ch_ppocr_mobile_v2.0_cls_infer.onnx"
# RapidOCR's configuration for the classifier, as edgecnn options.
PADDLE_CLS = PrepChoice(size=(48, 192), color=ColorOrder.BGR, resize=ResizeMode.PAD_RIGHT, pad_value=128,
                        scale=1 / 255, mean=(0.5,), std=(0.5,))
PADDLE_CLI = ["--size", "48x192", "--color", "bgr", "--resize", "pad_right", "--pad-value", "128", "--scale", "1/255",
              "--mean", "0.5", "--std", "0.5"]
WORDS = ("Hello world", "edge inference", "Invoice 2024-11", "TOTAL 42.00 EUR", "quick brown fox", "Raspberry Pi 5",
         "text direction", "ONNX Runtime", "Bahnhofstrasse 12", "lorem ipsum dolor", "camera frame 17", "PaddleOCR")
FONTS = (cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX, cv2.FONT_HERSHEY_TRIPLEX)


def rapidocr_resize_norm_img(img: np.ndarray, image_shape=(3, 48, 192)) -> np.ndarray:
    img_c, img_h, img_w = image_shape
    h, w = img.shape[:2]
    ratio = w / float(h)
    resized_w = img_w if math.ceil(img_h * ratio) > img_w else int(math.ceil(img_h * ratio))
    resized_image = cv2.resize(img, (resized_w, img_h)).astype("float32")
    resized_image = resized_image.transpose((2, 0, 1)) / 255
    resized_image -= 0.5
    resized_image /= 0.5
    padding_im = np.zeros((img_c, img_h, img_w), dtype=np.float32)
    padding_im[:, :, :resized_w] = resized_image
    return padding_im


def text_lines() -> list[np.ndarray]:
    """Twelve BGR text-line crops of different lengths, fonts, scales and ink colours, upright."""
    lines = []
    for i, word in enumerate(WORDS):
        font, scale, thick = FONTS[i % len(FONTS)], 0.9 + 0.15 * (i % 3), 1 + i % 2
        (w, h), base = cv2.getTextSize(word, font, scale, thick)
        img = np.full((h + base + 16, w + 20, 3), (255, 255 - 8 * (i % 4), 250), np.uint8)
        ink = (20 * (i % 3), 10, 40 * (i % 2))
        cv2.putText(img, word, (10, h + 8), font, scale, ink, thick, cv2.LINE_AA)
        lines.append(img)
    return lines


@pytest.fixture(scope="module")
def lines():
    upright = text_lines()
    return upright, [cv2.rotate(img, cv2.ROTATE_180) for img in upright]


def reference_predictions(images: list[np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(TEXT_CLS), providers=["CPUExecutionProvider"])
    batch = np.stack([rapidocr_resize_norm_img(img) for img in images])
    return np.argmax(session.run(None, {session.get_inputs()[0].name: batch})[0], axis=1)


def test_text_direction_classifier_matches_its_own_reference_preprocessing(lines):
    upright, flipped = lines
    reference = reference_predictions(upright + flipped)
    with Classifier.open(TEXT_CLS, "onnx-cpu", prep=PADDLE_CLS, labels=["0", "180"]) as clf:
        assert clf.prep.layout == Layout.NCHW and clf.output_kind == OutputKind.PROBABILITIES  # read from the file
        ours = np.array([clf.classify(img).best.index for img in upright + flipped])
        batch = clf.classify_images(upright + flipped, ColorOrder.BGR)
    assert (ours[:12] == 0).sum() >= 11 and (ours[12:] == 1).sum() >= 11, ours
    assert (ours == reference).all(), (ours, reference)
    np.testing.assert_array_equal(np.argmax(batch, axis=1), ours)  # the per-frame NCHW path = the batch path


def test_nchw_frame_path_writes_the_same_tensor_as_the_encoder(lines):
    from edgecnn.preprocess import prepare_batch

    upright, _ = lines
    with Classifier.open(TEXT_CLS, "onnx-cpu", prep=PADDLE_CLS) as clf:
        pixels = clf.prepare(upright[3])
        direct = clf._encode_into_buffer(pixels).copy()
        expected = clf.encoder(prepare_batch([upright[3]], clf.prep, ColorOrder.BGR))
    assert direct.shape == (1, 3, 48, 192)
    np.testing.assert_array_equal(direct, expected)
    float_ref = rapidocr_resize_norm_img(upright[3])
    resized = int(math.ceil(48 * upright[3].shape[1] / upright[3].shape[0]))
    inked = slice(0, min(192, resized))  # the padding differs by design: 128 is the nearest pixel to their 0.0
    assert np.abs(direct[0][:, :, inked] - float_ref[:, :, inked]).max() < 1e-6


def test_dynamic_size_without_size_says_so():
    with pytest.raises(UsageError, match=r"dynamic H/W: give --size HxW"):
        Classifier.open(TEXT_CLS, "onnx-cpu", prep=PrepChoice(color=ColorOrder.BGR))


@pytest.mark.parametrize("path,shapes", [(FACE, "(1, 896, 16), (1, 896, 1)"), (SELFIE, "(1, 256, 256, 1)")])
def test_detector_and_segmenter_are_refused_as_classifiers(path, shapes):
    with pytest.raises(NotAClassifierError, match=re_escape(shapes)):
        Classifier.open(path, "cpu")


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_run_refuses_a_detector_in_one_line(tmp_path, capsys, lines):
    folder = tmp_path / "frames"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), lines[0][0])
    code = main(["run", str(FACE), "--source", str(folder), "--no-show", "--max-frames", "1"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip() and not line.startswith("INFO")]
    assert code == 2 and len(err) == 1, err
    assert "not a single-output image classifier" in err[0] and "(1, 896, 16), (1, 896, 1)" in err[0]
    assert "bench" in err[0] and "Traceback" not in err[0]


def test_run_reads_the_size_from_the_file(tmp_path, capsys, lines):
    """A static (1, 128, 128, 3) input: no --size asked; the options given must agree with the file."""
    from edgecnn.devices.base import RunnerOptions
    from edgecnn.devices.runners import open_runner
    from edgecnn.devices.model_info import resolve_setup

    with open_runner(FACE, "cpu", RunnerOptions(threads=1)) as runner:
        setup = resolve_setup(runner, None)
        assert (setup.prep.height, setup.prep.width, setup.prep.layout) == (128, 128, Layout.NHWC)
        assert setup.problem and setup.info.precision == "fp16"
        assert "color rgb" in setup.guessed and any("assumed" in n for n in setup.notices)
        with pytest.raises(ManifestError, match="--size 96x96 given but .* takes 128x128"):
            resolve_setup(runner, None, PrepChoice(size=(96, 96)))


def test_run_classifies_text_lines_with_file_names_in_json_lines(tmp_path, capsys, lines):
    folder = tmp_path / "lines"
    folder.mkdir()
    upright, flipped = lines
    for i in range(3):
        cv2.imwrite(str(folder / f"up{i}.png"), upright[i])
        cv2.imwrite(str(folder / f"zz_flip{i}.png"), flipped[i])
    labels = tmp_path / "labels.txt"
    labels.write_text("0\n180\n")
    out = tmp_path / "out.jsonl"
    code = main(["run", str(TEXT_CLS), "--device", "onnx-cpu", "--source", str(folder), "--no-show", "-q",
                 "--jsonl", str(out), "--labels", str(labels), *PADDLE_CLI])
    assert code == 0, capsys.readouterr().err
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["file"] for r in records] == sorted(p.name for p in folder.iterdir())
    assert all(r["top_k"][0]["label"] == ("180" if "flip" in r["file"] else "0") for r in records)
    err = capsys.readouterr().err
    assert "source:" not in err and "frame 0" not in err  # -q: the summary only (and notes on the model)


def test_run_without_size_on_a_dynamic_model_is_one_line(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "text.png"), np.full((48, 192, 3), 255, np.uint8))
    code = main(["run", str(TEXT_CLS), "--device", "onnx-cpu", "--source", str(tmp_path), "--no-show"])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(err) == 1 and "dynamic H/W: give --size HxW" in err[0], err


def test_bench_times_a_detector_and_a_custom_op_segmenter(tmp_path, capsys):
    out = tmp_path / "bench"
    code = main(["bench", str(FACE), str(SELFIE), "--runs", "15", "--warmup", "10", "--out", str(out), "--json"])
    assert code == 0, capsys.readouterr().err
    rows = {Path(r["artifact"]).name: r for r in json.loads((out / "bench.json").read_text())["rows"]}
    for name in (FACE.name, SELFIE.name):
        row = rows[name]
        assert row["status"] == "ok" and row["invoke"]["p50"] > 0
        assert row["accuracy"] is None and row["accuracy_note"].startswith("n/a: ")
        assert row["precision"] == "fp16"  # float16 weights dequantized at load, read from the tensors
    assert rows[SELFIE.name]["macs"] is None
    assert any("Convolution2DTransposeBias" in n for n in rows[SELFIE.name]["notes"])
    assert rows[FACE.name]["macs"] and rows[FACE.name]["macs"] > 1e6
    markdown = (out / "bench.md").read_text()
    assert "accuracy n/a: face_detection_short_range.tflite is not a single-output image classifier" in markdown


def test_bench_measures_the_text_classifier_with_the_options_given(tmp_path, capsys, lines):
    data = tmp_path / "data"
    upright, flipped = lines
    for label, images in (("0", upright), ("180", flipped)):
        (data / label).mkdir(parents=True)
        for i, img in enumerate(images):
            cv2.imwrite(str(data / label / f"{i:02d}.png"), img)
    labels = tmp_path / "labels.txt"
    labels.write_text("0\n180\n")
    out = tmp_path / "bench"
    code = main(["bench", str(TEXT_CLS), "--device", "onnx-cpu", "--runs", "15", "--data", str(data),
                 "--labels", str(labels), "--out", str(out), *PADDLE_CLI])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    row = json.loads((out / "bench.json").read_text())["rows"][0]
    assert row["accuracy"]["top1"] >= 22 / 24 and row["precision"] == "fp32"
    assert row["preprocessing"] == "48x192 bgr pad_right pad 128, (x*1/255 - 0.5) / 0.5, nchw"
    assert row["macs"] and row["macs"] > 1e6  # counted at the --size given, though the file's H/W are dynamic
    assert row["preprocessing"] in captured.out  # beside the accuracy in the terminal too
    assert row["preprocessing"] in (out / "bench.md").read_text()
    assert row["preprocessing"] in (out / "bench.html").read_text()


@pytest.mark.parametrize("name,target,precision,op", [("int8", "cpu", "int8", "SOFTMAX"), ("fp32", "cpu", "fp32", "SOFTMAX"),
                                                       ("onnx", "onnx-cpu", "fp32", "Softmax")])
def test_precision_and_final_op_read_from_the_file(device_models, name, target, precision, op):
    from edgecnn.devices.base import RunnerOptions
    from edgecnn.devices.model_info import read_model_io
    from edgecnn.devices.runners import open_runner

    with open_runner(getattr(device_models, name), target, RunnerOptions(threads=1)) as runner:
        info = read_model_io(runner)
    assert (info.precision, info.final_op, info.kind) == (precision, op, OutputKind.PROBABILITIES)
    assert info.not_classifier() == ""


def test_output_kind_from_probe_values():
    from edgecnn.devices.model_info import kind_from_values
    from edgecnn.preprocess import sigmoid, softmax

    logits = np.random.default_rng(1).normal(0, 3, (4, 10))
    assert kind_from_values(softmax(logits)) == OutputKind.PROBABILITIES
    assert kind_from_values(sigmoid(logits)) == OutputKind.MULTILABEL_SIGMOID
    assert kind_from_values(sigmoid(logits[:, :1])) == OutputKind.BINARY_SIGMOID
    assert kind_from_values(logits) == OutputKind.LOGITS
