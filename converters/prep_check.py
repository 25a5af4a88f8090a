"""Preprocessing truth: does the data, preprocessed as the manifest will say, look like what the model was trained on?

Data at the wrong scale or in the wrong colour order is the usual cause of "accuracy collapsed after int8",
and it is invisible in an agreement table: Keras and the artifacts are all fed the same wrong input. Three
kinds of evidence, all from the float (Keras) model, before anything is calibrated:

* float arrays (.npy/.npz, model-ready input) against the range the manifest's preprocessing produces from
  pixels: 0..255 arrays with a manifest saying [0, 1] calibrate one thing and deploy another;
* BatchNormalization statistics (converters/bn_check.py, needs no labels) under the given preprocessing and
  under the standard candidates (x/255, x, x/127.5 - 1, ImageNet mean/std, caffe BGR, RGB<->BGR);
* with labels, Keras top-1 under the same candidates.

A candidate is named only when it is clearly better: by labels, at least MIN_GAIN more top-1 and beyond
noise (a paired sign test, Z_MIN); by BatchNormalization statistics, a divergence at least BN_RATIO times
smaller than the given preprocessing's, which is itself above BN_BAD. Labels, where there are any, overrule
BatchNormalization statistics. Each finding carries the exact `edgecnn convert` options that fix it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Any, Callable, Optional

import numpy as np

from edgecnn.manifest import Preprocessing

from edgecnn.converters.bn_check import (BatchNormEvidence, batchnorm_evidence, packed_chunks,
                                         trained_batchnorm_layers)
from edgecnn.converters.calibration import ModelInputs
from edgecnn.converters.prep_candidates import (Candidate, CandidateInputs, candidates, describe, fitting,
                                                options_for, pixels_from_arrays, range_mismatch, same, span,
                                                value_range)

PROBE_SAMPLES = 256   # samples the checks look at (seeded subset): cheap beside calibration and verification
FIRST_STAGE = 32      # every candidate's top-1 is measured on these; promising ones on all PROBE_SAMPLES
MIN_GAIN = 0.10       # top-1 a candidate must gain to be named
PROMISING = 0.05      # top-1 gain on the first stage worth measuring further
Z_MIN = 3.0           # paired sign test: (wins - losses) / sqrt(wins + losses)
BN_BAD = 0.5          # nats: a BatchNormalization divergence this large is a mismatch if a candidate fixes it
BN_RATIO = 4.0        # ... by being this many times smaller
GIVEN = "as given"
ORDER_SHARE = 0.8     # a label's samples that must land on one output to call the class order permuted
ORDER_MIN_SAMPLES = 5  # per label, for that call


class Severity(str, Enum):
    INFO = "info"
    WARNING = "warning"


@dataclass(frozen=True)
class PrepFinding:
    """One piece of evidence about the preprocessing."""

    check: str          # array-range | batchnorm | labels | exif
    severity: Severity
    message: str        # one line naming the mismatch
    fix: str = ""       # the exact convert options that fix it, or what to do to the data

    def line(self) -> str:
        return f"{self.message}; fix: {self.fix}" if self.fix else self.message


@dataclass(frozen=True)
class CandidateScore:
    name: str
    options: str
    batchnorm: Optional[float] = None  # mean divergence of the first BatchNormalization layers, nats
    accuracy: Optional[float] = None   # Keras top-1, 0..1
    samples: int = 0                   # labelled samples the accuracy is measured on


@dataclass(frozen=True)
class PrepReport:
    findings: tuple[PrepFinding, ...] = ()
    scores: tuple[CandidateScore, ...] = ()   # the given preprocessing first
    batchnorm: Optional[BatchNormEvidence] = None  # of the given preprocessing
    data: dict = field(default_factory=dict)  # which samples were looked at
    seconds: float = 0.0                      # wall-clock time the checks took
    cpu_seconds: float = 0.0                  # process CPU time (all threads): comparable on a shared machine

    @property
    def warnings(self) -> tuple[PrepFinding, ...]:
        return tuple(f for f in self.findings if f.severity == Severity.WARNING)

    @property
    def mismatches(self) -> tuple[PrepFinding, ...]:
        """Warnings that say the preprocessing is wrong (what --strict refuses); data hygiene excluded."""
        return tuple(f for f in self.warnings if f.check != "exif")

    def summary(self) -> str:
        """One line: what was found, or which evidence there was for the given preprocessing."""
        if self.warnings:
            return f"{len(self.warnings)} warning(s): " + " | ".join(f.line() for f in self.warnings)
        given = self.scores[0] if self.scores else None
        evidence = []
        if self.batchnorm is not None and self.batchnorm.layers:
            evidence.append(f"BatchNormalization divergence {self.batchnorm.score:.3g} over "
                            f"{len(self.batchnorm.layers)} layer(s)")
        if given is not None and given.accuracy is not None:
            evidence.append(f"Keras top-1 {_pct(given.accuracy)} on {given.samples} labelled samples")
        if not evidence:
            return "no evidence either way (no trained BatchNormalization layer, no labels)"
        tried = len(self.scores) - 1
        return "consistent with training: " + ", ".join(evidence) + (f"; none of {tried} standard candidates "
                                                                     "is clearly better" if tried else "")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary for the manifest's ``checks`` field (NaN written as null)."""
        from edgecnn.manifest import _to_jsonable  # noqa: PLC0415 - the one dataclass -> JSON walker

        return _finite({"seconds": round(self.seconds, 3), "cpu_seconds": round(self.cpu_seconds, 3), "data": self.data,
                        "batchnorm": _to_jsonable(self.batchnorm) if self.batchnorm else None,
                        "candidates": _to_jsonable(self.scores), "findings": _to_jsonable(self.findings),
                        "warnings": [f.line() for f in self.warnings], "summary": self.summary()})


