"""The edgetpu target: model checks, and the real delegate-loading path up to the Edge TPU library missing here.

The only test double is FakeEdgeTpuLoader, standing in for libedgetpu's load_delegate on a machine where
the library is installed but no Coral device answers (there is no Edge TPU on this machine).
"""
from __future__ import annotations

import pytest

from edgecnn.devices.base import RunnerOptions
from edgecnn.devices.edgetpu import (delegate_options, library_loadable, library_name, load_edgetpu_delegate,
                                     open_edgetpu)
from edgecnn.devices.runners import open_runner
from edgecnn.errors import DeviceError, RuntimeMissingError, UsageError


class FakeEdgeTpuLoader:
    """Stands in for load_delegate with libedgetpu installed but no Edge TPU attached: it records what it was
    asked to load and fails the way libedgetpu does then (a ValueError from LiteRT's delegate loader)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, library: str, options: dict | None = None):
        self.calls.append((library, dict(options or {})))
        raise ValueError(f"Failed to load delegate from {library}")


def test_library_names_per_platform():
    assert library_name("Linux") == "libedgetpu.so.1"
    assert library_name("Darwin") == "libedgetpu.1.dylib"
    assert library_name("Windows") == "edgetpu.dll"
    with pytest.raises(RuntimeMissingError, match="not available for Plan9"):
        library_name("Plan9")


def test_float_model_is_refused_before_anything_loads(device_models):
    with pytest.raises(UsageError, match="not a full-int8 model .*float32.*edgetpu_compiler"):
        open_runner(device_models.fp32, "edgetpu")


def test_uncompiled_int8_model_is_refused_unless_cpu_fallback(device_models):
    with pytest.raises(UsageError, match="int8 but was not compiled for the Edge TPU.*edgetpu_compiler.*--allow-cpu-fallback"):
        open_runner(device_models.int8, "edgetpu")


@pytest.mark.skipif(library_loadable(library_name()), reason="this machine has the Edge TPU library")
def test_real_load_path_reports_the_missing_library(device_models):
    """No double: the dynamic loader really looks for libedgetpu.so.1 (the first step of load_delegate) and fails."""
    with pytest.raises(RuntimeMissingError, match=r"Edge TPU runtime library libedgetpu.so.1 is not installed.*libedgetpu1-std"):
        open_runner(device_models.int8, "edgetpu", RunnerOptions(allow_cpu_fallback=True, device="usb:0"))


def test_no_attached_edge_tpu_is_a_device_error_and_device_goes_to_the_delegate(device_models):
    loader = FakeEdgeTpuLoader()
    with pytest.raises(DeviceError, match=r"no Edge TPU found \(device usb:0.*plug in the Coral"):
        open_edgetpu(device_models.int8, RunnerOptions(allow_cpu_fallback=True, device="USB:0"),
                     load_delegate=loader, library_present=lambda name: True)
    assert loader.calls == [(library_name(), {"device": "usb:0"})]


def test_no_device_option_passes_no_delegate_options():
    loader = FakeEdgeTpuLoader()
    with pytest.raises(DeviceError, match="device any"):
        load_edgetpu_delegate(RunnerOptions(), loader, library="libedgetpu.so.1", library_present=lambda n: True)
    assert loader.calls == [("libedgetpu.so.1", {})]


@pytest.mark.parametrize("device", ["usb:x", "spi:0", "usb:0:1"])
def test_bad_device_selectors_are_usage_errors(device):
    with pytest.raises(UsageError, match="Edge TPU device"):
        delegate_options(RunnerOptions(device=device))


@pytest.mark.parametrize("device,expected", [("usb", "usb"), ("pci:1", "pci:1"), (":0", ":0")])
def test_good_device_selectors(device, expected):
    assert delegate_options(RunnerOptions(device=device)) == {"device": expected}
