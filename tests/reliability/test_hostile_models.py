"""Hostile model files: truncated, bit-flipped, random, zero, overwritten, or another format under the
wrong extension. Each must load correctly (a harmless mutation) or give a typed one-line error; none may
crash the process or hang. Loads run in a child worker (hostile_worker.py), so a segfault in LiteRT,
ONNX Runtime or TensorFlow shows up here as a failure naming the signal, not as a dead pytest."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hostile import MUTATIONS, Outcome, Worker, mutate

SUFFIX_TARGET = {".tflite": "cpu", ".onnx": "onnx-cpu"}
def fuzz_settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)


def assert_clear(outcome: Outcome, case) -> None:
    assert outcome.kind not in ("crash", "hang"), f"{case.name}: {outcome}"
    assert outcome.clear, f"{case.name}: unclear outcome {outcome}"
    if outcome.kind == "error":
        assert case.name in outcome.message, f"the error does not name the file: {outcome.message}"


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("hostile")


def test_the_worker_turns_a_segfault_and_a_hang_into_outcomes(tmp_path):
    """The harness itself can fail: a real SIGSEGV in the child and a child that never answers."""
    with Worker(timeout_s=3) as worker:
        crash = worker.load(tmp_path / "x", "selftest_crash")
        assert crash.kind == "crash" and crash.type == "SIGSEGV" and not crash.clear
        hang = worker.load(tmp_path / "x", "selftest_hang")
        assert hang.kind == "hang" and not hang.clear
        missing = worker.load(tmp_path / "absent.tflite", "runner")  # restarted after both
        assert missing.kind == "error" and missing.type == "InputPathError"


@fuzz_settings(150)
@given(base=st.sampled_from(["tflite-int8", "tflite-fp32", "tflite-fp16", "tflite-dynamic"]),
       mutation=st.sampled_from(MUTATIONS), seed=st.integers(0, 2 ** 32 - 1))
def test_mutated_tflite_is_loaded_or_refused_never_crashes(artifacts, runner_worker, work, base, mutation, seed):
    case = work / "hostile.tflite"
    case.write_bytes(mutate(artifacts[base].read_bytes(), mutation, np.random.default_rng(seed)))
    assert_clear(runner_worker.load(case, "runner", "cpu"), case)


@fuzz_settings(80)
@given(base=st.sampled_from(["onnx-fp32", "onnx-int8"]), mutation=st.sampled_from(MUTATIONS),
       seed=st.integers(0, 2 ** 32 - 1))
def test_mutated_onnx_is_loaded_or_refused_never_crashes(artifacts, runner_worker, work, base, mutation, seed):
    case = work / "hostile.onnx"
    case.write_bytes(mutate(artifacts[base].read_bytes(), mutation, np.random.default_rng(seed)))
    assert_clear(runner_worker.load(case, "runner", "onnx-cpu"), case)


@pytest.mark.parametrize("base,mutation,seed", [
    ("tflite-int8", "bitflip", 1), ("tflite-fp32", "overwrite_u32", 2), ("tflite-int8", "truncate", 3),
    ("onnx-fp32", "bitflip", 4), ("onnx-int8", "overwrite_u32", 5), ("onnx-fp32", "truncate", 6),
])
def test_default_load_path_with_child_probe(artifacts, runner_worker, work, base, mutation, seed):
    """What `edgecnn run` does: static checks, then a probe load in a child, then the real load."""
    source = artifacts[base]
    case = work / f"probed{source.suffix}"
    case.write_bytes(mutate(source.read_bytes(), mutation, np.random.default_rng(seed)))
    assert_clear(runner_worker.load(case, "runner_probe", SUFFIX_TARGET[source.suffix]), case)


@pytest.mark.parametrize("name,suffix", [
    ("onnx-fp32", ".tflite"), ("tflite-int8", ".onnx"), ("keras", ".tflite"), ("keras", ".onnx"),
    ("h5", ".tflite"), ("h5", ".onnx"), ("manifest", ".tflite"), ("manifest", ".onnx"),
])
def test_valid_file_of_another_format_under_a_device_suffix(artifacts, keras_variants, runner_worker, work,
                                                             name, suffix):
    source = {**artifacts, **keras_variants}[name]
    case = work / f"renamed-{name}{suffix}"
    shutil.copyfile(source, case)
    outcome = runner_worker.load(case, "runner", SUFFIX_TARGET[suffix])
    assert outcome.kind == "error", outcome
    assert_clear(outcome, case)
    if name in ("onnx-fp32", "tflite-int8", "keras", "h5"):
        real = {"onnx-fp32": "onnx", "tflite-int8": "tflite", "keras": "keras", "h5": "h5"}[name]
        assert f"holds a {real} model" in outcome.message


def test_unmutated_artifacts_load_and_run(artifacts, runner_worker):
    for name, path in artifacts.items():
        if path.suffix in SUFFIX_TARGET:
            outcome = runner_worker.load(path, "runner", SUFFIX_TARGET[path.suffix])
            assert outcome.kind == "loaded" and "(1, 10)" in outcome.message, (name, outcome)


@fuzz_settings(30)
@given(base=st.sampled_from(["keras", "h5", "savedmodel"]),
       mutation=st.sampled_from([m for m in MUTATIONS if m != "duplicate_tail"]), seed=st.integers(0, 2 ** 32 - 1))
def test_mutated_keras_h5_savedmodel_are_loaded_or_refused(keras_variants, keras_worker, work, base, mutation,
                                                           seed):
    rng = np.random.default_rng(seed)
    source = keras_variants[base]
    if base == "savedmodel":
        case = work / "hostile_savedmodel"
        shutil.rmtree(case, ignore_errors=True)
        shutil.copytree(source, case)
        pb = case / "saved_model.pb"
        pb.write_bytes(mutate(pb.read_bytes(), mutation, rng))
    else:
        case = work / f"hostile{source.suffix}"
        case.write_bytes(mutate(source.read_bytes(), mutation, rng))
    assert_clear(keras_worker.load(case, "keras"), case)


@pytest.mark.parametrize("name,suffix", [("h5", ".keras"), ("keras", ".h5"), ("tflite-int8", ".keras"),
                                         ("onnx-fp32", ".h5"), ("manifest", ".keras")])
def test_valid_file_of_another_format_under_a_keras_suffix(artifacts, keras_variants, keras_worker, work, name,
                                                           suffix):
    case = work / f"renamed-{name}{suffix}"
    shutil.copyfile({**artifacts, **keras_variants}[name], case)
    outcome = keras_worker.load(case, "keras")
    assert outcome.kind == "error", outcome
    assert_clear(outcome, case)


def test_savedmodel_folder_without_variables_or_pb(keras_variants, keras_worker, work):
    broken = work / "sm_no_variables"
    shutil.rmtree(broken, ignore_errors=True)
    shutil.copytree(keras_variants["savedmodel"], broken)
    shutil.rmtree(broken / "variables")
    assert_clear(keras_worker.load(broken, "keras"), broken)
    (broken / "saved_model.pb").unlink()
    outcome = keras_worker.load(broken, "keras")
    assert outcome.kind == "error" and "saved_model.pb" in outcome.message
