"""The start path of a runner: the file read and hashed once, the probe child started without the working
directory on its path, and a probe pass remembered on disk by content and runtime (devices/probecache.py).

Fault injection (FAULT_ENV=segv makes a probe child die before it loads anything) proves whether a child ran.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgecnn.devices import modelcheck, probecache
from edgecnn.devices.base import RunnerOptions
from edgecnn.devices.modelcheck import ModelFormat, check_file, child_command, probe_in_child
from edgecnn.devices.runners import open_runner
from edgecnn.errors import ModelLoadError
from edgecnn.fileio import sha256_of


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    """An empty probe cache and no in-process memory of earlier passes."""
    folder = tmp_path / "probed"
    monkeypatch.setenv(probecache.PROBE_CACHE_ENV, str(folder))
    monkeypatch.setattr(modelcheck, "_probed", set())
    return folder


def _copy(source: Path, folder: Path, name: str) -> Path:
    path = folder / name
    path.write_bytes(source.read_bytes())
    return path


@pytest.mark.parametrize("kind", ["int8", "onnx"])
def test_check_file_reads_once_and_returns_the_checked_bytes(device_models, fresh_cache, kind):
    source = getattr(device_models, kind)
    checked = check_file(source)
    assert checked.data == source.read_bytes()
    assert checked.sha256 == sha256_of(source) == hashlib.sha256(checked.data).hexdigest()
    assert checked.probe == "child"
    again = check_file(source)
    assert again.probe == "known" and again.sha256 == checked.sha256


def test_a_pass_is_remembered_on_disk_for_these_bytes_and_this_runtime(device_models, fresh_cache, tmp_path,
                                                                     monkeypatch):
    path = _copy(device_models.int8, tmp_path, "m.tflite")
    assert check_file(path).probe == "child"
    records = list(fresh_cache.glob("*.json"))
    assert len(records) == 1 and records[0].name.startswith(sha256_of(path))
    # A new process knows nothing in memory: the record alone must spare it the child (which would now crash).
    monkeypatch.setattr(modelcheck, "_probed", set())
    monkeypatch.setenv(modelcheck.FAULT_ENV, "segv")
    assert check_file(path).probe == "known"
    # The same bytes under another name and folder are the same bytes.
    (tmp_path / "elsewhere").mkdir()
    assert check_file(_copy(path, tmp_path / "elsewhere", "n.tflite")).probe == "known"


def test_one_changed_byte_is_probed_again(device_models, fresh_cache, tmp_path, monkeypatch):
    path = _copy(device_models.int8, tmp_path, "m.tflite")
    check_file(path)
    path.write_bytes(_flip_a_weight(path.read_bytes()))  # still a well-formed model: only the probe can tell
    monkeypatch.setattr(modelcheck, "_probed", set())
    monkeypatch.setenv(modelcheck.FAULT_ENV, "segv")
    with pytest.raises(ModelLoadError, match="crashed the tflite loader"):
        check_file(path)


def _flip_a_weight(data: bytes) -> bytes:
    """One bit of the largest constant buffer (a weight) flipped; the flatbuffer's structure is untouched."""
    from edgecnn.devices.flatbuf import _Reader, walk_tflite

    reader = _Reader(data)
    model = reader.table(reader.scalar("<I", 0, "root"), "model")
    start, _ = max((b.vector(0, 1) for b in model.tables(4, "buffer")), key=lambda v: v[1])
    out = bytearray(data)
    out[start] ^= 0x01
    walk_tflite(bytes(out))
    return bytes(out)


def test_another_runtime_probes_again(device_models, fresh_cache, tmp_path, monkeypatch):
    path = _copy(device_models.int8, tmp_path, "m.tflite")
    check_file(path)
    monkeypatch.setattr(modelcheck, "_probed", set())
    monkeypatch.setattr(probecache, "runtime_tag", lambda fmt: "an-upgraded-litert")
    monkeypatch.setenv(modelcheck.FAULT_ENV, "segv")
    with pytest.raises(ModelLoadError, match="crashed the tflite loader"):
        check_file(path)


