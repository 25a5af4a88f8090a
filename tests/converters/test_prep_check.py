"""Preprocessing truth on real models trained briefly on the bundled MNIST digits (tests/fixtures/prep_models.py):
every (trained-on, fed-as) pair of x/255, x and x/127.5 - 1, with and without labels; colour order; float
arrays against the manifest; the issue's two examples through convert (warning, --strict); keras.applications
families; BatchNormalization at its initial statistics and inside a nested model; no false alarm."""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edgecnn.converters.calibration import ModelInputs, model_inputs
from edgecnn.converters.prep_check import better_by_batchnorm, better_by_labels, check_preprocessing
from edgecnn.data import Dataset
from edgecnn.manifest import ColorOrder, Preprocessing

FEEDS = {"unit": {"scale": 1 / 255}, "raw": {"scale": 1.0}, "signed": {"scale": 1 / 127.5, "mean": (1.0,)}}
FIX = {"unit": "--scale 1/255", "raw": "--scale 1", "signed": "--scale 1/127.5 --mean 1"}
_MODELS: dict = {}


@pytest.fixture(scope="session")
def prep_models():
    """LoadedModel per training input (unit, raw, signed, colour): trained once, cached in $EDGECNN_CACHE."""
    if not _MODELS:
        from edgecnn.converters.keras_load import load_model
        from fixtures.prep_models import KINDS, trained_prep_model

        _MODELS.update({kind: load_model(trained_prep_model(kind)) for kind in KINDS})
    return _MODELS


@pytest.fixture(scope="module")
def mnist_cnn(mnist_keras_path):
    from edgecnn.converters.keras_load import load_model

    return load_model(mnist_keras_path)


@pytest.fixture(scope="module")
def val():
    from edgecnn.data import mnist_sample

    return mnist_sample("val").head(400)


def _prep(feed: str, color: ColorOrder = ColorOrder.GRAY) -> Preprocessing:
    return Preprocessing(28, 28, color=color, **FEEDS[feed])


def _inputs(images, labels, prep) -> ModelInputs:
    return model_inputs(Dataset(images, labels, None, "digits"), prep, prep.input_shape(), "calibration")


@pytest.mark.parametrize("labelled", [False, True], ids=["no-labels", "labels"])
@pytest.mark.parametrize("feed", list(FEEDS))
@pytest.mark.parametrize("trained", list(FEEDS))
def test_scale_sweep(prep_models, val, trained, feed, labelled):
    """Warned exactly when the feed differs from training, naming the options of the training scale."""
    prep = _prep(feed)
    report = check_preprocessing(prep_models[trained], prep, _inputs(val.images, val.labels if labelled else None, prep))
    if feed == trained:
        assert report.warnings == () and report.findings == (), report.summary()
        assert "consistent with training" in report.summary()
        return
    (warning,) = report.warnings
    # Without labels BatchNormalization alone speaks; with them, the accuracy gained is always named.
    assert warning.check in (("labels", "batchnorm") if labelled else ("batchnorm",))
    assert warning.fix.startswith(f"pass {FIX[trained]}"), warning.fix
    if labelled:
        best = next(s for s in report.scores if s.options and warning.fix.startswith(f"pass {s.options} ("))
        assert best.accuracy > 0.85 and f"Keras top-1 {best.accuracy * 100:.1f} %" in warning.fix


COLOUR_FEEDS = ["colour", "torch", "caffe", "bgr"]  # x/255 RGB, ImageNet mean/std, caffe, x/255 in BGR order


def _colour_prep(feed: str) -> Preprocessing:
    from fixtures.prep_models import preprocessing

    return replace(preprocessing("colour"), color=ColorOrder.BGR) if feed == "bgr" else preprocessing(feed)


