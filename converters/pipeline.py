"""`edgecnn convert` as a library call: model + calibration data -> verified artifacts + manifest.json.

Order matters for "bad input writes nothing": options, model, data and labels are all checked before
the output folder is touched; then each format is built (atomically, one small step per format),
verified through the device runners, and finally the manifest is written. ``--max-drop`` is checked
last, after the report exists, and raises AccuracyBudgetError carrying the result.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Optional

from edgecnn.data import Dataset, load_dataset
from edgecnn.errors import (AccuracyBudgetError, ConversionError, ConversionFailedError, DataError, EdgecnnError,
                            InputPathError, PreprocessingMismatchError, UsageError)
from edgecnn.interrupts import InterruptGuard, interrupt_guard
from edgecnn.fileio import (check_writable_dir, process_alive, read_labels, refuse_overwrite, sha256_of,
                            write_text_atomic)
from edgecnn.manifest import (MANIFEST_NAME, ArtifactEntry, ColorOrder, FailedArtifact, Interpolation, Manifest,
                              OutputKind, ResizeMode)
from edgecnn.native_log import NativeLog, command_log
from edgecnn.preprocess import class_count

from edgecnn.converters import calibration as cal
from edgecnn.converters.calibration_methods import CALIBRATION_METHODS
from edgecnn.converters.formats import FormatSpec, IoType, parse_formats
from edgecnn.converters.progress import ProgressReporter
from edgecnn.converters.steps import BuildJob, BuiltArtifact, build_artifact
from edgecnn.converters import heads
from edgecnn.converters.verify import BATCH, VerifyRule, cluster_run, judge, reference_outputs, verify_artifact
from edgecnn.devices.cluster import ClusterOptions

DEFAULT_CALIB_SAMPLES = 200
LOG_NAME = "convert.log"  # TensorFlow's, the converters' and tf2onnx's own output, beside the artifacts


class FallbackMode(str, Enum):
    NONE = "none"
    AUTO = "auto"  # keep the most harmful layers in float until --max-drop is met


@dataclass(frozen=True)
class ConvertOptions:
    formats: Optional[str] = None            # comma-separated names; None: every format that applies
    io: IoType = IoType.INT8                 # tflite-int8 input/output type
    calib_method: str = "minmax"             # onnx-int8 activation ranges
    calib_samples: int = DEFAULT_CALIB_SAMPLES
    labels_file: Optional[Path] = None
    color: Optional[ColorOrder] = None
    resize: ResizeMode = ResizeMode.STRETCH
    interpolation: Interpolation = Interpolation.LINEAR  # how larger images are shrunk (Keras: bilinear)
    scale: Optional[float] = None
    mean: Optional[tuple[float, ...]] = None
    std: Optional[tuple[float, ...]] = None
    invert: bool = False
    max_drop: Optional[float] = None         # percentage points
    force: bool = False
    unsafe: bool = False
    fallback: FallbackMode = FallbackMode.NONE
    per_channel: bool = True
    opset: Optional[int] = None
    onnx_target: str = "x86"                 # onnx-int8 settings per CPU: x86, x86-avx2, arm64 (onnx_targets)
    onnx_full_int8: bool = False             # quantize the final Softmax and the logits too
    seed: int = 0
    progress: bool = True
    strict: bool = False                     # a preprocessing mismatch is an error (exit 2), not a warning
    output_kind: Optional[OutputKind] = None  # None: decided from the graph's final op and the float outputs
    min_float_agreement: float = 0.99        # fp32/fp16 artifacts agreeing less with Keras are refused
    ray: Optional[ClusterOptions] = None     # verify (and measure --fallback candidates) as chunks on a Ray cluster


@dataclass(frozen=True)
class ConvertResult:
    out_dir: Path
    manifest: Manifest
    manifest_path: Path
    warnings: tuple[str, ...] = ()
    over_budget: tuple[str, ...] = field(default=())  # artifacts that lost more than --max-drop
    failed: tuple[FailedArtifact, ...] = ()  # formats refused (build error, NaN, chance level...): not published
    cluster_summary: Optional[str] = None    # --ray: where the verification chunks ran, all artifacts together
    log_path: Optional[Path] = None  # the converters' own output (convert.log)

    def artifact_path(self, name: str) -> Path:
        return self.out_dir / self.manifest.artifact(name).file


def convert(model: Optional[str | Path] = None, calib: Optional[str | Path] = None, val: Optional[str | Path] = None,
            out: Optional[str | Path] = None, options: ConvertOptions = ConvertOptions()) -> ConvertResult:
    """Convert ``model`` (None: the embedded default MNIST CNN) to every chosen format, verify, write the manifest.

    Raises UsageError/DataError/ModelLoadError/RuntimeMissingError (exit 2) before anything is written; ConversionFailedError
    (exit 1, ``.result`` set when something was published) when a format failed to build or was refused by
    verification; AccuracyBudgetError (exit 1) when an artifact lost more than ``max_drop``. With
    ``options.ray``: ClusterError (exit 2) when the cluster cannot be reached, before any work. What TensorFlow
    and the converters print goes to ``convert.log`` in the output folder (see ``log_path``).
    """
    _check_options(options)
    with command_log("convert") as log, _cluster(options.ray) as cluster:
        return _convert(model, calib, val, out, options, log, cluster)


def _cluster(ray: Optional[ClusterOptions]):
    """The Ray connection for --ray (Ray is imported only then), else nothing."""
    if ray is None:
        return contextlib.nullcontext()
    from edgecnn.devices.cluster import Cluster  # noqa: PLC0415

    return Cluster(ray)


def _convert(model, calib, val, out, options: ConvertOptions, log: NativeLog, cluster) -> ConvertResult:
    formats = parse_formats(options.formats)
    if model is None:
        from edgecnn.converters.zoo import trained_mnist_cnn  # noqa: PLC0415

        model, calib, val = trained_mnist_cnn(), calib or "mnist", val or "mnist"
    from edgecnn.converters.keras_load import load_model  # noqa: PLC0415 - imports TensorFlow

    loaded = load_model(model, unsafe=options.unsafe)
    prep, prep_notes = cal.build_preprocessing(loaded.input_shape, _prep_request(options), loaded.layer_classes,
                                               loaded.keras_model)
    formats = _formats_that_apply(formats, calib, options.formats is not None)
    for spec in formats:
        spec.check_ready()  # a format's missing toolchain: one line, before anything is built or written
    calib_set, val_set = _load_data(calib, val)
    folder_notes: list[str] = []
    if options.labels_file is not None:
        names = read_labels(Path(options.labels_file))
        calib_set, val_set = (_match_folders(d, names, options.labels_file, folder_notes) for d in (calib_set, val_set))
    calib_inputs = cal.model_inputs(calib_set, prep, loaded.input_shape, "calibration") if calib_set else None
    val_inputs = cal.model_inputs(val_set, prep, loaded.input_shape, "validation") if val_set else None
    chosen_calib, calib_warn = (None, ())
    if calib_inputs is not None:
        chosen_calib, calib_warn = cal.choose_calibration(calib_inputs, options.calib_samples, options.seed)
    float_outputs = loaded.predict(chosen_calib.inputs) if chosen_calib is not None else None
    _check_float_model(float_outputs)
    head = heads.decide(loaded, float_outputs, options.output_kind)
    classes = class_count(head.kind, loaded.num_outputs)
    labels = _labels(options.labels_file, val_set or calib_set, classes)
    verify_data = val_inputs if val_inputs is not None else calib_inputs
    _check_label_values(verify_data, len(labels))
    if options.max_drop is not None and (verify_data is None or verify_data.labels is None):
        raise UsageError(f"--max-drop {options.max_drop:g} needs labelled data to measure accuracy",
                         "pass --val with labels (a folder with one subfolder per class, or .npz with x and y)")
    prep_report = _check_preprocessing(loaded, prep, calib_inputs, val_inputs, (calib_set, val_set), options.strict)
    out_dir = Path(out) if out is not None else Path("edgecnn-out") / loaded.name
    targets = [out_dir / spec.file_name(loaded.name) for spec in formats] + [out_dir / MANIFEST_NAME]
    refuse_overwrite(targets, options.force)
    created = not out_dir.exists()
    check_writable_dir(out_dir)

    warnings = list(loaded.notes) + list(prep_notes) + [finding.line() for finding in prep_report.warnings] \
        + list(head.warnings) + list(calib_warn) + folder_notes
    calib_record = cal.calibration_record(chosen_calib, options.calib_method, options.seed, calib_warn) \
        if chosen_calib is not None else {}
    if chosen_calib is not None and any(spec.name == "onnx-int8" for spec in formats):
        calib_record["onnx-int8"] = _onnx_settings(options).record(options.per_channel)
    manifest = Manifest(model_name=loaded.name, source_sha256=loaded.sha256, input_shape=loaded.input_shape,
                        preprocessing=prep, labels=labels, output_kind=head.kind,
                        versions=_versions(cluster is not None), calibration=calib_record,
                        checks=prep_report.to_dict(),
                        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    manifest.validate()  # what the runners will check when they read it
    reporter = ProgressReporter(enabled=options.progress)
    # Build everything in a staging folder beside the outputs, then publish: the folder's earlier artifacts and
    # manifest stay whole and consistent for the whole conversion (minutes), not just file by file.
    staging = out_dir / f".convert.partial-{os.getpid()}"
    _remove_stale_staging(out_dir)
    staging.mkdir()
    manifest_path = out_dir / MANIFEST_NAME
    try:
        with interrupt_guard() as guard:
            entries, failed = _build_all(loaded, formats, staging, chosen_calib, verify_data, manifest, options,
                                         reporter, guard, cluster)
            manifest = manifest.with_artifacts(tuple(entries)).with_failed(tuple(failed))
            guard.check()  # a Ctrl-C swallowed inside a native callback still stops before anything is published
            if entries:
                log.move_to(staging / LOG_NAME)  # published with the artifacts
                _publish(staging, out_dir, manifest.to_json())
                log.path = out_dir / LOG_NAME
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # nothing was published: leave no empty folder behind
    result = ConvertResult(out_dir=out_dir, manifest=manifest, manifest_path=manifest_path,
                           warnings=tuple(warnings), over_budget=_over_budget(entries, options.max_drop),
                           failed=tuple(failed), log_path=log.path,
                           cluster_summary=cluster.summary().line() if cluster is not None else None)
    _enforce_verification(result)
    _enforce_budget(result, options.max_drop)
    return result


def _check_preprocessing(loaded, prep, calib_inputs, val_inputs, datasets, strict: bool):
    """Does the data, preprocessed as the manifest says, look like what the model was trained on
    (converters/prep_check.py)? Runs before anything is calibrated or written; --strict refuses a mismatch."""
    from edgecnn.converters.prep_check import check_preprocessing  # noqa: PLC0415

    rescales_itself = any(name in cal.RESCALING_LAYERS for name in loaded.layer_classes)
    report = check_preprocessing(loaded, prep, calib_inputs, val_inputs, rescales_itself, datasets)
    if strict and report.mismatches:
        first = report.mismatches[0]
        raise PreprocessingMismatchError(first.message, (f"{first.fix}; " if first.fix else "")
                                         + "nothing was written (--strict)")
    return report


def _check_float_model(outputs) -> None:
    """The Keras model itself must give finite outputs: NaN weights (a diverged training run) or inputs far out
    of range would make every artifact "fail" for a reason that is not the conversion's."""
    if outputs is None:
        return
    import numpy as np  # noqa: PLC0415

    bad = int(np.sum(~np.isfinite(np.asarray(outputs)).all(axis=1)))
    if bad:
        raise ConversionError(f"the Keras model itself outputs NaN or Inf on {bad} of {len(outputs)} calibration "
                              "samples", "check its weights for NaN (a diverged training run) and the input scale")


