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
    threads: Optional[int] = None         # None: the machine's cores
    device: Optional[str] = None          # Edge TPU selector ("usb:0", "pci:0"), CUDA device id for gpu
    allow_cpu_fallback: bool = False      # gpu/edgetpu: run anyway when the accelerator is not really used
    use_xnnpack: bool = True
    probe: bool = True                    # load untrusted model files in a child process first (devices/modelcheck.py)


class Runner(abc.ABC):
    """A model loaded on one target. Use as a context manager; ``close`` frees it."""

    target: str
    model_path: Path
    input: TensorSpec
    output: TensorSpec

    @abc.abstractmethod
    def invoke(self, batch: np.ndarray) -> np.ndarray:
        """Run one batch (in ``self.input.dtype``, shape (N, *input.shape[1:])); return the raw output."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """Runtime name and version, delegates / execution providers actually in use, threads."""

    def close(self) -> None:  # noqa: B027 - optional for runners with nothing to free
        """Release the model."""

    def __enter__(self) -> "Runner":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
