"""One session in the emulated root: host checks, the project's wheel, the cached root with that wheel installed
with the device extras (as a Raspberry Pi user installs it), and proof the guest really is the chosen arm64 CPU.

    with emulated_root(project, cpu="cortex-a72", log=log, stages=Stages(log)) as (root, info):
        root.run(["/opt/edgecnn-venv/bin/edgecnn", "doctor"], log)
"""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from tools.arm64emu import host
from tools.arm64emu.host import CPU_PARTS, InfraSkip, Log, last_line, run_tool
from tools.arm64emu.stages import Stages
from tools.arm64emu.rootfs import VENV, Root, ensure_root, guest_pip_env, host_pip_config, index_url, locked

GUEST_PIP = f"{VENV}/bin/pip"
GUEST_EDGECNN = f"{VENV}/bin/edgecnn"


class CheckFailed(Exception):
    """The device side misbehaved in the emulated root: a product failure, not an infrastructure one."""


PACKAGED = ("pyproject.toml", "README.md", "edgecnn", "converters", "devices")


def build_wheel(project: Path, dest: Path, log: Log) -> Path:
    """The project's wheel, as `pip install edgecnn` would get it (non-editable). Built from a copy of the
    packaged files: setuptools leaves build/ and *.egg-info in the folder it builds in."""
    source = dest / "source"
    for name in PACKAGED:
        if (project / name).is_dir():
            shutil.copytree(project / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            source.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(project / name, source / name)
    run_tool([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", str(source), "-w", str(dest)], log, timeout=900)
    shutil.rmtree(source)
    wheels = sorted(dest.glob("edgecnn-*.whl"))
    if len(wheels) != 1:
        raise CheckFailed(f"pip wheel made {len(wheels)} edgecnn wheels in {dest}")
    return wheels[0]


def device_requirements(wheel: Path) -> list[str]:
    """What a Pi user installs for the cpu/pi and onnx-cpu targets: the wheel's `device` extra, plus its
    `onnx-cpu` extra where the wheel declares one, else ONNX Runtime by name."""
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(archive.read(n).decode() for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    extras = set(re.findall(r"^Provides-Extra:\s*(\S+)", metadata, flags=re.M))
    if "onnx-cpu" in extras:
        return [f"./{wheel.name}[device,onnx-cpu]"]
    return [f"./{wheel.name}[device]", "onnxruntime"]


def install_wheel(root: Root, wheel: Path, log: Log) -> list[str]:
    """Uninstall the previous wheel, then pip install the new one with the device extras; what was asked."""
    share = wheel.parent
    wanted = device_requirements(wheel)
    root.run([GUEST_PIP, "uninstall", "-y", "-q", "edgecnn"], log, share=share, timeout=600)
    try:
        root.run([GUEST_PIP, "install", "-q", *wanted], log, share=share, timeout=3600)
    except subprocess.CalledProcessError as exc:
        index = index_url(root.pip_env)
        host.check_reachable(f"{index}/numpy/", "the package index")  # unreachable: a skip, not a failure
        raise CheckFailed(f"pip install {' '.join(wanted)} failed in the arm64 root: {last_line(exc)}") from None
    return wanted


def guest_cpu(root: Root, log: Log) -> dict[str, str]:
    """The guest's /proc/cpuinfo (first CPU) and uname -m, as QEMU shows them."""
    done = root.run(["/bin/sh", "-c", "uname -m; cat /proc/cpuinfo"], log, timeout=300)
    lines = done.stdout.splitlines()
    info = dict(re.findall(r"^([A-Za-z ]+?)\s*:\s*(.*)$", "\n".join(lines[1:]), flags=re.M))
    return {"machine": lines[0].strip() if lines else "", "part": info.get("CPU part", ""),
            "features": info.get("Features", ""), "cpus": str(sum(1 for line in lines if line.startswith("processor")))}


def verify_cpu(root: Root, log: Log) -> dict[str, str]:
    """The guest must be aarch64 and report the chosen CPU model; a stale binfmt registration (a QEMU 7.2
    opened before an upgrade shows the host's x86 cpuinfo) is re-registered once."""
    expected = CPU_PARTS[root.cpu]
    seen = guest_cpu(root, log)
    if seen["machine"] != "aarch64" or seen["part"] != expected:
        log(f"guest CPU is {seen}; registering aarch64 in binfmt_misc again")
        host.ensure_binfmt(log, reregister=True)
        seen = guest_cpu(root, log)
    if seen["machine"] != "aarch64" or seen["part"] != expected:
        raise InfraSkip(f"the emulated CPU is not {root.cpu} (uname -m {seen['machine']!r}, CPU part {seen['part']!r},"
                        f" expected {expected}): check the qemu-aarch64 binfmt_misc registration")
    return seen


def root_versions(root: Root, log: Log) -> dict[str, str]:
    script = ("import json, os, platform, sys\nfrom importlib.metadata import version\n"
              "out = {'python': platform.python_version(), 'glibc': os.confstr('CS_GNU_LIBC_VERSION'),\n"
              "       'debian': open('/etc/debian_version').read().strip()}\n"
              "for name in ('edgecnn', 'numpy', 'ai-edge-litert', 'onnxruntime', 'opencv-python-headless'):\n"
              "    out[name] = version(name)\n"
              "for name in ('tensorflow', 'onnx'):\n"
              "    try:\n        out[name] = version(name)\n    except Exception:\n        out[name] = 'absent'\n"
              "print(json.dumps(out))\n")
    done = root.python(["-c", script], log, timeout=600)
    import json

    return json.loads(done.stdout.strip().splitlines()[-1])


def prepare_host(log: Log, stages: Stages, mirror: Optional[str] = None) -> dict[str, object]:
    """Root privileges, QEMU >= 8 and debootstrap, binfmt_misc; InfraSkip with the reason when impossible."""
    host.require_root()
    mirror = mirror or host.debian_mirror()
    with stages("host: QEMU, debootstrap, binfmt_misc"):
        qemu = host.ensure_packages(mirror, log)
        binfmt = host.ensure_binfmt(log)
    return {"qemu": qemu, "binfmt": binfmt, "mirror": mirror}


@contextmanager
def emulated_root(project: Path, cpu: str, log: Log, stages: Stages, mirror: Optional[str] = None,
                  wait: bool = True) -> Iterator[tuple[Root, dict]]:
    """Everything up to a root with this checkout's wheel installed, the lock held while it is used
    (``wait`` False: InfraSkip at once when another session holds it)."""
    from edgecnn.converters.zoo import cache_dir

    if cpu not in CPU_PARTS:
        raise ValueError(f"unknown CPU model {cpu}; choose one of {', '.join(CPU_PARTS)}")
    info = prepare_host(log, stages, mirror)
    cache = cache_dir()
    with tempfile.TemporaryDirectory(prefix="edgecnn-wheel-") as wheel_dir:
        with stages("x86: build the wheel"):
            wheel = build_wheel(project, Path(wheel_dir), log)
        with locked(cache, log, wait):
            if not (cache / "arm64-root" / "etc" / "edgecnn-root.json").exists():
                host.check_reachable(f"{info['mirror']}/dists/bookworm/InRelease", "the Debian mirror")
            root = ensure_root(cache, str(info["mirror"]), cpu, log, stages)
            root = Root(root.path, cpu, guest_pip_env(root.path, host_pip_config(log), log))
            with stages("root: check the emulated CPU"):
                cpuinfo = verify_cpu(root, log)
            with stages("root: pip install the wheel with the device extras"):
                installed = install_wheel(root, wheel, log)
            versions = root_versions(root, log)
            if versions.get("tensorflow") != "absent" or versions.get("onnx") != "absent":
                raise CheckFailed(f"the device venv holds tensorflow {versions['tensorflow']} / onnx {versions['onnx']}")
            info.update({"cpu": cpu, "cpuinfo": cpuinfo, "root": str(root.path), "versions": versions,
                         "wheel": wheel.name, "pip_install": [r.replace(f"./{wheel.name}", "edgecnn") for r in installed]})
            yield root, info
