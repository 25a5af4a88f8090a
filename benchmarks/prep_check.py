"""Preprocessing checks: false warnings over models fed the right way, detections over models fed the wrong way,
and the share of `edgecnn convert` time the checks take.

Every case is a real `convert` (edgecnn.converters.pipeline.convert); the checks' own wall and CPU time come from
the manifest (``checks.seconds``, ``checks.cpu_seconds``), the convert's from this script (perf_counter and
process_time around the call), so both shares are measured in one run. Cases:

* the demo (`edgecnn convert` with no model: the embedded MNIST CNN, calibrated and verified on MNIST);
* every seed model (converters/zoo.py), trained briefly where the check has something to read: mnist_mlp on
  MNIST x/255; cifar10_vgg / cifar10_cnn on RGB digits (tests/fixtures/prep_models.colour_digits) at 32x32, x/255;
  mobilenet_v2 on RGB digits at 224x224 with its documented x/127.5 - 1, BatchNormalization momentum 0.9 for
  the brief training so its moving statistics converge (the Keras default, 0.999, needs thousands of steps);
  dave2 (a regressor: no labels to compare) random-initialised on crops of scikit-image photographs;
* the test suite's models with their right preprocessing: the BatchNormalization CNNs of
  tests/fixtures/prep_models.py (x/255, 0..255, x/127.5 - 1, RGB digits), the broken-by-int8 outlier CNN, a CNN
  with a Rescaling layer trained on raw pixels, an untrained CNN with augmentation layers, and the MNIST CNN
  exported as a SavedModel (no Keras layers: labels only);
* mismatched on purpose (should warn): the issue's two examples and their kind.

    .venv/bin/python benchmarks/prep_check.py [--skip-mobilenet] [--formats all|fast]
    .venv/bin/python benchmarks/prep_check.py --families   # every keras.applications family: default preprocessing

Writes benchmarks/results/prep_check.json and .md (with --families: prep_families.json and .md).
"""
from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # fixtures: the test-bed models

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
RESULTS = Path(__file__).resolve().parent / "results"
FAST = "tflite-fp32,tflite-int8"


def _mnist():
    from edgecnn.data import mnist_sample

    return mnist_sample("train"), mnist_sample("val")


def _npz(path: Path, images: np.ndarray, labels=None) -> Path:
    np.savez(path, **({"x": images} if labels is None else {"x": images, "y": labels}))
    return path


def _resized(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    import cv2

    return np.stack([cv2.resize(image, size[::-1], interpolation=cv2.INTER_LINEAR) for image in images])


def _train(model, x, y, epochs: int, batch: int = 64):
    import keras

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0)
    return model


def _cached(name: str, make) -> Path:
    """A trained benchmark model, kept in the edgecnn cache (atomic write)."""
    from edgecnn.converters.zoo import cache_dir
    from edgecnn.fileio import atomic_path

    path = cache_dir() / "bench" / f"prep-{name}.keras"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        model = make()
        with atomic_path(path) as tmp:
            model.save(str(tmp) + ".keras")
            os.replace(str(tmp) + ".keras", tmp)
    return path


