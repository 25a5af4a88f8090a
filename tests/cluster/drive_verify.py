"""Driver run inside the test cluster's namespace: the demo's artifacts verified here and on the cluster.

    python drive_verify.py ADDRESS OUT_DIR REFERENCE.npy CHUNK RESULT.json

For each artifact of the convert output OUT_DIR: its raw outputs on the validation digits run here
(edgecnn.converters.verify's local path) and as chunks on the cluster, and the Verification of each
(the reference: the Keras outputs in REFERENCE.npy); and the accuracy ``--fallback auto`` measures for a
candidate, here and on the cluster, with the artifact saved as a candidate is (a file without a suffix).
Writes what it found as JSON; the test judges it.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgecnn.converters import calibration as cal
from edgecnn.converters.fallback import _measure
from edgecnn.converters.verify import _run_artifact, cluster_run, encode_inputs, verify_artifact
from edgecnn.data import load_dataset
from edgecnn.devices.cluster import Cluster, ClusterOptions
from edgecnn.manifest import MANIFEST_NAME, Manifest, OutputKind


def main(address: str, out_dir: str, reference_path: str, chunk: str, result_path: str) -> None:
    folder = Path(out_dir)
    manifest = Manifest.read(folder / MANIFEST_NAME)
    data = cal.model_inputs(load_dataset("mnist", mnist_split="val"), manifest.preprocessing, manifest.input_shape,
                            "validation")
    reference = np.load(reference_path)
    found = {}
    work = Path(tempfile.mkdtemp(prefix="drive-verify-"))
    with Cluster(ClusterOptions(address, chunk=int(chunk))) as cluster:
        for entry in manifest.artifacts:
            path, family = folder / entry.file, "tflite" if entry.file.endswith(".tflite") else "onnx"
            encoded = encode_inputs(data, manifest.preprocessing, entry.input)
            local = _run_artifact(path, family, encoded, None)
            placements: list = []
            remote = cluster_run(cluster, placements)(path, family, encoded, None)
            common = dict(kind=manifest.output_kind, precision=entry.precision)
            v_local = verify_artifact(path, family, entry.input, entry.output, data, manifest.preprocessing,
                                      reference, **common)
            v_ray = verify_artifact(path, family, entry.input, entry.output, data, manifest.preprocessing,
                                    reference, run=cluster_run(cluster, placements), **common)
            found[entry.name] = {
                "samples": int(len(encoded)), "rows": int(len(remote)),
                "identical": bool(local.dtype == remote.dtype and local.shape == remote.shape
                                  and np.array_equal(local, remote)),
                "local": dataclasses.asdict(v_local), "ray": dataclasses.asdict(v_ray),
                "manifest": dataclasses.asdict(entry.verification),
                "chunks": [dict(p.chunks) for p in placements],
                "fallback": fallback_accuracy(path, family, data, cluster, work / f"step-{len(found)}")}
        found["_summary"] = cluster.summary().line()
        found["_nodes"] = cluster.nodes
    shutil.rmtree(work, ignore_errors=True)
    Path(result_path).write_text(json.dumps(found, indent=1))


def fallback_accuracy(path: Path, family: str, data, cluster: Cluster, candidate: Path) -> dict:
    """Top-1 accuracy of the artifact as --fallback auto measures a candidate: here, and with --ray's runner."""
    shutil.copyfile(path, candidate)  # fallback's candidates are work/step-K: no suffix for a node to go by
    placements: list = []
    local, _ = _measure(family, data.inputs, data.labels, OutputKind.PROBABILITIES)(candidate)
    remote, _ = _measure(family, data.inputs, data.labels, OutputKind.PROBABILITIES,
                         cluster_run(cluster, placements))(candidate)
    return {"local": local, "ray": remote, "chunks": [dict(p.chunks) for p in placements]}


if __name__ == "__main__":
    main(*sys.argv[1:6])
