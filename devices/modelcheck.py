"""Check an untrusted model file before a native loader sees it.

Native loaders (LiteRT's flatbuffer reader, ONNX Runtime's protobuf reader) can crash the process on a
malformed file, and a long-running ``edgecnn run --serve`` must not be taken down by one. Three layers:

1. sniff the content (TFLite's "TFL3" identifier, ONNX's protobuf fields, zip/HDF5 for Keras) and refuse a
   file whose content does not match its extension;
2. for .tflite, a bounds-checking walk of the flatbuffer (root table, vtables, vectors, strings, and the
   indices that tie tensors, buffers, operators and operator codes together) in pure Python;
3. a probe load in a child process with a timeout (onnx.checker + an ONNX Runtime session, or a LiteRT
   interpreter that allocates and invokes once), so a loader that crashes or hangs takes only the child down.

The file is read and hashed once (``check_file``); the runners load those same bytes, so what was checked is
what runs. The probe costs a process start and a second load; a pass is remembered for those bytes and that
runtime (in this process, and on disk: devices/probecache.py), so the walk and the child run once per file
content and runtime, not at every start. Nothing here runs per frame. ``python -m edgecnn.devices.modelcheck
FORMAT PATH SHA256`` runs the probe itself (the child's entry point); the child is started without the working
directory on its import path, so a checkout's ``edgecnn/`` folder there cannot shadow the installed package.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import stat
import sys
from enum import Enum
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional

from edgecnn.devices import probecache
from edgecnn.errors import ModelLoadError, RuntimeMissingError, first_line

MAX_MODEL_BYTES = 2 * 1024 ** 3  # protobuf's hard limit; also far beyond any edge model
PROBE_TIMEOUT_S = 60.0
FAULT_ENV = "_EDGECNN_PROBE_FAULT"  # fault injection for tests: "segv" or "hang" in the child before loading


class ModelFormat(str, Enum):
    TFLITE = "tflite"
    ONNX = "onnx"
    KERAS = "keras"
    H5 = "h5"
    SAVEDMODEL = "savedmodel"
    RPK = "rpk"  # IMX500 network firmware (imx500-package's network.rpk), loaded by the camera itself


SUFFIX_FORMAT = {".tflite": ModelFormat.TFLITE, ".lite": ModelFormat.TFLITE, ".onnx": ModelFormat.ONNX,
                 ".keras": ModelFormat.KERAS, ".h5": ModelFormat.H5, ".hdf5": ModelFormat.H5, ".rpk": ModelFormat.RPK}
FORMAT_SUFFIX = {ModelFormat.TFLITE: ".tflite", ModelFormat.ONNX: ".onnx", ModelFormat.KERAS: ".keras",
                 ModelFormat.H5: ".h5", ModelFormat.SAVEDMODEL: "a SavedModel folder", ModelFormat.RPK: ".rpk"}
# An .rpk is blocks of [b"9464", size (big-endian u32), 52 more header bytes, size bytes, b"3695"], then a
# cpio archive (network_info.txt): the layout picamera2's IMX500 reader walks (devices/imx500/imx500.py).
RPK_BLOCK_MAGIC, RPK_FOOTER_MAGIC, RPK_HEADER, RPK_FOOTER = b"9464", b"3695", 60, 4
# ModelProto field number -> protobuf wire type (0 varint, 2 length-delimited).
_ONNX_FIELDS = {1: 0, 2: 2, 3: 2, 4: 2, 5: 0, 6: 2, 7: 2, 8: 2, 14: 2, 20: 2, 25: 2}

_probed: set[tuple[str, str]] = set()  # (sha256, format) of files that passed the probe in this process
_prefetched: dict[str, tuple[Any, list[tuple[bytes, str]]]] = {}  # absolute path -> (thread, [(bytes, sha256)])
# The child imports the installed package, never a folder named edgecnn in the working directory: -P (3.11+)
# keeps the working directory off sys.path; older Pythons drop it (sys.path[0] is '' under -c) before importing.
_CHILD_BOOTSTRAP = ("import sys; del sys.path[0]; import runpy; "
                    "runpy.run_module('edgecnn.devices.modelcheck', run_name='__main__', alter_sys=True)")


class CheckedModel(NamedTuple):
    """A model file that passed the checks, with the bytes that were checked (load these, not the path)."""

    path: Path
    format: ModelFormat
    sha256: str = ""  # of ``data``; empty for formats that are not read here (Keras, SavedModel)
    data: bytes = b""
    probe: str = "none"  # "child": probed now; "known": passed before (this process or the probe cache); "none"


def sniff(head: bytes) -> Optional[ModelFormat]:
    """The format the first bytes of a file show, or None when they show none we know."""
    if len(head) >= 8 and head[4:8] == b"TFL3":
        return ModelFormat.TFLITE
    if head.startswith(RPK_BLOCK_MAGIC):
        return ModelFormat.RPK
    if head.startswith(b"PK\x03\x04"):
        return ModelFormat.KERAS
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return ModelFormat.H5
    if _looks_like_onnx(head):
        return ModelFormat.ONNX
    return None


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift = 0, 0
    while pos < len(data) and shift < 64:
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos += 1
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ValueError("truncated varint")


def _looks_like_onnx(head: bytes) -> bool:
    """True when the head parses as ModelProto fields with the right wire types (at least two of them)."""
    pos, seen = 0, 0
    try:
        while pos < len(head) and seen < 3:
            tag, pos = _read_varint(head, pos)
            number, wire = tag >> 3, tag & 7
            if _ONNX_FIELDS.get(number) != wire:
                return False
            if wire == 0:
                _, pos = _read_varint(head, pos)
            else:
                length, pos = _read_varint(head, pos)
                pos += length
            seen += 1
    except ValueError:
        return seen >= 1
    return seen >= 2 or (seen == 1 and pos >= len(head))


def check_model(path: Path, probe: bool = True, timeout_s: float = PROBE_TIMEOUT_S) -> ModelFormat:
    """Validate ``path`` and return its format; raise ModelLoadError (one line) when it must not be loaded."""
    return check_file(path, probe, timeout_s).format


def check_file(path: Path, probe: bool = True, timeout_s: float = PROBE_TIMEOUT_S) -> CheckedModel:
    """Validate ``path``: header, then (.tflite/.onnx) the bytes read once and hashed, the flatbuffer walk and the
    child probe, skipped for bytes that passed them before with the same runtime. Raises ModelLoadError (one
    line) when the file must not be loaded, RuntimeMissingError when no runtime can check it."""
    path = Path(path)
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            return CheckedModel(path, ModelFormat.SAVEDMODEL)
        raise ModelLoadError(f"{path} is a folder without saved_model.pb", "give a .tflite or .onnx model file")
    fmt = _check_header(path)
    if fmt == ModelFormat.RPK:
        walk_rpk(path)  # the camera driver loads it; there is nothing to probe in a child here
    if fmt not in (ModelFormat.TFLITE, ModelFormat.ONNX):
        return CheckedModel(path, fmt)
    data, digest = _read_hashed(path)
    key = (digest, fmt.value)
    if key in _probed:
        return CheckedModel(path, fmt, digest, data, "known")
    tag = probecache.runtime_tag(fmt.value) if probe else ""
    if probe and probecache.passed(digest, fmt.value, tag):
        _probed.add(key)
        return CheckedModel(path, fmt, digest, data, "known")
    if fmt == ModelFormat.TFLITE:
        _walk(path, data)
    if not probe:
        if fmt == ModelFormat.ONNX:
            check_onnx(path)
        return CheckedModel(path, fmt, digest, data, "none")
    probe_in_child(path, fmt, timeout_s, digest)  # runs onnx.checker there too
    probecache.record_pass(digest, fmt.value, tag, path.name)
    return CheckedModel(path, fmt, digest, data, "child")


def _check_header(path: Path) -> ModelFormat:
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device would block or never end
            raise ModelLoadError(f"{path} is not a regular file", "give a .tflite or .onnx model file")
        size = info.st_size
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path} ({exc.strerror or exc})") from None
    if size == 0:
        raise ModelLoadError(f"model file {path} is empty (0 bytes)", "copy the artifact again")
    if size > MAX_MODEL_BYTES:
        raise ModelLoadError(f"model file {path} is {size / 1024 ** 3:.1f} GiB, over the 2 GiB limit",
                             "edge models are far smaller; check the file")
    named = SUFFIX_FORMAT.get(path.suffix.lower())
    found = sniff(head)
    if named and found and found != named:
        raise ModelLoadError(f"{path.name} is named {path.suffix} but holds a {found.value} model",
                             f"rename it to {FORMAT_SUFFIX[found]}" if found in (ModelFormat.TFLITE, ModelFormat.ONNX)
                             else "convert it first with edgecnn convert")
    if named == ModelFormat.TFLITE and found is None:
        raise ModelLoadError(f"{path.name} is not a TFLite model (no 'TFL3' identifier at byte 4)",
                             "the file is corrupt or of another kind; copy the artifact again")
    if named is None and found is None:
        raise ModelLoadError(f"cannot tell what kind of model {path.name} is", "give a .tflite or .onnx file")
    return named or found


def prefetch(path: Path | str) -> None:
    """Start reading and hashing ``path`` in a thread, for check_file to take instead of reading it itself.
    File reads and SHA-256 release the GIL, so this runs while the caller imports the runtime (~7 ms of the
    start with a 4 MB model). A path that is not a plain, readable file of a sane size is left to check_file,
    which reports it."""
    key = os.path.abspath(path)
    if key in _prefetched or SUFFIX_FORMAT.get(os.path.splitext(key)[1].lower()) not in (ModelFormat.TFLITE,
                                                                                            ModelFormat.ONNX):
        return
    result: list[tuple[bytes, str]] = []

    def read_and_hash() -> None:
        try:
            info = os.stat(key)
            if stat.S_ISREG(info.st_mode) and 0 < info.st_size <= MAX_MODEL_BYTES:  # a FIFO would block
                with open(key, "rb") as handle:
                    data = handle.read()
                result.append((data, hashlib.sha256(data).hexdigest()))
        except OSError:
            pass

    import threading  # noqa: PLC0415 - only on the start of `edgecnn run`

    thread = threading.Thread(target=read_and_hash, name="edgecnn-prefetch", daemon=True)
    thread.start()
    _prefetched[key] = (thread, result)


@contextlib.contextmanager
def prefetched(path: Path | str) -> Iterator[None]:
    """prefetch(path) for the duration of a block; bytes not taken by then (the run failed before loading the
    model) are dropped, not kept for the life of the process."""
    prefetch(path)
    try:
        yield
    finally:
        _prefetched.pop(os.path.abspath(path), None)


def _read_hashed(path: Path) -> tuple[bytes, str]:
    """The file's bytes and their SHA-256: the prefetched ones when prefetch() was called for it, else read now."""
    pending = _prefetched.pop(os.path.abspath(path), None)
    if pending is not None:
        thread, result = pending
        thread.join()
        if result:
            return result[0]
    data = _read(path)
    return data, hashlib.sha256(data).hexdigest()


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path} ({exc.strerror or exc})") from None


