"""The ``imx500`` target: the Raspberry Pi AI Camera, whose Sony IMX500 sensor runs the network itself.

The network (``network.rpk``, made on the Pi by ``imx500-package`` from the packerOut.zip that
``edgecnn convert --formats imx500`` writes) is loaded into the sensor through picamera2's IMX500 support;
every frame then comes with the output tensor the sensor computed on it (image metadata
``CnnOutputTensor``, already dequantized to float32). So here the camera is both the frame source and the
accelerator: ``open_session`` gives the live loop (devices/live.py) a source whose frames carry their
output tensor and a classifier that decodes it with the manifest's labels and output kind
(edgecnn.preprocess.decode_scores, the decoder every target shares; a multi-label head also lists the
classes over ``--threshold``, as on every target).

The sensor cannot be fed arrays, so ``open_runner(..., "imx500")`` (verification, bench) is refused;
``edgecnn convert`` verifies the same quantized network on the host instead. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from edgecnn.devices.base import RunnerOptions
from edgecnn.devices.classify import ClassifyResult, Prediction, StageTimes, read_labels
from edgecnn.devices.sources import FrameReadError, FrameSource, SourceKind, SourceSpec, as_bgr
from edgecnn.errors import DataError, DeviceError, ManifestError, RuntimeMissingError, SourceError, UsageError
from edgecnn.manifest import Manifest, OutputKind, ResizeMode, TensorSpec, find_manifest
from edgecnn.preprocess import above, class_count, decode_scores, top_k

FORMAT_NAME = "imx500"           # the manifest entry ``edgecnn convert --formats imx500`` writes
LOAD_TIMEOUT_S = 600.0           # uploading a network to the sensor "can take several minutes" (picamera2)
MAX_FRAMES_WITHOUT_TENSOR = 30   # frames in a row without an output tensor before a read counts as failed
INSTALL_HINT = "on the Pi: sudo apt install imx500-all python3-picamera2"


class SensorFrame(np.ndarray):
    """A BGR frame (H, W, 3) uint8 that carries the output tensor the sensor computed on it."""

    cnn_output: Optional[np.ndarray] = None   # float32, flat
    dnn_ms: Optional[float] = None            # the sensor's own inference time (CnnKpiInfo), when reported

    @classmethod
    def wrap(cls, image: np.ndarray, output: Optional[np.ndarray], dnn_ms: Optional[float]) -> "SensorFrame":
        frame = np.asarray(image).view(cls)
        frame.cnn_output = None if output is None else np.asarray(output, dtype=np.float32).reshape(-1)
        frame.dnn_ms = dnn_ms
        return frame

    def __array_finalize__(self, obj: Any) -> None:
        self.cnn_output = getattr(obj, "cnn_output", None)
        self.dnn_ms = getattr(obj, "dnn_ms", None)


@dataclass(frozen=True)
class CameraApi:
    """picamera2's two classes this target uses: ``Picamera2`` (the camera) and ``IMX500`` (the sensor's network)."""

    Picamera2: Any
    IMX500: Any


def camera_api() -> CameraApi:
    """picamera2's ``Picamera2`` and ``IMX500`` classes (a Pi with the AI Camera stack installed)."""
    try:
        from picamera2 import Picamera2  # noqa: PLC0415 - only on a Pi
        from picamera2.devices import IMX500  # noqa: PLC0415
    except ImportError:
        raise RuntimeMissingError("--device imx500 needs picamera2 with IMX500 support", INSTALL_HINT) from None
    return CameraApi(Picamera2, IMX500)


def open_imx500(model_path: Path, options: RunnerOptions = RunnerOptions()) -> Any:
    """The device table's opener: the sensor takes no arrays, so only ``edgecnn run`` can use this target."""
    raise UsageError(f"--device imx500 runs {Path(model_path).name} inside the camera on what it sees, "
                     "so it cannot be given arrays (verification, bench)",
                     f"use edgecnn run {Path(model_path).name} --device imx500 on the Pi; edgecnn convert "
                     "--formats imx500 verifies the same network on the host")


def check_source(spec: SourceSpec) -> None:
    """The IMX500 classifies its own image: only the camera itself is a source."""
    if spec.kind == SourceKind.PICAMERA or (spec.kind == SourceKind.CAMERA and spec.target == "0"):
        return
    raise UsageError(f"--device imx500 classifies what the AI Camera sees, not {spec.describe()}",
                     "leave --source out (or give --source picamera2)")


