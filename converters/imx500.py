"""The ``imx500`` format: a Keras model for the Raspberry Pi AI Camera (Sony IMX500), verified on the host.

Sony's toolchain runs only on TensorFlow 2.15 / Keras 2, so it lives in its own Python environment
(``toolchain_python``) and is called as a subprocess: the model crosses as a layer graph + weights
(imx500_move.py), imx500_worker.py quantizes it with MCT for the IMX500 target platform capabilities on
the same calibration samples as every other format, and ``imxconv-tf`` converts the quantized model.

The artifact is one zip (``<model>_imx500.zip``) holding what each side needs:
  packerOut.zip          the converter's output; on the Pi, ``imx500-package`` turns it into network.rpk
  dnnParams.xml          the network's input/output tensors as the sensor sees them
  memory_report.json     the converter's memory report (does the network fit the sensor's 8 MB?)
  quantized.keras        MCT's quantized model, the one converted: verification runs it on the host
  manifest.json          the manifest, as every artifact embeds it
Verification (``run_host``) runs quantized.keras in the toolchain environment on the encoded samples and
returns its outputs, which converters/verify.py compares with Keras like any artifact's.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgecnn.errors import ConversionError, RuntimeMissingError
from edgecnn.manifest import TensorSpec

from edgecnn.converters.steps import BuildJob, BuiltArtifact

PYTHON_ENV = "EDGECNN_IMX500_PYTHON"
REQUIREMENTS = Path(__file__).with_name("imx500_requirements.txt")
WORKER = Path(__file__).with_name("imx500_worker.py")
TPC_VERSION = "4.0"              # edge-mdt-tpc's IMX500 target platform capabilities
MOVE_TOLERANCE = 1e-4            # largest output difference allowed between Keras 3 and the rebuilt tf.keras model
PROBE_SAMPLES = 64
SENSOR_MEMORY = "8 MB"           # the IMX500's on-chip memory for network and runtime (Sony's figure)
WORKER_TIMEOUT_S = 1800
MEMBERS = ("packerOut.zip", "dnnParams.xml", "memory_report.json", "quantized.keras")
MANIFEST_MEMBER = "manifest.json"


# -- the toolchain environment ------------------------------------------------------------------------
def default_toolchain_dir() -> Path:
    """Where ``bash dev.sh imx500-env`` builds the toolchain: $EDGECNN_CACHE/imx500-venv (default ~/.cache/edgecnn)."""
    root = os.environ.get("EDGECNN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgecnn")
    return Path(root) / "imx500-venv"


def setup_commands(venv: Path) -> str:
    """The shell commands that create the toolchain environment at ``venv`` (Python 3.9-3.11, ~2.3 GB)."""
    return (f"python3.11 -m venv {venv} && {venv}/bin/python -m pip install -r {REQUIREMENTS} "
            f"(or, in a checkout: bash dev.sh imx500-env)")


def toolchain_python() -> Path:
    """The toolchain's Python: $EDGECNN_IMX500_PYTHON, else the default environment's.

    Raises RuntimeMissingError (one line with the commands that create it) when it is not there; nothing is
    installed here.
    """
    given = os.environ.get(PYTHON_ENV)
    python = Path(given) if given else default_toolchain_dir() / "bin" / "python"
    where = f"{PYTHON_ENV}={given}" if given else f"the default location {python.parent.parent}"
    venv = python.parent.parent if given else default_toolchain_dir()
    if not python.is_file() or not os.access(python, os.X_OK):
        raise RuntimeMissingError(f"the IMX500 toolchain (TensorFlow 2.15 + MCT + imx500-converter) is not "
                                  f"installed at {where}", f"create it: {setup_commands(venv)}")
    if not converter_path(python).is_file():
        raise RuntimeMissingError(f"the IMX500 toolchain at {where} has no imxconv-tf",
                                  f"install it: {venv}/bin/python -m pip install -r {REQUIREMENTS}")
    return python


def check_toolchain() -> tuple[Path, str]:
    """The toolchain's Python and the Java version line; RuntimeMissingError (one line) when either is missing.

    The format's preflight (converters/formats.py): run before anything is built or written.
    """
    return toolchain_python(), check_java()


def converter_path(python: Path) -> Path:
    return Path(python).parent / "imxconv-tf"


def check_java() -> str:
    """imxconv-tf runs a Java program: the version line of a Java >= 17, else RuntimeMissingError."""
    hint = "install Java 17: sudo apt-get install openjdk-17-jre-headless"
    java = shutil.which("java")
    if java is None:
        raise RuntimeMissingError("imxconv-tf needs Java 17 or newer and no java is on PATH", hint)
    proc = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    text = (proc.stderr or proc.stdout or "").strip()
    if java_major(text) < 17:
        found = text.splitlines()[0] if text else "of an unknown version"
        raise RuntimeMissingError(f"imxconv-tf needs Java 17 or newer; {java} is {found}", hint)
    return text.splitlines()[0]


def java_major(version_text: str) -> int:
    """The major version in ``java -version`` output ('openjdk version "17.0.15"' -> 17, '"1.8.0_292"' -> 8); 0 if none."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_text)
    if match is None:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


