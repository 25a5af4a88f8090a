"""Hostile and broken model files on the load path: each a one-line ModelLoadError, none crashes this process."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgecnn.devices import modelcheck
from edgecnn.devices.base import RunnerOptions
from edgecnn.devices.flatbuf import FlatbufferError, ModelInfo, walk_tflite
from edgecnn.devices.modelcheck import ModelFormat, check_model, probe_in_child, sniff
from edgecnn.devices.runners import open_runner
from edgecnn.errors import ModelLoadError


@pytest.fixture(scope="module")
def tflite_bytes(device_models) -> bytes:
    return device_models.int8.read_bytes()


@pytest.fixture(scope="module")
def onnx_bytes(device_models) -> bytes:
    return device_models.onnx.read_bytes()


def _write(folder: Path, name: str, data: bytes) -> Path:
    path = folder / name
    path.write_bytes(data)
    return path


def test_real_models_pass_and_report_their_format(device_models):
    assert check_model(device_models.int8) == ModelFormat.TFLITE
    assert check_model(device_models.onnx) == ModelFormat.ONNX
    info = walk_tflite(device_models.int8.read_bytes())
    assert info.version == 3 and info.subgraphs == 1 and info.operators >= 5 and not info.custom_codes
    assert info.io_types == [9, 9]  # int8 in, int8 out


def test_sniffing_tells_formats_apart(device_models, tflite_bytes, onnx_bytes):
    assert sniff(tflite_bytes[:64]) == ModelFormat.TFLITE
    assert sniff(onnx_bytes[:64]) == ModelFormat.ONNX
    assert sniff(device_models.keras.read_bytes()[:64]) == ModelFormat.KERAS
    assert sniff(b"\x89HDF\r\n\x1a\n" + bytes(56)) == ModelFormat.H5
    assert sniff(b"hello world, not a model at all") is None


def test_empty_file(tmp_path):
    with pytest.raises(ModelLoadError, match="is empty"):
        open_runner(_write(tmp_path, "m.tflite", b""))


@pytest.mark.parametrize("name,source,message", [
    ("m.tflite", "onnx", r"m.tflite is named .tflite but holds a onnx model: rename it to .onnx"),
    ("m.onnx", "tflite", r"m.onnx is named .onnx but holds a tflite model: rename it to .tflite"),
    ("m.tflite", "keras", r"holds a keras model: convert it first"),
])
def test_wrong_extension(tmp_path, device_models, name, source, message):
    data = {"onnx": device_models.onnx, "tflite": device_models.int8, "keras": device_models.keras}[source].read_bytes()
    with pytest.raises(ModelLoadError, match=message):
        check_model(_write(tmp_path, name, data))


def test_random_bytes(tmp_path):
    data = bytes(range(256)) * 64
    with pytest.raises(ModelLoadError, match="is not a TFLite model"):
        open_runner(_write(tmp_path, "r.tflite", data))
    with pytest.raises(ModelLoadError, match="cannot tell what kind of model"):
        check_model(_write(tmp_path, "r.bin", data))


@pytest.mark.parametrize("keep", [8, 100, 4096, 300_000, -1])
def test_truncated_tflite(tmp_path, tflite_bytes, keep):
    with pytest.raises(ModelLoadError, match="corrupt TFLite model .*outside the|corrupt TFLite"):
        open_runner(_write(tmp_path, "t.tflite", tflite_bytes[:keep]))


@pytest.mark.parametrize("keep", [10, 2000, -100])
def test_truncated_onnx_is_refused_by_the_probe(tmp_path, onnx_bytes, keep):
    with pytest.raises(ModelLoadError, match="t.onnx cannot be loaded"):
        open_runner(_write(tmp_path, "t.onnx", onnx_bytes[:keep]), "onnx-cpu")


def test_oversized_file_is_refused_before_reading(tmp_path, monkeypatch):
    path = tmp_path / "big.tflite"
    with open(path, "wb") as handle:
        handle.truncate(modelcheck.MAX_MODEL_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(ModelLoadError, match="over the 2 GiB limit"):
        check_model(path)


def _mutate(data: bytes, edits: list[tuple[int, int]], structural: int = 9000) -> bytes:
    """Overwrite bytes in the flatbuffer's tables (at the end of a converter-written file) and header."""
    out = bytearray(data)
    for where, value in edits:
        pos = where % 64 if where < 0 else len(out) - 1 - (where % structural)
        out[pos] = value
    return bytes(out)


