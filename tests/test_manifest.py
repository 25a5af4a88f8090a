"""The manifest contract: JSON round trip, version check, malformed input -> one-line ManifestError."""
from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecnn.errors import ManifestError
from edgecnn.manifest import (MANIFEST_NAME, SCHEMA_VERSION, ArtifactEntry, ColorOrder, Manifest, OutputKind,
                              Preprocessing, ResizeMode, TensorSpec, Verification, find_manifest)


def make_manifest(**overrides) -> Manifest:
    prep = Preprocessing(height=28, width=28, color=ColorOrder.GRAY, resize=ResizeMode.CENTER_CROP,
                         scale=1 / 255, mean=(0.1,), std=(0.5,), invert=True)
    entry = ArtifactEntry(
        name="tflite-int8", file="model_int8.tflite", size_bytes=1234, sha256="ab" * 32,
        input=TensorSpec("image", (1, 28, 28, 1), "int8", 0.0039, -128),
        output=TensorSpec("out", (1, 10), "int8", 1 / 256, -128), precision="int8",
        verification=Verification(samples=100, data="validation", agreement=0.99, max_abs_diff=0.02,
                                  mean_abs_diff=0.001, keras_accuracy=0.97, accuracy=0.96, drop_pp=1.0),
        notes=("per-channel",))
    fields = dict(model_name="mnist_cnn", source_sha256="cd" * 32, input_shape=(28, 28, 1), preprocessing=prep,
                  labels=tuple(str(d) for d in range(10)), output_kind=OutputKind.LOGITS, artifacts=(entry,),
                  versions={"tensorflow": "2.21"}, calibration={"samples": 200, "method": "minmax"},
                  created="2026-01-01T00:00:00Z")
    fields.update(overrides)
    return Manifest(**fields)


def assert_one_line(exc: pytest.ExceptionInfo) -> None:
    text = str(exc.value)
    assert text and "\n" not in text and "Traceback" not in text


def test_round_trip_through_json_is_identity(tmp_path):
    manifest = make_manifest()
    path = tmp_path / MANIFEST_NAME
    path.write_text(manifest.to_json())
    again = Manifest.read(path)
    assert again == manifest
    assert again.preprocessing.color is ColorOrder.GRAY and again.output_kind is OutputKind.LOGITS
    assert again.artifact("model_int8.tflite").input.quantized
    assert find_manifest(tmp_path / "model_int8.tflite") == path
    assert find_manifest(tmp_path / "sub" / "x.tflite") is None


def test_artifact_lookup_by_name_file_and_unknown():
    manifest = make_manifest()
    assert manifest.artifact("tflite-int8").file == "model_int8.tflite"
    assert manifest.artifact("/elsewhere/model_int8.tflite").name == "tflite-int8"
    with pytest.raises(ManifestError, match="tflite-int8") as exc:
        manifest.artifact("onnx-fp32")
    assert_one_line(exc)


@pytest.mark.parametrize("version", [None, 0, 3, "1", "2", 99, True])
def test_other_schema_versions_are_refused(version):
    raw = make_manifest().to_dict()
    raw["schema_version"] = version
    with pytest.raises(ManifestError, match="schema_version") as exc:
        Manifest.from_dict(raw)
    assert_one_line(exc)


def test_version_1_manifest_still_reads_with_its_flatten_field():
    raw = make_manifest().to_dict()
    raw["schema_version"] = 1
    prep = raw["preprocessing"]
    del prep["layout"]
    prep["flatten"] = False
    assert Manifest.from_dict(raw).preprocessing.layout.value == "nhwc"
    prep["flatten"] = True
    raw["input_shape"] = [raw["preprocessing"]["height"] * raw["preprocessing"]["width"] *
                          (1 if raw["preprocessing"]["color"] == "gray" else 3)]
    assert Manifest.from_dict(raw).preprocessing.flatten


@pytest.mark.parametrize("key", ["model_name", "source_sha256", "input_shape", "preprocessing", "labels"])
def test_missing_required_field_is_a_one_line_error(key):
    raw = make_manifest().to_dict()
    del raw[key]
    with pytest.raises(ManifestError, match="malformed") as exc:
        Manifest.from_dict(raw)
    assert_one_line(exc)