def _walk(path: Path, data: bytes) -> None:
    from edgecnn.devices.flatbuf import FlatbufferError, walk_tflite  # noqa: PLC0415 - not needed for known bytes

    try:
        walk_tflite(data)
    except FlatbufferError as exc:
        raise ModelLoadError(f"{path.name} is a corrupt TFLite model ({exc})",
                             "the file is truncated or damaged; copy the artifact again") from None


def walk_rpk(path: Path) -> int:
    """Bounds-check the firmware blocks of an IMX500 ``.rpk``; returns how many there are (ModelLoadError if broken)."""
    try:
        data = memoryview(Path(path).read_bytes())
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file {path} ({exc.strerror or exc})") from None
    offset, blocks = 0, 0
    while len(data) - offset >= 8 and bytes(data[offset:offset + 4]) == RPK_BLOCK_MAGIC:
        size = int.from_bytes(data[offset + 4:offset + 8], "big")
        footer = offset + RPK_HEADER + size
        if footer + RPK_FOOTER > len(data) or bytes(data[footer:footer + RPK_FOOTER]) != RPK_FOOTER_MAGIC:
            raise ModelLoadError(f"{Path(path).name} is a corrupt IMX500 network (block {blocks} of {size} bytes "
                                 "has no footer where it should end)",
                                 "the file is truncated or damaged; run imx500-package on the packerOut.zip again")
        offset, blocks = footer + RPK_FOOTER, blocks + 1
    if blocks == 0:
        raise ModelLoadError(f"{Path(path).name} is not an IMX500 network (no '9464' firmware block at its start)",
                             "give the network.rpk that imx500-package wrote")
    return blocks