@pytest.mark.parametrize("labelled", [False, True], ids=["no-labels", "labels"])
@pytest.mark.parametrize("feed", COLOUR_FEEDS)
@pytest.mark.parametrize("trained", ["colour", "torch", "caffe"])
def test_colour_sweep(prep_models, val, trained, feed, labelled):
    """RGB digits: x/255, keras.applications' "torch" (ImageNet mean/std) and "caffe" (BGR, ImageNet mean) modes
    and a red/blue swap, each fed to models trained each way: warned exactly when the feed differs (without
    labels too: BatchNormalization statistics tell each of these apart), the fix naming the training options."""
    from edgecnn.converters.prep_candidates import options_for, same
    from fixtures.prep_models import colour_digits

    prep, truth = _colour_prep(feed), _colour_prep(trained)
    labels = val.labels if labelled else None
    report = check_preprocessing(prep_models[trained], prep, _inputs(colour_digits(val.images), labels, prep))
    if same(prep, truth):
        assert report.findings == (), report.summary()
        return
    (warning,) = report.warnings
    assert warning.check in (("labels", "batchnorm") if labelled else ("batchnorm",)), warning.line()
    assert warning.fix.startswith(f"pass {options_for(truth, prep)}"), warning.line()


@pytest.mark.parametrize("samples, wins, losses, named", [
    (256, 60, 10, True),    # +19.5 pp, far beyond noise
    (256, 30, 10, False),   # +7.8 pp: under the 10 pp a candidate must gain
    (32, 4, 0, False),      # +12.5 pp but z = 2.0: ... and beyond noise
    (32, 9, 0, True),       # +28 pp, z = 3.0
    (64, 14, 6, False),     # +12.5 pp but z = 1.8
])
def test_a_candidate_is_named_only_when_clearly_better(samples, wins, losses, named):
    given = np.zeros(samples, dtype=bool)
    given[wins:wins + losses] = True
    candidate = np.zeros(samples, dtype=bool)
    candidate[:wins] = True
    assert better_by_labels(candidate, given) is named


def test_batchnorm_evidence_must_be_large_and_fixed_by_the_candidate():
    assert better_by_batchnorm(0.02, 0.6) and better_by_batchnorm(0.01, 5e4)
    assert not better_by_batchnorm(0.02, 0.3)     # the given preprocessing already looks fine
    assert not better_by_batchnorm(0.3, 0.9)      # the candidate is not four times closer
    assert not better_by_batchnorm(0.01, float("nan")) and not better_by_batchnorm(None, 2.0)


def test_colour_order_swap_is_named_with_labels(prep_models, val):
    from fixtures.prep_models import colour_digits

    model = prep_models["colour"]
    images = colour_digits(val.images)
    right = _prep("unit", ColorOrder.RGB)
    assert check_preprocessing(model, right, _inputs(images, val.labels, right)).warnings == ()
    swapped = _prep("unit", ColorOrder.BGR)
    (warning,) = check_preprocessing(model, swapped, _inputs(images, val.labels, swapped)).warnings
    assert warning.check == "labels" and "--color rgb" in warning.fix and "BGR" in warning.message


@pytest.mark.parametrize("arrays", ["unit", "raw", "signed"])
@pytest.mark.parametrize("manifest", ["unit", "raw", "signed"])
def test_float_arrays_against_the_manifest(mnist_cnn, val, arrays, manifest):
    """The digit CNN has no BatchNormalization and no labels here: only the arrays' range speaks."""
    from edgecnn.converters.prep_candidates import span, value_range

    x = model_inputs(Dataset(val.images, None, None, "digits"), _prep(arrays), (28, 28, 1), "calibration").inputs
    data = ModelInputs(x, None, None, "digits.npz", "calibration")
    prep = _prep(manifest)
    report = check_preprocessing(mnist_cnn, prep, data)
    if arrays == manifest:
        assert report.warnings == ()
        return
    (warning,) = report.warnings
    held, fed = span(*value_range(_prep(arrays))), span(*value_range(prep))
    assert warning.check == "array-range" and f"hold {held} but" in warning.message and f"feeds the model {fed}" in warning.message
    assert f"if it was trained on {held}, pass {FIX[arrays]}" in warning.fix


