"""Name tables (formats, devices, presets) looked up by name with a "did you mean"."""
from __future__ import annotations

from typing import Mapping, TypeVar

from edgecnn.errors import UnknownNameError

T = TypeVar("T")


def lookup(table: Mapping[str, T], name: str, kind: str) -> T:
    """Return ``table[name]`` or raise UnknownNameError listing the valid names and the closest one."""
    key = name.strip().lower()
    if key in table:
        return table[key]
    import difflib  # noqa: PLC0415 - only for a wrong name; kept off the start path

    valid = ", ".join(sorted(table))
    close = difflib.get_close_matches(key, list(table), n=1, cutoff=0.5)
    hint = f"did you mean '{close[0]}'? Valid {kind}s: {valid}" if close else f"valid {kind}s: {valid}"
    raise UnknownNameError(f"unknown {kind} '{name}'", hint)


def split_names(text: str) -> list[str]:
    """Split a comma-separated option value ("tflite-int8,onnx-fp32") into names."""
    return [part.strip() for part in text.split(",") if part.strip()]