def seed_cases(work: Path, skip_mobilenet: bool) -> list[dict]:
    import keras

    from fixtures.prep_models import colour_digits, photo_crops
    from edgecnn.converters.zoo import build_seed, trained_mnist_cnn

    train, val = _mnist()
    cases = [{"group": "demo", "name": "demo (embedded MNIST CNN)", "model": None, "formats": None},
             {"group": "seed", "name": "mnist_cnn", "model": trained_mnist_cnn(), "calib": "mnist", "val": "mnist"}]

    def mlp():
        keras.utils.set_random_seed(0)
        return _train(build_seed("mnist_mlp"), train.images.reshape(len(train), -1) / 255.0, train.labels, 2)
    cases.append({"group": "seed", "name": "mnist_mlp", "model": _cached("mnist_mlp", mlp), "calib": "mnist",
                  "val": "mnist"})
    rgb32 = lambda images: np.pad(colour_digits(images), ((0, 0), (2, 2), (2, 2), (0, 0)))  # noqa: E731
    for seed in ("cifar10_vgg", "cifar10_cnn"):
        def cifar(seed=seed):
            keras.utils.set_random_seed(0)
            return _train(build_seed(seed), rgb32(train.images[:2000]) / 255.0, train.labels[:2000], 1)
        cases.append({"group": "seed", "name": seed, "model": _cached(seed, cifar),
                      "calib": _npz(work / f"{seed}_calib.npz", rgb32(train.images[:300]), train.labels[:300]),
                      "val": _npz(work / f"{seed}_val.npz", rgb32(val.images[:300]), val.labels[:300])})
    keras.utils.set_random_seed(0)
    dave = work / "dave2.keras"
    build_seed("dave2").save(dave)
    cases.append({"group": "seed", "name": "dave2 (random weights)", "model": dave,
                  "calib": _npz(work / "dave2_calib.npz", photo_crops((66, 200), 100))})
    if not skip_mobilenet:
        def mobilenet():
            keras.utils.set_random_seed(0)
            model = build_seed("mobilenet_v2")
            for layer in model.layers:
                if isinstance(layer, keras.layers.BatchNormalization):
                    layer.momentum = 0.9
            x = _resized(colour_digits(train.images[:320]), (224, 224)).astype(np.float32) / 127.5 - 1.0
            return _train(model, x, train.labels[:320], 2, batch=16)  # 40 steps: moving statistics 98.5 % converged
        cases.append({"group": "seed", "name": "mobilenet_v2 (x/127.5 - 1, its documented default)",
                      "model": _cached("mobilenet_v2-e2", mobilenet),
                      "calib": _npz(work / "mb_calib.npz", _resized(colour_digits(train.images[:200]), (224, 224))),
                      "val": _npz(work / "mb_val.npz", _resized(colour_digits(val.images[:200]), (224, 224)),
                                  val.labels[:200])})
    return cases


def suite_cases(work: Path) -> list[dict]:
    import keras

    from fixtures.broken_model import trained_outlier_cnn
    from fixtures.prep_models import colour_digits, trained_prep_model
    from edgecnn.converters.zoo import trained_mnist_cnn

    train, val = _mnist()
    digits = _npz(work / "digits.npz", val.images[:300], val.labels[:300])
    colour = _npz(work / "colour.npz", colour_digits(val.images[:300]), val.labels[:300])
    cases = [{"group": "tests", "name": "BN CNN, x/255", "model": trained_prep_model("unit"), "calib": digits},
             {"group": "tests", "name": "BN CNN, 0..255", "model": trained_prep_model("raw"), "calib": digits,
              "options": {"scale": 1.0}},
             {"group": "tests", "name": "BN CNN, x/127.5 - 1", "model": trained_prep_model("signed"), "calib": digits,
              "options": {"scale": 1 / 127.5, "mean": (1.0,)}},
             {"group": "tests", "name": "BN CNN, RGB digits", "model": trained_prep_model("colour"), "calib": colour},
             {"group": "tests", "name": "BN CNN, RGB digits, ImageNet mean/std", "model": trained_prep_model("torch"),
              "calib": colour, "options": _options("torch")},
             {"group": "tests", "name": "BN CNN, RGB digits, caffe (BGR - ImageNet mean)",
              "model": trained_prep_model("caffe"), "calib": colour, "options": _options("caffe")},
             {"group": "tests", "name": "outlier CNN (inspect, fallback)", "model": trained_outlier_cnn(),
              "calib": "mnist", "val": "mnist"}]

    def rescaling():
        keras.utils.set_random_seed(3)
        layers = keras.layers
        model = keras.Sequential([keras.Input((28, 28, 1)), layers.Rescaling(1 / 255), layers.Conv2D(8, 3, activation="relu"),
                                  layers.MaxPooling2D(2), layers.Flatten(), layers.Dense(10, activation="softmax")])
        return _train(model, train.images.astype("float32"), train.labels, 1)
    cases.append({"group": "tests", "name": "Rescaling layer, trained on 0..255", "model": _cached("rescaling", rescaling),
                  "calib": digits})
    keras.utils.set_random_seed(1)
    layers = keras.layers
    augmented = keras.Sequential([keras.Input((28, 28, 1)), layers.RandomFlip("horizontal"), layers.RandomRotation(0.2),
                                  layers.Conv2D(8, 3, activation="relu"), layers.MaxPooling2D(2), layers.Dropout(0.3),
                                  layers.Flatten(), layers.Dense(10, activation="softmax")])
    augmented.save(work / "augmented.keras")
    cases.append({"group": "tests", "name": "untrained CNN with augmentation", "model": work / "augmented.keras",
                  "calib": digits})
    saved = work / "mnist_savedmodel"
    keras.models.load_model(trained_mnist_cnn()).export(str(saved), format="tf_saved_model", verbose=False)
    cases.append({"group": "tests", "name": "MNIST CNN as a SavedModel", "model": saved, "calib": digits})
    return cases


