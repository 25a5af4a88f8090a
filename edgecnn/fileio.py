"""Writes that never leave a half-written output behind, and never overwrite without --force."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

from edgecnn.errors import DataError, InputPathError, OutputExistsError, OutputPathError

MAX_LABELS_BYTES = 4 * 1024 * 1024  # a labels file is text: anything larger is the wrong file

# File suffixes read as images (by OpenCV), for data folders and `edgecnn run --source`.
METADATA_NAMES = ("__MACOSX",)  # the folder macOS zip archives add, full of ._* files
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".tif", ".tiff", ".webp")


def cache_dir() -> Path:
    """Where edgecnn keeps what it can rebuild (trained models, probe results): $EDGECNN_CACHE, else
    ~/.cache/edgecnn. Created on first use; entries are written atomically, so processes may share it."""
    root = os.environ.get("EDGECNN_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "edgecnn")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    path = Path(path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(str(file.relative_to(path)).encode())
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def check_writable_dir(directory: Path) -> None:
    """Create ``directory`` if needed and prove a file can be written there."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        import tempfile  # noqa: PLC0415 - tempfile and shutil are kept off the device's start path

        with tempfile.NamedTemporaryFile(dir=directory, prefix=".edgecnn-probe-"):
            pass
    except OSError as exc:
        raise OutputPathError(f"cannot write to output folder {directory} ({exc.strerror or exc})",
                              "choose a writable folder with --out") from None


def refuse_overwrite(paths: list[Path], force: bool, option: str = "--out") -> None:
    """Raise OutputExistsError naming the first of ``paths`` that exists, unless ``force``; ``option``: the
    command-line option that chose them, for the hint."""
    existing = [str(p) for p in paths if Path(p).exists()]
    if existing and not force:
        raise OutputExistsError(f"{existing[0]} already exists" + (f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""),
                                f"pass --force to overwrite, or choose another {option}")


@contextlib.contextmanager
def atomic_path(final: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; on success rename it into place, on failure remove it.

    Works for files and directories (a SavedModel). The rename is atomic on one filesystem, so a
    reader sees the old output or the new one, never a partial one, even if the process is killed.
    A directory replacing a directory is swapped in one step (Linux renameat2 RENAME_EXCHANGE) where
    the kernel allows, so the old one is never absent; elsewhere it is moved aside for an instant.
    """
    final = Path(final)
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputPathError(f"cannot create output folder {final.parent} ({exc.strerror or exc})",
                              "choose a writable folder with --out") from None
    _remove_stale_partials(final)
    tmp = final.parent / f".{final.name}.partial-{os.getpid()}"
    _remove(tmp)
    try:
        yield tmp
        if not tmp.exists():
            raise OutputPathError(f"nothing was written for {final}", "the writer produced no output")
        try:
            _replace(tmp, final)
        except OSError as exc:
            raise OutputPathError(f"cannot move the finished output into place at {final} ({exc.strerror or exc})",
                                  "check that the path is writable and not of another kind (file vs folder)") from None
        _fsync_dir(final.parent)
    finally:
        _remove(tmp)


def _replace(tmp: Path, final: Path) -> None:
    if final.is_dir() and not final.is_symlink() and tmp.is_dir():
        if _exchange(tmp, final):
            return  # tmp now holds the old directory; the caller removes it
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        _remove(old)
        os.replace(final, old)
        os.replace(tmp, final)
        _remove(old)
    else:
        os.replace(tmp, final)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux >= 3.15, glibc >= 2.28); False where unsupported."""
    if not hasattr(os, "uname") or os.uname().sysname != "Linux":
        return False
    try:
        import ctypes  # noqa: PLC0415

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange)
    return result == 0


def _fsync_dir(directory: Path) -> None:
    """Make the rename durable (power loss after return keeps the new output)."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _remove_stale_partials(final: Path) -> None:
    """Remove ``.NAME.partial-PID`` left by a killed writer whose process is gone."""
    with contextlib.suppress(OSError):
        for leftover in final.parent.glob(f".{final.name}.partial-*"):
            pid = leftover.name.rpartition("-")[2]
            if pid.isdigit() and int(pid) != os.getpid() and not process_alive(int(pid)):
                _remove(leftover)


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (the owner of a ``.partial-PID`` output)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def write_bytes_atomic(final: Path, data: bytes) -> None:
    with atomic_path(final) as tmp:
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            raise OutputPathError(f"cannot write {final} ({exc.strerror or exc})",
                                  "choose a writable folder with enough space") from None


def write_text_atomic(final: Path, text: str) -> None:
    write_bytes_atomic(final, text.encode("utf-8"))


def write_json_atomic(final: Path, obj: object) -> None:
    write_text_atomic(final, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        import shutil  # noqa: PLC0415

        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        with contextlib.suppress(OSError):
            path.unlink()


def read_labels(path: Path) -> tuple[str, ...]:
    """The labels of a text file, one per line in output order (blank lines skipped; read as data only).

    Raises InputPathError (missing) and DataError (not UTF-8 text, over 4 MiB, or no labels)."""
    path = Path(path)
    if not path.is_file():
        raise InputPathError(f"labels file {path} does not exist", "give a text file with one label per line")
    try:
        if path.stat().st_size > MAX_LABELS_BYTES:
            raise DataError(f"labels file {path} is larger than 4 MiB", "give one label per line")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read labels file {path} ({type(exc).__name__})", "save it as UTF-8 text") from None
    labels = tuple(line.strip() for line in text.splitlines() if line.strip())
    if not labels:
        raise DataError(f"labels file {path} holds no labels", "give one label per line")
    return labels


def is_hidden(path: Path) -> bool:
    """A hidden or metadata entry that is not data: a dotfile (``.DS_Store``, macOS ``._*`` AppleDouble
    files beside each image copied from a Mac) or a ``__MACOSX`` folder."""
    return path.name.startswith(".") or path.name in METADATA_NAMES


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, in name order, hidden and metadata files left out."""
    return sorted(p for p in folder.iterdir() if p.is_file() and not is_hidden(p) and p.suffix.lower() in IMAGE_SUFFIXES)
