"""Typed errors shared by every layer.

Each carries a one-line message that says what was wrong and what to do; the CLI prints it and exits
with ``exit_code`` (2 for bad input, 1 for a result that failed a check the user asked for).
"""
from __future__ import annotations

import re


def _single_line(text: object) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", str(text)).strip()


class EdgecnnError(Exception):
    """Base of every error the CLI reports as one line, without a traceback."""

    exit_code = 2

    def __init__(self, message: str, hint: str = "") -> None:
        # One line, whatever the caller passed (exception texts from libraries can span lines).
        self.message = _single_line(message).rstrip(".")
        self.hint = _single_line(hint).rstrip(".")
        super().__init__(self.one_line())

    def one_line(self) -> str:
        return f"{self.message}: {self.hint}" if self.hint else self.message


class UsageError(EdgecnnError):
    """An option, name or combination of options that cannot work."""


class UnknownNameError(UsageError):
    """A format, device or preset name that is not in its table."""


class InputPathError(EdgecnnError):
    """A path that is missing, of the wrong kind, or unreadable."""


class ModelLoadError(EdgecnnError):
    """A model file that cannot be loaded: corrupt, truncated, wrong format, unsafe."""


class UnsafeModelError(ModelLoadError):
    """A model that would execute code on load (Lambda layers, custom objects) under safe mode."""


class DataError(EdgecnnError):
    """Calibration or validation data that is empty, of the wrong shape, dtype or range."""


class ManifestError(EdgecnnError):
    """A manifest that is malformed or does not match its model."""


class OutputExistsError(EdgecnnError):
    """An output that exists and would be overwritten without --force."""


class OutputPathError(EdgecnnError):
    """An output location that cannot be written."""


class ConversionError(EdgecnnError):
    """A converter that failed on a model it should handle."""


class ConversionFailedError(EdgecnnError):
    """One or more formats failed to build or were refused by verification (NaN outputs, a float artifact that
    disagrees with Keras, chance-level agreement). The others are published; ``result`` carries the report."""

    exit_code = 1


class RuntimeMissingError(EdgecnnError):
    """A runtime library (LiteRT, ONNX Runtime, Edge TPU, CUDA) that is not installed or not loadable."""


class DeviceError(EdgecnnError):
    """A device target that cannot run: no accelerator attached, silent CPU fallback refused, etc."""


class SourceError(EdgecnnError):
    """A frame source (camera, file, stream) that cannot be opened."""


class AccuracyBudgetError(EdgecnnError):
    """An artifact that lost more accuracy than --max-drop allows; its files and report are kept."""

    exit_code = 1