def mismatch_cases(work: Path) -> list[dict]:
    from fixtures.prep_models import colour_digits, trained_prep_model
    from edgecnn.converters.zoo import trained_mnist_cnn

    _, val = _mnist()
    flat = work / "flat"
    labelled = _npz(work / "labelled.npz", val.images[:300], val.labels[:300])
    unlabelled = _npz(work / "unlabelled.npz", val.images[:300])
    floats = _npz(work / "floats255.npz", val.images[:300].astype(np.float32))
    colour = _npz(work / "colour.npz", colour_digits(val.images[:300]), val.labels[:300])
    colour_flat = _npz(work / "colour_flat.npz", colour_digits(val.images[:300]))
    flat.mkdir(exist_ok=True)
    return [
        {"group": "mismatch", "name": "issue 1: x/255 CNN, float .npz holding 0..255", "model": trained_mnist_cnn(),
         "calib": floats},
        {"group": "mismatch", "name": "issue 2: 0..255 BN CNN at 1/255, labelled", "model": trained_prep_model("raw"),
         "calib": labelled},
        {"group": "mismatch", "name": "issue 2: 0..255 BN CNN at 1/255, no labels", "model": trained_prep_model("raw"),
         "calib": unlabelled},
        {"group": "mismatch", "name": "x/127.5 - 1 BN CNN at 1/255, no labels", "model": trained_prep_model("signed"),
         "calib": unlabelled},
        {"group": "mismatch", "name": "RGB BN CNN fed BGR, labelled", "model": trained_prep_model("colour"),
         "calib": colour, "options": {"color": "bgr"}},
        {"group": "mismatch", "name": "ImageNet mean/std BN CNN at 1/255, no labels", "model": trained_prep_model("torch"),
         "calib": colour_flat},
        {"group": "mismatch", "name": "caffe BN CNN at 1/255 RGB, labelled", "model": trained_prep_model("caffe"),
         "calib": colour},
    ]


def _options(kind: str) -> dict:
    """ConvertOptions fields that give a prep_models kind's training preprocessing."""
    from fixtures.prep_models import preprocessing

    prep = preprocessing(kind)
    return {"scale": prep.scale, "mean": tuple(prep.mean), "std": tuple(prep.std), "color": prep.color.value}


def all_cases(work: Path, skip_mobilenet: bool) -> list[dict]:
    """Every case, its models trained (and cached) and its data written under ``work``."""
    return seed_cases(work, skip_mobilenet) + suite_cases(work) + mismatch_cases(work)


