"""Which exact model bytes already passed the child-process probe on this machine, kept on disk.

The probe (devices/modelcheck.py) loads an untrusted file in a child process so that a loader crash or hang
takes only the child down. It costs a process start and a second load and invoke: more than the rest of
``edgecnn run``'s start together (a third of a second on a 2-core x86, seconds on a Pi). Its verdict depends
only on the bytes and on the runtime that loaded them, so a pass is kept under the cache dir, named by the
SHA-256 of the bytes, the format and a tag of the runtime (name and version, Python, machine, probe version).
A later start with the same bytes and the same runtime skips the walk and the child; one changed byte, or an
upgraded LiteRT / ONNX Runtime, is probed again. Only passes are kept; a failure is probed again next time.

Why not trust an artifact whose SHA-256 matches its manifest instead: the manifest beside a file is no more
trustworthy than the file (whoever can replace one can replace both), a hand-made manifest can name any hash,
and the manifest embedded in an artifact carries no hash of the artifact at all. A pass recorded here says
what the probe is for: these bytes were loaded and run by this runtime, here, without crashing it.

``EDGECNN_PROBE_CACHE``: another folder for the records, or ``off`` to probe every file at every start.
"""
from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path
from typing import Optional

PROBE_CACHE_ENV = "EDGECNN_PROBE_CACHE"
PROBE_VERSION = 2  # bump when what the probe checks changes: older passes then no longer count


def cache_folder() -> Optional[Path]:
    """The folder of the pass records, or None when caching is off or no cache folder can be made."""
    setting = os.environ.get(PROBE_CACHE_ENV, "")
    if setting.lower() == "off":
        return None
    try:
        if setting:
            return Path(setting)
        from edgecnn.fileio import cache_dir  # noqa: PLC0415

        return cache_dir() / "probed"
    except OSError:
        return None


def runtime_tag(fmt: str) -> str:
    """A short tag naming the runtime that would load a ``fmt`` model here (RuntimeMissingError if none)."""
    if fmt == "tflite":
        from edgecnn.devices.litert import resolve_runtime  # noqa: PLC0415

        runtime = resolve_runtime()
        ident = f"{runtime.name} {runtime.version}"
    else:
        from edgecnn.devices.onnx_runtime import import_onnxruntime  # noqa: PLC0415

        ident = f"onnxruntime {import_onnxruntime().__version__}"
    machine = os.uname().machine if hasattr(os, "uname") else sys.platform
    text = f"{PROBE_VERSION}|{sys.version}|{machine}|{ident}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _record(folder: Path, sha256: str, fmt: str, tag: str) -> Path:
    return folder / f"{sha256}-{fmt}-{tag}.json"


def passed(sha256: str, fmt: str, tag: str) -> bool:
    """Whether these bytes passed the probe with this runtime before."""
    folder = cache_folder()
    return folder is not None and _record(folder, sha256, fmt, tag).is_file()


def record_pass(sha256: str, fmt: str, tag: str, name: str) -> None:
    """Keep a pass (atomically); a cache that cannot be written only costs the next start a probe."""
    folder = cache_folder()
    if folder is None:
        return
    from edgecnn.errors import EdgecnnError  # noqa: PLC0415
    from edgecnn.fileio import write_json_atomic  # noqa: PLC0415

    try:
        write_json_atomic(_record(folder, sha256, fmt, tag), {"file": name, "format": fmt, "sha256": sha256})
    except (EdgecnnError, OSError):
        pass

