"""Each concern has one home in the product code: a second copy is how a fix in one place silently misses
the others. The scan reads the source of every product module (edgecnn/, converters/, devices/) with ast."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edgecnn", "converters", "devices")


# Run alone by the IMX500 toolchain's own Python (TensorFlow 2.15), where edgecnn is not installed.
STANDALONE = {"converters/imx500_worker.py"}


def _modules() -> dict[str, ast.AST]:
    return {name: ast.parse(path.read_text(encoding="utf-8"))
            for folder in PACKAGES for path in sorted((ROOT / folder).rglob("*.py"))
            if (name := str(path.relative_to(ROOT))) not in STANDALONE}


def _called(tree: ast.AST, names: set[str]) -> bool:
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in names:
                return True
    return False


def _attribute_used(tree: ast.AST, names: set[str]) -> bool:
    return any(isinstance(node, ast.Attribute) and node.attr in names for node in ast.walk(tree))


def _defines(tree: ast.AST, names: set[str]) -> bool:
    return any(isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in names for node in ast.walk(tree))


# concern -> (where it may live, how a second home would show)
HOMES = {
    "a LiteRT interpreter is made": (["devices/litert.py"],
                                     lambda t: _called(t, {"Interpreter", "interpreter_cls"})),
    "a TFLite graph is read through the interpreter's private op list": ([], lambda t: _attribute_used(
        t, {"_get_ops_details", "_get_tensor_details"})),
    "a TFLiteConverter is set up": (["converters/tflite.py"], lambda t: _attribute_used(t, {"TFLiteConverter"})),
    "TensorFlow's flatbuffer utilities are used (writing the embedded manifest)": (
        ["converters/tflite.py"], lambda t: _attribute_used(t, {"read_model", "write_model"})),
    "a labels file is read": (["edgecnn/fileio.py"], lambda t: _defines(t, {"read_labels", "_read_labels"})),
    "a library message is cut to its first line": (["edgecnn/errors.py"],
                                                   lambda t: _defines(t, {"first_line", "_first_line"})),
    "the Pi's throttling flags are read": (["devices/doctor.py"], lambda t: any(
        isinstance(n, ast.Constant) and n.value == "get_throttled" for n in ast.walk(t))),
    "model inputs are encoded (pixels or floats to the tensor's dtype)": (
        ["edgecnn/preprocess.py"], lambda t: _defines(t, {"encode", "_encode", "encode_float", "encode_into"})),
}


@pytest.mark.parametrize("concern", sorted(HOMES))
def test_one_home(concern):
    allowed, found_in = HOMES[concern]
    modules = _modules()
    assert len(modules) > 40  # the scan really read the product code
    homes = sorted(name for name, tree in modules.items() if found_in(tree))
    assert homes == sorted(allowed), f"{concern}: {homes}"