def run_case(case: dict, work: Path, formats: str) -> dict:
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.errors import ConversionFailedError
    from edgecnn.manifest import ColorOrder

    extra = dict(case.get("options", {}))
    if "color" in extra:
        extra["color"] = ColorOrder(extra["color"])
    options = ConvertOptions(formats=case.get("formats", formats), progress=False, force=True, **extra)
    wall, cpu = time.perf_counter(), time.process_time()
    failed = []
    try:
        result = convert(case["model"], calib=case.get("calib"), val=case.get("val"),
                         out=work / "out" / _slug(case["name"]), options=options)
    except ConversionFailedError as exc:  # the outlier CNN's int8 breaks by design: the rest is published
        result, failed = exc.result, [f.name for f in exc.result.failed]
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    checks = result.manifest.checks
    mismatches = [w for w in checks["warnings"] if "EXIF orientation" not in w]
    return {"group": case["group"], "name": case["name"], "formats": len(result.manifest.artifacts),
            "convert_s": round(wall, 2), "convert_cpu_s": round(cpu, 2), "check_s": checks["seconds"],
            "check_cpu_s": checks["cpu_seconds"], "share_wall": round(checks["seconds"] / wall, 4),
            "share_cpu": round(checks["cpu_seconds"] / cpu, 4) if cpu > 0 else None,
            "failed": failed, "labelled": checks.get("data", {}).get("labelled"), "warnings": mismatches, "summary": checks["summary"],
            "batchnorm_layers": len((checks.get("batchnorm") or {}).get("layers") or [])}


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)[:40]


def markdown(out: dict) -> str:
    meta, rows = out["meta"], out["rows"]
    right = [r for r in rows if r["group"] != "mismatch"]
    wrong = [r for r in rows if r["group"] == "mismatch"]
    lines = ["# Preprocessing checks: false warnings, detections, time", "",
             f"Measured {meta['date']} on {meta['machine']}; 1-minute load average {meta['load_before']} before, "
             f"{meta['load_after']} after (the machine is shared: the CPU-time share is the figure to read). "
             f"Command: `{meta['command']}`.", "",
             f"**False warnings: {sum(len(r['warnings']) for r in right)} over {len(right)} models fed the right way** "
             f"(demo, seeds, test-suite models). **Detections: {sum(1 for r in wrong if r['warnings'])} of "
             f"{len(wrong)}** mismatched on purpose.", "",
             f"Share of convert time taken by the checks: median {meta['median_share_cpu'] * 100:.1f} % CPU "
             f"({meta['median_share_wall'] * 100:.1f} % wall), largest {meta['max_share_cpu'] * 100:.1f} % CPU; "
             f"demo {meta['demo_share_cpu'] * 100:.1f} % CPU.", "",
             "| group | model | formats | BN layers read | labels | convert s (CPU s) | checks s (CPU s) | share CPU | warnings |",
             "|---|---|---:|---:|---|---:|---:|---:|---|"]
    for r in rows:
        warned = "; ".join(r["warnings"]) or "none"
        formats = f"{r['formats']}" + (f" ({', '.join(r['failed'])} failed verification)" if r.get("failed") else "")
        lines.append(f"| {r['group']} | {r['name']} | {formats} | {r['batchnorm_layers']} | "
                     f"{'yes' if r['labelled'] else 'no'} | {r['convert_s']} ({r['convert_cpu_s']}) | "
                     f"{r['check_s']} ({r['check_cpu_s']}) | {r['share_cpu'] * 100:.1f} % | {warned} |")
    lines += ["", "What each right-way case's check concluded (`checks.summary` in its manifest):", ""]
    lines += [f"- {r['name']}: {r['summary']}" for r in right]
    return "\n".join(lines) + "\n"


