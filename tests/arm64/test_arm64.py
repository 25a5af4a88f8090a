"""The arm64 check's own logic on real files: guest.py on real artifacts, the comparison (every kind of
difference it must catch), the JSON lines of a real `edgecnn run`, the report, the pip settings and the
root's safety (mounts). With EDGECNN_ARM64=1 (as root), real artifacts also run through the emulated root
(`bash dev.sh arm64` builds and caches it; the test builds it when missing).
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

PROJECT = Path(__file__).resolve().parents[2]
if str(PROJECT) not in sys.path:
    sys.path.insert(0, str(PROJECT))

from tools.arm64emu import compare, host, report, rootfs  # noqa: E402
from tools.arm64emu.check import GUEST_SCRIPT  # noqa: E402

DIGITS = 20
FORMATS = ("tflite-int8", "tflite-fp32", "tflite-dynamic", "onnx-int8", "onnx-fp32")
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (mount, unshare)")


def quiet(_: str) -> None:
    """A log that drops its lines."""


def stage_models(mnist_convert, share: Path) -> dict[str, str]:
    folder = share / "models"
    folder.mkdir(parents=True)
    shutil.copyfile(mnist_convert.manifest_path, folder / "manifest.json")
    files = {}
    for name in FORMATS:
        source = mnist_convert.artifact_path(name)
        shutil.copyfile(source, folder / source.name)
        files[name] = f"models/{source.name}"
    return files


@pytest.fixture(scope="module")
def x86_run(tmp_path_factory, mnist_convert):
    """guest.py, as the check runs it on x86, on 20 held-out digits through four real artifacts."""
    from edgecnn.data import mnist_sample
    from edgecnn.manifest import ColorOrder
    from edgecnn.preprocess import prepare_batch

    share = tmp_path_factory.mktemp("arm64-x86")
    files = stage_models(mnist_convert, share)
    held_out = mnist_sample("val")  # sorted by class: every 50th digit gives two of each
    digits = held_out.take(np.arange(DIGITS) * (len(held_out) // DIGITS))
    pixels = prepare_batch(digits.images, mnist_convert.manifest.preprocessing, ColorOrder.GRAY)
    np.savez(share / "pixels.npz", pixels=pixels)
    subprocess.run([sys.executable, "-I", str(GUEST_SCRIPT), "--inputs", "pixels.npz", "--out", "x86.npz",
                    *files.values()], cwd=share, check=True, capture_output=True)
    return share, files, pixels, digits.labels


def test_guest_saves_raw_outputs_that_match_the_classifier(x86_run):
    from edgecnn.devices.classify import Classifier

    share, files, pixels, labels = x86_run
    with np.load(share / "x86.npz") as data:
        assert str(data["__machine__"]) == platform.machine()
        for name, path in files.items():
            raw, scores = data[f"{path}|raw"], data[f"{path}|scores"]
            assert raw.shape[0] == scores.shape[0] == DIGITS and scores.shape[1] == 10
            assert raw.dtype == (np.int8 if name == "tflite-int8" else np.float32)
            target = "cpu" if path.endswith(".tflite") else "onnx-cpu"
            with Classifier.open(share / path, target) as classifier:  # the batch path, in this process
                np.testing.assert_array_equal(np.argmax(scores, axis=1), classifier.predict(pixels))
            assert np.mean(np.argmax(scores, axis=1) == labels) >= 0.9  # real digits: the scores mean something
            assert json.loads(str(data[f"{path}|describe"]))["target"] == target


def perturbed(x86: dict[str, np.ndarray], path: str, change: str) -> tuple[dict, dict]:
    """(x86, arm64) output sets: the real x86 outputs, and a copy with one kind of difference."""
    x86 = {k: v.copy() for k, v in x86.items()}
    arm = {k: v.copy() for k, v in x86.items()}
    raw, scores = arm[f"{path}|raw"], arm[f"{path}|scores"]
    if change == "one LSB":
        raw[3, 0] += 1
        scores[3, 0] += 1 / 256
    elif change == "1e-7":
        scores += 1e-7
    elif change == "1e-4":
        scores[5, 2] += 1e-4
    elif change == "top-1 swapped":
        first, second = np.argsort(-scores[7])[:2]
        scores[7, first], scores[7, second] = scores[7, second], scores[7, first]
    elif change == "tie swapped":  # x86 scores two classes 5e-7 apart; arm64 puts the other one 5e-7 ahead
        first, second = np.argsort(-scores[9])[:2]
        x86[f"{path}|scores"][9, second] = x86[f"{path}|scores"][9, first] - 5e-7
        scores[9] = x86[f"{path}|scores"][9]
        scores[9, second] = scores[9, first] + 5e-7
    elif change == "NaN":
        scores[0, 0] = np.nan
    elif change == "one input missing":
        arm[f"{path}|scores"] = scores[1:]
    return x86, arm


@pytest.mark.parametrize("fmt, change, ok, reason", [
    ("tflite-int8", "none", True, ""),
    ("tflite-int8", "one LSB", False, "not bit-identical"),
    ("tflite-fp32", "1e-7", True, ""),
    ("onnx-fp32", "1e-7", True, ""),
    ("tflite-fp32", "1e-4", False, "max |difference|"),
    ("onnx-int8", "1e-4", False, "max |difference|"),
    ("tflite-fp32", "top-1 swapped", False, "top-1 differs on 1 of 20"),
    ("tflite-fp32", "tie swapped", True, ""),
    ("tflite-fp32", "NaN", False, "NaN"),
    ("onnx-fp32", "one input missing", False, "shapes differ"),
])
def test_outputs_comparison_catches_every_kind_of_difference(x86_run, tmp_path, fmt, change, ok, reason):
    share, files, _, _ = x86_run
    path = files[fmt]
    with np.load(share / "x86.npz") as loaded:
        x86, arm = perturbed({k: loaded[k] for k in loaded.files}, path, change)
    np.savez(tmp_path / "x86.npz", **x86)
    np.savez(tmp_path / "arm.npz", **arm)
    quantized = fmt == "tflite-int8"
    result = compare.compare_outputs(tmp_path / "x86.npz", tmp_path / "arm.npz", path, path, quantized)
    assert result.ok is ok, result
    assert reason in result.reason
    if change == "none":
        assert result.bit_identical and result.max_abs_diff == 0 and result.top1_same == DIGITS
        assert result.distinct_top1 >= 8  # 20 real digits: top-1 takes most of the ten classes
    if change == "tie swapped":
        assert result.ties == 1 and result.top1_same == DIGITS - 1


def test_dynamic_range_tolerance_is_the_formats_own_error_in_the_same_run(x86_run, tmp_path):
    """Dynamic-range kernels quantize activations with each CPU's float arithmetic: a difference of about one
    activation step between CPUs is legitimate, one larger than the format's own error against float32 is not."""
    share, files, _, _ = x86_run
    path = files["tflite-dynamic"]
    envelope = compare.dynamic_envelope(share / "x86.npz", path, files["tflite-fp32"])
    with np.load(share / "x86.npz") as loaded:
        x86 = {k: loaded[k] for k in loaded.files}
        expected = np.max(np.abs(loaded[f"{path}|scores"].astype(np.float64)
                                 - loaded[f"{files['tflite-fp32']}|scores"]))
    assert envelope == pytest.approx(expected) and 1e-6 < envelope < 0.1  # real int8 weights: a real error
    np.savez(tmp_path / "x86.npz", **x86)
    for factor, ok in ((0.5, True), (1.9, True), (3.0, False)):
        arm = {k: v.copy() for k, v in x86.items()}
        arm[f"{path}|scores"][4, 1] += factor * envelope
        np.savez(tmp_path / "arm.npz", **arm)
        result = compare.compare_outputs(tmp_path / "x86.npz", tmp_path / "arm.npz", path, path, False, envelope)
        assert result.ok is ok, (factor, result)
        assert result.tolerance == pytest.approx(compare.FLOAT_TOLERANCE + 2 * envelope)
    strict = compare.compare_outputs(tmp_path / "x86.npz", tmp_path / "arm.npz", path, path, False)
    assert not strict.ok and "max |difference|" in strict.reason  # without the envelope: float tolerance
    with pytest.raises(KeyError):
        compare.dynamic_envelope(share / "x86.npz", path, "models/absent.tflite")


