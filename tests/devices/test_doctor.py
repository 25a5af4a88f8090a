"""`edgecnn doctor` on this machine, and on a stand-in Raspberry Pi tree (its /proc, /sys, /dev and vcgencmd)."""
from __future__ import annotations

import json
import os
import stat

import pytest
from rich.console import Console

from edgecnn.cli import main
from edgecnn.devices.doctor import Status, decode_throttled, render, run_checks
from edgecnn.devices.edgetpu import library_loadable, library_name


def _by_name(checks):
    return {c["name"] if isinstance(c, dict) else c.name: c for c in checks}


def test_doctor_json_reports_this_machine(capsys):
    assert main(["doctor", "--json"]) == 0
    checks = _by_name(json.loads(capsys.readouterr().out)["checks"])
    assert checks["LiteRT runtime"]["status"] == "ok" and checks["LiteRT runtime"]["found"].startswith("ai_edge_litert")
    assert checks["XNNPACK"]["status"] == "ok"
    assert "CPUExecutionProvider" in checks["ONNX Runtime providers"]["found"]
    assert checks["cpu cores"]["found"].startswith(str(os.cpu_count()))
    for name in ("Edge TPU library", "Edge TPU devices", "cameras", "OpenCV", "Raspberry Pi", "NVIDIA driver"):
        assert name in checks
    if not library_loadable(library_name()):
        assert checks["Edge TPU library"]["status"] == "missing"
        assert "libedgetpu1-std" in checks["Edge TPU library"]["fix"]
    if "CUDAExecutionProvider" not in checks["ONNX Runtime providers"]["found"]:
        assert "onnxruntime-gpu" in checks["ONNX Runtime providers"]["fix"]


def test_doctor_table(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "edgecnn doctor" in out and "LiteRT runtime" in out and "to fix" in out


def test_throttle_bits():
    assert decode_throttled(0) == []
    assert decode_throttled(0x50005) == ["under-voltage now", "throttled now", "under-voltage has occurred",
                                         "throttling has occurred"]


@pytest.fixture
def fake_pi(tmp_path, monkeypatch):
    """A stand-in for a Raspberry Pi 4's /proc, /sys and /dev, with a Coral USB stick and a camera, and a
    stand-in vcgencmd (the Pi firmware tool) reporting past under-voltage."""
    root = tmp_path / "root"
    (root / "proc/device-tree").mkdir(parents=True)
    (root / "proc/device-tree/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    (root / "sys/class/thermal/thermal_zone0").mkdir(parents=True)
    (root / "sys/class/thermal/thermal_zone0/temp").write_text("51540\n")
    (root / "dev").mkdir()
    for node in ("video0", "video10"):
        (root / "dev" / node).write_text("")
    (root / "sys/class/video4linux/video0").mkdir(parents=True)
    (root / "sys/class/video4linux/video0/name").write_text("unicam\n")
    # The AI Camera's sensor: a v4l2 sub-device whose driver module is imx500 (as sysfs links it).
    (root / "sys/module/imx500").mkdir(parents=True)
    (root / "sys/bus/i2c/drivers/imx500").mkdir(parents=True)
    (root / "sys/bus/i2c/drivers/imx500/module").symlink_to(root / "sys/module/imx500")
    (root / "sys/devices/i2c/10-001a").mkdir(parents=True)
    (root / "sys/devices/i2c/10-001a/driver").symlink_to(root / "sys/bus/i2c/drivers/imx500")
    (root / "sys/class/video4linux/v4l-subdev2").mkdir(parents=True)
    (root / "sys/class/video4linux/v4l-subdev2/device").symlink_to(root / "sys/devices/i2c/10-001a")
    usb = root / "sys/bus/usb/devices/2-1"
    usb.mkdir(parents=True)
    (usb / "idVendor").write_text("18d1\n")
    (usb / "idProduct").write_text("9302\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "vcgencmd"
    tool.write_text('#!/bin/sh\ncase "$1" in get_throttled) echo "throttled=0x50000";; '
                    "measure_temp) echo \"temp=52.1'C\";; esac\n")
    tool.chmod(tool.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return root


def test_doctor_on_a_pi(fake_pi):
    checks = _by_name(run_checks(fake_pi))
    assert checks["Raspberry Pi"].status == Status.OK and checks["Raspberry Pi"].found == "Raspberry Pi 4 Model B Rev 1.4"
    assert checks["temperature"].found == "52.1°C"
    assert checks["throttling"].status == Status.WARN
    assert checks["throttling"].found == "under-voltage has occurred, throttling has occurred"
    assert checks["cameras"].found == "/dev/video0 (unicam); /dev/video10"
    assert checks["Edge TPU devices"].found == "Coral USB Accelerator at usb 2-1"
    assert "picamera2" in checks
    assert checks["IMX500 AI Camera"].status == Status.OK and checks["IMX500 AI Camera"].found == "/dev/v4l-subdev2"
    console = Console(record=True, width=200)
    console.print(render(list(checks.values())))
    assert "Raspberry Pi 4 Model B" in console.export_text()


def test_doctor_without_vcgencmd_reads_sysfs_temperature(fake_pi, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    checks = _by_name(run_checks(fake_pi))
    assert checks["temperature"].found == "51.5°C"
    assert checks["throttling"].status == Status.INFO and "libraspberrypi-bin" in checks["throttling"].fix