# -- float arrays against the manifest -------------------------------------------------------------
def array_finding(data: ModelInputs, prep: Preprocessing, rescales_itself: bool) -> Optional[PrepFinding]:
    """A warning when float arrays hold another range than the manifest's preprocessing gives from pixels."""
    lo, hi = float(data.inputs.min()), float(data.inputs.max())
    if not range_mismatch(lo, hi, prep):
        return None
    e_lo, e_hi = value_range(prep)
    message = (f"{data.role} arrays {data.source} hold {span(lo, hi)} but the manifest's preprocessing "
               f"({describe(prep, with_range=False)}) feeds the model {span(e_lo, e_hi)} from pixels on the device")
    if rescales_itself:
        return PrepFinding("array-range", Severity.WARNING, message + " (the model rescales pixels itself)",
                           "save the arrays as 0..255 pixels, or give the images")
    inferred = fitting(lo, hi, [c.prep for c in candidates(prep)])
    fix = f"if the model was trained on {span(e_lo, e_hi)}, save the arrays preprocessed that way (or give the images)"
    if inferred is not None:
        fix += f"; if it was trained on {span(*value_range(inferred))}, pass {options_for(inferred, prep)}"
    return PrepFinding("array-range", Severity.WARNING, message, fix)


# -- the checks ------------------------------------------------------------------------------------
def check_preprocessing(model: Any, prep: Preprocessing, calib: Optional[ModelInputs],
                        val: Optional[ModelInputs] = None, rescales_itself: bool = False,
                        datasets: tuple = ()) -> PrepReport:
    """Every check on ``model`` (a LoadedModel) fed ``calib``/``val`` (ModelInputs made with ``prep``).

    ``datasets``: the loaded edgecnn.data.Dataset objects, for data hygiene (EXIF orientation). Returns a
    PrepReport; warnings name the mismatch and the options that fix it. Runs the float model on at most
    PROBE_SAMPLES samples per candidate preprocessing (fewer for most: see FIRST_STAGE, bn_check).
    """
    started, cpu = time.perf_counter(), time.process_time()
    findings = [f for f in (array_finding(d, prep, rescales_itself) for d in (calib, val)
                            if d is not None and d.pixels is None) if f is not None]
    findings += _exif_findings(datasets)
    probe = _probe_set(calib, val)
    if probe is None:
        return PrepReport(tuple(findings), seconds=time.perf_counter() - started, cpu_seconds=time.process_time() - cpu)
    pixels, given_prep = probe.pixels, prep
    if pixels is None:  # float arrays: the pixels they were made from, if they fit a standard range
        lo, hi = float(probe.inputs.min()), float(probe.inputs.max())
        given_prep = fitting(lo, hi, [prep] + [c.prep for c in candidates(prep)])
        pixels = pixels_from_arrays(probe.inputs, given_prep) if given_prep is not None else None
    options = _options(prep, given_prep) if pixels is not None else []
    inputs_of = _inputs_cache(probe, pixels, given_prep, options)
    evidence, bn_scores = _batchnorm_scores(model, inputs_of, options)
    favoured = [c.name for c in options if better_by_batchnorm(bn_scores.get(c.name), bn_scores.get(GIVEN))]
    kept = [c for c in options if not _ruled_out(bn_scores, c.name)]
    correct = _label_scores(model, inputs_of, kept, probe.labels, favoured)
    scores = _score_rows(options, bn_scores, correct)
    findings = _refine_array_fixes(findings, scores, probe, prep, given_prep, correct)
    findings = _merge(findings, _verdict(scores, options, probe, prep, correct), probe)
    findings += _class_order_findings(model, inputs_of(GIVEN), probe, correct, datasets)
    data = {"source": probe.source, "role": probe.role, "samples": len(probe),
            "labelled": correct is not None, "input": "pixels" if probe.pixels is not None else "float arrays"}
    return PrepReport(tuple(findings), scores, evidence, data, time.perf_counter() - started,
                      time.process_time() - cpu)