def test_cache_off_probes_every_time(device_models, tmp_path, monkeypatch):
    monkeypatch.setenv(probecache.PROBE_CACHE_ENV, "off")
    monkeypatch.setattr(modelcheck, "_probed", set())
    path = _copy(device_models.int8, tmp_path, "m.tflite")
    assert check_file(path).probe == "child"
    monkeypatch.setattr(modelcheck, "_probed", set())
    monkeypatch.setenv(modelcheck.FAULT_ENV, "segv")
    with pytest.raises(ModelLoadError, match="crashed"):
        check_file(path)


def test_failures_are_not_remembered(device_models, fresh_cache, tmp_path, monkeypatch):
    path = _copy(device_models.int8, tmp_path, "m.tflite")
    monkeypatch.setenv(modelcheck.FAULT_ENV, "segv")
    with pytest.raises(ModelLoadError):
        check_file(path)
    assert not list(fresh_cache.glob("*.json"))
    monkeypatch.delenv(modelcheck.FAULT_ENV)
    assert check_file(path).probe == "child"


def test_an_unwritable_cache_only_costs_a_probe(device_models, tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv(probecache.PROBE_CACHE_ENV, str(blocker / "probed"))
    monkeypatch.setattr(modelcheck, "_probed", set())
    path = _copy(device_models.int8, tmp_path, "m.tflite")
    assert check_file(path).probe == "child"


def test_the_child_refuses_bytes_other_than_those_the_parent_hashed(device_models, fresh_cache, tmp_path):
    path = _copy(device_models.int8, tmp_path, "m.tflite")
    with pytest.raises(ModelLoadError, match="changed while it was being checked"):
        probe_in_child(path, ModelFormat.TFLITE, digest="0" * 64)


@pytest.mark.parametrize("version", [(3, 11), (3, 9)], ids=["-P", "bootstrap"])
def test_the_child_ignores_an_edgecnn_folder_in_the_working_directory(device_models, tmp_path, version):
    """Started from a checkout, `python -m` would import the checkout's edgecnn/ (which has no devices/)."""
    shadow = tmp_path / "edgecnn"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("raise ImportError('the working directory was on the path')\n")
    digest = sha256_of(device_models.int8)
    command = child_command(ModelFormat.TFLITE, device_models.int8, digest, version)
    proc = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": ""})
    assert proc.returncode == 0, proc.stderr[-1500:]
    assert '"ok": true' in proc.stdout, proc.stdout + proc.stderr[-1500:]
    # The control: a plain `python -m` from that folder does import the shadow, so the test can fail.
    plain = [sys.executable, "-m", "edgecnn.devices.modelcheck", "tflite", str(device_models.int8), digest]
    control = subprocess.run(plain, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert control.returncode != 0 and "working directory was on the path" in control.stderr


def test_the_load_time_warm_up_runs_only_for_bytes_no_probe_has_invoked(device_models, fresh_cache, tmp_path,
                                                                          monkeypatch):
    from edgecnn.devices.litert import LiteRTRunner

    calls = []
    original = LiteRTRunner._warm_up
    monkeypatch.setattr(LiteRTRunner, "_warm_up", lambda self, detail: calls.append(1) or original(self, detail))
    path = _copy(device_models.int8, tmp_path, "m.tflite")
    with open_runner(path, "cpu", RunnerOptions(threads=1, probe=False)):
        pass
    assert len(calls) == 1  # never probed: warmed up
    with open_runner(path, "cpu", RunnerOptions(threads=1)) as runner:
        assert runner.sha256 == sha256_of(path)
        view = runner.input_view()
        assert view is not None and view.shape == (1, 28, 28, 1)
        del view
        assert runner.invoke_in_place().shape == (1, 10)
    assert len(calls) == 1  # the probe's child invoked these bytes: no second warm-up
    with open_runner(path, "cpu", RunnerOptions(threads=1, warm_up=True)):
        pass
    assert len(calls) == 2  # asked for (bench does, to keep load and first inference apart)
