"""Safe mode and data-only files: a model that would run code on load is refused (naming the layer) and its
code never runs; manifests and labels files are parsed as data, never executed; a manifest that does not
describe its model is refused."""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edgecnn.errors import DataError, ManifestError
from edgecnn.manifest import Manifest

HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def unsafe_models(tmp_path_factory):
    out = tmp_path_factory.mktemp("unsafe_models")
    marker = out / "CODE_RAN"
    subprocess.run([sys.executable, str(HERE / "make_unsafe_models.py"), str(out), str(marker)], check=True,
                   capture_output=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return out, marker


@pytest.mark.parametrize("file,layer", [("lambda.keras", "times_two"), ("lambda.h5", "times_two"),
                                        ("nested_lambda.keras", "hidden_lambda")])
def test_lambda_layers_are_refused_by_name_and_never_run(unsafe_models, keras_worker, file, layer):
    folder, marker = unsafe_models
    outcome = keras_worker.load(folder / file, "keras")
    assert outcome.kind == "error" and outcome.type == "UnsafeModelError", outcome
    assert f"Lambda layer '{layer}'" in outcome.message and "--unsafe" in outcome.message
    assert "\n" not in outcome.message
    assert not marker.exists(), "the Lambda's code ran although the model was refused"


def test_custom_layer_is_refused_by_name(unsafe_models, keras_worker):
    folder, marker = unsafe_models
    outcome = keras_worker.load(folder / "custom_layer.keras", "keras")
    assert outcome.kind == "error" and outcome.type in ("UnsafeModelError", "ModelLoadError"), outcome
    assert "doubler" in outcome.message or "Doubler" in outcome.message
    assert not marker.exists()


def test_unsafe_really_runs_the_code_which_is_why_it_is_refused(unsafe_models, keras_worker):
    """The control: with --unsafe the very same file runs its Lambda (so the test above could fail)."""
    folder, marker = unsafe_models
    outcome = keras_worker.load(folder / "lambda.keras", "keras", unsafe=True)
    assert outcome.kind == "loaded", outcome
    assert marker.exists()
    marker.unlink()


def test_convert_cli_refuses_a_lambda_model_in_one_line(unsafe_models, tmp_path):
    folder, marker = unsafe_models
    out = tmp_path / "out"
    proc = subprocess.run([str(Path(sys.executable).with_name("edgecnn")), "convert", str(folder / "lambda.keras"),
                           "--out", str(out)],
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "COLUMNS": "300"})
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(err_lines) == 1 and "Lambda layer 'times_two'" in err_lines[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and not marker.exists()
    assert not out.exists() or not any(out.iterdir())


def test_labels_file_is_data_only(tmp_path):
    from edgecnn.devices.classify import read_labels

    marker = tmp_path / "LABEL_RAN"
    lines = [f"__import__('os').system('touch {marker}')", "{{7*7}}", "${HOME}", "$(touch x)", "`id`", "  cat  ", ""]
    (tmp_path / "labels.txt").write_text("\n".join(lines) + "\n")
    labels = read_labels(tmp_path / "labels.txt")
    assert labels == (lines[0], "{{7*7}}", "${HOME}", "$(touch x)", "`id`", "cat")
    assert not marker.exists()
    (tmp_path / "bin.txt").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(DataError):
        read_labels(tmp_path / "bin.txt")
    (tmp_path / "empty.txt").write_text("\n \n")
    with pytest.raises(DataError, match="no labels"):
        read_labels(tmp_path / "empty.txt")


@pytest.mark.parametrize("content", [
    b'!!python/object/apply:os.system ["touch /tmp/x"]',
    b'{"schema_version": 1, "__class__": "os.system"}',
    b"\x80\x04\x95\x1f\x00\x00\x00\x00\x00\x00\x00\x8c\x05posix\x94\x8c\x06system\x94\x93\x94.",  # a pickle
    b"import os; os.system('touch /tmp/x')",
])
def test_manifest_with_foreign_content_is_refused(tmp_path, content):
    (tmp_path / "manifest.json").write_bytes(content)
    with pytest.raises(ManifestError) as exc:
        Manifest.read(tmp_path / "manifest.json")
    assert "\n" not in str(exc.value)


def _mismatched(manifest: Manifest, case: str) -> Manifest:
    if case == "shape":
        prep = dataclasses.replace(manifest.preprocessing, height=32, width=32)
        return dataclasses.replace(manifest, preprocessing=prep, input_shape=(32, 32, 1))
    if case == "classes":
        return dataclasses.replace(manifest, labels=manifest.labels[:5])
    entries = []
    for entry in manifest.artifacts:
        if case == "dtype":
            entry = dataclasses.replace(entry, input=dataclasses.replace(entry.input, dtype="uint8", zero_point=0))
        elif case == "scale":
            entry = dataclasses.replace(entry, output=dataclasses.replace(entry.output, scale=entry.output.scale * 2))
        entries.append(entry)
    return manifest.with_artifacts(tuple(entries))


@pytest.mark.parametrize("case", ["shape", "classes", "dtype", "scale"])
def test_manifest_that_does_not_match_its_model_is_refused(artifacts, tmp_path, case):
    from edgecnn.devices.base import RunnerOptions
    from edgecnn.devices.classify import Classifier

    model = tmp_path / artifacts["tflite-int8"].name
    shutil.copyfile(artifacts["tflite-int8"], model)
    manifest = _mismatched(Manifest.read(artifacts["manifest"]), case)
    (tmp_path / "manifest.json").write_text(manifest.to_json())
    with pytest.raises(ManifestError) as exc:
        Classifier.open(model, "cpu", RunnerOptions(threads=1, probe=False)).close()
    assert "\n" not in str(exc.value) and model.name in str(exc.value)
    # the untouched manifest is accepted: the refusal is about the mismatch
    (tmp_path / "manifest.json").write_text(Manifest.read(artifacts["manifest"]).to_json())
    with Classifier.open(model, "cpu", RunnerOptions(threads=1, probe=False)) as classifier:
        assert len(classifier.labels) == 10