def _probe_set(calib: Optional[ModelInputs], val: Optional[ModelInputs]) -> Optional[ModelInputs]:
    """The labelled set if there is one (validation first), else the calibration set; a seeded subset."""
    choices = [d for d in (val, calib) if d is not None]
    if not choices:
        return None
    data = next((d for d in choices if d.labels is not None), choices[-1])
    if len(data) > PROBE_SAMPLES:
        chosen = np.sort(np.random.default_rng(0).permutation(len(data))[:PROBE_SAMPLES])
        data = replace(data, inputs=data.inputs[chosen], pixels=None if data.pixels is None else data.pixels[chosen],
                       labels=None if data.labels is None else data.labels[chosen])
    return data


def _options(prep: Preprocessing, given_prep: Preprocessing) -> list[Candidate]:
    """The candidates to try: the standard ones, and for arrays made another way, the manifest's own."""
    chosen = [] if same(given_prep, prep) else [Candidate(f"the manifest's {describe(prep)}", prep, "")]
    for option in candidates(given_prep):
        if not same(option.prep, prep):
            chosen.append(replace(option, options=options_for(option.prep, prep)))
    return chosen


def _inputs_cache(probe: ModelInputs, pixels: Optional[np.ndarray], pixel_prep: Optional[Preprocessing],
                  options: list[Candidate]) -> Callable:
    """name -> the probe samples' float32 model input under that candidate (sliceable, made on demand).
    ``pixels`` are in ``pixel_prep``'s colour order (the model's, as preprocessing left them)."""
    shape = tuple(probe.inputs.shape[1:])
    made: dict[str, Any] = {GIVEN: probe.inputs}
    for option in options:
        swap = option.prep.channels == 3 and option.prep.color != pixel_prep.color
        made[option.name] = CandidateInputs(pixels, option.prep, shape, swap)
    return made.__getitem__