def _enforce_verification(result: ConvertResult) -> None:
    """Failed formats make the command fail, in one line naming each artifact and its figure."""
    if not result.failed:
        return
    reasons = "; ".join(f.reason if f.reason.startswith(f.name) else f"{f.name}: {f.reason}" for f in result.failed)
    published = len(result.manifest.artifacts)
    where = (f"the other {published} artifact(s) and manifest.json (listing the failure) are in {result.out_dir}"
             if published else "nothing was written")
    error = ConversionFailedError(f"{len(result.failed)} artifact(s) failed and were not published: {reasons}", where)
    error.result = result if published else None
    raise error


def _publish(staging: Path, out_dir: Path, manifest_json: str) -> None:
    """Move the staged files into place (renames on one filesystem: milliseconds), the manifest last."""
    for staged in sorted(staging.iterdir()):
        os.replace(staged, out_dir / staged.name)
    write_text_atomic(out_dir / MANIFEST_NAME, manifest_json)


def _remove_stale_staging(out_dir: Path) -> None:
    """Staging folders of conversions that were killed (their process is gone) are removed."""
    for leftover in out_dir.glob(".convert.partial-*"):
        pid = leftover.name.rpartition("-")[2]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _check_options(options: ConvertOptions) -> None:
    if options.calib_method not in CALIBRATION_METHODS:
        from edgecnn.registry import lookup  # noqa: PLC0415

        lookup(CALIBRATION_METHODS, options.calib_method, "calibration method")
    _onnx_settings(options)  # an unknown --onnx-target is refused before anything is loaded
    if options.calib_samples <= 0:
        raise UsageError(f"--calib-samples {options.calib_samples} must be positive")
    if options.fallback == FallbackMode.AUTO and options.max_drop is None:
        raise UsageError("--fallback auto needs --max-drop PP", "say how many percentage points int8 may lose")
    if options.max_drop is not None and options.max_drop < 0:
        raise UsageError(f"--max-drop {options.max_drop} must be zero or positive (percentage points)")
    if options.ray is not None:
        options.ray.validate()
    if not 0.0 <= options.min_float_agreement <= 1.0:
        raise UsageError(f"--min-float-agreement {options.min_float_agreement} is outside 0..1",
                         "give a fraction, e.g. 0.99")


