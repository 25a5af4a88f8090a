"""--ray on a real 2-node Ray cluster (head + worker, 1 CPU each, loopback in a network namespace): the demo's
artifacts verified on the cluster agree with the local run sample for sample, bench's accuracy too, a node
without a runtime is named in one line, and a worker node whose raylet is killed mid-run loses nothing."""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from raycluster import ADDRESS, RayTestCluster

HERE = Path(__file__).parent
EDGECNN = [sys.executable, "-m", "edgecnn"]


@pytest.fixture(scope="module")
def keras_reference(tmp_path_factory, mnist_convert, mnist_keras_path) -> Path:
    """The Keras outputs on the validation digits, as the conversion computed them (TensorFlow stays here)."""
    from edgecnn.converters import calibration as cal
    from edgecnn.converters.keras_load import load_model
    from edgecnn.converters.verify import reference_outputs
    from edgecnn.data import load_dataset

    manifest = mnist_convert.manifest
    data = cal.model_inputs(load_dataset("mnist", mnist_split="val"), manifest.preprocessing, manifest.input_shape,
                            "validation")
    path = tmp_path_factory.mktemp("reference") / "keras.npy"
    np.save(path, reference_outputs(load_model(mnist_keras_path), data))
    return path


def test_demo_artifacts_on_ray_match_the_local_run(ray_cluster, mnist_convert, keras_reference, tmp_path):
    result = tmp_path / "found.json"
    done = ray_cluster.run([sys.executable, str(HERE / "drive_verify.py"), ADDRESS, str(mnist_convert.out_dir),
                            str(keras_reference), "250", str(result)], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:] + ray_cluster.logs()
    found = json.loads(result.read_text())
    assert found["_nodes"] == 2
    names = [e.name for e in mnist_convert.manifest.artifacts]
    assert len(names) == 6
    for name in names:
        art = found[name]
        assert art["samples"] == 1000 and art["rows"] == 1000
        assert art["identical"], f"{name}: raw outputs on the cluster differ from the local run"
        assert art["ray"] == art["local"] == art["manifest"], name  # every figure, exactly
        for chunks in art["chunks"]:
            assert sum(chunks.values()) == 4  # 1,000 samples in chunks of 250
        # --fallback auto's accuracy of a candidate (a suffixless file) on the cluster, exactly as here
        fallback = art["fallback"]
        assert [sum(c.values()) for c in fallback["chunks"]] == [4], name
        assert fallback["ray"] == fallback["local"], name
        assert abs(fallback["local"] - art["manifest"]["accuracy"]) < 0.01, name  # the same digits, float inputs
    # SPREAD: both nodes took chunks, and the summary says where.
    summary = found["_summary"]
    assert summary.startswith("Ray: 72 chunk(s) on 2 node(s)"), summary  # 6 x (2 verifications + 1 candidate) x 4
    per_node = [int(part.rsplit(": ", 1)[1]) for part in summary.split("(", 1)[1].rstrip(")").split("), ")]
    assert min(per_node) >= 18, summary  # not lopsided: each node took at least a quarter


def test_bench_accuracy_on_ray_matches_local(ray_cluster, mnist_convert, tmp_path):
    # The int8 artifact of each family (each on its own target): the accuracy path is the same for every artifact.
    arts = [str(mnist_convert.artifact_path(name)) for name in ("tflite-int8", "onnx-int8")]
    args = [*arts, "--data", "mnist", "--samples", "400", "--runs", "10", "--no-step", "--json", "--threads", "1",
            "--device", "cpu,onnx-cpu"]
    local = ray_cluster.run([*EDGECNN, "bench", *args, "--out", str(tmp_path / "local")], timeout=600)
    assert local.returncode == 0, local.stderr[-3000:]
    # --ray auto: the address comes from RAY_ADDRESS, as Ray's own drivers take it
    remote = ray_cluster.run([*EDGECNN, "bench", *args, "--out", str(tmp_path / "ray"), "--ray", "auto",
                              "--ray-chunk", "150"], timeout=600, RAY_ADDRESS=ADDRESS)
    assert remote.returncode == 0, remote.stderr[-3000:] + ray_cluster.logs()
    rows_local, rows_ray = json.loads(local.stdout)["rows"], json.loads(remote.stdout)["rows"]
    assert len(rows_ray) == len(rows_local) == 2
    for a, b in zip(rows_local, rows_ray):
        assert a["artifact"] == b["artifact"]
        assert b["accuracy"]["samples"] == 400
        assert a["accuracy"] == b["accuracy"], a["artifact"]  # top-1, top-5, drop, agreement, worst classes
        assert b["invoke"]["p50"] > 0  # latency still measured, here
    notes = json.loads(remote.stdout)["notes"]
    ray_notes = [n for n in notes if n.startswith("accuracy on Ray:")]
    assert ray_notes and "on 2 node(s)" in ray_notes[0] and "latency measured on this machine" in ray_notes[0]
    assert ray_notes[0].startswith("accuracy on Ray: 6 chunk(s)")  # 2 artifacts x 400 samples in chunks of 150


