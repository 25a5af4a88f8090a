"""A device install as a user gets it: the project's wheel, installed non-editable with only device extras.

    from device_env import device_venv          # tests/ is on sys.path under pytest (rootdir conftest)
    python = device_venv(extras=("device", "onnx-cpu"))   # -> Path of that venv's python
    subprocess.run([str(python.parent / "edgecnn"), "doctor"], check=True)

``build_wheel()`` builds the wheel from a clean copy of the sources (``pip wheel --no-deps``, build isolation as
pyproject.toml declares it), so a stale ``build/`` folder in a checkout cannot leak into it. ``device_venv()``
makes a fresh venv with that wheel and the extras, cached under ``$EDGECNN_CACHE/device-venvs/<key>``, where the
key hashes the wheel's *content* (each file's name and bytes, not the zip's timestamps), the extras, and the
interpreter: a rerun with unchanged sources reuses the venv. pip may use its own cache; nothing is fetched but
packages from the registry pip is configured for. A lock file keeps two processes from building the same venv;
a venv is complete only once its ``.complete`` marker is written (venvs cannot be moved, so it is built in place
and removed again when the build fails).

Reused by the device-install test (tests/test_device_install.py), the arm64 check and the SSH fleet work: pass
``python=`` to build the venv with another interpreter (e.g. one inside an emulated root), ``pip_args=`` for
extra pip options (``--only-binary :all:``), ``env=`` for the environment pip runs in.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
# What the wheel is built from (pyproject.toml's package-dir mapping and readme).
SOURCES = ("pyproject.toml", "README.md", "edgecnn", "converters", "devices")
DEFAULT_EXTRAS = ("device", "onnx-cpu")
MARKER = ".complete"
KEEP_NEWEST = 2
KEEP_RECENT_S = 3600.0


def cache_root() -> Path:
    root = os.environ.get("EDGECNN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgecnn")
    return Path(root)


def build_wheel(out_dir: Path, source: Path = ROOT, python: str = sys.executable) -> Path:
    """Build the project's wheel into ``out_dir`` from a clean copy of ``source``; returns the .whl path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgecnn-wheel-src-") as work:
        clean = Path(work) / "src"
        clean.mkdir()
        for name in SOURCES:
            item = Path(source) / name
            if item.is_dir():
                shutil.copytree(item, clean / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(item, clean / name)
        before = set(out_dir.glob("*.whl"))
        _run([python, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q", str(clean),
              "-w", str(out_dir)], "building the wheel")
    wheels = sorted(set(out_dir.glob("edgecnn-*.whl")) - before) or sorted(out_dir.glob("edgecnn-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip wheel wrote no edgecnn wheel into {out_dir}")
    return wheels[-1]


def wheel_content_hash(wheel: Path) -> str:
    """SHA-256 over the wheel's entries (name and bytes, sorted by name): equal for equal contents."""
    digest = hashlib.sha256()
    with zipfile.ZipFile(wheel) as archive:
        for name in sorted(archive.namelist()):
            digest.update(name.encode() + b"\0")
            digest.update(archive.read(name))
    return digest.hexdigest()


def device_venv(extras: Sequence[str] = DEFAULT_EXTRAS, python: str = sys.executable,
                cache: Optional[Path] = None, pip_args: Sequence[str] = (),
                env: Optional[Mapping[str, str]] = None) -> Path:
    """The python of a venv holding the project's wheel with ``extras`` (non-editable), built once per content.

    ``python``: the interpreter the venv is made from; ``cache``: where venvs are kept (default
    $EDGECNN_CACHE/device-venvs). Raises RuntimeError with pip's last lines when a step fails."""
    cache = Path(cache) if cache is not None else cache_root() / "device-venvs"
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="edgecnn-wheel-") as work:
        wheel = build_wheel(Path(work), python=sys.executable)
        version = subprocess.run([python, "-c", "import sys, platform; print(sys.version, platform.machine())"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        key_text = "|".join([wheel_content_hash(wheel), ",".join(sorted(extras)), version, *pip_args])
        key = hashlib.sha256(key_text.encode()).hexdigest()[:16]
        venv = cache / f"{'-'.join(sorted(extras)) or 'core'}-{key}"
        with _locked(cache / f".{venv.name}.lock"):
            if not (venv / MARKER).is_file():
                _build_venv(venv, wheel, extras, python, pip_args, env)
            (venv / MARKER).touch()  # its time says when it was last used
        _prune(cache, venv)
    return venv / "bin" / "python"


def _prune(cache: Path, keep: Path) -> None:
    """Remove venvs of the same extras for older sources (about 400 MB each), except those used in the last
    KEEP_RECENT_S (another checkout sharing the cache may be using one) and the KEEP_NEWEST most recent."""
    prefix = keep.name.rsplit("-", 1)[0] + "-"
    others = [p for p in cache.glob(prefix + "*") if p.is_dir() and p != keep and len(p.name) == len(keep.name)]
    others.sort(key=lambda p: _last_used(p), reverse=True)
    now = time.time()
    for old in others[KEEP_NEWEST - 1:]:
        if now - _last_used(old) > KEEP_RECENT_S:
            with _locked(cache / f".{old.name}.lock"):
                # Decided again under the lock: a venv being built (no marker yet) held the lock meanwhile and
                # is now complete and in use; removing it would pull it from under the test that asked for it.
                if time.time() - _last_used(old) > KEEP_RECENT_S:
                    shutil.rmtree(old, ignore_errors=True)
            with contextlib.suppress(OSError):
                (cache / f".{old.name}.lock").unlink()


def _last_used(venv: Path) -> float:
    try:
        return (venv / MARKER).stat().st_mtime
    except OSError:
        return 0.0


def _build_venv(venv: Path, wheel: Path, extras: Sequence[str], python: str, pip_args: Sequence[str],
                env: Optional[Mapping[str, str]]) -> None:
    shutil.rmtree(venv, ignore_errors=True)  # an unfinished one from a killed build
    try:
        _run([python, "-m", "venv", str(venv)], "creating the venv", env)
        requirement = f"{wheel}[{','.join(extras)}]" if extras else str(wheel)
        _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
              *pip_args, requirement], f"installing {wheel.name} with {', '.join(extras) or 'no extras'}", env)
        (venv / MARKER).write_text(f"{wheel.name} [{','.join(extras)}]\n")
    except BaseException:
        shutil.rmtree(venv, ignore_errors=True)
        raise


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _run(command: list[str], what: str, env: Optional[Mapping[str, str]] = None) -> None:
    proc = subprocess.run(command, capture_output=True, text=True, env=dict(env) if env is not None else None)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{tail}")


def installed(python: Path, distribution: str) -> bool:
    """Whether ``distribution`` is installed in the venv of ``python`` (by package metadata, without importing it)."""
    code = ("import importlib.metadata as m, sys\n"
            "try:\n    m.version(sys.argv[1])\nexcept m.PackageNotFoundError:\n    sys.exit(1)\n")
    return subprocess.run([str(python), "-c", code, distribution], capture_output=True).returncode == 0


if __name__ == "__main__":
    print(device_venv(tuple(sys.argv[1].split(",")) if len(sys.argv) > 1 else DEFAULT_EXTRAS))
