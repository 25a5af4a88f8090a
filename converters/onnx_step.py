"""The ONNX formats as pipeline steps: adapters from a BuildJob to the ONNX exporter and quantizer.

The fp32 ONNX model is made once per run (tf2onnx on the shared SavedModel export) and reused: it is
both the onnx-fp32 artifact and the input of onnx-int8's static quantization.
"""
from __future__ import annotations

import shutil
from pathlib import Path

from edgecnn.converters.steps import BuildJob, BuiltArtifact, ensure_savedmodel


def build(job: BuildJob) -> BuiltArtifact:
    from edgecnn.converters.onnx_export import onnx_io_specs  # noqa: PLC0415

    fp32 = ensure_fp32_onnx(job)
    if job.fmt.precision == "int8":
        from edgecnn.converters.onnx_quant import quantize_onnx  # noqa: PLC0415

        quantize_onnx(fp32, job.calib_inputs, Path(job.out_path), method=job.calib_method,
                      per_channel=job.per_channel, nodes_to_exclude=job.keep_float, progress=job.progress,
                      settings=job.onnx)
        notes = int8_notes(Path(job.out_path), job)
    else:
        shutil.copyfile(fp32, job.out_path)
        notes = ()
    inp, out = onnx_io_specs(Path(job.out_path))
    return BuiltArtifact(fmt=job.fmt, path=Path(job.out_path), input=inp, output=out, notes=notes)


def int8_notes(path: Path, job: BuildJob) -> tuple[str, ...]:
    """The manifest's notes on an int8 QDQ artifact, read back from the written graph."""
    from edgecnn.converters.onnx_graph import qdq_facts  # noqa: PLC0415

    facts = qdq_facts(path)
    notes = [f"{job.onnx.describe(job.per_channel)}; calibration {job.calib_method}",
             f"quantized types: activations {'/'.join(facts.activations) or 'none'}, "
             f"weights {'/'.join(facts.weights) or 'none'}"]
    if facts.float_nodes:
        notes.append("kept in float: " + ", ".join(facts.float_nodes))
    if facts.float_outputs:
        notes.append("float outputs (fused with a float result): " + ", ".join(facts.float_outputs))
    return tuple(notes)


def ensure_fp32_onnx(job: BuildJob) -> Path:
    cached = job.shared.get("onnx-fp32")
    if cached is not None:
        return cached
    from edgecnn.converters.onnx_export import export_onnx  # noqa: PLC0415

    target = Path(job.workdir) / "fp32.onnx"
    export_onnx(ensure_savedmodel(job), target, job.opset)
    job.shared["onnx-fp32"] = target
    return target


def embed(path: Path, text: str) -> None:
    from edgecnn.converters.onnx_export import MANIFEST_KEY, embed_metadata  # noqa: PLC0415

    embed_metadata(path, {MANIFEST_KEY: text})