def _onnx_settings(options: ConvertOptions):
    from edgecnn.converters.onnx_targets import onnx_settings  # noqa: PLC0415

    return onnx_settings(options.onnx_target, full_int8=options.onnx_full_int8)


def _prep_request(options: ConvertOptions) -> cal.PrepRequest:
    return cal.PrepRequest(color=options.color, resize=options.resize, interpolation=options.interpolation,
                           scale=options.scale, mean=options.mean,
                           std=options.std, invert=options.invert)


def _formats_that_apply(formats: tuple[FormatSpec, ...], calib, explicit: bool) -> tuple[FormatSpec, ...]:
    if calib is not None:
        return formats
    needing = [spec.name for spec in formats if spec.needs_calibration]
    if needing and explicit:
        raise UsageError(f"{', '.join(needing)} need calibration data", "pass --calib DATA (images, .npy/.npz, or mnist)")
    kept = tuple(spec for spec in formats if not spec.needs_calibration)
    if not kept:
        raise UsageError("no format can be built without calibration data", "pass --calib DATA")
    return kept


def _load_data(calib, val) -> tuple[Optional[Dataset], Optional[Dataset]]:
    calib_set = load_dataset(calib, mnist_split="train") if calib is not None else None
    val_set = load_dataset(val, mnist_split="val") if val is not None else None
    return calib_set, val_set


