"""Name tables: exact (case-insensitive) lookup, and a did-you-mean listing the valid names."""
from __future__ import annotations

import pytest

from edgecnn.errors import UnknownNameError, UsageError
from edgecnn.registry import lookup, split_names

FORMATS = {"tflite-int8": 1, "tflite-fp32": 2, "onnx-int8": 3, "onnx-fp32": 4}


def test_exact_names_ignore_case_and_spaces():
    assert lookup(FORMATS, "tflite-int8", "format") == 1
    assert lookup(FORMATS, "  ONNX-FP32 ", "format") == 4


def test_a_typo_gets_the_closest_name_and_the_valid_list():
    with pytest.raises(UnknownNameError) as exc:
        lookup(FORMATS, "tflite-in8", "format")
    text = str(exc.value)
    assert text.startswith("unknown format 'tflite-in8'")
    assert "did you mean 'tflite-int8'?" in text
    assert "onnx-fp32, onnx-int8, tflite-fp32, tflite-int8" in text and "\n" not in text
    assert isinstance(exc.value, UsageError) and exc.value.exit_code == 2


def test_nothing_close_lists_the_valid_names_only():
    with pytest.raises(UnknownNameError) as exc:
        lookup(FORMATS, "coreml", "format")
    assert "did you mean" not in str(exc.value) and "valid formats: onnx-fp32" in str(exc.value)


def test_split_names():
    assert split_names(" tflite-int8, ,onnx-fp32,") == ["tflite-int8", "onnx-fp32"]
    assert split_names("") == []