edits = st.lists(st.tuples(st.integers(-64, 20_000), st.integers(0, 255)), min_size=1, max_size=6)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=edits, cut=st.one_of(st.none(), st.integers(0, 700_000)))
def test_walk_never_fails_with_anything_but_a_clear_error(tflite_bytes, edits, cut):
    data = _mutate(tflite_bytes, edits)[:cut]
    try:
        info = walk_tflite(data)
    except FlatbufferError as exc:
        assert "\n" not in str(exc) and str(exc)
    else:
        assert isinstance(info, ModelInfo)


@pytest.mark.parametrize("seed", range(6))
def test_mutated_models_load_or_fail_cleanly_in_a_child(tmp_path, tflite_bytes, seed):
    """Mutations the walk lets through go to the probe: the parent either gets a runner or a one-line error."""
    import random

    rng = random.Random(seed)
    for attempt in range(50):
        data = _mutate(tflite_bytes, [(rng.randrange(20_000), rng.randrange(256)) for _ in range(3)])
        try:
            walk_tflite(data)
            break
        except FlatbufferError:
            continue
    path = _write(tmp_path, f"mut{seed}.tflite", data)
    try:
        with open_runner(path, "cpu") as runner:
            assert runner.output.shape[-1] > 0
    except ModelLoadError as exc:
        assert "\n" not in str(exc)


def test_a_loader_that_crashes_takes_only_the_child_down(tmp_path, device_models, monkeypatch):
    """Fault injection: the probe child really dies of SIGSEGV before loading; this process reports it."""
    path = _write(tmp_path, "crash.tflite", device_models.int8.read_bytes())
    monkeypatch.setattr(modelcheck, "_probed", set())
    monkeypatch.setenv(modelcheck.FAULT_ENV, "segv")
    with pytest.raises(ModelLoadError, match=r"crash.tflite crashed the tflite loader \(SIGSEGV\) in a probe process"):
        probe_in_child(path, ModelFormat.TFLITE)


def test_a_loader_that_hangs_is_stopped(tmp_path, device_models, monkeypatch):
    path = _write(tmp_path, "hang.onnx", device_models.onnx.read_bytes())
    monkeypatch.setenv(modelcheck.FAULT_ENV, "hang")
    monkeypatch.setattr(modelcheck, "_probed", set())
    with pytest.raises(ModelLoadError, match="did not finish within 2 s"):
        probe_in_child(path, ModelFormat.ONNX, timeout_s=2)


def test_probe_runs_once_per_file_content(tmp_path, device_models, monkeypatch):
    monkeypatch.setattr(modelcheck, "_probed", set())
    path = _write(tmp_path, "once.tflite", device_models.int8.read_bytes())
    check_model(path)
    assert len(modelcheck._probed) == 1
    monkeypatch.setenv(modelcheck.FAULT_ENV, "segv")  # a second probe would now fail: it must not run
    assert check_model(path) == ModelFormat.TFLITE


@pytest.mark.parametrize("keep", [10, 2000, -100])
def test_truncated_onnx_without_probe_is_refused_by_onnx_checker(tmp_path, onnx_bytes, keep):
    with pytest.raises(ModelLoadError, match="t.onnx is not a valid ONNX model"):
        check_model(_write(tmp_path, "t.onnx", onnx_bytes[:keep]), probe=False)


def test_fifo_or_device_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "pipe.tflite"
    os.mkfifo(fifo)
    with pytest.raises(ModelLoadError, match="is not a regular file"):
        open_runner(fifo)
    link = tmp_path / "zero.tflite"
    link.symlink_to("/dev/zero")
    with pytest.raises(ModelLoadError, match="is not a regular file"):
        check_model(link)


def _tensor_tables(data: bytes):
    """The Tensor tables of subgraph 0 (via the bounds-checked reader), for targeted corruption."""
    from edgecnn.devices.flatbuf import _Reader

    reader = _Reader(data)
    model = reader.table(reader.scalar("<I", 0, "root"), "model")
    return model.tables(2, "subgraph")[0].tables(0, "tensor")


