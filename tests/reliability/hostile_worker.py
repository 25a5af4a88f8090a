"""A child process that loads (possibly hostile) model files on request, so a native crash kills only it.

Protocol: one JSON request per stdin line, ``{"path": ..., "loader": ..., "target": ...}``; one JSON reply
per stdout line, ``{"outcome": "loaded" | "error" | "unclear", "type": ..., "message": ...}``:

- ``loaded``: the file loaded (and, for device runners, ran one inference on zeros);
- ``error``: a typed EdgecnnError with a one-line message (the wanted outcome for a broken file);
- ``unclear``: any other exception (a defect: the user would see a traceback or an internal error).

Loaders: ``runner`` (devices.runners.open_runner without the child-process probe: the static checks alone
must keep LiteRT/ONNX Runtime from crashing), ``runner_probe`` (open_runner as ``edgecnn run`` calls it),
``keras`` (converters.keras_load.load_model, safe mode). The parent (tests/reliability/hostile.py) turns a
dead worker into a crash with its signal and a silent one into a hang.
"""
from __future__ import annotations

import json
import os
import sys
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
warnings.filterwarnings("ignore")


def load(request: dict) -> dict:
    from edgecnn.errors import EdgecnnError

    try:
        detail = LOADERS[request["loader"]](request)
    except EdgecnnError as exc:
        return {"outcome": "error", "type": type(exc).__name__, "message": str(exc)}
    except Exception as exc:  # noqa: BLE001 - reported to the parent as a defect
        return {"outcome": "unclear", "type": type(exc).__name__, "message": str(exc)[:500]}
    return {"outcome": "loaded", "detail": detail}


def _runner(request: dict, probe: bool) -> str:
    import numpy as np

    from edgecnn.devices.base import RunnerOptions
    from edgecnn.devices.runners import open_runner

    options = RunnerOptions(threads=1, probe=probe)
    with open_runner(request["path"], request.get("target", "cpu"), options) as runner:
        shape = tuple(1 if (d is None or d < 1) else int(d) for d in runner.input.shape)
        out = runner.invoke(np.zeros(shape, dtype=runner.input.dtype))
        if request.get("digits"):  # top-1 of real digits: tells a harmless mutation from silent damage
            return "top1:" + ",".join(str(i) for i in _top1(runner, np.load(request["digits"])))
        return f"ran: output {tuple(np.asarray(out).shape)}"


def _top1(runner, digits):
    import numpy as np

    from edgecnn.manifest import ColorOrder, Preprocessing
    from edgecnn.preprocess import InputEncoder

    encoder = InputEncoder.build(Preprocessing(height=28, width=28, color=ColorOrder.GRAY), runner.input)
    return [int(np.argmax(runner.invoke(encoder(digits[i:i + 1])))) for i in range(len(digits))]


def _keras(request: dict) -> str:
    from edgecnn.converters.keras_load import load_model

    loaded = load_model(request["path"], unsafe=bool(request.get("unsafe", False)))
    return f"{loaded.kind} {loaded.input_shape}->{loaded.output_shape}"


def _crash(request: dict) -> str:
    """The harness's own check: a real segfault in native code (ctypes reads address 0)."""
    import ctypes

    return str(ctypes.string_at(0))


def _hang(request: dict) -> str:
    import time

    time.sleep(3600)
    return "woke"


LOADERS = {
    "selftest_crash": _crash,
    "selftest_hang": _hang,
    "runner": lambda r: _runner(r, probe=False),
    "runner_probe": lambda r: _runner(r, probe=True),
    "keras": _keras,
}


def main() -> int:
    # Import the heavy modules once, before the first request, so the parent's timeouts measure loads only.
    import edgecnn.devices.runners  # noqa: F401
    if "--keras" in sys.argv:
        import edgecnn.converters.keras_load  # noqa: F401
        import keras  # noqa: F401
    # The protocol gets a private copy of stdout; fd 1 (where native libraries print) goes to stderr.
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    out.write(json.dumps({"ready": True}) + "\n")
    out.flush()
    for line in sys.stdin:
        if not line.strip():
            continue
        reply = load(json.loads(line))
        out.write(json.dumps(reply) + "\n")
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