@pytest.fixture(scope="module")
def x86_jsonl(tmp_path_factory, mnist_convert):
    """`edgecnn run` (the real CLI) of the int8 and fp32 models on a lossless video of 20 digits."""
    from fixtures.video import digit_frames, write_video

    share = tmp_path_factory.mktemp("arm64-run")
    files = stage_models(mnist_convert, share)
    frames, _ = digit_frames(1000, size=112)
    frames = frames[::1000 // DIGITS]  # the held-out digits are sorted by class: two of each
    write_video(frames, share / "digits.mkv")
    edgecnn = str(Path(sys.executable).with_name("edgecnn"))
    out = {}
    for name in ("tflite-int8", "tflite-fp32"):
        out[name] = share / f"{name}.jsonl"
        subprocess.run([edgecnn, "run", files[name], "--source", "digits.mkv", "--jsonl", out[name].name,
                        "--top-k", "10", "--quiet", "--no-show"], cwd=share, check=True, capture_output=True)
    return out


def edit_jsonl(source: Path, dest: Path, change: str) -> Path:
    records = compare.read_jsonl(source)
    if change == "frame dropped":
        records = records[:-1]
    elif change == "top-1 swapped":
        top = records[4]["top_k"]
        top[0]["index"], top[1]["index"] = top[1]["index"], top[0]["index"]
    elif change == "score nudged 5e-6":
        records[2]["top_k"][1]["score"] += 5e-6
    elif change == "score nudged 1e-3":
        records[2]["top_k"][0]["score"] -= 1e-3
    dest.write_text("".join(json.dumps(r) + "\n" for r in records))
    return dest


@pytest.mark.parametrize("fmt, change, ok, reason", [
    ("tflite-int8", "none", True, ""),
    ("tflite-int8", "score nudged 5e-6", False, "max |difference|"),
    ("tflite-fp32", "score nudged 5e-6", True, ""),
    ("tflite-fp32", "score nudged 1e-3", False, "max |difference|"),
    ("tflite-fp32", "top-1 swapped", False, "top-1 differs on 1 of 20"),
    ("tflite-int8", "frame dropped", False, "frame counts differ"),
])
def test_run_comparison_frame_by_frame(x86_jsonl, tmp_path, fmt, change, ok, reason):
    arm = edit_jsonl(x86_jsonl[fmt], tmp_path / "arm.jsonl", change)
    result = compare.compare_runs(x86_jsonl[fmt], arm, fmt, classes=10, quantized=fmt == "tflite-int8")
    assert result.ok is ok, result
    assert reason in result.reason
    assert result.count == DIGITS


def test_report_labels_emulated_timings_and_lists_every_problem(x86_run, tmp_path):
    share, files, _, _ = x86_run
    agreement = compare.compare_outputs(share / "x86.npz", share / "x86.npz", files["onnx-int8"], files["onnx-int8"], False)
    record = {"model": "mnist_cnn", "weights": "trained", "format": "onnx-int8", "file": "m.onnx", "classes": 10,
              "quantized_output": False, "outputs": agreement.to_dict(), "run": None,
              "bench": {"x86": {"status": "ok", "target": "onnx-cpu", "p50_ms": 0.05},
                        "arm64": {"status": "failed", "reason": "counting MACs failed", "target": "onnx-cpu"},
                        "slowdown": None}}
    result = {"command": "bash dev.sh arm64", "date": "today", "host": report.host_line(), "load": [1.0, 2.0],
              "options": {"cpu": "cortex-a72", "frames": DIGITS, "bench_runs": 30}, "info": {"qemu": "10.0.2"},
              "stages": {"root: debootstrap": {"wall_s": 180.0, "cpu_s": 95.5}}, "records": [record],
              "problems": ["mnist_cnn onnx-int8 bench on arm64: failed counting MACs failed"]}
    md, js = report.write(result, tmp_path)
    text = md.read_text()
    assert report.TIMING_WARNING in text and "**Verdict: FAIL**" in text
    assert "| mnist_cnn | onnx-int8 | 20/20 | 0 | 1.0e-05 | yes | " in text and "failed: counting MACs failed" in text
    def no_nan(token: str):
        raise ValueError(f"{token} is not standard JSON")
    assert json.loads(js.read_text(), parse_constant=no_nan)["records"][0]["outputs"]["max_abs_diff"] == 0


def test_doctor_report_of_a_non_arm_machine_is_refused(tmp_path):
    from tools.arm64emu.check import doctor_problems, run_doctor, x86_side

    doctor = run_doctor(x86_side(quiet), tmp_path)  # the real `edgecnn doctor --json` of this machine
    problems = doctor_problems(doctor)
    assert any("not aarch64" in p for p in problems) == (platform.machine() != "aarch64")
    assert not any("LiteRT" in p or "ONNX Runtime" in p for p in problems)  # both are installed here
    assert doctor_problems({"error": "edgecnn doctor failed"}) == ["edgecnn doctor failed"]


def test_debian_mirror_is_read_from_either_sources_format():
    deb822 = ("Types: deb\nURIs: http://deb.debian.org/debian-security\nSuites: bookworm-security\n\n"
              "Types: deb\nURIs: http://mirror.example/debian/\nSuites: bookworm bookworm-updates\nComponents: main\n")
    assert host._debian_uris(deb822) == ["http://mirror.example/debian"]
    one_line = "# comment\ndeb http://ftp.example/debian bookworm main\ndeb [arch=amd64] http://x/ y main\n"
    assert host._debian_uris(one_line) == ["http://ftp.example/debian"]
    assert host._debian_uris("deb http://ftp.example/debian trixie main\n") == []


def test_pip_in_the_root_gets_the_hosts_network_settings_not_its_local_paths(tmp_path):
    (tmp_path / "etc").mkdir()
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("torch<=2\n")
    settings = {"index-url": "https://pypi.example/simple", "find-links": "/opt/wheels",
                "extra-index-url": "file:///opt/pypi/simple https://more.example/simple", "default-timeout": "180",
                "constraint": str(constraints), "cert": "/etc/ssl/certs/ca-certificates.crt"}
    env = rootfs.guest_pip_env(tmp_path, settings, quiet)
    assert env["PIP_INDEX_URL"] == "https://pypi.example/simple"
    assert env["PIP_EXTRA_INDEX_URL"] == "https://more.example/simple"
    assert "PIP_FIND_LINKS" not in env and env["PIP_DEFAULT_TIMEOUT"] == "180"
    assert env["PIP_CERT"] == rootfs.GUEST_CA
    assert (tmp_path / rootfs.GUEST_CONSTRAINTS[1:]).read_text() == "torch<=2\n"


@as_root
def test_enter_refuses_to_mount_in_the_hosts_namespace(tmp_path):
    (tmp_path / "proc").mkdir()
    done = subprocess.run([sys.executable, "-I", str(rootfs.ENTER), str(tmp_path), "-", "--", "/bin/true"],
                          capture_output=True, text=True)
    assert done.returncode == 70 and "private mount namespace" in done.stderr
    assert rootfs.mounts_under(tmp_path) == []


@as_root
def test_removing_a_root_never_deletes_through_a_mount(tmp_path):
    outside = tmp_path / "host-dev"
    outside.mkdir()
    (outside / "keep").write_text("host file")
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    (root / "busy").mkdir()
    subprocess.run(["mount", "--bind", str(outside), str(root / "dev")], check=True)
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root / "busy")], check=True)
    handle = open(root / "busy" / "open-file", "w")  # noqa: SIM115 - keeps the tmpfs busy: umount fails
    try:
        with pytest.raises(RuntimeError, match="refusing to delete"):
            rootfs.remove_root(root, quiet)
        assert (outside / "keep").read_text() == "host file" and root.exists()
    finally:
        handle.close()
        for point in sorted(rootfs.mounts_under(root), reverse=True):
            subprocess.run(["umount", point], check=False)
    rootfs.remove_root(root, quiet)  # nothing busy now: unmounted, then deleted
    assert not root.exists() and (outside / "keep").read_text() == "host file"


