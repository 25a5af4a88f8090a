"""Hostile model files and a crash-proof way to load them, shared by the tests and benchmarks/fuzz_models.py.

``mutate`` turns a valid model into a broken one (truncated, bit-flipped, random, zero, overwritten 32-bit
fields, another format's content); ``Worker`` loads files in a child process (hostile_worker.py) and turns
its death into an ``Outcome`` with the signal, and its silence past a timeout into a hang.
"""
from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

WORKER = Path(__file__).with_name("hostile_worker.py")
REPO = Path(__file__).resolve().parents[2]
CLEAR_TYPES = ("ModelLoadError", "UnsafeModelError", "UsageError", "InputPathError")
MUTATIONS = ("truncate", "bitflip", "random", "zero_bytes", "zeros", "overwrite_u32", "keep_header_random",
             "duplicate_tail")


def mutate(data: bytes, kind: str, rng: np.random.Generator) -> bytes:
    """``data`` broken in the way ``kind`` names, with positions drawn from ``rng``."""
    size = len(data)
    if kind == "truncate":
        return data[:int(rng.integers(0, size))]
    if kind == "bitflip":
        out = bytearray(data)
        for pos in rng.integers(0, size, int(rng.integers(1, 9))):
            out[pos] ^= 1 << int(rng.integers(0, 8))
        return bytes(out)
    if kind == "random":
        return rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
    if kind == "zero_bytes":
        return b""
    if kind == "zeros":
        return bytes(int(rng.integers(1, size + 1)))
    if kind == "overwrite_u32":  # flatbuffer offsets/lengths and protobuf lengths live in the first kilobytes
        out = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            pos = int(rng.integers(0, min(size - 4, 4096))) & ~3
            value = int(rng.choice([0, 1, 0x7FFFFFFF, 0xFFFFFFFF, size, size + 4, int(rng.integers(0, 2 ** 32))]))
            out[pos:pos + 4] = value.to_bytes(4, "little")
        return bytes(out)
    if kind == "keep_header_random":  # past the magic-number sniff, garbage behind it
        head = data[:8]
        return head + rng.integers(0, 256, int(rng.integers(0, 2048)), dtype=np.uint8).tobytes()
    if kind == "duplicate_tail":
        cut = int(rng.integers(0, size))
        return data[:cut] + data[cut // 2:]
    raise ValueError(f"unknown mutation {kind}")


@dataclass(frozen=True)
class Outcome:
    kind: str  # loaded | error | unclear | crash | hang
    type: str = ""
    message: str = ""
    seconds: float = 0.0

    @property
    def clear(self) -> bool:
        """A loaded model, or a typed one-line error: what a user must get for any file."""
        if self.kind == "loaded":
            return True
        return self.kind == "error" and self.type in CLEAR_TYPES and bool(self.message) and "\n" not in self.message


class Worker:
    """A persistent child that loads files on request; restarted after it crashes or hangs."""

    def __init__(self, keras: bool = False, timeout_s: float = 90.0) -> None:
        self.keras, self.timeout_s = keras, timeout_s
        self.proc: Optional[subprocess.Popen] = None
        self.stderr_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"edgecnn-hostile-worker-{os.getpid()}-{id(self)}.log"

    def start(self) -> None:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONFAULTHANDLER": "1"}
        command = [sys.executable, str(WORKER)] + (["--keras"] if self.keras else [])
        self._stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                     cwd=REPO, env=env)
        ready = self._read_line(300.0)
        if ready is None or not ready.startswith("{"):
            code = self.proc.poll()
            self.close()
            raise RuntimeError(f"hostile worker did not start (exit {code}); see {self.stderr_path}")

    def load(self, path: Path, loader: str, target: str = "cpu", unsafe: bool = False,
             digits: Optional[Path] = None) -> Outcome:
        """Load ``path`` in the child; with ``digits`` (a .npy of uint8 28x28x1 images) a loaded device model
        also reports its top-1 classes ("top1:3,1,4,...") in the message."""
        if self.proc is None or self.proc.poll() is not None:
            self.start()
        request = {"path": str(path), "loader": loader, "target": target, "unsafe": unsafe,
                   "digits": str(digits) if digits else None}
        started = time.monotonic()
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._read_line(self.timeout_s)
        seconds = time.monotonic() - started
        if line is None:
            try:  # EOF on stdout can come a moment before the dead child can be reaped
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                code = None
            if code is None:
                self.close()
                return Outcome("hang", message=f"no answer within {self.timeout_s:.0f} s", seconds=seconds)
            self.close()
            name = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else f"exit {code}"
            return Outcome("crash", type=name, message=f"worker died with {name}", seconds=seconds)
        reply = json.loads(line)
        return Outcome(reply["outcome"], reply.get("type", ""), reply.get("message", reply.get("detail", "")), seconds)

    def _read_line(self, timeout_s: float) -> Optional[str]:
        deadline = time.monotonic() + timeout_s
        selector = selectors.DefaultSelector()
        selector.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if selector.select(timeout=min(1.0, deadline - time.monotonic())):
                    line = self.proc.stdout.readline()
                    return line.decode("utf-8", "replace").strip() or None
                if self.proc.poll() is not None:
                    return None
            return None
        finally:
            selector.close()

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()
                except OSError:
                    pass
            self.proc = None
            self._stderr.close()

    def __enter__(self) -> "Worker":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def make_keras_variants(keras_path: Path, folder: Path) -> dict[str, Path]:
    """The trained .keras re-saved as legacy .h5 and exported as a SavedModel (in a child: TensorFlow)."""
    h5, saved = folder / "model.h5", folder / "saved_model"
    if not (h5.is_file() and (saved / "saved_model.pb").is_file()):
        folder.mkdir(parents=True, exist_ok=True)
        code = ("import sys, keras; m = keras.models.load_model(sys.argv[1], safe_mode=True);"
                "m.save(sys.argv[2]); m.export(sys.argv[3], verbose=False)")
        subprocess.run([sys.executable, "-c", code, str(keras_path), str(h5) + ".tmp.h5", str(saved) + ".tmp"],
                       check=True, capture_output=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, timeout=600)
        os.replace(str(saved) + ".tmp", saved)
        os.replace(str(h5) + ".tmp.h5", h5)
    return {"keras": keras_path, "h5": h5, "savedmodel": saved}
