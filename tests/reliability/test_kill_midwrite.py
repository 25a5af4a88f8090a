"""`edgecnn convert` killed while it writes (SIGINT and SIGKILL, at several points) over a folder that holds
an earlier finished conversion: no partial file is left at a finished name, and nothing finished is lost.

Each run is a real CLI process converting the embedded default with --force into a copy of the shared
conversion's folder; the test watches the folder and kills the process when the chosen point is reached."""
from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgecnn.manifest import Manifest

EDGECNN = str(Path(sys.executable).with_name("edgecnn"))


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def finished(folder: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")}


def assert_complete(path: Path) -> None:
    """A file at a finished name must be whole: the format's own full validation, not a size check."""
    if path.suffix == ".tflite":
        from edgecnn.devices.flatbuf import walk_tflite

        walk_tflite(path.read_bytes())
    elif path.suffix == ".onnx":
        import onnx

        onnx.checker.check_model(onnx.load(str(path)))
    elif path.name == "manifest.json":
        manifest = Manifest.read(path)
        for entry in manifest.artifacts:
            assert (path.parent / entry.file).is_file(), f"the manifest lists {entry.file}, which is missing"


def wait_for(folder: Path, point: str, proc: subprocess.Popen, before: dict[str, str], timeout: float) -> bool:
    """Poll until ``point`` is reached: 'partial' (a temporary output exists: mid-write) or
    'replaced' (a finished file was replaced by the new run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            names = os.listdir(folder)
        except FileNotFoundError:
            names = []
        if point == "partial" and any(".partial-" in n for n in names):
            return True
        if point == "replaced":
            for name, old in before.items():
                try:
                    if digest(folder / name) != old:
                        return True
                except (FileNotFoundError, IsADirectoryError):
                    continue
        time.sleep(0.005)
    return False


@pytest.mark.parametrize("sig,point", [(signal.SIGINT, "partial"),
                                       (signal.SIGKILL, "partial"),
                                       (signal.SIGKILL, "replaced")],
                         ids=["sigint-mid-write", "sigkill-mid-write", "sigkill-after-a-replace"])
def test_convert_killed_mid_write_loses_nothing(mnist_convert, tmp_path, sig, point):
    out = tmp_path / "out"
    shutil.copytree(mnist_convert.out_dir, out)
    before = finished(out)
    assert "manifest.json" in before and len(before) >= 4
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "COLUMNS": "200"}
    for _attempt in range(3):  # a write can be over between two polls: then convert again and catch the next one
        proc = subprocess.Popen([EDGECNN, "convert", "--out", str(out), "--force"], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=env, text=True)
        try:
            reached = wait_for(out, point, proc, before, timeout=400)
            if reached:
                proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=180)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if reached:
            break
        assert proc.returncode == 0, stderr[-2000:]
        before = finished(out)  # that run finished: its outputs are now the earlier ones
    assert reached, f"three conversions ended before reaching '{point}'"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    else:
        # Ctrl-C: a clean exit with a short message, no traceback, and the temporary files removed.
        assert proc.returncode == 130, (proc.returncode, stderr[-2000:])
        assert "Traceback" not in stderr and "interrupted" in stderr
        assert not [n for n in os.listdir(out) if ".partial-" in n], os.listdir(out)
    after = finished(out)
    assert set(before) <= set(after), f"finished outputs disappeared: {set(before) - set(after)}"
    for name in after:
        assert_complete(out / name)  # old content or a complete new file, never a partial one
    if sig == signal.SIGKILL:
        leftovers = [n for n in os.listdir(out) if n.startswith(".")]
        assert all(".partial-" in n or ".old-" in n for n in leftovers), leftovers
    manifest = Manifest.read(out / "manifest.json")
    stale = [e.file for e in manifest.artifacts if digest(out / e.file) != e.sha256]
    if stale:  # convert stages everything and publishes in one burst of renames: only a kill inside it gets here
        pytest.xfail(f"killed inside the publish window (milliseconds): the old manifest.json describes {stale}; "
                     "runners refuse such an artifact by its SHA-256")
