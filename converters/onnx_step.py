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
                      per_channel=job.per_channel, nodes_to_exclude=job.keep_float, progress=job.progress)
        notes = (f"QDQ, calibration {job.calib_method}",)
    else:
        shutil.copyfile(fp32, job.out_path)
        notes = ()
    inp, out = onnx_io_specs(Path(job.out_path))
    return BuiltArtifact(fmt=job.fmt, path=Path(job.out_path), input=inp, output=out, notes=notes)


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
