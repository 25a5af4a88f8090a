"""The one interface every device target implements (the runner), and its options.

A runner owns a loaded model on one target. It takes a batch already encoded in the input tensor's
dtype (see edgecnn.preprocess.InputEncoder) and returns the raw output tensor; pre/post-processing live
in edgecnn.preprocess and devices/classify.py so that every target, and convert's verification, share them.
"""
from __future__ import annotations

import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecnn.manifest import TensorSpec


@dataclass(frozen=True)
class RunnerOptions:
    """How a runner loads and runs a model (threads, accelerator, probe, warm-up)."""

    threads: Optional[int] = None         # None: the machine's cores
    device: Optional[str] = None          # Edge TPU selector ("usb:0", "pci:0"), CUDA device id for gpu
    allow_cpu_fallback: bool = False      # gpu/edgetpu: run anyway when the accelerator is not really used
    use_xnnpack: bool = True
    probe: bool = True                    # load untrusted model files in a child process first (devices/modelcheck.py)
    # One invoke at load time, so a model that fails only when run fails there (LiteRT). None: only when the
    # bytes have not passed the probe, whose child invoked them with the same runtime.
    warm_up: Optional[bool] = None
    # (height, width) for a model whose input height/width are dynamic (-1): the load-time warm-up runs at this
    # size (from --size) instead of guessing 1; the dynamic axes after the batch take them in order.
    input_hw: Optional[tuple[int, int]] = None


class Runner(abc.ABC):
    """A model loaded on one target. Use as a context manager; ``close`` frees it."""

    target: str
    model_path: Path
    input: TensorSpec
    output: TensorSpec
    outputs: tuple[TensorSpec, ...] = ()  # every output, ``output`` first (devices/model_info.py reads them)
    sha256: str = ""  # of the bytes that were checked and loaded (set by open_runner); "" when not known

    @abc.abstractmethod
    def invoke(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (in ``self.input.dtype``, shape (N, *input.shape[1:])); return the raw output."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Runtime name and version, delegates / execution providers actually in use, threads."""

    def input_view(self) -> Optional[np.ndarray]:
        """A writable view of the runtime's own one-sample input tensor, for encoding a frame in place; None when
        the runtime has none (the caller then passes its own buffer to ``invoke``). See LiteRTRunner."""
        return None

    def invoke_in_place(self) -> np.ndarray:
        """Run on what was written into ``input_view()``; the raw output."""
        raise NotImplementedError(f"{type(self).__name__} has no input view")

    def embedded_manifest(self) -> Optional[str]:
        """The manifest JSON embedded in the model file at conversion, or None."""
        return None

    def close(self) -> None:  # noqa: B027 - optional for runners with nothing to free
        """Release the model."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
