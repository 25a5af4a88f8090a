"""What to benchmark: MODEL arguments (artifact files or convert output folders) x targets x thread counts."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

from edgecnn.errors import InputPathError, ManifestError, UsageError
from edgecnn.fileio import sha256_of
from edgecnn.manifest import MANIFEST_NAME, ArtifactEntry, Manifest, find_manifest

from edgecnn.devices.modelcheck import SUFFIX_FORMAT, ModelFormat  # the one suffix table

# Artifact families bench measures, by file suffix.
FAMILY_OF_SUFFIX = {suffix: fmt.value for suffix, fmt in SUFFIX_FORMAT.items()
                    if fmt in (ModelFormat.TFLITE, ModelFormat.ONNX)}


@dataclass(frozen=True)
class Artifact:
    path: Path
    family: str  # tflite | onnx
    manifest: Optional[Manifest] = None
    entry: Optional[ArtifactEntry] = None
    note: str = ""

    @property
    def model_name(self) -> str:
        if self.manifest is not None:
            return self.manifest.model_name
        return self.path.stem

    @property
    def format(self) -> str:
        return self.entry.name if self.entry is not None else f"{self.family}:{self.path.name}"

    @property
    def precision(self) -> str:
        return self.entry.precision if self.entry is not None else "unknown"  # bench reads a foreign file's


@dataclass(frozen=True)
class Job:
    artifact: Artifact
    target: str
    threads: int


def collect_artifacts(models: Sequence[str | Path]) -> list[Artifact]:
    """Each MODEL: an artifact file (its sidecar manifest is used when it lists the file) or a convert output folder."""
    if not models:
        raise UsageError("no MODEL given", "give .tflite/.onnx files or an edgecnn convert output folder")
    found: list[Artifact] = []
    for model in models:
        path = Path(model)
        if not path.exists():
            raise InputPathError(f"model {path} does not exist",
                                 "give a .tflite/.onnx artifact or an edgecnn convert output folder")
        found += _folder_artifacts(path) if path.is_dir() else [_file_artifact(path)]
    return found


def _folder_artifacts(folder: Path) -> list[Artifact]:
    manifest_path = folder / MANIFEST_NAME
    if not manifest_path.is_file():
        raise InputPathError(f"{folder} is a folder without a {MANIFEST_NAME}",
                             "give an edgecnn convert output folder, or the artifact files themselves")
    manifest = Manifest.read(manifest_path)
    artifacts = []
    for entry in manifest.artifacts:
        family = FAMILY_OF_SUFFIX.get(Path(entry.file).suffix.lower())
        if family is not None:  # other files (a SavedModel) are not runnable artifacts
            artifacts.append(Artifact(folder / entry.file, family, manifest, entry))
    if not artifacts:
        raise ManifestError(f"the manifest in {folder} lists no .tflite or .onnx artifact", "re-run edgecnn convert")
    return artifacts


def _file_artifact(path: Path) -> Artifact:
    family = FAMILY_OF_SUFFIX.get(path.suffix.lower())
    if family is None:
        raise UsageError(f"{path.name} is not a .tflite or .onnx artifact",
                         "convert it first with edgecnn convert, then bench the output folder")
    manifest_path = find_manifest(path)
    if manifest_path is None:
        return Artifact(path, family)  # preprocessing from the file and the options given (and noted when assumed)
    manifest = Manifest.read(manifest_path)
    try:
        entry = manifest.artifact(path.name)
    except ManifestError:
        return Artifact(path, family, note=f"{MANIFEST_NAME} beside it does not list {path.name}: not used")
    note = "" if sha256_of(path) == entry.sha256 else f"{path.name} differs from the sha256 in {MANIFEST_NAME}"
    return Artifact(path, family, manifest, entry, note)


def parse_threads(values: Sequence[int | str]) -> list[int]:
    counts = []
    for value in values:
        try:
            count = int(value)
        except (TypeError, ValueError):
            raise UsageError(f"--threads value '{value}' is not a whole number", "e.g. --threads 1,2") from None
        if count < 1:
            raise UsageError(f"--threads {count} is not positive", "e.g. --threads 1,2")
        if count not in counts:
            counts.append(count)
    if not counts:
        raise UsageError("no thread count given", "e.g. --threads 1,2")
    return counts


def target_families(devices: Sequence[str]) -> dict[str, str]:
    """Device names (validated, did-you-mean) -> the model family each runs."""
    from edgecnn.devices.runners import get_target  # noqa: PLC0415 - the device layer's one table

    if not devices:
        raise UsageError("no --device given", "e.g. --device cpu,onnx-cpu")
    return {get_target(name).name: get_target(name).format.value for name in devices}


def plan_jobs(artifacts: Sequence[Artifact], devices: Sequence[str], threads: Sequence[int]) -> list[Job]:
    """Every artifact on every listed target that runs its family, at every thread count."""
    families = target_families(devices)
    jobs = []
    for artifact in artifacts:
        fitting = [t for t, fam in families.items() if fam == artifact.family]
        jobs += [Job(artifact, target, n) for target in fitting for n in threads]
    if not jobs:
        wanted = sorted({a.family for a in artifacts})
        raise UsageError(f"none of the models ({', '.join(wanted)}) runs on --device {','.join(families)}",
                         "tflite runs on cpu, pi, edgetpu; onnx on onnx-cpu, gpu")
    return jobs