def emulation_wanted() -> bool:
    # Opt-in: the emulated root is shared by everyone using this cache, and a run takes minutes.
    return os.geteuid() == 0 and os.environ.get("EDGECNN_ARM64") == "1"


@pytest.mark.arm64
@pytest.mark.skipif(not emulation_wanted(), reason="set EDGECNN_ARM64=1 (as root) to run artifacts in the emulated "
                                                   "arm64 root (built on first use, about 10 minutes)")
def test_artifacts_run_in_the_emulated_root_as_on_x86(x86_run, tmp_path):
    from tools.arm64emu.outputs import emulated_outputs

    share, files, _, labels = x86_run
    artifacts = [share / path for path in files.values()]
    try:
        results = emulated_outputs(artifacts, share / "pixels.npz", tmp_path / "arm.npz", x86_out=tmp_path / "x86.npz",
                                   wait=False)
    except host.InfraSkip as skip:
        pytest.skip(skip.reason)
    assert all(r.ok for r in results), [r.reason for r in results if not r.ok]
    with np.load(tmp_path / "arm.npz") as arm, np.load(tmp_path / "x86.npz") as x86:
        assert str(arm["__machine__"]) == "aarch64" and str(x86["__machine__"]) == platform.machine()
        int8 = str(artifacts[0])
        assert arm[f"{int8}|raw"].tobytes() == x86[f"{int8}|raw"].tobytes()
        assert np.mean(np.argmax(arm[f"{int8}|scores"], axis=1) == labels) >= 0.9


