"""Compare the emulated arm64 side with x86: raw outputs (guest.py's .npz files) and `edgecnn run` JSON lines.

Tolerances, from what was measured on this stack (XNNPACK on both sides): quantized outputs are bit-identical,
float outputs differ by about 1e-7. A quantized output that differs at all, a float score more than
FLOAT_TOLERANCE away, or a top-1 class that differs where x86's own margin between the two classes is larger
than the tolerance (a tie either way is not a disagreement) is a failure.

Dynamic-range artifacts (int8 weights, float activations quantized while the model runs) are the exception:
each CPU's kernels quantize the activations with their own float arithmetic (AVX-512 VNNI, AVX2 and NEON
differ), so one value rounding to the neighbouring int8 step is legitimate and moves the output by about one
activation step; a CI machine measured 6.9e-4 on a regression head. Their tolerance is therefore taken from
the format itself, in the same run: twice x86's own largest difference between the dynamic-range artifact
and its float32 sibling on the same inputs (if each side stays within E of float32, the two sides stay
within 2E of each other), plus FLOAT_TOLERANCE. A broken arm64 kernel still fails it: it strays further
from x86 than quantization itself does.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import numpy as np

FLOAT_TOLERANCE = 1e-5
JSONL_ROUNDING = 1e-6  # `edgecnn run` writes scores with 6 decimals


@dataclass(frozen=True)
class Agreement:
    """How one artifact's emulated arm64 outputs compare with x86's on the same inputs."""

    what: str  # "outputs" (guest.py, every input) or "run" (edgecnn run on the video, every frame)
    artifact: str
    count: int  # inputs or frames compared
    top1_same: int  # of count; classes == 1 (regression): count when the outputs agree within tolerance
    ties: int  # top-1 differs but x86 itself scores both classes within the tolerance
    distinct_top1: int  # how many different classes x86's top-1 takes over the inputs (1: top-1 says little)
    max_abs_diff: float  # largest |arm64 - x86| over every score compared
    bit_identical: Optional[bool]  # raw output tensors equal bit for bit (outputs only)
    quantized: bool
    ok: bool
    reason: str = ""
    tolerance: float = 0.0  # the largest |difference| allowed (see tolerance())

    def to_dict(self) -> dict:
        return asdict(self)


def tolerance(quantized: bool, what: str, envelope: float = 0.0) -> float:
    """Largest |arm64 - x86| score difference allowed; ``envelope``: a dynamic-range artifact's own error."""
    if quantized:
        return 0.0
    return FLOAT_TOLERANCE + 2.0 * envelope + (JSONL_ROUNDING if what == "run" else 0.0)


def dynamic_envelope(x86_npz: Path, dynamic_key: str, float_key: str) -> float:
    """x86's max |dynamic-range - float32| score difference on the same inputs (guest.py's .npz keys).

    Raises:
        KeyError: either artifact has no scores in the file.
        ValueError: the two score arrays differ in shape or are not finite (no envelope can be taken).
    """
    with np.load(x86_npz) as x86:
        dynamic, reference = x86[f"{dynamic_key}|scores"], x86[f"{float_key}|scores"]
    if dynamic.shape != reference.shape or dynamic.size == 0:
        raise ValueError(f"scores of {dynamic_key} {dynamic.shape} and {float_key} {reference.shape} differ")
    envelope = float(np.max(np.abs(dynamic.astype(np.float64) - reference.astype(np.float64))))
    if not np.isfinite(envelope):
        raise ValueError(f"scores of {dynamic_key} or {float_key} are not finite")
    return envelope


