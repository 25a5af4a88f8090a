"""--ray without a cluster: option checks, chunking, the code a node gets, one-line errors when no cluster answers,
and Ray never imported without --ray."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgecnn.devices.cluster import Cluster, ClusterOptions, Placement, _node_error
from edgecnn.devices.cluster_connect import stage_code
from edgecnn.errors import ClusterError, DataError, ModelLoadError, RuntimeMissingError, UsageError

ROOT = Path(__file__).resolve().parents[2]
NOIMPORT = ROOT / "tests" / "devices" / "noimport.py"
EDGECNN = [sys.executable, "-m", "edgecnn"]


@pytest.mark.parametrize("address", ["", "localhost", "10.0.0.5", "10.0.0.5:", ":6379", "10.0.0.5:port",
                                     "10.0.0.5:0", "10.0.0.5:70000", "ray://10.0.0.5:10001", "a b:1"])
def test_bad_addresses_are_refused(address):
    with pytest.raises(UsageError, match="--ray"):
        ClusterOptions(address).validate()


@pytest.mark.parametrize("address", ["auto", "10.0.0.5:6379", "127.0.0.1:1", "head.local:6380", "[::1]:6379"])
def test_good_addresses_pass(address):
    ClusterOptions(address).validate()


@pytest.mark.parametrize("chunk", [0, -1])
def test_chunk_must_be_positive(chunk):
    with pytest.raises(UsageError, match="--ray-chunk"):
        ClusterOptions("auto", chunk=chunk).validate()


@pytest.mark.parametrize("chunk,batch,size", [(1000, 250, 1000), (999, 250, 750), (100, 250, 250), (7, 1, 7),
                                              (1, 1, 1), (250, 250, 250), (1001, 250, 1000)])
def test_chunks_are_whole_local_batches(chunk, batch, size):
    """A chunk is a multiple of the local run's batch, so a node invokes exactly the local run's batches."""
    cluster = Cluster(ClusterOptions("auto", chunk=chunk))
    assert cluster.chunk_size(batch) == size
    for samples in (0, 1, size - 1, size, size + 1, 10_000):
        count = cluster.chunk_count(samples, batch)
        assert count * size >= samples > (count - 1) * size or samples == count == 0


def test_placement_line():
    p = Placement((("a (10.0.0.1, 11111111)", 3), ("b (10.0.0.2, 22222222)", 2)), ("b (10.0.0.2, 22222222)",))
    assert p.line() == ("Ray: 5 chunk(s) on 2 node(s) (a (10.0.0.1, 11111111): 3, b (10.0.0.2, 22222222): 2); "
                        "lost during the run (chunks they held re-ran elsewhere): b (10.0.0.2, 22222222)")


@pytest.mark.parametrize("kind,cls", [("RuntimeMissingError", RuntimeMissingError), ("ModelLoadError", ModelLoadError),
                                      ("DataError", DataError), ("ValueError", ClusterError),
                                      ("Exception", ClusterError), ("nonsense", ClusterError)])
def test_a_node_error_keeps_its_class_and_names_the_node(kind, cls):
    error = _node_error((kind, "something is missing"), "pi4 (10.0.0.7, abcdef12)", "m.onnx")
    assert type(error) is cls
    assert error.one_line().startswith("Ray node pi4 (10.0.0.7, abcdef12) cannot run m.onnx: something is missing")
    assert "\n" not in error.one_line()


def test_a_node_gets_the_contract_and_the_device_side_only(tmp_path):
    """What py_modules ships: one `edgecnn` package with edgecnn.devices inside it (in a checkout devices/ sits
    beside edgecnn/), no converters, no CLI; enough for a bare Python to import the runners from it."""
    package = stage_code(tmp_path)
    assert package == tmp_path / "edgecnn"
    names = {p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()}
    for needed in ("__init__.py", "errors.py", "manifest.py", "preprocess.py", "registry.py", "fileio.py",
                   "devices/__init__.py", "devices/runners.py", "devices/litert.py", "devices/onnx_runtime.py",
                   "devices/cluster_task.py"):
        assert needed in names
    assert not [n for n in names if n.startswith(("converters", "cli/", "bench/")) or "__pycache__" in n]
    code = ("import edgecnn.devices.runners, edgecnn.devices.cluster_task, edgecnn.manifest, sys\n"
            "print(edgecnn.devices.runners.__file__)\n"
            "print(sorted(m for m in sys.modules if m.startswith(('tensorflow', 'onnx.', 'edgecnn.converters'))))")
    # -S -I: no site-packages edgecnn, no editable finder: only the staged copy can answer `import edgecnn`
    env = {"PYTHONPATH": f"{tmp_path}:{_site_packages()}", "PATH": os.environ.get("PATH", "")}
    done = subprocess.run([sys.executable, "-S", "-c", code], env=env, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    first, second = done.stdout.splitlines()
    assert first == str(package / "devices" / "runners.py")
    assert second == "[]"


def _site_packages() -> str:
    import numpy

    return str(Path(numpy.__file__).parent.parent)  # numpy and the runtimes, not edgecnn (editable: a finder)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _one_error_line(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    return lines[0]


def test_unreachable_cluster_is_one_line_and_writes_nothing(tmp_path):
    pytest.importorskip("ray")
    port = _free_port()
    out = tmp_path / "out"
    done = subprocess.run([*EDGECNN, "convert", "--ray", f"127.0.0.1:{port}", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, env=_env_without_ray(tmp_path))
    assert done.returncode == 2
    assert _one_error_line(done) == (f"error: cannot reach the Ray cluster at 127.0.0.1:{port} (nothing listens "
                                     "there): start it (`ray start --head --port=PORT` on the head) or check "
                                     "--ray HOST:PORT")
    assert not out.exists()


def test_auto_without_a_cluster_starts_none_and_says_so(tmp_path):
    pytest.importorskip("ray")
    done = subprocess.run([*EDGECNN, "convert", "--ray", "auto", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env=_env_without_ray(tmp_path))
    assert done.returncode == 2
    assert _one_error_line(done).startswith("error: --ray auto found no running Ray cluster (RAY_ADDRESS is unset")
    assert not list((tmp_path / "raytmp").rglob("session_*"))  # no local cluster was started
    assert not (tmp_path / "out").exists()


def test_bench_ray_needs_data(tmp_path):
    done = subprocess.run([*EDGECNN, "bench", str(tmp_path), "--ray", "auto", "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--ray runs the accuracy evaluation on a cluster, which needs --data" in _one_error_line(done)


def test_ray_missing_is_one_line(tmp_path):
    code = ("from edgecnn.devices.cluster import Cluster, ClusterOptions\n"
            "from edgecnn.errors import EdgecnnError\n"
            "try:\n"
            "    Cluster(ClusterOptions('127.0.0.1:6379')).__enter__()\n"
            "except EdgecnnError as e:\n"
            "    print(type(e).__name__, '|', e.one_line())\n")
    done = subprocess.run([sys.executable, str(NOIMPORT), "ray", "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert done.stdout.strip() == ("RuntimeMissingError | --ray needs Ray, which is not installed: "
                                   "pip install 'edgecnn[cluster]' (Ray) on this machine and every node")


def test_without_ray_option_ray_is_never_imported(tmp_path, mnist_keras_path):
    """A normal convert (verification included) and bench (accuracy included) with Ray made unimportable."""
    convert = subprocess.run([sys.executable, str(NOIMPORT), "ray", "-m", "edgecnn.cli", "convert",
                              str(mnist_keras_path), "--calib", "mnist", "--val", "mnist", "--formats",
                              "tflite-int8", "--out", str(tmp_path / "out"), "--json"],
                             capture_output=True, text=True, timeout=600)
    assert convert.returncode == 0, convert.stderr[-2000:]
    assert "NOIMPORT-OK" in convert.stderr
    bench = subprocess.run([sys.executable, str(NOIMPORT), "ray", "-m", "edgecnn.cli", "bench", str(tmp_path / "out"),
                            "--data", "mnist", "--samples", "50", "--runs", "10", "--no-step", "--json",
                            "--out", str(tmp_path / "bench")], capture_output=True, text=True, timeout=600)
    assert bench.returncode == 0, bench.stderr[-2000:]
    assert "NOIMPORT-OK" in bench.stderr


def test_decode_rows_is_predict():
    """Bench's cluster path decodes the chunks' raw rows one sample at a time, exactly as predict does."""
    from edgecnn.bench.accuracy import decode_rows, predict
    from edgecnn.manifest import OutputKind, TensorSpec

    rng = np.random.default_rng(0)
    for spec, raw in ((TensorSpec("o", (1, 10), "int8", scale=1 / 256, zero_point=-128),
                       rng.integers(-128, 128, (37, 10)).astype(np.int8)),
                      (TensorSpec("o", (1, 10), "float32"), rng.normal(size=(37, 10)).astype(np.float32))):
        for kind in (OutputKind.PROBABILITIES, OutputKind.LOGITS):
            local = predict(lambda x: raw[int(x[0, 0])][None], np.arange(37)[:, None], spec, kind)
            assert np.array_equal(decode_rows(raw, spec, kind), local)


def _env_without_ray(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env["RAY_TMPDIR"] = str(tmp_path / "raytmp")  # Ray's ray_current_cluster file: none here
    (tmp_path / "raytmp").mkdir(exist_ok=True)
    return env