class Session:
    """An IMX500 with its network loaded and a running Picamera2; ``classifier`` and ``source_factory`` for the
    live loop. Use as a context manager."""

    def __init__(self, model_path: Path, manifest: Optional[Manifest], labels: Sequence[str], kind: OutputKind,
                 top: int, size: Optional[tuple[int, int]], api: Any, threshold: float = 0.5) -> None:
        self.model_path, self.manifest, self.labels = Path(model_path), manifest, tuple(labels)
        self.kind, self.top, self.size, self.api = OutputKind(kind), max(1, int(top)), size, api
        self.threshold = float(threshold)
        self.imx500: Any = None
        self.camera: Any = None
        self.without_tensor = 0
        self.classifier = SensorClassifier(self)

    # -- lifetime ------------------------------------------------------------------------------------
    def open(self) -> "Session":
        try:
            self.imx500 = self.api.IMX500(str(self.model_path.resolve()))
        except (RuntimeError, OSError, StopIteration) as exc:
            raise DeviceError(f"no IMX500 AI Camera could load {self.model_path.name} ({type(exc).__name__}: {exc})",
                              "check the camera cable and `rpicam-hello --list-cameras`; the network must come from "
                              "imx500-package") from None
        self._check_input_size()
        try:
            self.camera = self.api.Picamera2(self.imx500.camera_num)
            main = {"format": "RGB888", **({"size": self.size} if self.size else {})}
            # "RGB888" is B,G,R bytes in memory (libcamera names by word order): the BGR frames OpenCV draws on.
            self.camera.configure(self.camera.create_preview_configuration(main=main, buffer_count=12))
            self.imx500.show_network_fw_progress_bar()
            self.camera.start()
        except Exception as exc:  # noqa: BLE001 - libcamera raises RuntimeError, IndexError, ...
            self.close()
            raise SourceError(f"cannot start the AI Camera ({type(exc).__name__}: {exc})",
                              "check `rpicam-hello --list-cameras`") from None
        if self.manifest is not None and self.manifest.preprocessing.resize == ResizeMode.CENTER_CROP:
            self.imx500.set_auto_aspect_ratio()  # the sensor crops like the training pipeline did
        return self

    def close(self) -> None:
        camera, self.camera = self.camera, None
        if camera is not None:
            for step in (camera.stop, camera.close):
                try:
                    step()
                except Exception:  # noqa: BLE001 - closing must not mask why the run ended
                    pass

    def __enter__(self) -> "Session":
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- frames --------------------------------------------------------------------------------------
    def capture(self) -> SensorFrame:
        """The next frame that carries an output tensor (FrameReadError after too many without one)."""
        if self.camera is None:
            raise FrameReadError("the AI Camera is not open")
        for _ in range(MAX_FRAMES_WITHOUT_TENSOR):
            request = self.camera.capture_request()
            try:
                image, metadata = request.make_array("main"), request.get_metadata()
            finally:
                request.release()
            outputs = self.imx500.get_outputs(metadata)
            if outputs:
                kpi = self.imx500.get_kpi_info(metadata)
                return SensorFrame.wrap(as_bgr(image), np.asarray(outputs[0]), None if kpi is None else float(kpi[0]))
            self.without_tensor += 1
        raise FrameReadError(f"{MAX_FRAMES_WITHOUT_TENSOR} frames in a row came without an output tensor "
                             "(is the network still loading onto the sensor?)")

    def source_factory(self, spec: SourceSpec) -> FrameSource:
        return SensorSource(spec, self)

    def describe(self) -> dict[str, Any]:
        return {"runtime": "IMX500 (picamera2)", "target": "imx500", "model": self.model_path.name,
                "network_in_sensor": True, "frames_without_tensor": self.without_tensor}

    def _check_input_size(self) -> None:
        if self.manifest is None:
            return
        width, height = (int(v) for v in self.imx500.get_input_size())
        prep = self.manifest.preprocessing
        if (height, width) != (prep.height, prep.width):
            raise ManifestError(f"{self.model_path.name} takes {height}x{width} images but the manifest is for "
                                f"{prep.height}x{prep.width}", "use the manifest written with this network")


class SensorSource(FrameSource):
    """Frames from a Session's camera (opened once by the session; reopening only restarts capture)."""

    def __init__(self, spec: SourceSpec, session: Session) -> None:
        super().__init__(spec)
        self.session = session

    def open(self) -> None:
        if self.session.camera is None:
            self.session.open()

    def read(self) -> Optional[np.ndarray]:
        try:
            return self.session.capture()
        except FrameReadError:
            raise
        except Exception as exc:  # noqa: BLE001 - any libcamera failure is a reopenable read failure
            raise FrameReadError(f"AI Camera capture failed ({type(exc).__name__}: {exc})") from None


