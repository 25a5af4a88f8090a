"""The environment fingerprint recorded with every result: what ran where, so a figure can be reproduced.

Reads /proc and /sys directly (no heavy imports); runtime versions come from package metadata, so
fingerprinting never imports TensorFlow. On a Raspberry Pi it adds the board model, SoC temperature
and the firmware's throttling flags (``vcgencmd get_throttled``).
"""
from __future__ import annotations

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Any, Optional

RUNTIME_PACKAGES = ("edgecnn", "numpy", "ai-edge-litert", "tflite-runtime", "onnxruntime", "onnxruntime-gpu",
                    "tensorflow", "keras", "onnx", "tf2onnx", "opencv-python-headless", "pycoral")


def fingerprint() -> dict[str, Any]:
    """A JSON-ready description of this machine and its software."""
    info: dict[str, Any] = {
        "hostname": platform.node(),
        "cpu_model": cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "cpu_flags": cpu_flags_of_interest(),
        "frequency_governor": _read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "cpu_mhz": cpu_mhz(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "os": f"{platform.system()} {platform.release()}",
        "os_release": os_release(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "versions": runtime_versions(),
    }
    pi = raspberry_pi_info()
    if pi:
        info["raspberry_pi"] = pi
    return info


def cpu_model() -> str:
    for line in _read_lines("/proc/cpuinfo"):
        key, _, value = line.partition(":")
        if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
            return value.strip()
    return platform.processor() or platform.machine()


def cpu_flags_of_interest() -> list[str]:
    """SIMD features that decide int8 speed (AVX-512 VNNI, AVX2, NEON dot product)."""
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "neon", "asimd")
    for line in _read_lines("/proc/cpuinfo"):
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            present = set(value.split())
            return [flag for flag in wanted if flag in present]
    return []


def cpu_mhz() -> Optional[float]:
    freq = _read_text("/sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq")
    if freq and freq.isdigit():
        return int(freq) / 1000.0
    for line in _read_lines("/proc/cpuinfo"):
        key, _, value = line.partition(":")
        if key.strip() == "cpu MHz":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def os_release() -> Optional[str]:
    for line in _read_lines("/etc/os-release"):
        if line.startswith("PRETTY_NAME="):
            return line.partition("=")[2].strip().strip('"')
    return None


def runtime_versions() -> dict[str, str]:
    versions = {}
    for name in RUNTIME_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def raspberry_pi_info() -> Optional[dict[str, Any]]:
    model = _read_text("/proc/device-tree/model")
    if not model or "raspberry" not in model.lower():
        return None
    temp = _read_text("/sys/class/thermal/thermal_zone0/temp")
    return {
        "model": model.rstrip("\x00"),
        "temperature_c": int(temp) / 1000.0 if temp and temp.lstrip("-").isdigit() else None,
        "throttled": throttled_flags(),
    }


def throttled_flags() -> Optional[dict[str, Any]]:
    """``vcgencmd get_throttled`` (read by the device side's doctor) as named flags, now and since boot."""
    from edgecnn.devices.doctor import read_throttled  # noqa: PLC0415

    raw = read_throttled()
    if raw is None:
        return None
    names = ("under_voltage", "frequency_capped", "throttled", "soft_temperature_limit")
    flags: dict[str, Any] = {"raw": hex(raw)}
    for bit, name in enumerate(names):
        flags[f"{name}_now"] = bool(raw & (1 << bit))
        flags[f"{name}_since_boot"] = bool(raw & (1 << (bit + 16)))
    return flags


def _read_text(path: str) -> Optional[str]:
    try:
        return Path(path).read_text(encoding="utf-8", errors="replace").strip()
    except OSError:
        return None


def _read_lines(path: str) -> list[str]:
    text = _read_text(path)
    return text.splitlines() if text else []