def families() -> dict:
    """Each keras.applications constructor (weights=None, nested in a Sequential as when fine-tuning): what
    build_preprocessing chooses by default and whether it is the documented one; then, with every
    BatchNormalization layer's statistics fitted to photographs preprocessed the documented way (as training on
    them leaves the statistics, prep_models.fit_batchnorm), the label-free check on other photographs fed the
    default (must not warn) and fed x/255 RGB (must name the documented options where it differs)."""
    import keras

    from edgecnn.converters.calibration import PrepRequest, build_preprocessing, model_inputs
    from edgecnn.converters.keras_load import LoadedModel
    from edgecnn.converters.known_models import recognise
    from edgecnn.converters.prep_candidates import describe, options_for, same
    from edgecnn.converters.prep_check import check_preprocessing
    from fixtures.prep_models import (documented_mode, documented_preprocessing, family_model,
                                                family_size, fit_batchnorm, photo_crops)
    from edgecnn.data import Dataset
    from edgecnn.manifest import ColorOrder, Preprocessing
    from edgecnn.preprocess import prepare_batch, to_float

    rows = []
    for name in sorted(n for n in dir(keras.applications) if n[0].isupper()):
        size = family_size(name)
        model = family_model(name)
        base = model.layers[0]
        classes = tuple(type(layer).__name__ for layer in base.layers)
        prep, _ = build_preprocessing((size, size, 3), PrepRequest(), classes, model)
        documented = documented_preprocessing(name, size)
        fitted = fit_batchnorm(model, to_float(prepare_batch(photo_crops((size, size), 64, seed=0), documented),
                                               documented))
        loaded = LoadedModel(Path(name), name, "keras", "", (size, size, 3), (5,), keras_model=model,
                             layer_classes=classes)
        probe = Dataset(photo_crops((size, size), 128, seed=1), None, None, "photos")
        reports = [check_preprocessing(loaded, given, model_inputs(probe, given, (size, size, 3), "calibration"))
                   for given in (prep, Preprocessing(size, size, ColorOrder.RGB, scale=1 / 255))]
        plain = reports[1]
        want = options_for(documented, Preprocessing(size, size, ColorOrder.RGB, scale=1 / 255))
        found = recognise(model)
        rows.append({"constructor": name, "recognised": found[0] if found else None,
                     "documented": documented_mode(name), "default": describe(prep), "right": same(prep, documented),
                     "batchnorm_layers": fitted, "default_warnings": [f.line() for f in reports[0].warnings],
                     "default_divergence": reports[0].batchnorm.score if reports[0].batchnorm and
                     reports[0].batchnorm.layers else None,
                     "x255_warning": plain.warnings[0].line() if plain.warnings else None,
                     "x255_detected": bool(plain.warnings) and plain.warnings[0].fix.startswith(f"pass {want}"),
                     "check_cpu_s": round(reports[0].cpu_seconds, 3)})
        print(name, rows[-1]["right"], rows[-1]["default_warnings"], rows[-1]["x255_detected"], flush=True)
        keras.backend.clear_session()
    return {"meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "keras": keras.__version__,
                     "machine": f"{platform.machine()}, {os.cpu_count()} cores", "load": round(os.getloadavg()[0], 2),
                     "command": "python benchmarks/prep_check.py --families"}, "rows": rows}