@dataclass
class SensorClassifier:
    """``classify(frame)`` for frames that carry the sensor's output: decode, label, top-k (no inference here)."""

    session: Session
    checked: bool = field(default=False)

    def classify(self, frame: np.ndarray, source_color: Any = None) -> ClassifyResult:
        output = getattr(frame, "cnn_output", None)
        if output is None:
            raise DataError("the frame carries no IMX500 output tensor", "frames must come from the AI Camera session")
        t0 = time.perf_counter()
        session = self.session
        if not self.checked:
            classes = class_count(session.kind, int(output.size))
            if session.labels and classes != len(session.labels):
                raise ManifestError(f"{session.model_path.name} has {classes} classes ({session.kind.value} head of "
                                    f"{output.size} output(s)) but there are {len(session.labels)} labels",
                                    "use the manifest or labels file written with this network")
            self.checked = True
        spec = TensorSpec(name="CnnOutputTensor", shape=(1, int(output.size)), dtype="float32")
        scores = decode_scores(output.reshape(1, -1), spec, session.kind)[0]
        top = tuple(self._prediction(i, s) for i, s in top_k(scores, session.top))
        over = None
        if session.kind == OutputKind.MULTILABEL_SIGMOID:
            over = tuple(self._prediction(i, s) for i, s in above(scores, session.threshold))
        post_ms = (time.perf_counter() - t0) * 1e3
        dnn_ms = getattr(frame, "dnn_ms", None)
        # The sensor resizes and normalises on-chip: no preprocessing here; inference is its own KPI time.
        return ClassifyResult(top, StageTimes(0.0, float(dnn_ms or 0.0), post_ms), over)

    def _prediction(self, index: int, score: float) -> Prediction:
        labels = self.session.labels
        return Prediction(index, labels[index] if index < len(labels) else str(index), score)

    def describe(self) -> dict[str, Any]:
        return {**self.session.describe(), "classes": len(self.session.labels), "top_k": self.session.top,
                "manifest": self.session.manifest is not None, "output_kind": self.session.kind.value}

    def close(self) -> None:
        self.session.close()


def open_session(model_path: Path | str, spec: SourceSpec, manifest: Any = None, labels: Any = None,
                 top: int = 5, output_kind: Optional[OutputKind] = None, api: Any = None,
                 threshold: float = 0.5) -> Session:
    """A not yet opened Session for ``model_path`` (.rpk) with the manifest beside it (or ``manifest``).

    ``api``: picamera2's classes (default ``camera_api()``); tests pass a stand-in for the camera.
    """
    from edgecnn.devices.modelcheck import ModelFormat, check_model  # noqa: PLC0415

    check_source(spec)
    path = Path(model_path)
    if not path.is_file():
        raise UsageError(f"{path} is not a network file", "give the network.rpk that imx500-package wrote")
    if check_model(path, probe=False) != ModelFormat.RPK:
        raise UsageError(f"--device imx500 runs IMX500 networks (.rpk), not {path.name}",
                         "package packerOut.zip with imx500-package on the Pi and give its network.rpk")
    loaded = _manifest(path, manifest)
    names = _labels(labels, loaded)
    kind = output_kind or (loaded.output_kind if loaded else OutputKind.PROBABILITIES)
    size = (spec.width, spec.height) if spec.width and spec.height else None
    return Session(path, loaded, names, kind, top, size, api or camera_api(), threshold)


def _manifest(path: Path, manifest: Any) -> Optional[Manifest]:
    if isinstance(manifest, Manifest):
        loaded = manifest
    elif manifest is not None:
        loaded = Manifest.read(Path(manifest))
    else:
        found = find_manifest(path)
        loaded = Manifest.read(found) if found else None
    if loaded is not None and not any(a.name == FORMAT_NAME for a in loaded.artifacts):
        raise ManifestError(f"the manifest for {path.name} lists no imx500 artifact, so it describes another conversion",
                            "use the manifest that edgecnn convert --formats imx500 wrote")
    return loaded


def _labels(labels: Any, manifest: Optional[Manifest]) -> tuple[str, ...]:
    if isinstance(labels, (str, Path)):
        return read_labels(Path(labels))
    if labels is not None:
        return tuple(str(label) for label in labels)
    return tuple(manifest.labels) if manifest is not None else ()