@pytest.mark.parametrize("path,value", [
    (("preprocessing", "height"), "tall"),
    (("preprocessing", "height"), float("inf")),
    (("preprocessing", "height"), 0),
    (("preprocessing", "color"), "cmyk"),
    (("preprocessing", "resize"), "zoom"),
    (("preprocessing", "std"), [0.0]),
    (("preprocessing", "std"), [1.0, 1.0]),
    (("preprocessing", "scale"), float("nan")),
    (("preprocessing", "mean"), [float("inf")]),
    (("preprocessing", "invert"), "false"),
    (("preprocessing",), [28, 28]),
    (("input_shape",), "28x28"),
    (("input_shape",), [28, 28, "one"]),
    (("input_shape",), [28.5, 28, 1]),
    (("labels",), "0123456789"),
    (("labels",), []),
    (("output_kind",), "sigmoid"),
    (("artifacts",), {"name": "x"}),
    (("artifacts", 0, "input"), [1, 28, 28, 1]),
    (("artifacts", 0, "size_bytes"), "big"),
    (("artifacts", 0, "verification"), {"samples": 1, "unexpected": 2}),
    (("artifacts", 0, "verification"), "good"),
    (("versions",), ["tf"]),
    (("calibration",), 3),
])
def test_malformed_values_are_one_line_manifest_errors(path, value):
    raw = make_manifest().to_dict()
    target = raw
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ManifestError) as exc:
        Manifest.from_dict(raw)
    assert_one_line(exc)


def test_preprocessing_that_does_not_produce_the_model_input_is_refused():
    raw = make_manifest().to_dict()
    raw["input_shape"] = [32, 32, 3]
    with pytest.raises(ManifestError, match=r"produces \(28, 28, 1\).*\(32, 32, 3\)") as exc:
        Manifest.from_dict(raw)
    assert_one_line(exc)
    raw["input_shape"] = [784]
    raw["preprocessing"]["layout"] = "flat"
    assert Manifest.from_dict(raw).preprocessing.input_shape() == (784,)


@pytest.mark.parametrize("data", [b"", b"{", b"[1, 2]", b"null", b'"manifest"', b'{"schema_version": 1}',
                                  b"[" * 100_000 + b"]" * 100_000, b"\xff\xfe\x00garbage"])
def test_unreadable_or_non_object_json_is_refused(tmp_path, data):
    path = tmp_path / MANIFEST_NAME
    path.write_bytes(data)
    with pytest.raises(ManifestError) as exc:
        Manifest.read(path)
    assert_one_line(exc)


def test_missing_manifest_file_is_a_manifest_error(tmp_path):
    with pytest.raises(ManifestError, match="cannot read") as exc:
        Manifest.read(tmp_path / "absent.json")
    assert_one_line(exc)


def test_manifest_is_data_only_code_like_strings_stay_strings(tmp_path):
    """Strings that look like code are inert: parsing never evaluates them."""
    marker = tmp_path / "pwned"
    raw = make_manifest().to_dict()
    raw["model_name"] = f"__import__('pathlib').Path('{marker}').touch()"
    raw["labels"] = [f"{{__import__('os').system('touch {marker}')}}"] * 10
    manifest = Manifest.from_dict(raw)
    assert manifest.model_name.startswith("__import__") and manifest.labels[0].startswith("{__import__")
    assert not marker.exists()


@pytest.mark.parametrize("where", [(), ("preprocessing",), ("artifacts", 0), ("artifacts", 0, "input"),
                                   ("artifacts", 0, "verification")])
def test_unknown_fields_are_refused(where):
    raw = make_manifest().to_dict()
    target = raw
    for key in where:
        target = target[key]
    target["__reduce__"] = "os.system"
    with pytest.raises(ManifestError, match="unknown field.*__reduce__") as exc:
        Manifest.from_dict(raw)
    assert_one_line(exc)


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=8))
json_values = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(key_path=st.lists(st.sampled_from(["preprocessing", "artifacts", 0, "input", "output", "height", "labels",
                                          "input_shape", "verification", "shape", "std", "mean", "scale"]),
                         min_size=1, max_size=3),
       value=json_values)
def test_any_mutated_manifest_parses_or_raises_manifest_error(key_path, value):
    """Property: replacing any (nested) field by any JSON value never escapes as another exception type."""
    raw = make_manifest().to_dict()
    target = raw
    for key in key_path[:-1]:
        try:
            target = target[key]
        except (KeyError, IndexError, TypeError):
            break
    try:
        target[key_path[-1]] = value
    except (TypeError, IndexError):
        pass
    try:
        manifest = Manifest.from_dict(json.loads(json.dumps(raw)))
    except ManifestError as exc:
        assert "\n" not in str(exc)
    else:
        manifest.validate()
        assert Manifest.from_dict(manifest.to_dict()) == manifest