def _batchnorm_scores(model: Any, inputs_of: Callable, options: list[Candidate]):
    """(BatchNormEvidence of the given inputs, name -> divergence for the given inputs and every candidate)."""
    keras_model = getattr(model, "keras_model", None)
    if keras_model is None:
        return None, {}
    layers, initial = trained_batchnorm_layers(keras_model)
    if not layers:
        return BatchNormEvidence((), initial), {}
    names = [GIVEN] + [c.name for c in options]
    evidence = batchnorm_evidence(keras_model, [inputs_of(name) for name in names], layers, initial)
    if not evidence[0].layers:
        return evidence[0], {}
    return evidence[0], {name: e.score for name, e in zip(names, evidence)}


def _ruled_out(bn: dict, name: str) -> bool:
    """A candidate BatchNormalization statistics make implausible (4x the given divergence, and large): not
    worth a forward pass of the whole model with labels."""
    return better_by_batchnorm(bn.get(GIVEN), bn.get(name))


def _label_scores(model: Any, inputs_of: Callable, options: list[Candidate], labels: Optional[np.ndarray],
                  favoured: list[str]):
    """name -> per-sample top-1 correctness (bool array). Every candidate is measured on FIRST_STAGE samples;
    the promising ones, and those BatchNormalization statistics favour, on all the probe samples."""
    if labels is None or getattr(model, "num_outputs", 0) < 2 or labels.max() >= model.num_outputs:
        return None
    first = min(len(labels), FIRST_STAGE)
    names = [GIVEN] + [c.name for c in options]
    results = dict(zip(names, _correct(model, [inputs_of(name) for name in names], labels, 0, first)))
    base = results[GIVEN].mean()
    promising = [name for name, hits in results.items()
                 if name != GIVEN and (hits.mean() - base >= PROMISING or name in favoured)]
    if promising and len(labels) > first:
        more = [GIVEN] + promising
        rest = _correct(model, [inputs_of(name) for name in more], labels, first, len(labels))
        results.update({name: np.concatenate([results[name], hits]) for name, hits in zip(more, rest)})
    return results


def _correct(model: Any, sets: list[Any], labels: np.ndarray, start: int, stop: int) -> list[np.ndarray]:
    """Top-1 correctness on samples start..stop of each set (the same samples under another preprocessing),
    all sets through the model together in batches of at most CHUNK_BYTES."""
    top1: list[list[np.ndarray]] = [[] for _ in sets]
    window = [_Window(s, start, stop) for s in sets]
    for owner, rows in packed_chunks(window, [len(w) for w in window]):
        predicted = model.predict(rows, batch_size=len(rows)).argmax(axis=1)
        for index in np.unique(owner):
            top1[index].append(predicted[owner == index])
    return [np.concatenate(parts) == labels[start:stop] for parts in top1]


class _Window:
    """Rows start..stop of a sliceable set."""

    def __init__(self, source: Any, start: int, stop: int) -> None:
        self.source, self.start, self.stop = source, start, min(stop, len(source))

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, part: slice) -> np.ndarray:
        begin, end, _ = part.indices(len(self))
        return self.source[self.start + begin:self.start + end]


def _score_rows(options: list[Candidate], bn: dict, correct: Optional[dict]) -> tuple[CandidateScore, ...]:
    rows = []
    for name, opts in [(GIVEN, "")] + [(c.name, c.options) for c in options]:
        hits = correct.get(name) if correct else None
        rows.append(CandidateScore(name, opts, bn.get(name), None if hits is None else float(hits.mean()),
                                   0 if hits is None else int(len(hits))))
    return tuple(rows)


def better_by_labels(candidate: np.ndarray, given: np.ndarray) -> bool:
    """Paired on the same samples: the candidate gains MIN_GAIN top-1 and its wins beat its losses beyond noise."""
    count = min(len(candidate), len(given))
    wins, losses = _wins_losses(candidate, given)
    return count > 0 and (wins - losses) / count >= MIN_GAIN and (wins - losses) / math.sqrt(max(wins + losses, 1)) >= Z_MIN