def judge(what: str, artifact: str, x86: np.ndarray, arm: np.ndarray, quantized: bool,
          bit_identical: Optional[bool], envelope: float = 0.0) -> Agreement:
    """Compare two (N, classes) float score arrays from the same inputs (``envelope``: see tolerance())."""
    def failed(reason: str) -> Agreement:
        return Agreement(what, artifact, int(x86.shape[0]) if x86.ndim else 0, 0, 0, 0, float("nan"),
                         bit_identical, quantized, False, reason)

    if x86.shape != arm.shape:
        return failed(f"shapes differ: x86 {x86.shape}, arm64 {arm.shape}")
    if x86.size == 0:
        return failed("nothing to compare (no outputs)")
    if not (np.all(np.isfinite(x86)) and np.all(np.isfinite(arm))):
        return failed("NaN or infinite scores")
    tol = tolerance(quantized, what, envelope)
    diff = float(np.max(np.abs(x86.astype(np.float64) - arm.astype(np.float64))))
    count, classes = x86.shape[0], x86.shape[1]
    if classes == 1:
        same = int(np.sum(np.abs(x86[:, 0] - arm[:, 0]) <= tol))
        ties, distinct = 0, 1
    else:
        top_x86, top_arm = np.argmax(x86, axis=1), np.argmax(arm, axis=1)
        differs = np.flatnonzero(top_x86 != top_arm)
        margin = x86[differs, top_x86[differs]] - x86[differs, top_arm[differs]]
        ties = int(np.sum(margin <= tol))
        same = count - differs.size
        distinct = int(np.unique(top_x86).size)
    reasons = []
    if diff > tol:
        reasons.append(f"max |difference| {diff:.3g} > tolerance {tol:g}")
    if same + ties < count:
        reasons.append(f"top-1 differs on {count - same - ties} of {count}")
    if bit_identical is False and quantized:
        reasons.append("quantized outputs are not bit-identical")
    return Agreement(what, artifact, count, same, ties, distinct, diff, bit_identical, quantized, not reasons,
                     "; ".join(reasons), tol)


def compare_outputs(x86_npz: Path, arm_npz: Path, artifact: str, key: str, quantized: bool,
                    envelope: float = 0.0) -> Agreement:
    """guest.py outputs for ``key`` (the artifact path given to guest.py) on both sides."""
    with np.load(x86_npz) as x86, np.load(arm_npz) as arm:
        if f"{key}|scores" not in arm.files:
            return judge("outputs", artifact, np.zeros((0, 0)), np.zeros((1, 0)), quantized, None)
        raw_x86, raw_arm = x86[f"{key}|raw"], arm[f"{key}|raw"]
        identical = raw_x86.dtype == raw_arm.dtype and raw_x86.shape == raw_arm.shape and \
            raw_x86.tobytes() == raw_arm.tobytes()
        return judge("outputs", artifact, x86[f"{key}|scores"], arm[f"{key}|scores"], quantized, identical, envelope)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def scores_from_run(records: list[dict], classes: int) -> np.ndarray:
    """(frames, classes) scores from `edgecnn run --jsonl`; classes not in a frame's top-k are NaN."""
    out = np.full((len(records), classes), np.nan)
    for row, record in enumerate(records):
        for entry in record["top_k"]:
            out[row, entry["index"]] = entry["score"]
    return out


def compare_runs(x86_jsonl: Path, arm_jsonl: Path, artifact: str, classes: int, quantized: bool,
                 envelope: float = 0.0) -> Agreement:
    """Frame by frame: the top-1 class, and every score both sides list in their top-k."""
    x86_records, arm_records = read_jsonl(x86_jsonl), read_jsonl(arm_jsonl)
    count = len(x86_records)
    if count == 0 or len(arm_records) != count:
        return Agreement("run", artifact, count, 0, 0, 0, float("nan"), None, quantized, False,
                         f"frame counts differ or are zero: x86 {count}, arm64 {len(arm_records)}")
    x86, arm = scores_from_run(x86_records, classes), scores_from_run(arm_records, classes)
    both = ~np.isnan(x86) & ~np.isnan(arm)
    diff = float(np.max(np.abs(x86[both] - arm[both]))) if both.any() else float("nan")
    x86_top = np.array([r["top_k"][0]["index"] for r in x86_records])
    arm_top = np.array([r["top_k"][0]["index"] for r in arm_records])
    tol = tolerance(quantized, "run", envelope)
    differs = np.flatnonzero(x86_top != arm_top)
    ties = sum(1 for i in differs if x86[i, x86_top[i]] - np.nan_to_num(x86[i, arm_top[i]], nan=-np.inf) <= tol)
    reasons = []
    if not np.isfinite(diff) or diff > tol:
        reasons.append(f"max |difference| {diff:.3g} > tolerance {tol:g}")
    if differs.size > ties:
        reasons.append(f"top-1 differs on {differs.size - ties} of {count}")
    return Agreement("run", artifact, count, count - int(differs.size), int(ties), int(np.unique(x86_top).size),
                     diff, None, quantized, not reasons, "; ".join(reasons), tol)