def _corrupt_zero_point(data: bytes) -> bytes:
    """Give a per-channel int8 weight tensor an impossible zero point (what bit rot in the quantization does)."""
    out = bytearray(data)
    for tensor in _tensor_tables(data):
        quant = tensor.table(4, "quantization")
        if tensor.scalar(1, "<b") == 9 and quant is not None:
            start, length = quant.vector(3, 8)
            if length > 1:
                out[start:start + 8] = (65280).to_bytes(8, "little", signed=True)
                return bytes(out)
    raise AssertionError("no per-channel int8 tensor found")


def _corrupt_input_name(data: bytes, input_index: int) -> bytes:
    out = bytearray(data)
    start, length = _tensor_tables(data)[input_index].vector(3, 1)
    out[start] = 0xFF  # not UTF-8
    return bytes(out)


@pytest.mark.parametrize("probe", [False, True])
def test_damaged_quantization_that_only_fails_at_first_invoke(tmp_path, tflite_bytes, probe):
    """Found by fuzzing: XNNPACK refuses the tensor only when it prepares, at the first invoke."""
    path = _write(tmp_path, f"zp{probe}.tflite", _corrupt_zero_point(tflite_bytes))
    with pytest.raises(ModelLoadError, match="zero-point|cannot"):
        open_runner(path, "cpu", RunnerOptions(probe=probe))


def test_tensor_name_that_is_not_utf8(tmp_path, tflite_bytes):
    """Found by fuzzing: LiteRT raises UnicodeDecodeError from get_input_details."""
    path = _write(tmp_path, "name.tflite", _corrupt_input_name(tflite_bytes, _input_tensor_index(tflite_bytes)))
    with pytest.raises(ModelLoadError, match="utf-8"):
        open_runner(path, "cpu", RunnerOptions(probe=False))


def _input_tensor_index(data: bytes) -> int:
    from edgecnn.devices.flatbuf import _Reader

    reader = _Reader(data)
    model = reader.table(reader.scalar("<I", 0, "root"), "model")
    return model.tables(2, "subgraph")[0].ints(1)[0]


def test_prefetched_bytes_are_the_ones_checked_and_loaded(tmp_path, tflite_bytes, monkeypatch):
    # `edgecnn run` reads and hashes the model in a thread while it imports the runtime; check_file then takes
    # those bytes (and their SHA-256) instead of reading the file itself, and the runner loads exactly them.
    import hashlib

    path = _write(tmp_path, "m.tflite", tflite_bytes)
    modelcheck.prefetch(path)
    assert str(path) in modelcheck._prefetched
    reads = []
    monkeypatch.setattr(modelcheck, "_read", lambda p: reads.append(p) or Path(p).read_bytes())
    checked = modelcheck.check_file(path, probe=False)
    assert reads == [] and str(path) not in modelcheck._prefetched  # taken, not read again; used once
    assert checked.data == tflite_bytes and checked.sha256 == hashlib.sha256(tflite_bytes).hexdigest()
    checked = modelcheck.check_file(path, probe=False)  # no prefetch pending: read as before
    assert reads == [path] and checked.sha256 == hashlib.sha256(tflite_bytes).hexdigest()
    with modelcheck.prefetched(path):  # a run that fails before loading the model: its bytes are not kept
        assert str(path) in modelcheck._prefetched
    assert str(path) not in modelcheck._prefetched


def test_prefetch_leaves_odd_paths_to_the_checks_and_never_blocks(tmp_path, device_models):
    fifo = tmp_path / "pipe.tflite"
    os.mkfifo(fifo)
    missing, folder, labels = tmp_path / "none.tflite", tmp_path / "dir.onnx", _write(tmp_path, "labels.txt", b"a\n")
    folder.mkdir()
    for path in (fifo, missing, folder, labels):
        modelcheck.prefetch(path)  # returns at once; nothing read from the FIFO
    assert str(labels) not in modelcheck._prefetched  # not a model file: nothing to prefetch
    with pytest.raises(ModelLoadError, match="is not a regular file"):
        modelcheck.check_file(fifo)
    with pytest.raises(ModelLoadError):
        modelcheck.check_file(missing)
    with pytest.raises(ModelLoadError, match="folder"):
        modelcheck.check_file(folder)
    modelcheck._prefetched.clear()