def _match_folders(dataset: Optional[Dataset], names: tuple[str, ...], labels_file: Path,
                   notes: list[str]) -> Optional[Dataset]:
    """Class folders renumbered in the labels file's order when they carry the same names. Folders are otherwise
    numbered alphabetically (as Keras's image_dataset_from_directory does), which silently scores every image
    against the wrong output when the model was trained in another order. Raises DataError when the folders and
    the file name a class at different positions without naming the same classes."""
    if dataset is None or not dataset.class_names or dataset.labels is None:
        return dataset
    folders = tuple(dataset.class_names)
    if folders == names:
        return dataset
    if set(folders) != set(names) or len(folders) != len(names):
        # Other names (display names for numbered folders, say) keep the folders' alphabetical order, unless a
        # name both use sits at another position: then the two disagree on what that output is.
        moved = [n for n in folders if n in names and names.index(n) != folders.index(n)]
        if moved:
            raise DataError(f"class folder '{moved[0]}' of {dataset.source} is class {folders.index(moved[0])} "
                            f"alphabetically but line {names.index(moved[0]) + 1} of labels file {labels_file}",
                            "name the folders exactly as the labels file's lines (they are then matched by name), "
                            "or give folders whose alphabetical order is the model's output order")
        return dataset
    import numpy as np  # noqa: PLC0415

    position = np.array([names.index(name) for name in folders], dtype=np.int64)
    notes.append(f"class folders of {dataset.source} numbered in the order of {labels_file} by name, not "
                 f"alphabetically ({', '.join(f'{n}={i}' for i, n in enumerate(names))})")
    return dataclasses.replace(dataset, labels=position[dataset.labels], class_names=names)