def test_a_node_without_onnxruntime_is_named_in_one_line(ray_cluster, mnist_convert, tmp_path):
    """A third node whose Python cannot import onnxruntime joins; the ONNX chunk it gets fails in one line
    naming it (a missing runtime is not retried elsewhere: it is the node that needs fixing)."""
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "sitecustomize.py").write_text(
        "import sys, importlib.abc\n"
        "class _Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'onnxruntime':\n"
        "            raise ImportError(f\"No module named '{name}'\", name=name)\n"
        "sys.meta_path.insert(0, _Block())\n")
    node = ray_cluster.add_node(resources={"no_onnxruntime": 1}, PYTHONPATH=str(blocker))
    try:
        nodes = ray_cluster.wait_nodes(3)
        bare = next(n["id"] for n in nodes if "no_onnxruntime" in n["resources"])
        onnx = mnist_convert.artifact_path("onnx-fp32")
        # The new node's first worker takes seconds to start, by when short chunks are all done elsewhere: warm it
        # (a task that needs its custom resource), then 40 chunks SPREAD over the 3 nodes.
        script = ("import sys, numpy as np, ray\n"
                  "from edgecnn.devices.cluster import Cluster, ClusterOptions\n"
                  "from edgecnn.errors import EdgecnnError\n"
                  "x = np.zeros((4000, 28, 28, 1), np.float32)\n"
                  "try:\n"
                  "    with Cluster(ClusterOptions(sys.argv[1], chunk=100)) as c:\n"
                  "        ray.get(ray.remote(lambda: 0).options(resources={'no_onnxruntime': 1}).remote())\n"
                  "        print(c.run(sys.argv[2], 'onnx-cpu', x, 100)[1].line())\n"
                  "    print('NO ERROR')\n"
                  "except EdgecnnError as e:\n"
                  "    print(type(e).__name__ + ' | ' + e.one_line())\n")
        done = ray_cluster.run([sys.executable, "-c", script, ADDRESS, str(onnx)], timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        line = done.stdout.strip().splitlines()[-1]
        assert line.startswith("RuntimeMissingError"), done.stdout
        assert line.startswith("RuntimeMissingError | Ray node "), line
        assert f", {bare[:8]})" in line and "ONNX Runtime is not installed" in line, line
        assert "onnxruntime on every node" in line
    finally:
        ray_cluster.stop_node(node)
        ray_cluster.nodes.remove(node)


def test_wrong_token_is_one_line(ray_cluster, tmp_path):
    done = ray_cluster.run([*EDGECNN, "convert", "--ray", ADDRESS, "--out", str(tmp_path / "out")], timeout=120,
                           RAY_AUTH_TOKEN="0" * 64)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1] == (f"error: the Ray cluster at {ADDRESS} refused the token set here: set RAY_AUTH_TOKEN (or "
                         "RAY_AUTH_TOKEN_PATH) to the cluster's token: `ray get-auth-token` on the head prints it")
    assert not [line for line in lines if "Traceback" in line]
    assert not (tmp_path / "out").exists()


def test_killing_a_worker_raylet_mid_run_loses_nothing(ray_cluster, mnist_convert, mnist_keras_path, tmp_path):
    """`edgecnn convert --ray` while a worker node's raylet is killed (SIGKILL, by PID) as it runs a chunk: its
    chunks re-run on the other nodes and the conversion's figures are exactly the local run's, every artifact
    complete. The node killed is one this test adds, so the module's cluster stays whole for the other tests."""
    worker = ray_cluster.add_node()
    try:
        ray_cluster.wait_nodes(3)
        # TFLite only: no tf2onnx export (the slowest step), and a static batch of 1 makes chunks long enough to hit.
        formats = "tflite-fp32,tflite-int8"
        convert = ray_cluster.popen([*EDGECNN, "convert", str(mnist_keras_path), "--calib", "mnist", "--val", "mnist",
                                    "--formats", formats, "--out", str(tmp_path / "out"), "--ray", ADDRESS,
                                    "--ray-chunk", "250", "--json"])
        raylet = RayTestCluster.raylet(worker)
        deadline = time.monotonic() + 600
        while not RayTestCluster.busy_workers(worker) and convert.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert convert.poll() is None, "the conversion ended before a chunk ran on the worker: " + \
            convert.stderr.read()[-3000:]
        raylet.kill()  # mid-chunk
        stdout, stderr = convert.communicate(timeout=600)
        assert convert.returncode == 0, stderr[-3000:] + ray_cluster.logs()
        assert stdout.strip().startswith("{"), stdout[-2000:] + stderr[-3000:]
        result = json.loads(stdout)
        summary = result["ray"]  # every chunk counted once where it finished, the dead node named
        assert summary.startswith("Ray: 8 chunk(s) on "), summary  # 2 artifacts x 1,000 samples / 250
        lost = "lost during the run (chunks they held re-ran elsewhere): " in summary
        # Ray declares a node dead after its health checks (seconds). A run that ends first cannot name it, but
        # the killed node is then credited with no chunk: the one it held re-ran on the two nodes that stayed.
        assert lost or " on 2 node(s) " in summary, summary
        from edgecnn.manifest import Manifest

        got = Manifest.read(tmp_path / "out" / "manifest.json")
        assert [e.name for e in got.artifacts] == formats.split(",")
        for entry in got.artifacts:
            assert entry.verification == mnist_convert.manifest.artifact(entry.name).verification, entry.name
            assert entry.verification.samples == 1000
            assert any(n.startswith("verified on Ray: 4 chunk(s)") for n in entry.notes), entry.notes
    finally:
        ray_cluster.stop_node(worker)
        ray_cluster.nodes.remove(worker)
