"""Stand-ins for the Raspberry Pi AI Camera, which cannot exist here: picamera2's ``Picamera2`` and ``IMX500``.

Everything edgecnn does up to that boundary is real (devices/imx500.py, the live loop, decoding, labels,
JSON lines). The stand-in "sensor" runs a real network on each frame it shows, the way the IMX500 runs its
network on the image it captures: the MNIST CNN as int8 TFLite in LiteRT, through edgecnn's own runner, with
the manifest's preprocessing; it hands back what picamera2 hands back: a float32 output tensor per frame
(``CnnOutputTensor``) and the sensor's inference time (``CnnKpiInfo``).

Also here: ``write_stand_in_rpk``, a file with the block layout of an IMX500 ``network.rpk`` (as picamera2's
reader walks it) but no real firmware, since imx500-package exists only on a Pi.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecnn.devices.imx500 import CameraApi
from edgecnn.manifest import ArtifactEntry, Manifest, TensorSpec

KPI_MS = 3.25  # the stand-in sensor's reported inference time


def write_stand_in_rpk(path: Path, payload: bytes = b"\0" * 64, blocks: int = 2) -> Path:
    """Blocks of [b"9464", size, 52 header bytes, payload, b"3695"], then a cpio trailer: the .rpk layout."""
    block = b"9464" + len(payload).to_bytes(4, "big") + b"\0" * 52 + payload + b"3695"
    Path(path).write_bytes(block * blocks + b"070701" + b"0" * 104 + b"TRAILER!!!\0")
    return Path(path)


def imx500_manifest(manifest: Manifest, height: int = 28, width: int = 28) -> Manifest:
    """``manifest`` plus the imx500 entry ``edgecnn convert --formats imx500`` writes (as for the MNIST CNN)."""
    entry = ArtifactEntry(name="imx500", file=f"{manifest.model_name}_imx500.zip", size_bytes=1, sha256="0" * 64,
                          input=TensorSpec("image:0", (1, height, width, 1), "uint8", 0.00390625),
                          output=TensorSpec("out:0", (1, len(manifest.labels)), "float32"), precision="int8")
    return manifest.with_artifacts((*manifest.artifacts, entry))


class StandInSensor:
    """The network the stand-in camera runs on each frame: a real .tflite through edgecnn's CPU runner."""

    def __init__(self, tflite: Path, manifest: Manifest) -> None:
        from edgecnn.devices.base import RunnerOptions
        from edgecnn.devices.classify import Classifier

        self.classifier = Classifier.open(tflite, "cpu", RunnerOptions(probe=False), manifest=manifest)

    def outputs(self, frame_bgr: np.ndarray) -> np.ndarray:
        from edgecnn.manifest import ColorOrder

        return self.classifier.scores(self.classifier.prepare(frame_bgr, ColorOrder.BGR)[None])[0].astype(np.float32)


@dataclasses.dataclass
class StandInWorld:
    """What the stand-in camera shows (BGR frames) and how it behaves; shared by the two stand-in classes."""

    frames: np.ndarray
    sensor: Optional[StandInSensor] = None
    input_size: tuple[int, int] = (28, 28)       # (width, height), as IMX500.get_input_size returns it
    frames_without_tensor: int = 0               # the network is still loading for this many frames
    camera_present: bool = True
    opened: list = dataclasses.field(default_factory=list)
    shown: int = 0
    closed: int = 0
    aspect_ratio_set: bool = False


def stand_in_api(world: StandInWorld) -> CameraApi:
    """picamera2's (Picamera2, IMX500) replaced by stand-ins that act on ``world``."""

    class StandInIMX500:
        """Stand-in for picamera2.devices.IMX500."""

        def __init__(self, network_file: str) -> None:
            if not world.camera_present:
                raise RuntimeError("IMX500: Requested camera dev-node not found")  # picamera2's own words
            world.opened.append(network_file)
            self.camera_num = 0

        def get_input_size(self) -> tuple[int, int]:
            return world.input_size

        def show_network_fw_progress_bar(self) -> None:
            pass

        def set_auto_aspect_ratio(self) -> None:
            world.aspect_ratio_set = True

        def get_outputs(self, metadata: dict, add_batch: bool = False) -> Optional[list[np.ndarray]]:
            tensor = metadata.get("CnnOutputTensor")
            return None if not tensor else [np.fromiter(tensor, dtype=np.float32)]

        @staticmethod
        def get_kpi_info(metadata: dict) -> Optional[tuple[float, float]]:
            return metadata.get("CnnKpiInfo")

    class StandInRequest:
        def __init__(self, image: np.ndarray, metadata: dict) -> None:
            self.image, self.metadata, self.released = image, metadata, False

        def make_array(self, name: str) -> np.ndarray:
            assert name == "main"
            return self.image

        def get_metadata(self) -> dict:
            return self.metadata

        def release(self) -> None:
            self.released = True

    class StandInPicamera2:
        """Stand-in for picamera2.Picamera2: shows ``world.frames`` in turn."""

        def __init__(self, camera_num: int = 0) -> None:
            self.config: Any = None

        def create_preview_configuration(self, main: dict, buffer_count: int = 4) -> dict:
            return {"main": main, "buffer_count": buffer_count}

        def configure(self, config: dict) -> None:
            self.config = config

        def start(self) -> None:
            pass

        def capture_request(self) -> StandInRequest:
            image = world.frames[world.shown % len(world.frames)]
            world.shown += 1
            if world.shown <= world.frames_without_tensor:
                return StandInRequest(image, {})
            tensor = world.sensor.outputs(image).tolist()
            return StandInRequest(image, {"CnnOutputTensor": tensor, "CnnKpiInfo": (KPI_MS, 0.5)})

        def stop(self) -> None:
            pass

        def close(self) -> None:
            world.closed += 1

    return CameraApi(StandInPicamera2, StandInIMX500)
