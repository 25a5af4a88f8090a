"""`edgecnn doctor`: what this machine can run, and what to install for what it cannot.

Read-only and quick: package metadata, the dynamic loader, /dev and /sys, and (on a Pi) vcgencmd. It never
imports TensorFlow, and imports a runtime only to ask its version and providers. ``root`` exists so tests can
point the /dev, /proc and /sys reads at a stand-in tree for hardware this machine does not have (a Pi).
"""
from __future__ import annotations

import importlib.util
import os
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Optional

from edgecnn.devices.litert import dist_version as _version

CORAL_USB_IDS = {("1a6e", "089a"): "Coral USB Accelerator (not yet initialised)",
                 ("18d1", "9302"): "Coral USB Accelerator"}
THROTTLE_BITS = {0: "under-voltage now", 1: "ARM frequency capped now", 2: "throttled now",
                 3: "soft temperature limit now", 16: "under-voltage has occurred", 17: "frequency capping has occurred",
                 18: "throttling has occurred", 19: "soft temperature limit has occurred"}


class Status(str, Enum):
    OK = "ok"
    MISSING = "missing"
    WARN = "warn"
    INFO = "info"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    found: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return {**asdict(self), "status": self.status.value}


def _present(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_system() -> list[Check]:
    import numpy as np

    return [Check("python", Status.INFO, f"{platform.python_version()} on {platform.system()} {platform.machine()}"),
            Check("cpu cores", Status.INFO, f"{os.cpu_count()} (default --threads)"),
            Check("numpy", Status.INFO, np.__version__)]


def check_litert() -> list[Check]:
    from edgecnn.devices.litert import INSTALL_HINT, resolve_runtime, tflite_runtime_conflict
    from edgecnn.errors import RuntimeMissingError

    import numpy as np

    checks = []
    tfl = _version("tflite-runtime")
    if tfl:
        conflict = tflite_runtime_conflict(tfl, np.__version__)
        checks.append(Check("tflite_runtime", Status.WARN if conflict else Status.OK, conflict or tfl,
                            "pip install ai-edge-litert (or pip install 'numpy<2')" if conflict else ""))
    tf = _version("tensorflow") or _version("tensorflow-cpu")
    if not (_present("ai_edge_litert") or (tfl and checks[-1].status == Status.OK)):
        found = f"only tensorflow {tf} (heavy; fallback)" if tf else "none"
        checks.insert(0, Check("LiteRT runtime", Status.WARN if tf else Status.MISSING, found, INSTALL_HINT))
        return checks
    try:
        runtime = resolve_runtime()
    except RuntimeMissingError as exc:
        return [Check("LiteRT runtime", Status.MISSING, exc.message, exc.hint)] + checks
    checks.insert(0, Check("LiteRT runtime", Status.OK, f"{runtime.name} {runtime.version}"))
    xnnpack = runtime.op_resolver is not None and hasattr(runtime.op_resolver, "BUILTIN_WITHOUT_DEFAULT_DELEGATES")
    checks.insert(1, Check("XNNPACK", Status.OK if xnnpack else Status.WARN,
                           "default CPU delegate, on unless turned off" if xnnpack else "cannot be chosen in this runtime",
                           "" if xnnpack else INSTALL_HINT))
    return checks


def _coral_usb(root: Path) -> list[str]:
    found = []
    for device in sorted((root / "sys/bus/usb/devices").glob("*")):
        try:
            ids = ((device / "idVendor").read_text().strip(), (device / "idProduct").read_text().strip())
        except OSError:
            continue
        if ids in CORAL_USB_IDS:
            found.append(f"{CORAL_USB_IDS[ids]} at usb {device.name}")
    return found


def check_edgetpu(root: Path = Path("/")) -> list[Check]:
    from edgecnn.devices.edgetpu import INSTALL_HINT, library_loadable, library_name
    from edgecnn.errors import RuntimeMissingError

    compiler = _edgetpu_compiler()
    try:
        library = library_name()
    except RuntimeMissingError as exc:
        return [Check("Edge TPU library", Status.MISSING, exc.message, exc.hint), compiler]
    lib_ok = library_loadable(library)
    devices = _coral_usb(root) + [f"Coral PCIe/M.2 at {p}" for p in sorted(str(p) for p in (root / "dev").glob("apex_*"))]
    return [Check("Edge TPU library", Status.OK if lib_ok else Status.MISSING,
                  f"{library} {'found' if lib_ok else 'not found'}", "" if lib_ok else INSTALL_HINT),
            Check("Edge TPU devices", Status.OK if devices else Status.INFO, "; ".join(devices) or "none attached",
                  "" if devices else "plug in a Coral USB Accelerator (or install the PCIe driver gasket-dkms)"),
            compiler]


def _edgetpu_compiler() -> Check:
    """Whether ``edgetpu_compiler`` is on PATH (only convert needs it, on an x86-64 Linux workstation)."""
    import shutil  # noqa: PLC0415

    found = shutil.which("edgetpu_compiler")
    return Check("edgetpu_compiler", Status.OK if found else Status.INFO, found or "not on PATH",
                 "" if found else "needed only to compile for the Edge TPU on a workstation: "
                 "apt-get install edgetpu-compiler (Coral's apt repository, x86-64 Linux)")


def check_onnxruntime() -> list[Check]:
    from edgecnn.devices.onnx_runtime import GPU_PROVIDERS, gpu_package

    if not _present("onnxruntime"):
        return [Check("ONNX Runtime", Status.MISSING, "not installed",
                      "pip install 'edgecnn[onnx-cpu]' (onnx-cpu) or 'edgecnn[gpu]' (gpu)")]
    import onnxruntime as ort

    providers = list(ort.get_available_providers())
    gpu = [p for p in providers if p in GPU_PROVIDERS]
    package = gpu_package()
    checks = [Check("ONNX Runtime", Status.OK, f"{ort.__version__} ({package or 'onnxruntime'})"),
              Check("ONNX Runtime providers", Status.OK if gpu else Status.INFO, ", ".join(providers),
                    "" if gpu else "for --device gpu: pip uninstall onnxruntime && pip install onnxruntime-gpu")]
    checks.append(Check("onnx (model checker)", Status.OK if _present("onnx") else Status.INFO,
                        _version("onnx") or "not installed", "" if _present("onnx") else "pip install onnx"))
    return checks


def check_nvidia(root: Path = Path("/")) -> list[Check]:
    version = root / "proc/driver/nvidia/version"
    if version.is_file():
        return [Check("NVIDIA driver", Status.OK, version.read_text(errors="replace").splitlines()[0][:120])]
    return [Check("NVIDIA driver", Status.INFO, "none", "needed only for --device gpu")]


def _camera_name(root: Path, node: str) -> str:
    try:
        return (root / "sys/class/video4linux" / node / "name").read_text().strip()
    except OSError:
        return ""


def check_cameras(root: Path = Path("/")) -> list[Check]:
    nodes = sorted((root / "dev").glob("video*"), key=lambda p: (len(p.name), p.name))
    found = [f"/dev/{p.name}" + (f" ({name})" if (name := _camera_name(root, p.name)) else "") for p in nodes]
    checks = [Check("cameras", Status.OK if found else Status.INFO, "; ".join(found) or "no /dev/video* device",
                    "" if found else "connect a camera (on a Pi: enable it), or use --source FILE|URL")]
    cv = _version("opencv-python-headless") or _version("opencv-python") or _version("opencv-contrib-python")
    checks.append(Check("OpenCV", Status.OK if cv or _present("cv2") else Status.MISSING, cv or "not installed",
                        "" if cv or _present("cv2") else "pip install opencv-python-headless"))
    return checks


def pi_model(root: Path = Path("/")) -> Optional[str]:
    for rel in ("proc/device-tree/model", "sys/firmware/devicetree/base/model"):
        try:
            text = (root / rel).read_bytes().rstrip(b"\0").decode("utf-8", "replace").strip()
        except OSError:
            continue
        if "raspberry pi" in text.lower():
            return text
    return None


def _vcgencmd(*args: str) -> Optional[str]:
    tool = shutil.which("vcgencmd")
    if tool is None:
        return None
    try:
        proc = subprocess.run([tool, *args], check=True, capture_output=True, text=True, timeout=5)
    except (subprocess.SubprocessError, OSError):
        return None
    return proc.stdout.strip()


def read_throttled() -> Optional[int]:
    """The firmware's throttling bits (``vcgencmd get_throttled``), or None where vcgencmd is missing or fails:
    bits 0-3 under-voltage, frequency capped, throttled, soft temperature limit now; 16-19 the same since boot."""
    out = _vcgencmd("get_throttled")
    try:
        return int(out.split("=", 1)[1], 16) if out and "=" in out else None
    except ValueError:
        return None


def decode_throttled(value: int) -> list[str]:
    return [text for bit, text in THROTTLE_BITS.items() if value & (1 << bit)]


def _temperature(root: Path) -> Optional[str]:
    out = _vcgencmd("measure_temp")
    if out and "=" in out:
        return out.split("=", 1)[1].replace("'", "°")
    try:
        milli = int((root / "sys/class/thermal/thermal_zone0/temp").read_text().strip())
    except (OSError, ValueError):
        return None
    return f"{milli / 1000:.1f}°C"


def check_pi(root: Path = Path("/")) -> list[Check]:
    model = pi_model(root)
    checks = [Check("Raspberry Pi", Status.OK if model else Status.INFO, model or "not a Raspberry Pi")]
    temp = _temperature(root)
    if temp:
        checks.append(Check("temperature", Status.INFO, temp))
    if model:
        throttled = read_throttled()
        if throttled is not None:
            flags = decode_throttled(throttled)
            checks.append(Check("throttling", Status.WARN if flags else Status.OK, ", ".join(flags) or "none",
                                "use the official power supply and a heatsink/fan" if flags else ""))
        else:
            checks.append(Check("throttling", Status.INFO, "vcgencmd not found",
                                "sudo apt-get install libraspberrypi-bin (for vcgencmd)"))
        pic = _version("picamera2") or ("present" if _present("picamera2") else None)
        checks.append(Check("picamera2", Status.OK if pic else Status.INFO, pic or "not installed",
                            "" if pic else "sudo apt-get install python3-picamera2 (for the Pi camera)"))
        imx500 = imx500_sensors(root)
        checks.append(Check("IMX500 AI Camera", Status.OK if imx500 else Status.INFO, "; ".join(imx500) or "none",
                            "" if imx500 else "needed only for --device imx500 (sudo apt install imx500-all)"))
    return checks


def imx500_sensors(root: Path = Path("/")) -> list[str]:
    """The v4l2 sub-devices driven by the imx500 module (how picamera2's IMX500 class finds the sensor)."""
    found = []
    for subdev in sorted((root / "sys/class/video4linux").glob("v4l-subdev*")):
        module = subdev / "device" / "driver" / "module"
        if module.is_symlink() and "imx500" in os.readlink(module):
            found.append(f"/dev/{subdev.name}")
    return found


def run_checks(root: Path = Path("/")) -> list[Check]:
    checks = check_system() + check_litert() + check_edgetpu(root) + check_onnxruntime() + check_nvidia(root)
    return checks + check_cameras(root) + check_pi(root)


def to_json(checks: list[Check]) -> dict[str, Any]:
    return {"checks": [c.to_dict() for c in checks], "python": sys.executable}


def render(checks: list[Check]) -> Any:
    from rich.table import Table
    from rich.text import Text

    colours = {Status.OK: "green", Status.MISSING: "red", Status.WARN: "yellow", Status.INFO: "cyan"}
    table = Table(title="edgecnn doctor")
    for column in ("check", "status", "found", "to fix"):
        table.add_column(column, overflow="fold")
    for check in checks:
        # Text, not markup: a fix such as "pip install 'edgecnn[onnx-cpu]'" must keep its brackets.
        table.add_row(Text(check.name), f"[{colours[check.status]}]{check.status.value}[/]", Text(check.found),
                      Text(check.fix))
    return table