def _labels(labels_file: Optional[Path], dataset: Optional[Dataset], classes: int) -> tuple[str, ...]:
    """One label per class (a one-unit binary head has two: class 0 below p = 0.5, class 1 at or above)."""
    if labels_file is not None:
        labels = read_labels(Path(labels_file))
        if len(labels) != classes:
            raise DataError(f"labels file {labels_file} has {len(labels)} labels but the model has {classes} classes",
                            "give one label per line, one per class, in output order (a binary model: two lines, "
                            "the class of p < 0.5 first)")
        return labels
    if dataset is not None and dataset.class_names and len(dataset.class_names) == classes:
        return tuple(dataset.class_names)
    return tuple(str(i) for i in range(classes))


def _check_label_values(data: Optional[cal.ModelInputs], num_classes: int) -> None:
    if data is None or data.labels is None or len(data.labels) == 0:
        return
    if data.labels.min() < 0 or data.labels.max() >= max(num_classes, 1):
        raise DataError(f"{data.role} labels of {data.source} range over {data.labels.min()}..{data.labels.max()} "
                        f"but the model has {num_classes} classes", "label classes 0..N-1 in the model's output order")


def _build_all(loaded, formats, out_dir: Path, calib: Optional[cal.ModelInputs], verify_data, manifest: Manifest,
               options: ConvertOptions, reporter: ProgressReporter, guard: InterruptGuard,
               cluster=None) -> tuple[list[ArtifactEntry], list[FailedArtifact]]:
    """Build and verify each format; one that fails to build or is refused by verification is listed as failed
    (its file removed from the staging folder) and the others go on."""
    entries, failed = [], []
    reference = reference_outputs(loaded, verify_data) if verify_data is not None else None
    metadata = manifest.to_json()
    rule = VerifyRule(min_float_agreement=options.min_float_agreement)
    with tempfile.TemporaryDirectory(prefix="edgecnn-convert-") as work, reporter:
        shared: dict = {}
        for spec in formats:
            job = BuildJob(model=loaded, fmt=spec, out_path=out_dir / spec.file_name(loaded.name),
                           calib_inputs=None if calib is None else calib.inputs, workdir=Path(work), io=options.io,
                           calib_method=options.calib_method, per_channel=options.per_channel, opset=options.opset,
                           onnx=_onnx_settings(options), shared=shared, metadata=metadata)
            try:
                built = build_step(job, reporter)
            except KeyboardInterrupt:
                raise
            except EdgecnnError as exc:
                if isinstance(exc, (UsageError, DataError)):
                    raise
                failed.append(FailedArtifact(spec.name, f"{spec.name}: {exc.one_line()}"))
                continue
            guard.check()
            verification = None
            if verify_data is not None:
                built, verification = _verify(built, spec, verify_data, manifest, reference, reporter, cluster)
            # --fallback auto: an int8 artifact over --max-drop is rebuilt with its most harmful layers kept in
            # float (edgecnn.converters.fallback), then verified again like any artifact.
            if _needs_fallback(spec, verification, options):
                from edgecnn.converters.fallback import fallback_artifact  # noqa: PLC0415

                with reporter.status(f"--fallback auto: {spec.name}"):
                    built, _ = fallback_artifact(job, verify_data, options.max_drop, run=cluster_run(cluster),
                                                 kind=manifest.output_kind)
                built, verification = _verify(built, spec, verify_data, manifest, reference, reporter, cluster)
            guard.check()
            reason = judge(spec.name, spec.precision, verification, rule) if verification is not None else None
            if reason is not None:
                built.path.unlink(missing_ok=True)
                failed.append(FailedArtifact(spec.name, reason, verification))
                continue
            entries.append(_entry(built, out_dir, verification))
    return entries, failed