def _wins_losses(candidate: np.ndarray, given: np.ndarray) -> tuple[int, int]:
    """Samples only the candidate gets right, and only the given preprocessing gets right (the same samples)."""
    count = min(len(candidate), len(given))
    return int(np.sum(candidate[:count] & ~given[:count])), int(np.sum(given[:count] & ~candidate[:count]))


def better_by_batchnorm(candidate: Optional[float], given: Optional[float]) -> bool:
    return (candidate is not None and given is not None and not math.isnan(given) and given >= BN_BAD
            and candidate * BN_RATIO <= given)


def _verdict(scores: tuple[CandidateScore, ...], options: list[Candidate], probe: ModelInputs, prep: Preprocessing,
             correct: Optional[dict]) -> list[PrepFinding]:
    """At most one finding: the candidate labels show clearly better, else the one BatchNormalization does."""
    given = scores[0]
    by_labels = [s for s in scores[1:] if correct and s.name in correct
                 and better_by_labels(correct[s.name], correct[GIVEN])]
    by_bn = [s for s in scores[1:] if better_by_batchnorm(s.batchnorm, given.batchnorm)]
    what = describe(prep) if probe.pixels is not None else f"the {probe.role} arrays as given"
    if by_labels:
        best = max(by_labels, key=lambda s: s.accuracy)
        agree = " (the BatchNormalization statistics agree)" if best in by_bn else ""
        message = (f"preprocessing mismatch: Keras top-1 on {best.samples} labelled {probe.role} samples is "
                   f"{_pct(given.accuracy)} with {what} but {_pct(best.accuracy)} with {best.name}{agree}")
        return [PrepFinding("labels", Severity.WARNING, message, _fix(best, options, probe))]
    if not by_bn:
        return []
    best = min(by_bn, key=lambda s: s.batchnorm)
    message = (f"preprocessing mismatch: the first BatchNormalization layers see inputs far from their training "
               f"statistics with {what} (divergence {given.batchnorm:.3g}) and close to them with {best.name} "
               f"({best.batchnorm:.3g})")
    if correct is not None and best.name in correct:  # labels do not show it clearly: they must lean the same way
        wins, losses = _wins_losses(correct[best.name], correct[GIVEN])
        if wins <= losses:
            return [PrepFinding("batchnorm", Severity.INFO, message + ", but labelled top-1 does not confirm it")]
        message += f"; Keras top-1 {_pct(given.accuracy)} -> {_pct(best.accuracy)} on {best.samples} labelled samples"
    return [PrepFinding("batchnorm", Severity.WARNING, message, _fix(best, options, probe))]


def _fix(best: CandidateScore, options: list[Candidate], probe: ModelInputs) -> str:
    accuracy = f" (Keras top-1 {_pct(best.accuracy)})" if best.accuracy is not None else ""
    if probe.pixels is not None:
        return f"pass {best.options}{accuracy}"
    target = next(c.prep for c in options if c.name == best.name)
    made = f"save the arrays preprocessed as {describe(target)}, or give the images"
    return f"{made}{accuracy}" if not best.options else f"pass {best.options} and {made}{accuracy}"