def test_fidelity_stages_only_what_the_fidelity_run_reads_and_refuses_other_folders(mnist_convert, tmp_path):
    from tools.arm64emu import fidelity
    from tools.arm64emu.session import CheckFailed

    kept = tmp_path / "kept"  # the layout benchmarks/onnx_int8.py leaves in --dir
    (kept / "mnist_cnn" / "arm64").mkdir(parents=True)
    for name in ("onnx-int8", "onnx-fp32", "tflite-int8"):
        shutil.copyfile(mnist_convert.artifact_path(name), kept / "mnist_cnn" / mnist_convert.artifact_path(name).name)
    shutil.copyfile(mnist_convert.artifact_path("onnx-int8"), kept / "mnist_cnn" / "arm64" / "m_int8.onnx")
    shutil.copyfile(mnist_convert.manifest_path, kept / "mnist_cnn" / "manifest.json")
    np.save(kept / "mnist_cnn" / "inputs.npy", np.zeros((2, 28, 28, 1), np.uint8))
    (kept / "mnist_cnn" / "calib.npy").write_bytes(b"not read")
    with pytest.raises(CheckFailed, match="outputs-x86_64.npz"):
        fidelity.stage(kept, tmp_path / "share")
    np.savez(kept / "outputs-x86_64.npz", a=np.zeros(1))
    np.savez(kept / "outputs-aarch64.npz", a=np.zeros(1))
    assert fidelity.stage(kept, tmp_path / "share") == ["mnist_cnn"]
    copied = sorted(str(p.relative_to(tmp_path / "share" / "kept")) for p in (tmp_path / "share").rglob("*") if p.is_file())
    assert copied == ["mnist_cnn/arm64/m_int8.onnx", "mnist_cnn/inputs.npy", "mnist_cnn/manifest.json",
                      f"mnist_cnn/{mnist_convert.artifact_path('onnx-fp32').name}",
                      f"mnist_cnn/{mnist_convert.artifact_path('onnx-int8').name}", "outputs-x86_64.npz"]
    (tmp_path / "no-models").mkdir()
    shutil.copyfile(kept / "outputs-x86_64.npz", tmp_path / "no-models" / "outputs-x86_64.npz")
    with pytest.raises(CheckFailed, match="inputs.npy"):
        fidelity.stage(tmp_path / "no-models", tmp_path / "elsewhere")  # no <model>/inputs.npy