def _verify(built: BuiltArtifact, spec: FormatSpec, data, manifest: Manifest, reference, reporter,
            cluster=None) -> tuple[BuiltArtifact, object]:
    """The artifact's Verification; with a cluster, run there in chunks, and where they ran noted on the artifact."""
    placements: list = []
    label, total = (f"verify {spec.name}", len(data)) if cluster is None else \
        (f"verify {spec.name} on Ray", cluster.chunk_count(len(data), BATCH))
    with reporter.task(label, total) as advance:
        verification = verify_artifact(built.path, spec.family, built.input, built.output, data,
                                       manifest.preprocessing, reference, advance, kind=manifest.output_kind,
                                       precision=spec.precision, run=cluster_run(cluster, placements))
    notes = tuple(f"verified on {p.line()}" for p in placements)
    return dataclasses.replace(built, notes=built.notes + notes), verification


def _needs_fallback(spec: FormatSpec, verification, options: ConvertOptions) -> bool:
    """--fallback auto applies to an int8 artifact whose measured drop exceeds --max-drop."""
    return (options.fallback == FallbackMode.AUTO and spec.precision == "int8" and spec.family in ("tflite", "onnx")
            and options.max_drop is not None
            and verification is not None and verification.drop_pp is not None
            and verification.drop_pp > options.max_drop)


def build_step(job: BuildJob, reporter: ProgressReporter) -> BuiltArtifact:
    """Build one format (the step ``--fallback auto`` wraps); calibration progress shown for int8 formats."""
    if not job.fmt.needs_calibration:
        with reporter.status(f"convert {job.fmt.name}"):
            return build_artifact(job, job.out_path)
    with reporter.task(f"calibrate {job.fmt.name}", len(job.calib_inputs)) as advance:
        return build_artifact(dataclasses.replace(job, progress=reporter.as_fraction(advance)), job.out_path)


def _entry(built: BuiltArtifact, out_dir: Path, verification) -> ArtifactEntry:
    return ArtifactEntry(name=built.fmt.name, file=built.path.name, size_bytes=built.path.stat().st_size,
                         sha256=sha256_of(built.path), input=built.input, output=built.output,
                         precision=built.fmt.precision, verification=verification, notes=built.notes)


def _over_budget(entries: list[ArtifactEntry], max_drop: Optional[float]) -> tuple[str, ...]:
    if max_drop is None:
        return ()
    return tuple(e.name for e in entries if e.verification and e.verification.drop_pp is not None
                 and e.verification.drop_pp > max_drop)


def _enforce_budget(result: ConvertResult, max_drop: Optional[float]) -> None:
    if result.over_budget:
        worst = max(result.manifest.artifact(n).verification.drop_pp for n in result.over_budget)
        error = AccuracyBudgetError(f"{', '.join(result.over_budget)} lost up to {worst:.2f} pp of top-1 accuracy, "
                                    f"more than --max-drop {max_drop:g}",
                                    f"artifacts and report kept in {result.out_dir}; try more calibration data or another method")
        error.result = result  # the CLI prints the table before the error line
        raise error


def _versions(ray: bool = False) -> dict[str, str]:
    import importlib.metadata as md  # noqa: PLC0415

    versions = {}
    dists = ("edgecnn", "tensorflow", "keras", "numpy", "ai-edge-litert", "onnx", "onnxruntime", "tf2onnx")
    for dist in dists + (("ray",) if ray else ()):
        try:
            versions[dist] = md.version(dist)
        except md.PackageNotFoundError:
            continue
    return versions