def check_onnx(path: Path) -> None:
    """onnx.checker in this process (protobuf parsing is bounds-checked); skipped when onnx is not installed."""
    try:
        import onnx  # noqa: PLC0415 - optional on a device
    except ImportError:
        return
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:  # noqa: BLE001 - ValidationError, DecodeError and friends
        raise ModelLoadError(f"{path.name} is not a valid ONNX model ({type(exc).__name__}: {first_line(exc)})",
                             "the file is truncated or damaged; copy the artifact again") from None


def _digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def child_command(fmt: ModelFormat, path: Path, digest: str, version: tuple[int, ...] = sys.version_info[:2]) -> list[str]:
    """The probe child's command line; ``version`` chooses -P (Python 3.11+) or the bootstrap that drops sys.path[0]."""
    args = [fmt.value, str(path), digest]
    if tuple(version) >= (3, 11):
        return [sys.executable, "-P", "-m", "edgecnn.devices.modelcheck", *args]
    return [sys.executable, "-c", _CHILD_BOOTSTRAP, *args]


def probe_in_child(path: Path, fmt: ModelFormat, timeout_s: float = PROBE_TIMEOUT_S, digest: str = "") -> None:
    """Load ``path`` in a child Python; a crash, hang or load error there becomes a ModelLoadError here.

    The child loads the file only if its SHA-256 is ``digest`` (when given): the verdict is about those bytes."""
    import signal  # noqa: PLC0415 - only when a file is probed, not on a start that knows it
    import subprocess  # noqa: PLC0415

    digest = digest or _digest(path)
    key = (digest, fmt.value)
    command = child_command(fmt, path, digest)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        proc = subprocess.run(command, capture_output=True, timeout=timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        raise ModelLoadError(f"loading {path.name} did not finish within {timeout_s:.0f} s",
                             "the file is probably malformed; copy the artifact again") from None
    if proc.returncode < 0:
        name = signal.Signals(-proc.returncode).name if -proc.returncode in signal.valid_signals() else str(-proc.returncode)
        raise ModelLoadError(f"{path.name} crashed the {fmt.value} loader ({name}) in a probe process",
                             "the file is corrupt or hostile; it was not loaded here")
    result = _parse_probe_output(proc.stdout)
    if result is None:
        tail = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise ModelLoadError(f"probing {path.name} failed (exit {proc.returncode}: {tail[0][:200]})",
                             "the file is corrupt; copy the artifact again")
    if not result.get("ok") and result.get("kind") == "runtime":
        raise RuntimeMissingError(f"cannot check {path.name}: {result.get('error')}", str(result.get("hint", "")))
    if not result.get("ok"):
        raise ModelLoadError(f"{path.name} cannot be loaded ({result.get('error', 'unknown error')})",
                             str(result.get("hint") or "the file is corrupt or not a model; copy the artifact again"))
    _probed.add(key)


def _parse_probe_output(stdout: bytes) -> Optional[dict]:
    for line in reversed(stdout.decode("utf-8", "replace").splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


# -- the child side ------------------------------------------------------------------------------------
def _probe_tflite(path: Path, data: bytes) -> dict:
    import numpy as np

    from edgecnn.devices.flatbuf import walk_tflite
    from edgecnn.devices.litert import make_interpreter

    info = walk_tflite(data)
    # A custom op (e.g. edgetpu-custom-op) needs its delegate to allocate and run: the file only has to load.
    interpreter = make_interpreter(path, threads=1, content=data, allocate=not info.custom_codes)
    if info.custom_codes:
        return {"ok": True, "custom_ops": sorted(info.custom_codes)}
    for detail in interpreter.get_input_details():
        interpreter.set_tensor(detail["index"], np.zeros(detail["shape"], dtype=detail["dtype"]))
    interpreter.invoke()
    return {"ok": True}


def _probe_onnx(path: Path, data: bytes) -> dict:
    try:
        import onnx  # noqa: PLC0415 - optional on a device; onnxruntime still checks the graph
    except ImportError:
        onnx = None
    if onnx is not None:
        onnx.checker.check_model(str(path))  # by path: external data files are checked beside it
    import onnxruntime  # noqa: PLC0415

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    # From the path, as the runner loads it: a model with external data finds its files beside it.
    onnxruntime.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    return {"ok": True, "checker": onnx is not None}


def _inject_fault() -> None:
    import signal  # noqa: PLC0415

    fault = os.environ.get(FAULT_ENV, "")
    if fault == "segv":
        os.kill(os.getpid(), signal.SIGSEGV)
    elif fault == "hang":
        import time

        time.sleep(3600)


def _probe_main(argv: list[str]) -> int:
    fmt, path = ModelFormat(argv[0]), Path(argv[1])
    expected = argv[2] if len(argv) > 2 else ""
    _inject_fault()
    try:
        data = path.read_bytes()
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise ModelLoadError("the file changed while it was being checked", "copy the artifact again")
        result = _probe_tflite(path, data) if fmt == ModelFormat.TFLITE else _probe_onnx(path, data)
    except ModelLoadError as exc:
        result = {"ok": False, "error": exc.message, "hint": exc.hint}
    except RuntimeMissingError as exc:
        result = {"ok": False, "kind": "runtime", "error": exc.message, "hint": exc.hint}
    except ImportError as exc:
        result = {"ok": False, "kind": "runtime", "error": f"runtime missing ({first_line(exc)})",
                  "hint": "pip install 'edgecnn[device]' (.tflite) or 'edgecnn[onnx-cpu]' (.onnx)"}
    except Exception as exc:  # noqa: BLE001 - every loader error is reported to the parent as data
        result = {"ok": False, "error": f"{type(exc).__name__}: {first_line(exc)}"}
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(_probe_main(sys.argv[1:]))