# -- building -----------------------------------------------------------------------------------------
def build(job: BuildJob) -> BuiltArtifact:
    """``job.model`` -> ``job.out_path`` (the bundle zip); ConversionError / RuntimeMissingError as one line."""
    from edgecnn.converters.imx500_move import describe  # noqa: PLC0415

    if job.model.keras_model is None:
        raise ConversionError(f"the IMX500 toolchain needs a Keras model (.keras or .h5), not a {job.model.kind}",
                              "convert the .keras file the SavedModel was exported from")
    if job.calib_inputs is None or len(job.calib_inputs) == 0:
        raise ConversionError("the IMX500 format quantizes the model and needs calibration data", "pass --calib DATA")
    check_image_input(tuple(job.model.input_shape))
    moved = describe(job.model.keras_model, tuple(job.model.input_shape))  # refuse layers before anything runs
    python, java = check_toolchain()
    work = Path(tempfile.mkdtemp(prefix="imx500-", dir=job.workdir))
    try:
        calib = np.ascontiguousarray(job.calib_inputs, dtype=np.float32)
        write_move(work, moved, job.model.predict, calib)
        np.save(work / "calib.npy", calib)
        result = run_worker(python, "quantize", work, {"tpc_version": TPC_VERSION, "move_tolerance": MOVE_TOLERANCE})
        if job.progress is not None:
            job.progress(len(calib), len(calib))  # calibration ran in the toolchain's process, all at once
        result["convert_s"] = run_converter(python, work / "quantized.keras", work / "convert")
        inputs, outputs, tensors, memory = package(work, job.out_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    notes = _notes(result, tensors, memory, moved.dropped, java, job.fmt.file_name(job.model.name))
    return BuiltArtifact(fmt=job.fmt, path=job.out_path, input=inputs, output=outputs, notes=notes)


def check_image_input(shape: tuple[int, ...]) -> None:
    """The sensor feeds the network an image (height, width, channels): refuse other inputs (ConversionError)."""
    if len(shape) != 3 or shape[-1] not in (1, 3):
        raise ConversionError(f"the IMX500 feeds the network an image (height, width, 1 or 3 channels) but the model "
                              f"takes {tuple(shape)}", "give the model an image input, e.g. Input((28, 28, 1)) "
                              "followed by Reshape/Flatten, or leave imx500 out of --formats")


def package(work: Path, bundle: Path) -> tuple[TensorSpec, TensorSpec, dict[str, Any], dict[str, Any]]:
    """The converter's outputs in ``work/convert`` -> the bundle zip; (input spec, output spec, tensors, memory fit).

    A network that does not fit the sensor's memory is refused (ConversionError): it could not run there.
    """
    out = work / "convert"
    params = out / "dnnParams.xml"
    reports = sorted(out.glob("*MemoryReport.json"))
    if not params.is_file() or not reports:
        raise ConversionError("imxconv-tf wrote no dnnParams.xml or memory report", "check the toolchain versions")
    inputs, outputs, tensors = read_dnn_params(params.read_text(encoding="utf-8"))
    report = json.loads(reports[0].read_text(encoding="utf-8"))
    memory = memory_fit(report)
    if not memory["fits"]:
        raise ConversionError(f"the network needs {memory['usage']} but the sensor has "
                              f"{memory['available']} (imxconv-tf memory report)",
                              "make the model smaller (fewer filters, a smaller Dense layer, a smaller input)")
    (out / "memory_report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    shutil.copyfile(work / "quantized.keras", out / "quantized.keras")
    with zipfile.ZipFile(bundle, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for member in MEMBERS:
            archive.write(out / member, member)
    return inputs, outputs, tensors, memory


def write_move(work: Path, moved: Any, predict: Callable[[np.ndarray], np.ndarray], samples: np.ndarray) -> None:
    """The moved model and the probe it is checked on: Keras 3's outputs (``predict``) on the first samples."""
    moved.write(work)
    probe = np.ascontiguousarray(samples[:PROBE_SAMPLES], dtype=np.float32)
    np.save(work / "probe.npy", probe)
    np.save(work / "probe_ref.npy", np.asarray(predict(probe)).reshape(len(probe), -1).astype(np.float64))


def run_worker(python: Path, command: str, work: Path, job: dict[str, Any]) -> dict[str, Any]:
    """Run imx500_worker.py COMMAND in the toolchain's Python; its result dict, or ConversionError (one line)."""
    (work / "job.json").write_text(json.dumps(job), encoding="utf-8")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
    try:
        proc = subprocess.run([str(python), "-I", str(WORKER), command, str(work)], capture_output=True,
                              text=True, timeout=WORKER_TIMEOUT_S, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ConversionError(f"the IMX500 toolchain's {command} step did not finish within {WORKER_TIMEOUT_S} s") from None
    log = _keep_log(work, f"worker {command}", proc.stdout + proc.stderr)
    result_path = work / "result.json"
    if not result_path.is_file():
        tail = [line for line in (proc.stderr or proc.stdout).splitlines() if line.strip()][-1:] or ["no output"]
        raise ConversionError(f"the IMX500 toolchain failed in {command} (exit {proc.returncode}: {tail[0][:200]})",
                              f"its output is in {_failure_log(log)}; recreate the toolchain: "
                              f"{setup_commands(python.parent.parent)}")
    result = json.loads(result_path.read_text(encoding="utf-8"))
    result_path.unlink()
    if result.get("ok"):
        return result
    if result.get("stage") == "move" and result.get("layer"):
        name, _, cls = str(result["layer"]).partition(" (")
        raise ConversionError(f"layer '{name}' ({cls.rstrip(')')}) cannot be moved to the IMX500 toolchain: "
                              f"{result.get('error')}", "replace it with built-in layers or leave imx500 out of --formats")
    raise ConversionError(f"the IMX500 toolchain's {result.get('stage', command)} step failed: {result.get('error')}",
                          f"the toolchain's output is in {_failure_log(log)}")


def run_converter(python: Path, model: Path, out_dir: Path) -> float:
    """``imxconv-tf -i MODEL -o OUT_DIR``; seconds taken, or ConversionError with the converter's own reason."""
    import time  # noqa: PLC0415

    started = time.perf_counter()
    try:
        proc = subprocess.run([str(converter_path(python)), "-i", str(model), "-o", str(out_dir), "--overwrite-output"],
                              capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, check=False,
                              env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    except subprocess.TimeoutExpired:
        raise ConversionError(f"imxconv-tf did not finish within {WORKER_TIMEOUT_S} s") from None
    log = _keep_log(out_dir.parent, "imxconv-tf", proc.stdout + proc.stderr)
    if proc.returncode != 0 or not (out_dir / "packerOut.zip").is_file():
        raise ConversionError(converter_error(proc.stdout + "\n" + proc.stderr),
                              f"change that layer or leave imx500 out of --formats; the converter's output is in "
                              f"{_failure_log(log)}")
    return round(time.perf_counter() - started, 3)


_NODE = re.compile(r"Node \[[^\]]*\] op: (?:[\w.]+\.)?(\w+), id: ([^,]+), errors:")
_SPLIT_ACTIVATION = "_post_activation"  # MCT moves a layer's activation into a layer of its own, named so
_PARAM = re.compile(r"Param error - param: (\w+), value: ([^,]+), reason: (.*?)(?: \[[^\]]*\])?$")


def converter_error(log: str) -> str:
    """imxconv-tf's reason for refusing a network, as one line naming the layer when the converter names it."""
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    for i, line in enumerate(lines):
        node = _NODE.search(line)
        if node is None:
            continue
        cls, layer = node.group(1), node.group(2).strip()
        detail = lines[i + 1] if i + 1 < len(lines) else "no reason given"
        param = _PARAM.search(detail)
        if param:
            detail = f"{param.group(1)} {param.group(2)} is not supported ({param.group(3).strip()})"
        what = f"layer '{layer}' ({cls})"
        if layer.endswith(_SPLIT_ACTIVATION) and len(layer) > len(_SPLIT_ACTIVATION):
            what = f"the activation of layer '{layer[:-len(_SPLIT_ACTIVATION)]}'"  # the user's name for it
        return f"the IMX500 cannot run {what}: {detail}"[:400]
    errors = [line for line in lines if re.search(r"\berror\b", line, re.IGNORECASE) and "tensorflow" not in line]
    reason = (errors or lines or ["no output"])[-1]
    return f"imxconv-tf refused the network ({reason[:240]})"


def _keep_log(folder: Path, what: str, text: str) -> Path:
    """Third-party output goes to a log file, never to the terminal (EDGECNN_DEBUG=1 prints it too)."""
    log = folder / "toolchain.log"
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"==== {what}\n{text}\n")
    if os.environ.get("EDGECNN_DEBUG"):
        sys.stderr.write(f"==== imx500 {what}\n{text[-4000:]}\n")
    return log


def _failure_log(log: Path) -> Path:
    """A failed step's log, copied out of the scratch folder (removed after the run) into the cache."""
    kept = default_toolchain_dir().parent / "imx500-logs" / f"{os.getpid()}-{log.stat().st_mtime_ns}.log"
    try:
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, kept)
    except OSError:
        return log
    return kept


# -- what the converter reports ------------------------------------------------------------------------
def read_dnn_params(text: str) -> tuple[TensorSpec, TensorSpec, dict[str, Any]]:
    """dnnParams.xml -> (input spec, output spec, the tensors as recorded).

    The input is what the sensor feeds the network: 8-bit unsigned or signed with a power-of-two scale
    (the host encodes samples the same way). The output is float32: the camera dequantizes it.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ConversionError(f"imxconv-tf wrote an unreadable dnnParams.xml ({exc})") from None
    network = root.find("./networks/network")
    inp = None if network is None else network.find("./inputTensors/inputTensor")
    out = None if network is None else network.find("./outputTensors/outputTensor")
    if inp is None or out is None:
        raise ConversionError("dnnParams.xml names no input or output tensor", "check the toolchain versions")
    tensors = {"input": _tensor(inp), "output": _tensor(out)}
    i, o = tensors["input"], tensors["output"]
    exact = i["bits"] == 8 and i["shift"] == 0 and i["scale"] > 0
    dtype = ("uint8" if i["format"] == "unsigned" else "int8") if exact else "float32"
    input_spec = TensorSpec(name=i["name"], shape=(1, *i["dims"]), dtype=dtype, scale=i["scale"] if exact else 0.0)
    output_spec = TensorSpec(name=o["name"], shape=(1, int(np.prod(o["dims"]))), dtype="float32")
    return input_spec, output_spec, tensors


def _tensor(node: ET.Element) -> dict[str, Any]:
    dims = sorted(node.findall("./dimensions/dimension"), key=lambda d: int(d.get("ordinal", "0")))
    return {"name": node.get("name", ""), "dims": [int(d.get("size", "0")) for d in dims],
            "bits": int(node.get("bitsPerElement", "0")), "format": node.get("format", ""),
            "scale": float(node.get("scale", "0")), "shift": int(node.get("shift", "0")),
            "persistency": node.get("persistency")}


def memory_fit(report: dict[str, Any]) -> dict[str, Any]:
    """The converter's memory report -> {"usage", "available", "utilization", "fits"} (fits: bool)."""
    body = report.get("Memory Report", report) if isinstance(report, dict) else {}
    fits = body.get("Fit In Chip")
    if not isinstance(fits, bool):
        raise ConversionError("the imxconv-tf memory report does not say whether the network fits",
                              "check the toolchain versions")
    return {"usage": str(body.get("Memory Usage", "?")), "available": str(body.get("Total Memory Available On Chip",
                                                                                  SENSOR_MEMORY)),
            "utilization": str(body.get("Memory Utilization", "?")), "fits": fits}


def _notes(result: dict[str, Any], tensors: dict[str, Any], memory: dict[str, Any], dropped: tuple[str, ...],
           java: str, bundle: str) -> tuple[str, ...]:
    i, o = tensors["input"], tensors["output"]
    versions = result.get("versions", {})
    shown = ", ".join(f"{k} {versions[k]}" for k in ("tensorflow", "model-compression-toolkit", "edge-mdt-tpc",
                                                      "imx500-converter") if k in versions)
    notes = [
        f"IMX500 input (dnnParams.xml): {'x'.join(map(str, i['dims']))}, {i['bits']}-bit {i['format']}, "
        f"scale {i['scale']:g}, shift {i['shift']}, persistency {i['persistency']}",
        f"IMX500 output (dnnParams.xml): {'x'.join(map(str, o['dims']))}, {o['bits']}-bit {o['format']}, "
        f"scale {o['scale']:g}; the camera delivers it as float32",
        f"memory: {memory['usage']} of {memory['available']} ({memory['utilization']}), "
        f"fits in the sensor: {'yes' if memory['fits'] else 'no'}",
        f"toolchain: {shown} (TPC {TPC_VERSION}); {java}",
        f"moved to tf.keras 2.15: max |diff| {result.get('move_max_abs_diff', 0):.2g} on "
        f"{result.get('probe_samples', 0)} calibration samples",
        f"times: rebuild {result.get('move_s', 0):.1f} s, MCT quantization {result.get('quantize_s', 0):.1f} s, "
        f"imxconv-tf {result.get('convert_s', 0):.1f} s",
        "verified on the host: MCT's quantized Keras model (quantized.keras in the zip), the model imxconv-tf converted",
        f"on the Pi: unzip {bundle} packerOut.zip && imx500-package -i packerOut.zip -o . (writes network.rpk), "
        "then edgecnn run network.rpk --device imx500",
    ]
    if dropped:
        notes.append(f"left out (training-only, the identity at inference): {', '.join(dropped)}")
    return tuple(notes)


# -- the bundle ------------------------------------------------------------------------------------------
def embed(path: Path, text: str) -> None:
    """Add the manifest JSON to the bundle as manifest.json."""
    with zipfile.ZipFile(path, "a", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(MANIFEST_MEMBER, text)


def read_member(path: Path, member: str) -> bytes:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.read(member)
    except (zipfile.BadZipFile, KeyError, OSError) as exc:
        raise ConversionError(f"{Path(path).name} is not an imx500 bundle ({type(exc).__name__}: {exc})",
                              "re-run edgecnn convert --formats imx500") from None


# -- host verification ------------------------------------------------------------------------------------
def run_host(path: Path, batch: np.ndarray, progress: Optional[Callable[[int], None]] = None) -> np.ndarray:
    """The bundle's quantized model on ``batch`` (encoded like the sensor input, (N, H, W, C)) -> (N, classes) float32.

    Runs in the toolchain environment (one process for the whole batch).
    """
    from edgecnn.preprocess import dequantize  # noqa: PLC0415

    input_spec, _, _ = read_dnn_params(read_member(path, "dnnParams.xml").decode("utf-8"))
    python = toolchain_python()
    work = Path(tempfile.mkdtemp(prefix="imx500-verify-"))
    try:
        (work / "quantized.keras").write_bytes(read_member(path, "quantized.keras"))
        np.save(work / "inputs.npy", dequantize(np.asarray(batch), input_spec).astype(np.float32))
        run_worker(python, "evaluate", work, {})
        outputs = np.load(work / "outputs.npy")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if progress is not None:
        progress(len(batch))
    return outputs