@pytest.mark.parametrize("divided, warned", [(255.0, True), (127.5, True), (1.0, False)])
def test_float_arrays_already_scaled_for_a_model_that_rescales_itself(val, divided, warned):
    """A Rescaling/Normalization layer inside: the manifest feeds 0..255 pixels, so arrays scaled beforehand
    (x/255, x/127.5 - 1) would be rescaled twice."""
    from edgecnn.converters.prep_check import array_finding

    x = val.images[:100].astype(np.float32) / divided - (1.0 if divided == 127.5 else 0.0)
    finding = array_finding(ModelInputs(x, None, None, "scaled.npz", "calibration"), _prep("raw"), True)
    assert (finding is not None) is warned
    if warned:
        assert "the model rescales pixels itself" in finding.message and "feeds the model 0..255" in finding.message
        assert finding.fix == "save the arrays as 0..255 pixels, or give the images"


def test_issue_example_float_0_255_arrays_warn_and_strict_refuses(tmp_path, capsys, mnist_keras_path, val):
    """A digit CNN trained on x/255, calibrated from a float32 .npz holding 0..255, no --val."""
    from edgecnn.cli import main
    from edgecnn.manifest import Manifest

    npz = tmp_path / "calib255.npz"
    np.savez(npz, x=val.images[:200].astype(np.float32))
    out = tmp_path / "out"
    code = main(["convert", str(mnist_keras_path), "--calib", str(npz), "--out", str(out), "--formats", "tflite-fp32"])
    err = capsys.readouterr().err
    assert code == 0, err
    warning = next(line for line in err.splitlines() if "warning:" in line)
    assert "hold 0..255" in warning and "feeds the model 0..1" in warning and "pass --scale 1" in warning
    checks = Manifest.read(out / "manifest.json").checks
    assert checks["warnings"] and checks["warnings"][0].startswith("calibration arrays") and checks["seconds"] > 0
    strict = tmp_path / "strict"
    code = main(["convert", str(mnist_keras_path), "--calib", str(npz), "--out", str(strict), "--strict"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:") and "hold 0..255" in lines[0]
    assert not strict.exists()


def _digit_folder(root, images, labels=None):
    import cv2

    for index, image in enumerate(images):
        folder = root / (str(labels[index]) if labels is not None else "")
        folder.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(folder / f"{index:04d}.png"), image)
    return root


def test_issue_example_0_255_model_from_an_image_folder(tmp_path, prep_models, val):
    """Trained on raw 0..255 pixels (no Rescaling layer), converted at the default 1/255: with labels the warning
    names --scale 1 and its accuracy; without labels BatchNormalization alone flags it."""
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from fixtures.prep_models import trained_prep_model

    model = trained_prep_model("raw")
    options = ConvertOptions(formats="tflite-fp32", progress=False)
    labelled = _digit_folder(tmp_path / "labelled", val.images[:200], val.labels[:200])
    result = convert(model, calib=labelled, out=tmp_path / "a", options=options)
    (warning,) = result.manifest.checks["warnings"]
    assert "Keras top-1" in warning and "fix: pass --scale 1 (Keras top-1 9" in warning, warning
    assert warning in result.warnings
    unlabelled = _digit_folder(tmp_path / "flat", val.images[:200])
    result = convert(model, calib=unlabelled, out=tmp_path / "b", options=options)
    (warning,) = result.manifest.checks["warnings"]
    assert "BatchNormalization" in warning and warning.endswith("fix: pass --scale 1")


def test_the_demo_conversion_has_no_preprocessing_warning(mnist_convert):
    checks = mnist_convert.manifest.checks
    assert checks["warnings"] == [] and checks["data"]["labelled"] is True
    assert checks["candidates"][0]["accuracy"] > 0.9 and "consistent with training" in checks["summary"]
    json.dumps(checks)  # JSON-able as written


def test_batchnorm_at_initial_statistics_is_skipped_and_mobilenet_gets_its_preprocessing():
    import keras

    from edgecnn.converters.bn_check import trained_batchnorm_layers
    from edgecnn.converters.calibration import PrepRequest, build_preprocessing
    from edgecnn.converters.zoo import build_seed

    keras.utils.set_random_seed(0)
    model = build_seed("mobilenet_v2")
    trained, initial = trained_batchnorm_layers(model)
    assert trained == [] and initial == 52
    prep, notes = build_preprocessing((224, 224, 3), PrepRequest(), tuple(type(l).__name__ for l in model.layers), model)
    assert _values(prep) == _values(Preprocessing(224, 224, scale=1 / 127.5, mean=(1.0,)))
    assert any("MobileNetV2" in note and "--scale 1/127.5 --mean 1" in note for note in notes)
    user, notes = build_preprocessing((224, 224, 3), PrepRequest(scale=1 / 255), (), model)
    assert user.scale == pytest.approx(1 / 255) and not any("MobileNetV2" in note for note in notes)


@pytest.mark.parametrize("family", ["ResNet50", "VGG16", "DenseNet121", "MobileNetV2", "EfficientNetB0"])
def test_keras_applications_get_their_documented_preprocessing_and_no_false_alarm(family):
    """Caffe, torch, tf and built-in (Rescaling/Normalization layers, 0..255) families, nested in a Sequential as
    when fine-tuning: the default is the documented preprocessing; with BatchNormalization statistics fitted to
    photographs preprocessed that way (no pretrained weights here), other photographs fed the default raise no
    warning, and fed x/255 name the documented options. Every family: benchmarks/prep_check.py --families."""
    from edgecnn.converters.calibration import PrepRequest, build_preprocessing
    from edgecnn.converters.keras_load import LoadedModel
    from edgecnn.converters.prep_candidates import options_for, same
    from fixtures.prep_models import (documented_preprocessing, family_model, family_size, fit_batchnorm,
                                                photo_crops)
    from edgecnn.preprocess import prepare_batch, to_float

    size = family_size(family)
    model = family_model(family)
    classes = tuple(type(layer).__name__ for layer in model.layers[0].layers)
    prep, _ = build_preprocessing((size, size, 3), PrepRequest(), classes, model)
    documented = documented_preprocessing(family, size)
    assert same(prep, documented), (_values(prep), _values(documented))
    fitted = fit_batchnorm(model, to_float(prepare_batch(photo_crops((size, size), 64, seed=0), documented), documented))
    loaded = LoadedModel(Path(family), family, "keras", "", (size, size, 3), (5,), keras_model=model,
                         layer_classes=classes)
    photos = photo_crops((size, size), 128, seed=1)
    report = check_preprocessing(loaded, prep, _inputs(photos, None, prep))
    assert report.findings == (), report.summary()
    plain = Preprocessing(size, size, ColorOrder.RGB, scale=1 / 255)
    flagged = check_preprocessing(loaded, plain, _inputs(photos, None, plain)).warnings
    if not fitted:  # VGG: no BatchNormalization, no label-free evidence
        assert flagged == () and "no evidence" in report.summary()
        return
    (warning,) = flagged
    assert warning.check == "batchnorm" and warning.fix == f"pass {options_for(documented, plain)}", warning.line()


def _values(prep: Preprocessing) -> tuple:
    return (prep.color, round(prep.scale, 9), tuple(round(v, 6) for v in prep.mean), tuple(round(v, 6) for v in prep.std))


def test_batchnorm_inside_a_nested_model_is_probed(prep_models, val):
    import keras

    inner = prep_models["raw"].keras_model
    outer = keras.Sequential([keras.Input((28, 28, 1)), inner], name="wrapper")
    from edgecnn.converters.bn_check import batchnorm_evidence

    x = val.images[:64].astype(np.float32)
    (direct,), (nested,) = batchnorm_evidence(inner, [x]), batchnorm_evidence(outer, [x])
    assert len(direct.layers) == 2 and [l.layer for l in nested.layers] == [l.layer for l in direct.layers]
    assert nested.score == pytest.approx(direct.score) and direct.score < 0.1
    assert not any("call" in vars(layer) for layer in inner.layers), "the probe left a layer patched"


def test_exif_orientation_gets_one_warning_and_images_stay_unrotated(tmp_path, prep_models, val):
    import cv2

    from edgecnn.data import exif_orientation, load_dataset

    folder = tmp_path / "photos"
    folder.mkdir()
    digit = np.ascontiguousarray(np.repeat(val.images[0], 3, axis=2))
    plain = cv2.imencode(".jpg", digit)[1].tobytes()
    for index, order in enumerate(("II", "MM", "II")):
        orientation = 6 if index < 2 else 1
        (folder / f"{index}.jpg").write_bytes(_with_exif(plain, orientation, order))
        assert exif_orientation(_with_exif(plain, orientation, order)) == orientation
    (folder / "3.jpg").write_bytes(plain)
    assert exif_orientation(plain) is None and exif_orientation(b"not a jpeg") is None
    dataset = load_dataset(folder)
    assert dataset.oriented == 2
    assert all(np.array_equal(image, dataset.images[3]) for image in dataset.images), "read as stored, not rotated"
    prep = Preprocessing(28, 28, color=ColorOrder.RGB)
    report = check_preprocessing(prep_models["colour"], prep, None, None, datasets=(dataset,))
    (warning,) = report.warnings
    assert warning.check == "exif" and "2 of 4" in warning.message and "sideways" in warning.message
    assert report.mismatches == ()  # data hygiene: --strict does not refuse it


def _with_exif(jpeg: bytes, orientation: int, order: str) -> bytes:
    """``jpeg`` with an APP1 Exif segment holding one IFD entry: Orientation (0x0112, SHORT)."""
    endian = "little" if order == "II" else "big"
    entry = (0x0112).to_bytes(2, endian) + (3).to_bytes(2, endian) + (1).to_bytes(4, endian) \
        + orientation.to_bytes(2, endian) + b"\0\0"
    tiff = order.encode() + (42).to_bytes(2, endian) + (8).to_bytes(4, endian) + (1).to_bytes(2, endian) + entry \
        + (0).to_bytes(4, endian)
    payload = b"Exif\0\0" + tiff
    return jpeg[:2] + b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload + jpeg[2:]


def test_macos_metadata_files_are_skipped_by_convert_and_run_alike(tmp_path, val):
    import cv2

    from edgecnn.data import load_dataset
    from edgecnn.devices.sources import ImageFilesSource, parse_source

    for label in ("0", "1"):
        folder = tmp_path / "data" / label
        folder.mkdir(parents=True)
        cv2.imwrite(str(folder / "a.png"), val.images[int(label)])
        (folder / "._a.png").write_bytes(b"\x00\x05\x16\x07AppleDouble junk")  # what a Mac leaves beside a copy
        (folder / ".DS_Store").write_bytes(b"Bud1")
    (tmp_path / "data" / "__MACOSX").mkdir()
    (tmp_path / "data" / "__MACOSX" / "._a.png").write_bytes(b"\x00\x05\x16\x07")
    dataset = load_dataset(tmp_path / "data")
    assert len(dataset) == 2 and dataset.class_names == ("0", "1")
    with ImageFilesSource(parse_source(str(tmp_path / "data" / "0"))) as source:
        frames = [source.read(), source.read()]
    assert frames[0] is not None and frames[1] is None


def test_the_table_footer_says_when_verification_used_the_calibration_data(mnist_convert):
    import dataclasses

    from edgecnn.converters.summary import summary_table

    held_out = summary_table(mnist_convert.manifest).caption
    assert "validation samples" in held_out and "calibration data itself" not in held_out
    entries = tuple(dataclasses.replace(e, verification=dataclasses.replace(e.verification, data="calibration"))
                    for e in mnist_convert.manifest.artifacts)
    itself = summary_table(mnist_convert.manifest.with_artifacts(entries)).caption
    assert "the calibration data itself, no held-out set: pass --val" in itself
