"""Any artifacts + inputs through the emulated root, outputs back as .npz, compared with x86.

    bash dev.sh arm64 outputs out/m/m_int8.onnx out/m/m_int8.tflite --inputs pixels.npz --out arm64.npz

or from Python (as root, from the checkout):

    from tools.arm64emu.outputs import emulated_outputs
    agreements = emulated_outputs([Path("m_int8.onnx")], Path("pixels.npz"), Path("arm64.npz"))

``pixels.npz`` holds uint8 (N, H, W, C) prepared pixels (edgecnn.preprocess.prepare_batch); an artifact
takes the array "pixels", or the one named after '=' (``m_int8.onnx=digits``). Each artifact needs its
manifest: the manifest.json beside it is copied along. The result .npz has, per artifact as given,
"<artifact>|raw" (N, ...) raw outputs in the model's dtype, "<artifact>|scores" float32 (N, classes) and
"<artifact>|describe" (the runner's describe() as JSON). The x86 outputs come from the same guest.py in
this venv; an Agreement per artifact says whether they match (compare.py's tolerances).
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import numpy as np

from tools.arm64emu.check import GUEST_SCRIPT, Side, arm_side, machine_of, x86_side
from tools.arm64emu.compare import Agreement, compare_outputs
from tools.arm64emu.host import Log, last_line
from tools.arm64emu.session import CheckFailed, emulated_root
from tools.arm64emu.stages import Stages


def stage(artifacts: list[str], inputs: Path, share: Path) -> dict[str, str]:
    """Copy artifacts (+ manifest.json) and inputs into the shared folder; {spec given: spec in the folder}."""
    staged = {}
    for index, spec in enumerate(artifacts):
        path, sep, key = spec.partition("=")
        source = Path(path)
        if not source.is_file():
            raise CheckFailed(f"artifact {source} does not exist")
        folder = share / "art" / str(index)
        folder.mkdir(parents=True)
        shutil.copyfile(source, folder / source.name)
        if (source.parent / "manifest.json").is_file():
            shutil.copyfile(source.parent / "manifest.json", folder / "manifest.json")
        staged[path] = f"art/{index}/{source.name}" + (f"={key}" if sep else "")
    shutil.copyfile(inputs, share / "pixels.npz")
    shutil.copyfile(GUEST_SCRIPT, share / "guest.py")
    return staged


def run_guest(side: Side, staged: dict[str, str], share: Path) -> Path:
    out = share / f"{side.name}-outputs.npz"
    try:
        side.call([*side.python, "guest.py", "--inputs", "pixels.npz", "--out", out.name, "--tflite-target",
                   side.tflite_target, *staged.values()], share)
    except Exception as exc:  # CalledProcessError: the device side failed on this artifact
        raise CheckFailed(f"guest.py failed on {side.name}: {last_line(exc) if hasattr(exc, 'stderr') else exc}") from None
    return out


def renamed(npz: Path, staged: dict[str, str], dest: Path) -> None:
    """Copy ``npz`` to ``dest`` with keys named by the artifacts as the caller gave them."""
    from edgecnn.fileio import atomic_path

    back = {inner.partition("=")[0]: given for given, inner in staged.items()}
    with np.load(npz) as data:
        arrays = {(f"{back[key.rpartition('|')[0]]}|{key.rpartition('|')[2]}" if "|" in key else key): data[key]
                  for key in data.files}
    with atomic_path(dest) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)


def emulated_outputs(artifacts: list[str | Path], inputs: Path, out: Path, cpu: str = "cortex-a72",
                     x86_out: Optional[Path] = None, log: Log = lambda _: None,
                     project: Optional[Path] = None, wait: bool = True) -> list[Agreement]:
    """Run ``artifacts`` on ``inputs`` in the emulated root and on x86; arm64 outputs to ``out``.
    Raises InfraSkip (host cannot emulate; or, ``wait`` False, the root is busy) or CheckFailed."""
    project = project or Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="edgecnn-arm64-outputs-") as tmp:
        share = Path(tmp)
        staged = stage([str(a) for a in artifacts], Path(inputs), share)
        x86 = run_guest(x86_side(log), staged, share)
        with emulated_root(project, cpu, log, Stages(log), wait=wait) as (root, _):
            arm = run_guest(arm_side(root, log), staged, share)
        if machine_of(arm) != "aarch64":
            raise CheckFailed(f"the emulated outputs report machine {machine_of(arm)!r}, not aarch64")
        renamed(arm, staged, Path(out))
        if x86_out is not None:
            renamed(x86, staged, Path(x86_out))
        results = []
        with np.load(x86) as data:
            dtypes = {key: data[key].dtype for key in data.files if key.endswith("|raw")}
        for given, inner in staged.items():
            key = inner.partition("=")[0]
            results.append(compare_outputs(x86, arm, given, key, dtypes[f"{key}|raw"].kind in "iu"))
        return results


def outputs_command(project: Path, args: argparse.Namespace, log: Log, console) -> int:
    from rich.table import Table

    from tools.arm64emu.report import fmt_count, fmt_diff

    with console.status("arm64: running the artifacts on both sides"):
        results = emulated_outputs(args.artifacts, args.inputs, args.out, args.cpu, args.x86_out, log, project)
    table = Table(title=f"arm64 ({args.cpu}, emulated) vs x86: {args.out}", title_justify="left")
    for column in ("artifact", "top-1 same", "max |diff|", "bit-identical", "ok"):
        table.add_column(column)
    for r in results:
        table.add_row(r.artifact, fmt_count(r.to_dict()), fmt_diff(r.max_abs_diff),
                      {True: "yes", False: "no", None: "n/a"}[r.bit_identical], "yes" if r.ok else "NO")
    console.print(table)
    for r in results:
        if not r.ok:
            console.print(f"  [red]{r.artifact}: {r.reason}[/]", highlight=False)
    return 0 if all(r.ok for r in results) else 1