def _class_order_findings(model: Any, inputs: Any, probe: ModelInputs, correct: Optional[dict],
                          datasets: tuple) -> list[PrepFinding]:
    """A warning when Keras, fed as given, puts nearly every sample of each label on one other output, one label
    per output: the labels are numbered in another order than the model's outputs (class folders are numbered
    alphabetically). A colour-order candidate can score as well by the same swap, so this is said beside it."""
    if correct is None or GIVEN not in correct or correct[GIVEN].mean() >= 1.0 - MIN_GAIN:
        return []
    labels = probe.labels
    predicted = np.concatenate([model.predict(rows, batch_size=len(rows)).argmax(axis=1)
                                for _, rows in packed_chunks([inputs], [len(labels)])])
    mapping: dict[int, int] = {}
    for label in np.unique(labels):
        votes = np.bincount(predicted[labels == label])
        if (labels == label).sum() < ORDER_MIN_SAMPLES or votes.max() < ORDER_SHARE * (labels == label).sum():
            return []
        mapping[int(label)] = int(votes.argmax())
    moved = {k: v for k, v in mapping.items() if k != v}
    if not moved or len(set(mapping.values())) != len(mapping):
        return []
    remapped = float(np.mean(np.array([mapping[int(t)] for t in labels]) == predicted))
    if remapped - float(correct[GIVEN].mean()) < MIN_GAIN:
        return []
    names = next((tuple(d.class_names) for d in datasets if d is not None and d.class_names), None)

    def name(index: int) -> str:
        return f"'{names[index]}' ({index})" if names and index < len(names) else str(index)

    shown = ", ".join(f"{name(k)} -> output {v}" for k, v in sorted(moved.items())[:6])
    message = (f"class order mismatch: Keras puts each label of the {len(labels)} {probe.role} samples on another "
               f"output ({shown}): read that way, top-1 is {_pct(remapped)} instead of "
               f"{_pct(float(correct[GIVEN].mean()))}")
    fix = ("give --labels FILE with the model's classes in output order, one per line (class folders are then "
           "matched by name); class folders are otherwise numbered alphabetically")
    return [PrepFinding("labels", Severity.WARNING, message, fix)]


def _merge(findings: list[PrepFinding], verdict: list[PrepFinding], probe: ModelInputs) -> list[PrepFinding]:
    """One warning, not two, when the arrays' range finding and the verdict are about the same arrays."""
    ranged = [f for f in findings if f.check == "array-range" and f.message.startswith(f"{probe.role} arrays")]
    if probe.pixels is not None or not ranged or not verdict or verdict[0].severity != Severity.WARNING:
        return findings + verdict
    evidence = verdict[0].message.removeprefix("preprocessing mismatch: ")
    merged = replace(ranged[0], message=f"{ranged[0].message}; {evidence}", fix=verdict[0].fix)
    return [merged if f is ranged[0] else f for f in findings]


def _refine_array_fixes(findings: list[PrepFinding], scores: tuple[CandidateScore, ...], probe: ModelInputs,
                        prep: Preprocessing, given_prep: Optional[Preprocessing], correct: Optional[dict]):
    """Float arrays outside the manifest's range: say which side is wrong when the evidence is clear."""
    manifest = next((s for s in scores if s.name.startswith("the manifest's")), None)
    if manifest is None or given_prep is None:
        return findings
    given = scores[0]
    arrays_right = better_by_batchnorm(given.batchnorm, manifest.batchnorm) or (
        correct is not None and manifest.name in correct and better_by_labels(correct[GIVEN], correct[manifest.name]))
    if not arrays_right:
        return findings
    fix = f"the model looks trained on {span(*value_range(given_prep))}: pass {options_for(given_prep, prep)}"
    return [replace(f, fix=fix) if f.check == "array-range" and probe.role in f.message else f for f in findings]


def _exif_findings(datasets: tuple) -> list[PrepFinding]:
    oriented = [(d.oriented, len(d), d.source) for d in datasets if d is not None and getattr(d, "oriented", 0)]
    if not oriented:
        return []
    count = sum(o for o, _, _ in oriented)
    where = ", ".join(f"{o} of {n} in {s}" for o, n, s in oriented)
    return [PrepFinding("exif", Severity.WARNING, f"{count} image(s) carry an EXIF orientation tag ({where}): they are "
                        "read as stored, unrotated, as Keras's loaders read them; phone photos may be sideways",
                        "if the model was trained on upright images, rotate the files (e.g. exiftran -ai) first")]


# -- small helpers ---------------------------------------------------------------------------------
def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj
