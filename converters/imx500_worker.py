"""The IMX500 toolchain side, run by the toolchain's own Python (TensorFlow 2.15 / Keras 2, MCT, edge-mdt-tpc).

Not imported by edgecnn: edgecnn.converters.imx500 runs ``python -I imx500_worker.py COMMAND WORKDIR``
(``-I`` so this folder's modules never shadow the standard library). It reads ``WORKDIR/job.json``, does
one command and writes ``WORKDIR/result.json``: {"ok": true, ...} or {"ok": false, "stage", "error"}.

- ``quantize``: rebuild the model from graph.json + weights.npz (see imx500_move.py), compare its outputs
  with Keras 3's on the probe samples, quantize it with MCT post-training quantization for the IMX500 target
  platform capabilities on the calibration samples, and export the quantized Keras model (the file
  ``imxconv-tf`` converts).
- ``move``: only the rebuild and its comparison (what ``quantize`` starts with).
- ``evaluate``: run that exported quantized model on inputs.npy and save outputs.npy (host verification).
"""
import importlib.metadata
import json
import sys
import time
import traceback
from pathlib import Path

BATCH = 32
DISTRIBUTIONS = ("tensorflow", "keras", "numpy", "model-compression-toolkit", "mct-quantizers", "edge-mdt-tpc",
                 "imx500-converter", "uni-tensorflow")


class StageError(Exception):
    def __init__(self, stage, message, layer=None):
        super().__init__(message)
        self.stage, self.layer = stage, layer


def main(argv):
    command, workdir = argv[0], Path(argv[1])
    job = json.loads((workdir / "job.json").read_text(encoding="utf-8"))
    try:
        result = {"move": move, "quantize": quantize, "evaluate": evaluate}[command](workdir, job)
        result = {"ok": True, **result}
    except StageError as exc:
        result = {"ok": False, "stage": exc.stage, "error": str(exc), "layer": exc.layer}
    except Exception as exc:  # noqa: BLE001 - reported to the parent as data, with the traceback in the log
        traceback.print_exc()
        result = {"ok": False, "stage": command, "error": f"{type(exc).__name__}: {_first_line(exc)}"}
    (workdir / "result.json").write_text(json.dumps(result), encoding="utf-8")
    return 0


def versions():
    found = {}
    for dist in DISTRIBUTIONS:
        try:
            found[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def rebuild(graph, weights):
    """The tf.keras 2.15 functional model of graph.json, every layer's weights set from weights.npz."""
    import tensorflow as tf

    spec = graph["input"]
    tensors = {spec["name"]: tf.keras.Input(shape=tuple(spec["shape"]), name=spec["name"])}
    for node in graph["layers"]:
        name = node["name"]
        try:
            layer = tf.keras.layers.deserialize({"class_name": node["class"], "config": node["config"]})
            args = [tensors[i] for i in node["inputs"]]
            tensors[name] = layer(args if len(args) > 1 else args[0])
            count = len(layer.get_weights())
            layer.set_weights([weights[f"{name}/{i}"] for i in range(count)])
        except Exception as exc:  # noqa: BLE001 - any failure here means the layer did not cross
            raise StageError("move", f"tf.keras 2.15 cannot rebuild it ({type(exc).__name__}: {_first_line(exc)})",
                             layer=f"{name} ({node['class']})") from None
    return tf.keras.Model(tensors[spec["name"]], tensors[graph["output"]], name="model")


def move(workdir, job, keep=None):
    """Rebuild the model and compare it with Keras 3's outputs on probe.npy (probe_ref.npy)."""
    import numpy as np

    started = time.perf_counter()
    graph = json.loads((workdir / "graph.json").read_text(encoding="utf-8"))
    with np.load(workdir / "weights.npz") as archive:
        weights = {key: archive[key] for key in archive.files}
    model = rebuild(graph, weights)
    probe, reference = np.load(workdir / "probe.npy"), np.load(workdir / "probe_ref.npy")
    moved = model.predict(probe, batch_size=BATCH, verbose=0).reshape(len(probe), -1)
    move_diff = float(np.max(np.abs(moved.astype(np.float64) - reference))) if probe.size else 0.0
    if not np.isfinite(move_diff) or move_diff > job["move_tolerance"]:
        raise StageError("move", f"the model rebuilt in tf.keras 2.15 differs from Keras 3 by {move_diff:.3g} "
                                 f"(more than {job['move_tolerance']:g}) on {len(probe)} samples")
    if keep is not None:
        keep.append(model)
    return {"move_max_abs_diff": move_diff, "probe_samples": int(len(probe)),
            "move_s": round(time.perf_counter() - started, 3), "versions": versions()}


def quantize(workdir, job):
    import numpy as np

    kept = []
    result = move(workdir, job, kept)
    started = time.perf_counter()
    quantized = _ptq(kept[0], np.load(workdir / "calib.npy"), job["tpc_version"])
    import model_compression_toolkit as mct

    mct.exporter.keras_export_model(model=quantized, save_model_path=str(workdir / "quantized.keras"))
    return {**result, "quantize_s": round(time.perf_counter() - started, 3)}


def _ptq(model, calib, tpc_version):
    import model_compression_toolkit as mct
    from edgemdt_tpc import get_target_platform_capabilities

    tpc = get_target_platform_capabilities(tpc_version=tpc_version, device_type="imx500")

    def representative():
        for start in range(0, len(calib), BATCH):
            yield [calib[start:start + BATCH]]

    try:
        quantized, _ = mct.ptq.keras_post_training_quantization(model, representative,
                                                                 target_platform_capabilities=tpc)
    except Exception as exc:  # noqa: BLE001 - MCT raises plain Exceptions from its logger
        raise StageError("quantize", f"MCT post-training quantization failed ({_first_line(exc)})") from None
    return quantized


def evaluate(workdir, job):
    import model_compression_toolkit as mct
    import numpy as np

    model = mct.keras_load_quantized_model(str(workdir / "quantized.keras"), compile=False)
    inputs = np.load(workdir / "inputs.npy")
    outputs = model.predict(inputs, batch_size=BATCH, verbose=0)
    np.save(workdir / "outputs.npy", np.asarray(outputs, dtype=np.float32).reshape(len(inputs), -1))
    return {"samples": int(len(inputs))}


def _first_line(exc):
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