@pytest.mark.parametrize("diff, problem", [(0.0, None), (3e-3, None), (float("nan"), "nan"), (None, "None")])
def test_fidelity_refuses_non_finite_figures(diff, problem):
    from tools.arm64emu import fidelity

    rows = [{"artifact": "m/m_int8.onnx", "machines": "aarch64 vs x86_64", "max_abs_diff": diff,
             "top1_agreement": 1.0, "identical": diff == 0.0}]
    found = fidelity.problems_of(rows)
    assert found == ([] if problem is None else [f"m/m_int8.onnx: max |difference| {problem}"])
    meta = {"command": "c", "date": "d", "source": "s", "host": "h", "load": [1, 2], "qemu": "10", "cpu": "cortex-a72",
            "versions": {}}
    assert "| m/m_int8.onnx |" in fidelity.markdown(meta, rows, found)
    assert fidelity.problems_of([]) == ["no artifact was compared (no x86 outputs with the same names)"]


def test_fidelity_marks_outputs_that_make_agreement_say_nothing():
    from tools.arm64emu import fidelity

    varied = np.random.default_rng(0).random((8, 10)).astype(np.float32)
    assert fidelity.uninformative(varied) == ""
    assert "constant" in fidelity.uninformative(np.full((8, 1000), 0.001, np.float32))  # vanished activations
    assert "regression" in fidelity.uninformative(varied[:, :1])
    one_class = varied.copy()
    one_class[:, 3] = 2.0
    assert "same class for every input" in fidelity.uninformative(one_class)
