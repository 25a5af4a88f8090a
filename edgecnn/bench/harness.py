"""``bench``: every artifact x target x thread count measured in isolation, with accuracy against the fp32 reference.

A row that cannot load or run is recorded as failed with its one-line reason and the others go on.
Per row: size, load time, first inference, raw-inference and whole-step latency, optional offline
throughput, MACs, accuracy (computed once per artifact and target, reused across thread counts), RSS.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgecnn.bench import timing
from edgecnn.bench.accuracy import AccuracyResult, align_labels
from edgecnn.bench.envinfo import fingerprint
from edgecnn.bench.jobs import Artifact, Job, collect_artifacts, parse_threads, plan_jobs
from edgecnn.bench.macs import count_macs_noted, gmacs_per_s
from edgecnn.bench.reference import ReferenceBook, evaluate_artifact
from edgecnn.bench.result import SAMPLES_KEPT, BenchResult, BenchRow, Offline, Status
from edgecnn.bench.stats import DEFAULT_BLOCKS, DEFAULT_UNSTABLE_CV, summarize
from edgecnn.data import Dataset, load_dataset
from edgecnn.devices.cluster import ClusterOptions
from edgecnn.errors import EdgecnnError, UsageError
from edgecnn.manifest import ColorOrder, OutputKind, Preprocessing
from edgecnn.prepchoice import PrepChoice, describe_prep
from edgecnn.preprocess import InputEncoder, prepare_pixels

DEFAULT_RUNS = 200


class BenchFailedError(EdgecnnError):
    """Every row failed: nothing was measured."""

    exit_code = 1


@dataclass(frozen=True)
class BenchOptions:
    warmup: int = timing.MIN_WARMUP
    runs: Optional[int] = None  # back-to-back single-image inferences; DEFAULT_RUNS when neither is given
    duration_s: Optional[float] = None  # or as many as fit in this many seconds
    offline: bool = False  # also measure batched throughput
    batch: int = 8  # images per batch in offline mode
    blocks: int = DEFAULT_BLOCKS  # consecutive blocks compared for run-to-run variation
    unstable_cv: float = DEFAULT_UNSTABLE_CV
    step: bool = True  # also time the whole runner step (preprocess + inference + postprocess)
    max_samples: Optional[int] = None  # accuracy on at most this many samples (a fixed, seeded subset)
    reference: Optional[str] = None  # the Keras fp32 model, when it cannot be found from the manifest
    unsafe: bool = False  # load the Keras reference without safe_mode
    min_agreement: float = 0.90  # below this top-1 agreement with the reference: failed verification
    max_drop_pp: Optional[float] = None  # above this accuracy loss: failed verification
    probe: bool = True  # check each model file in a child process before loading it here
    progress: bool = True
    ray: Optional[ClusterOptions] = None  # accuracy (--data) as chunks on a Ray cluster; latency always here
    # The options `run` takes: override a manifest's preprocessing, or complete what a file without one says.
    prep: Optional[PrepChoice] = None
    labels: Optional[str] = None  # a labels file, one per line
    output_kind: Optional[OutputKind] = None

    def plan(self) -> timing.TimingPlan:
        runs = self.runs if self.runs is not None or self.duration_s is not None else DEFAULT_RUNS
        plan = timing.TimingPlan(warmup=self.warmup, runs=runs, duration_s=self.duration_s)
        plan.validate()
        return plan

    def validate(self) -> None:
        self.plan()
        if self.batch < 1:
            raise UsageError(f"--batch {self.batch} is not positive")
        if self.blocks < 1:
            raise UsageError(f"blocks {self.blocks} is not positive")
        if not 0.0 <= self.min_agreement <= 1.0:
            raise UsageError(f"min agreement {self.min_agreement} is outside 0..1")
        if self.max_samples is not None and self.max_samples < 1:
            raise UsageError(f"--samples {self.max_samples} is not positive")
        if self.ray is not None:
            self.ray.validate()


def bench(models: Sequence[str | Path], devices: Sequence[str] = ("cpu",), threads: Sequence[int | str] = (1,),
          data: Dataset | str | Path | None = None, options: BenchOptions = BenchOptions(),
          command: str = "") -> BenchResult:
    """Benchmark ``models`` (artifact files or convert output folders) on ``devices`` at each thread count.

    ``devices``: target names (devices/runners.py TARGETS); ``threads``: counts, or "auto"; ``data``: a labelled
    Dataset or what edgecnn.data.load_dataset reads (an image folder, .npz, "mnist"), for accuracy against the
    Keras reference. Returns a BenchResult: one row per (model, device, threads) with latency percentiles in
    milliseconds (perf_counter, after ``options.warmup`` warm-up runs), load and first-inference time in ms,
    peak RSS in MiB, MACs per inference (None with the reason when they cannot be counted) and, with data,
    top-1 accuracy (0..1) and its drop in percentage points; a row that could not run is kept with its error.
    Raises UsageError (bad options), InputPathError/ManifestError (a model or folder that cannot be read).
    With ``options.ray`` the accuracy evaluation runs as chunks on a Ray cluster (ClusterError when it cannot be
    reached, before any work); latency is always measured on this machine, the one being benchmarked.
    """
    options.validate()
    if options.ray is not None and data is None:
        raise UsageError("--ray runs the accuracy evaluation on a cluster, which needs --data",
                         "give --data D, or leave out --ray (latency is always measured on this machine)")
    counts = parse_threads(threads)
    jobs = plan_jobs(collect_artifacts(models), devices, counts)
    dataset = _load_data(data, options.max_samples)
    for artifact in {id(j.artifact.manifest): j.artifact for j in jobs}.values():
        _check_data(artifact, dataset)  # labels that cannot be this model's: one error before any work
    with _cluster(options.ray) as cluster:
        book = ReferenceBook(dataset, options.reference, options.unsafe, options.probe, cluster=cluster)
        rows = _run_rows(jobs, dataset, book, options)
        if cluster is not None:
            book.notes.append(f"accuracy on {cluster.summary().line()}; latency measured on this machine")
    if rows and all(row.status == Status.FAILED for row in rows):
        first = rows[0]
        raise BenchFailedError(f"every row failed; first: {Path(first.artifact).name} on {first.target}: {first.reason}")
    return BenchResult(created=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), command=command,
                       environment=fingerprint(), options=_options_dict(options, devices, counts),
                       rows=tuple(add_fp32_ratios(rows)), data=dataset.source if dataset is not None else None,
                       notes=tuple(book.notes))


def _cluster(ray: Optional[ClusterOptions]):
    """The Ray connection for --ray (Ray is imported only then), else nothing."""
    if ray is None:
        return contextlib.nullcontext()
    from edgecnn.devices.cluster import Cluster  # noqa: PLC0415

    return Cluster(ray)


def _load_data(data: Dataset | str | Path | None, max_samples: Optional[int]) -> Optional[Dataset]:
    if data is None:
        return None
    dataset = data if isinstance(data, Dataset) else load_dataset(data, mnist_split="val")
    if max_samples is not None and len(dataset) > max_samples:
        # A seeded subset in the original order: head() could take one class only from a sorted set.
        chosen = np.sort(np.random.default_rng(0).choice(len(dataset), max_samples, replace=False))
        dataset = dataset.take(chosen)
    return dataset


def _check_data(artifact: Artifact, dataset: Optional[Dataset]) -> None:
    if dataset is None or artifact.manifest is None:
        return
    align_labels(dataset, artifact.manifest.labels, artifact.manifest.num_classes)


def _run_rows(jobs: list[Job], dataset: Optional[Dataset], book: ReferenceBook,
              options: BenchOptions) -> list[BenchRow]:
    rows: list[BenchRow] = []
    accuracy_cache: dict[tuple[str, str], Optional[AccuracyResult]] = {}
    with _progress(options.progress, len(jobs)) as advance:
        book.chunk_progress = advance.chunks
        for job in jobs:
            advance(f"{job.artifact.path.name} on {job.target} x{job.threads}")
            rows.append(run_row(job, dataset, book, options, accuracy_cache))
    return rows


def run_row(job: Job, dataset: Optional[Dataset], book: ReferenceBook, options: BenchOptions,
            accuracy_cache: dict) -> BenchRow:
    """One artifact on one target at one thread count; any EdgecnnError or runtime failure becomes a failed row."""
    base = _row_base(job)
    try:
        return _measure(job, dataset, book, options, accuracy_cache, base)
    except (KeyboardInterrupt, SystemExit):
        raise
    except EdgecnnError as exc:
        return dataclasses.replace(base, status=Status.FAILED, reason=exc.one_line())
    except Exception as exc:  # noqa: BLE001 - a runtime's own exception: this row fails, the others go on
        text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        return dataclasses.replace(base, status=Status.FAILED, reason=f"{type(exc).__name__}: {text}".rstrip(": "))


def _row_base(job: Job) -> BenchRow:
    art = job.artifact
    size = art.path.stat().st_size if art.path.is_file() else None
    return BenchRow(model=art.model_name, artifact=str(art.path), format=art.format, family=art.family,
                    precision=art.precision, target=job.target, threads=job.threads, status=Status.FAILED,
                    size_bytes=size, notes=(art.note,) if art.note else ())


def _measure(job: Job, dataset: Optional[Dataset], book: ReferenceBook, options: BenchOptions,
             accuracy_cache: dict, base: BenchRow) -> BenchRow:
    from edgecnn.devices.base import RunnerOptions  # noqa: PLC0415
    from edgecnn.devices.classify import Classifier, check_against_model  # noqa: PLC0415
    from edgecnn.devices.modelcheck import check_model  # noqa: PLC0415
    from edgecnn.devices.runners import open_runner  # noqa: PLC0415

    art = job.artifact
    check_model(art.path, probe=options.probe)  # the child-process probe is not part of the load time
    size = options.prep.size if options.prep is not None else None
    rss_before = timing.current_rss_mb()
    runner, load_ms = timing.time_once(lambda: open_runner(
        art.path, job.target, RunnerOptions(threads=job.threads, probe=False, warm_up=True, input_hw=size)))
    load_rss = timing.current_rss_mb() - rss_before
    with runner:
        art = with_embedded_manifest(art, runner)
        if art.manifest is not None and art.entry is None:
            _check_data(art, dataset)
            base = dataclasses.replace(base, model=art.model_name, notes=(art.note,))
        setup = model_setup(art, runner, options)
        prep, labels, kind = setup.prep, setup.labels, setup.kind
        base = dataclasses.replace(base, preprocessing=describe_prep(prep) + (" (assumed)" if setup.guessed else ""),
                                   notes=base.notes + setup.notices)
        if art.entry is None:  # no manifest entry: the file says its precision (a lone file, or a foreign one)
            from edgecnn.devices.model_info import read_model_io  # noqa: PLC0415

            precision = (setup.info or read_model_io(runner, getattr(runner, "_content", None))).precision
            base = dataclasses.replace(base, precision=precision)
            if art.manifest is not None and precision != "unknown":
                # a lone artifact of edgecnn convert: the name convert gave it, so it pairs with its fp32 sibling
                base = dataclasses.replace(base, format=f"{art.family}-{precision}")
        classifier = None
        if not setup.problem:
            check_against_model(runner, prep, labels, art.manifest, kind)  # a manifest for another model is refused
            classifier = Classifier(runner, prep, labels, kind, top_k=5, manifest=art.manifest)
        else:
            base = dataclasses.replace(base, accuracy_note=f"n/a: {setup.problem}")
        encoder = classifier.encoder if classifier is not None else InputEncoder.build(prep, runner.input)
        frame = sample_frame(dataset, prep)
        encoded = encoder(np.asarray(prepare_pixels(frame, prep, ColorOrder.RGB))[None])
        _, first_ms = timing.time_once(lambda: runner.invoke(encoded))
        plan = options.plan()
        invoke_ms = timing.time_calls(lambda: runner.invoke(encoded), plan)
        invoke = summarize(invoke_ms, 1, options.blocks, options.unstable_cv)
        step = None
        if options.step and classifier is not None:
            step_ms = timing.time_calls(lambda: classifier.classify(frame, ColorOrder.RGB), plan)
            step = summarize(step_ms, 1, options.blocks, options.unstable_cv)
        offline = measure_offline(runner, encoded, options) if options.offline else None
        key = (str(art.path), job.target)
        if key not in accuracy_cache:
            accuracy_cache[key] = evaluate_artifact(art, classifier, dataset, book) \
                if dataset is not None and classifier is not None else None
        accuracy = accuracy_cache[key]
        describe = runner.describe()
    # Never fails the row: latency first, MACs when they can be had (at the preprocessing's size when dynamic).
    macs, macs_note = count_macs_noted(art.path, (prep.height, prep.width))
    status, reason = judge(accuracy, art, options)
    return dataclasses.replace(
        base, status=status, reason=reason, notes=base.notes + ((macs_note,) if macs_note else ()), load_ms=load_ms,
        first_inference_ms=first_ms, invoke=invoke, step=step,
        offline=offline, macs=macs, gmacs_per_s=gmacs_per_s(macs, invoke.p50), accuracy=accuracy,
        rss_mb=timing.current_rss_mb(), load_rss_mb=load_rss, peak_rss_mb=timing.peak_rss_mb(),
        runtime=describe, samples_ms=tuple(float(v) for v in _thin(invoke_ms)))


def with_embedded_manifest(art: Artifact, runner: Any) -> Artifact:
    """``art`` with the manifest embedded in the model file when no manifest.json describes it."""
    if art.manifest is not None:
        return art
    from edgecnn.devices.classify import embedded_manifest  # noqa: PLC0415

    manifest = embedded_manifest(runner)
    if manifest is None:
        return art
    return dataclasses.replace(art, manifest=manifest, note="manifest read from the model file itself (no "
                               "manifest.json beside it): preprocessing and labels from it, no hash check")


def model_setup(art: Artifact, runner: Any, options: BenchOptions = BenchOptions()):
    """Preprocessing, labels and output kind (devices/model_info.py ModelSetup): the manifest's with the options
    given over it, else what the file says completed by the options given, the rest assumed (and noted)."""
    from edgecnn.devices.model_info import resolve_setup  # noqa: PLC0415

    return resolve_setup(runner, art.manifest, options.prep, options.labels, options.output_kind)


def sample_frame(dataset: Optional[Dataset], prep: Preprocessing) -> np.ndarray:
    """The image the step is timed on: the first data image as loaded, else a seeded random one at model size."""
    if dataset is not None and not dataset.preprocessed:
        return np.asarray(dataset.images[0])
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(prep.height, prep.width, prep.channels), dtype=np.uint8)


def measure_offline(runner: Any, encoded: np.ndarray, options: BenchOptions) -> Offline:
    """Batches of ``options.batch`` copies back to back; throughput over the whole timed run."""
    batch = np.repeat(encoded, options.batch, axis=0)
    plan = options.plan()
    ips, samples = timing.time_throughput(lambda: runner.invoke(batch), options.batch, plan)
    return Offline(options.batch, ips, summarize(samples, options.batch, options.blocks, options.unstable_cv))


def judge(accuracy: Optional[AccuracyResult], art: Artifact, options: BenchOptions) -> tuple[Status, str]:
    """ok, or exported-but-failed-verification with the reason (non-finite outputs, low agreement, too much loss)."""
    if accuracy is not None:
        if not accuracy.finite:
            return Status.FAILED_VERIFICATION, "outputs contain NaN or infinite values"
        if accuracy.agreement is not None and accuracy.agreement < options.min_agreement:
            return (Status.FAILED_VERIFICATION, f"top-1 agreement with the {accuracy.reference} reference "
                    f"{accuracy.agreement:.1%} is below {options.min_agreement:.0%}")
        if options.max_drop_pp is not None and accuracy.drop_pp is not None and accuracy.drop_pp > options.max_drop_pp:
            return (Status.FAILED_VERIFICATION, f"accuracy loss {accuracy.drop_pp:.2f} pp exceeds "
                    f"--max-drop {options.max_drop_pp:g} pp")
        return Status.OK, ""
    verification = art.entry.verification if art.entry is not None else None
    if verification is not None and verification.agreement is not None and verification.agreement < options.min_agreement:
        return (Status.FAILED_VERIFICATION, f"convert's verification: top-1 agreement {verification.agreement:.1%} "
                f"is below {options.min_agreement:.0%}")
    return Status.OK, ""


def add_fp32_ratios(rows: Sequence[BenchRow]) -> list[BenchRow]:
    """Each row's raw-inference p50 over the fp32 artifact's, same model, family, target and threads."""
    fp32 = {(r.model, r.family, r.target, r.threads): r.invoke.p50 for r in rows
            if r.precision == "fp32" and r.invoke is not None}
    out = []
    for row in rows:
        ref = fp32.get((row.model, row.family, row.target, row.threads))
        ratio = row.invoke.p50 / ref if row.invoke is not None and ref else None
        out.append(dataclasses.replace(row, p50_vs_fp32=ratio))
    return out


def _thin(samples: np.ndarray) -> np.ndarray:
    if samples.size <= SAMPLES_KEPT:
        return samples
    return samples[np.linspace(0, samples.size - 1, SAMPLES_KEPT).astype(int)]


def _options_dict(options: BenchOptions, devices: Sequence[str], threads: Sequence[int]) -> dict[str, Any]:
    out = dataclasses.asdict(options)
    out.pop("progress", None)
    out["runs"] = options.plan().runs
    out.update(devices=list(devices), threads=list(threads))
    return out


class _Advance:
    """``advance(description)`` moves the bench bar to the next row; ``chunks(description, total)`` adds a line
    counting a --ray run's chunks and returns its ``advance(n)``."""

    def __init__(self, advance: Callable[[str], None],
                 chunks: Optional[Callable[[str, int], Callable[[int], None]]] = None) -> None:
        self._advance = advance
        self.chunks = chunks or (lambda description, total: (lambda n: None))

    def __call__(self, description: str) -> None:
        self._advance(description)


class _progress:
    """A rich progress bar on stderr (transient), or nothing."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.enabled, self.total = enabled, total
        self._bar = None

    def __enter__(self):
        if not self.enabled:
            return _Advance(lambda description: None)
        from rich.console import Console  # noqa: PLC0415
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: PLC0415

        self._bar = Progress(TextColumn("[bold]bench[/]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                             TextColumn("{task.description}"), console=Console(stderr=True), transient=True,
                             auto_refresh=False)  # no refresh thread competing with the timed loop
        self._bar.__enter__()
        task = self._bar.add_task("", total=self.total)
        state = {"started": False}

        def advance(description: str) -> None:
            if state["started"]:
                self._bar.advance(task)
            state["started"] = True
            self._bar.update(task, description=description)
            self._bar.refresh()

        return _Advance(advance, self._chunks)

    def _chunks(self, description: str, total: int) -> Callable[[int], None]:
        """A second line for the chunks of one --ray run (done / total), gone when they are."""
        task = self._bar.add_task(description, total=total)
        self._bar.refresh()

        def advance(n: int) -> None:
            self._bar.advance(task, n)
            if next(t for t in self._bar.tasks if t.id == task).finished:
                self._bar.remove_task(task)
            self._bar.refresh()

        return advance

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