def families_markdown(out: dict) -> str:
    rows = out["rows"]
    with_bn = [r for r in rows if r["batchnorm_layers"]]
    lines = ["# keras.applications families: default preprocessing, and the check on each", "",
             f"Measured {out['meta']['date']} with Keras {out['meta']['keras']} on {out['meta']['machine']} "
             f"(1-minute load {out['meta']['load']} at the end); command: `{out['meta']['command']}`. Each constructor "
             "built with weights=None and nested in a Sequential (as when fine-tuning). \"built in\": the model has its "
             "own Rescaling/Normalization layers and takes 0..255 pixels. Its BatchNormalization statistics are "
             "then fitted to scikit-image photographs preprocessed the documented way (what training on them "
             "leaves; no pretrained weights can be downloaded here) and the label-free check runs on other crops.", "",
             f"**{sum(r['right'] for r in rows)} of {len(rows)} constructors get their documented preprocessing. "
             f"False warnings with it: {sum(len(r['default_warnings']) for r in rows)}. Fed x/255 instead, "
             f"{sum(r['x255_detected'] for r in with_bn)} of {len(with_bn)} models with BatchNormalization are "
             "flagged with the documented options as the fix** (models without BatchNormalization, VGG and "
             "ConvNeXt, give no label-free evidence).", "",
             "| constructor | recognised as | documented | convert's default | BN layers | divergence | x/255 flagged |",
             "|---|---|---|---|---:|---:|---|"]
    for r in rows:
        divergence = "-" if r["default_divergence"] is None else f"{r['default_divergence']:.3g}"
        default = r["default"] + ("" if r["right"] else " **WRONG**") + (" **WARNED**" if r["default_warnings"] else "")
        flagged = "yes" if r["x255_detected"] else ("no BN" if not r["batchnorm_layers"] else "**no**")
        lines.append(f"| {r['constructor']} | {r['recognised'] or '- (Rescaling layer)'} | {r['documented']} | "
                     f"{default} | {r['batchnorm_layers']} | {divergence} | {flagged} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--skip-mobilenet", action="store_true", help="leave out MobileNetV2 (minutes on 2 cores)")
    parser.add_argument("--formats", choices=("all", "fast"), default="all",
                        help=f"all: every format (the demo always); fast: {FAST}")
    parser.add_argument("--families", action="store_true", help="only the keras.applications family sweep")
    args = parser.parse_args(argv)
    if args.families:
        out = families()
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "prep_families.json").write_text(json.dumps(out, indent=2) + "\n")
        (RESULTS / "prep_families.md").write_text(families_markdown(out))
        print(families_markdown(out))
        fine = all(r["right"] and not r["default_warnings"] for r in out["rows"])
        return 0 if fine and all(r["x255_detected"] for r in out["rows"] if r["batchnorm_layers"]) else 1
    formats = None if args.formats == "all" else FAST
    load_before = round(os.getloadavg()[0], 2)
    rows = []
    # Each case in a fresh process, as `edgecnn convert` runs: TensorFlow's converters keep memory between
    # conversions, and a long run of them in one process grew past what the machine has.
    context = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="edgecnn-prepcheck-") as tmp, context.Pool(1, maxtasksperchild=1) as pool:
        work = Path(tmp)
        cases = pool.apply(all_cases, (work, args.skip_mobilenet))
        wrong = [case for case in cases if case["group"] == "mismatch"]
        for case in cases:
            rows.append(pool.apply(run_case, (case, work, formats)))
            print(f"{rows[-1]['name']}: {rows[-1]['share_cpu'] * 100:.1f} % CPU, warnings {rows[-1]['warnings']}",
                  flush=True)
    shares = [r["share_cpu"] for r in rows if r["share_cpu"] is not None]
    command = "python benchmarks/prep_check.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = {"meta": {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                    "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                    "command": command.strip(), "load_before": load_before, "load_after": round(os.getloadavg()[0], 2),
                    "median_share_cpu": float(np.median(shares)),
                    "median_share_wall": float(np.median([r["share_wall"] for r in rows])),
                    "max_share_cpu": float(max(shares)),
                    "demo_share_cpu": next(r["share_cpu"] for r in rows if r["group"] == "demo"),
                    "false_warnings": sum(len(r["warnings"]) for r in rows if r["group"] != "mismatch"),
                    "detected": sum(1 for r in rows if r["group"] == "mismatch" and r["warnings"])},
           "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "prep_check.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "prep_check.md").write_text(markdown(out))
    print(markdown(out))
    return 0 if out["meta"]["false_warnings"] == 0 and out["meta"]["detected"] == len(wrong) else 1


if __name__ == "__main__":
    sys.exit(main())
