"""What a Ray node runs for ``--ray``: one chunk of samples through the device runner, in the local run's batches.

This module is imported on the nodes (it travels there with edgecnn.devices in Ray's runtime environment), so
it needs the device side only: numpy, the contract modules and the runners. Ray itself is imported inside
the functions, never at import time.

A LiteRT interpreter cannot be pickled, so the runner is built here, on the node, from the artifact's bytes
(fetched once per node from the object store). A worker process keeps its last runner open: the next chunk of
the same artifact reuses it instead of loading the model again.
"""
from __future__ import annotations

import atexit
import hashlib
import shutil
import socket
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgecnn.errors import EdgecnnError

# The runner this worker process has open: (key, runner, folder holding the artifact file).
_OPEN: dict[str, Any] = {}


def run_chunk(blob: np.ndarray, sha256: str, suffix: str, target: str, threads: int, samples: np.ndarray,
              start: int, stop: int, batch: int) -> tuple[str, Optional[np.ndarray], Optional[tuple[str, str]]]:
    """Raw outputs of ``samples[start:stop]``, invoked ``batch`` samples at a time (the local run's batches).

    ``blob``: the artifact's bytes (uint8), ``sha256`` their digest; ``samples``: every encoded sample, in the
    artifact's input dtype (the task slices its rows). Returns (node label, outputs, None), or (node label, None,
    (error class name, one-line message)) when the node cannot run the artifact: a missing runtime, a model its
    runtime refuses. Those come back as values, not exceptions, so Ray never retries them and the driver can
    name the node; exceptions are left to Ray (a crashed worker or node is retried elsewhere).
    """
    node = node_label()
    try:
        runner = _runner(blob, sha256, suffix, target, threads)
        part = samples[start:stop]
        outputs = [np.asarray(runner.invoke(np.ascontiguousarray(part[i:i + batch])))
                   for i in range(0, len(part), batch)]
        return node, np.concatenate(outputs), None
    except EdgecnnError as exc:
        return node, None, (type(exc).__name__, exc.one_line())
    except ImportError as exc:  # a runtime module the node lacks, raised before a runner could say so
        return node, None, ("RuntimeMissingError", f"cannot import {exc.name or exc}")


def node_label() -> str:
    """``host (ip, node id prefix)`` of the node this runs on."""
    import ray  # noqa: PLC0415 - only on a Ray worker

    node_id = ray.get_runtime_context().get_node_id()
    return f"{socket.gethostname()} ({ray.util.get_node_ip_address()}, {node_id[:8]})"


def _runner(blob: np.ndarray, sha256: str, suffix: str, target: str, threads: int) -> Any:
    key = f"{sha256}:{target}:{threads}"
    if _OPEN.get("key") == key:
        return _OPEN["runner"]
    _close()
    from edgecnn.devices.base import RunnerOptions  # noqa: PLC0415
    from edgecnn.devices.runners import open_runner  # noqa: PLC0415

    data = memoryview(np.ascontiguousarray(blob)).cast("B")
    if hashlib.sha256(data).hexdigest() != sha256:
        from edgecnn.errors import ModelLoadError  # noqa: PLC0415

        raise ModelLoadError(f"the artifact's bytes arrived with another SHA-256 than {sha256[:12]}",
                             "check the node's memory and network, then run again")
    folder = Path(tempfile.mkdtemp(prefix="edgecnn-ray-"))
    path = folder / f"{sha256[:16]}{suffix}"
    path.write_bytes(data)
    try:
        # probe=False: the driver checked the file before sending it, and the bytes are the ones it checked.
        runner = open_runner(path, target, RunnerOptions(threads=threads, probe=False))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _OPEN.update(key=key, runner=runner, folder=folder)
    return runner


def _close() -> None:
    runner, folder = _OPEN.pop("runner", None), _OPEN.pop("folder", None)
    _OPEN.pop("key", None)
    if runner is not None:
        runner.close()
    if folder is not None:
        shutil.rmtree(folder, ignore_errors=True)


atexit.register(_close)
