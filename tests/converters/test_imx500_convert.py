"""`edgecnn convert --formats imx500`: Keras 3 -> tf.keras 2.15 -> MCT (IMX500 TPC) -> imxconv-tf, verified on the host.

The first part needs no toolchain: moving a model's description across Keras versions, refusing layers that
cannot cross, reading what the converter writes (real dnnParams.xml / memory report / error output captured
from imxconv-tf 3.19.2 in tests/converters/data/imx500), finding the toolchain. The second part runs the real
toolchain (TensorFlow 2.15, MCT, imx500-converter, Java) from its own environment; those tests are marked
``imx500`` (left out of a plain pytest run, several minutes) and run in their own CI step, `bash dev.sh test-imx500`,
which builds the environment when it can; they skip, saying why, when it is not there.
"""
from __future__ import annotations

import json
import os
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edgecnn.cli import main
from edgecnn.converters import imx500
from edgecnn.converters.imx500_move import PORTABLE, describe
from edgecnn.errors import ConversionError, RuntimeMissingError
from edgecnn.manifest import Manifest

DATA = Path(__file__).parent / "data" / "imx500"


# -- no toolchain needed --------------------------------------------------------------------------------
def _every_portable_layer():
    """A functional Keras 3 model that uses every layer class the move carries, plus training-only layers."""
    import keras
    from keras import layers

    inp = keras.Input((16, 16, 3), name="image")
    x = layers.Rescaling(2.0, offset=-1.0)(inp)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Conv2D(8, 3, activation="relu")(x)
    x = layers.RandomFlip()(x)
    a = layers.BatchNormalization()(layers.DepthwiseConv2D(3, padding="same")(x))
    b = layers.LeakyReLU(negative_slope=0.2)(layers.SeparableConv2D(8, 3, padding="same")(x))
    x = layers.ReLU(max_value=6.0)(layers.Add()([a, b]))
    x = layers.Concatenate()([x, layers.Subtract()([a, b]), layers.Multiply()([a, b])])
    x = layers.Average()([layers.Maximum()([x, x]), layers.Minimum()([x, x])])
    x = layers.MaxPooling2D()(x)
    x = layers.UpSampling2D()(layers.AveragePooling2D(2)(x))
    x = layers.Activation("swish")(x)
    g = layers.GlobalAveragePooling2D()(x)
    m = layers.GlobalMaxPooling2D()(x)
    f = layers.Flatten()(layers.Reshape((8, 8, 24))(x))
    x = layers.Concatenate()([g, m, layers.Dense(8)(f)])
    x = layers.Dropout(0.5)(x)
    out = layers.Softmax()(layers.Dense(5)(x))
    return keras.Model(inp, out, name="every_layer")


def test_the_move_describes_every_portable_layer_and_leaves_training_layers_out():
    model = _every_portable_layer()
    moved = describe(model, (16, 16, 3))
    classes = {layer["class"] for layer in moved.graph["layers"]}
    assert classes == set(PORTABLE), set(PORTABLE) - classes
    assert set(moved.dropped) == {layer.name for layer in model.layers if type(layer).__name__ in ("Dropout", "RandomFlip")}
    names = {layer["name"] for layer in moved.graph["layers"]} | {"image"}
    assert all(i in names for layer in moved.graph["layers"] for i in layer["inputs"])  # dropped layers rewired
    for layer in model.layers:
        for i, weight in enumerate(layer.get_weights()):
            assert np.array_equal(moved.weights[f"{layer.name}/{i}"], weight)
    leaky = next(layer for layer in moved.graph["layers"] if layer["class"] == "LeakyReLU")
    assert leaky["config"]["alpha"] == pytest.approx(0.2)  # Keras 3's negative_slope is tf.keras 2.15's alpha


def test_a_sequential_model_is_a_chain(mnist_keras_path):
    import keras

    moved = describe(keras.models.load_model(mnist_keras_path), (28, 28, 1))
    layers = moved.graph["layers"]
    assert [layer["class"] for layer in layers] == ["Conv2D", "MaxPooling2D", "Flatten", "Dense", "Dense"]
    assert layers[0]["inputs"] == [moved.graph["input"]["name"]] and layers[2]["inputs"] == [layers[1]["name"]]
    assert moved.dropped == ("dropout",) and moved.graph["output"] == layers[-1]["name"]


def _refused_models():
    import keras
    from keras import layers

    def wrap(layer, name):
        inp = keras.Input((8, 8, 3))
        return keras.Model(inp, layers.Dense(2)(layers.Flatten()(layer(inp))), name=name), layer.name

    inner = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3)], name="backbone")
    yield wrap(layers.RMSNormalization(), "keras3_only")              # no such layer in tf.keras 2.15
    yield wrap(layers.Lambda(lambda t: t * 2.0), "python_code")       # arbitrary code (loadable only with --unsafe)
    yield wrap(inner, "nested")                                       # a model inside the model
    yield wrap(layers.Conv2D(4, 3, activation=keras.ops.sin), "odd_activation")
    yield wrap(layers.LayerNormalization(), "not_in_the_table")


@pytest.mark.parametrize("index", range(5), ids=["keras3-only", "lambda", "nested", "activation", "unlisted"])
def test_layers_that_cannot_cross_are_refused_by_name(index):
    model, layer_name = list(_refused_models())[index]
    with pytest.raises(ConversionError) as caught:
        describe(model, (8, 8, 3))
    line = caught.value.one_line()
    assert f"layer '{layer_name}'" in line and "cannot be moved to the IMX500 toolchain" in line and "\n" not in line


@pytest.mark.parametrize("name, dims, dtype, scale", [
    ("dnnParams_mnist.xml", [28, 28, 1], "uint8", 1 / 256),
    ("dnnParams_signed_24x40.xml", [24, 40, 3], "int8", 1 / 128),
])
def test_dnn_params_give_the_sensor_input(name, dims, dtype, scale):
    """Captured from imxconv-tf: a [0, 1] input is 8-bit unsigned, a [-1, 1] one signed; height before width."""
    inp, out, tensors = imx500.read_dnn_params((DATA / name).read_text())
    assert list(inp.shape[1:]) == dims and inp.dtype == dtype and inp.scale == scale and inp.zero_point == 0
    assert out.dtype == "float32" and out.shape == (1, tensors["output"]["dims"][0])
    with pytest.raises(ConversionError, match="unreadable dnnParams.xml"):
        imx500.read_dnn_params("<dnnParams><networks>")


def test_the_memory_report_says_whether_the_network_fits():
    report = json.loads((DATA / "MemoryReport_mnist.json").read_text())
    fit = imx500.memory_fit(report)
    assert fit == {"usage": "647.09KB", "available": "8.00MB", "utilization": "8%", "fits": True}
    report["Memory Report"]["Fit In Chip"] = False
    assert imx500.memory_fit(report)["fits"] is False
    with pytest.raises(ConversionError, match="does not say whether"):
        imx500.memory_fit({"Memory Report": {}})


def test_converter_refusals_become_one_line_naming_the_layer():
    line = imx500.converter_error((DATA / "imxconv_elu.log").read_text())
    assert line.startswith("the IMX500 cannot run layer 'activation' (Activation): activation elu is not "
                           "supported (Supported values: ['softmax', None, 'linear', 'relu'")
    assert "\n" not in line and "logger.py" not in line
    assert "Failed to load" in imx500.converter_error("noise\nRuntimeError: Failed to load the model.\n")
    # MCT moves a Conv2D's activation into a layer "<conv>_post_activation": the line names the user's layer.
    split = (DATA / "imxconv_elu.log").read_text().replace("id: activation,", "id: conv2d_12_post_activation,")
    assert imx500.converter_error(split).startswith("the IMX500 cannot run the activation of layer 'conv2d_12': "
                                                    "activation elu is not supported")


def test_java_versions():
    assert [imx500.java_major(t) for t in ('openjdk version "17.0.15" 2025-04-15', 'java version "1.8.0_292"',
                                           'openjdk version "21" 2023-09-19', "no java here")] == [17, 8, 21, 0]


def _error_lines(err: str) -> list[str]:
    """The error lines of a CLI run (the progress display shares stderr); no traceback may appear."""
    assert "Traceback" not in err, err
    return [line for line in err.splitlines() if line.startswith("error:")]


def test_a_missing_toolchain_is_one_line_with_the_commands(monkeypatch, tmp_path):
    monkeypatch.setenv(imx500.PYTHON_ENV, str(tmp_path / "venv" / "bin" / "python"))
    with pytest.raises(RuntimeMissingError) as caught:
        imx500.toolchain_python()
    line = caught.value.one_line()
    assert "IMX500 toolchain" in line and f"-m venv {tmp_path / 'venv'}" in line
    assert f"pip install -r {imx500.REQUIREMENTS}" in line and "dev.sh imx500-env" in line
    monkeypatch.delenv(imx500.PYTHON_ENV)
    monkeypatch.setenv("EDGECNN_CACHE", str(tmp_path / "cache"))
    assert imx500.default_toolchain_dir() == tmp_path / "cache" / "imx500-venv"
    python = tmp_path / "cache" / "imx500-venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.symlink_to(os.path.realpath(sys.executable))
    with pytest.raises(RuntimeMissingError, match="has no imxconv-tf"):
        imx500.toolchain_python()


@pytest.mark.parametrize("formats", ["imx500", "tflite-int8,imx500"])
def test_convert_without_the_toolchain_writes_nothing(monkeypatch, tmp_path, capsys, mnist_keras_path, formats):
    """A missing toolchain is found before any format is built: one line, exit 2, nothing written."""
    monkeypatch.setenv(imx500.PYTHON_ENV, str(tmp_path / "nowhere" / "python"))
    built = []
    monkeypatch.setattr("edgecnn.converters.pipeline.build_step", lambda *a: built.append(a))
    out = tmp_path / "out"
    code = main(["convert", str(mnist_keras_path), "--calib", "mnist", "--formats", formats, "--out", str(out)])
    err = _error_lines(capsys.readouterr().err)
    assert code == 2 and len(err) == 1 and "IMX500 toolchain" in err[0] and "pip install -r" in err[0], err
    assert built == [] and not out.exists()


def test_a_model_without_an_image_input_is_refused():
    for shape in [(784,), (28, 28), (3, 32, 32), (32, 32, 4)]:
        with pytest.raises(ConversionError, match="feeds the network an image"):
            imx500.check_image_input(shape)
    for shape in [(28, 28, 1), (32, 32, 3), (66, 200, 3)]:
        imx500.check_image_input(shape)


# -- the real toolchain -----------------------------------------------------------------------------------
def _toolchain_or_skip() -> Path:
    unavailable = imx500.default_toolchain_dir().with_name("imx500-venv.unavailable")
    why = f" ({unavailable.read_text().strip()})" if unavailable.is_file() else ""
    try:
        python = imx500.toolchain_python()
        imx500.check_java()
    except RuntimeMissingError as exc:
        pytest.skip(f"the IMX500 toolchain is not available: {exc.one_line()}{why}")
    if not os.environ.get(imx500.PYTHON_ENV):
        stamp = imx500.default_toolchain_dir() / ".edgecnn-requirements"
        if not stamp.is_file() or stamp.read_bytes() != imx500.REQUIREMENTS.read_bytes():
            pytest.skip(f"the IMX500 toolchain at {stamp.parent} is not built from the current requirements: "
                        f"run bash dev.sh imx500-env{why}")
    return python


@pytest.fixture(scope="module")
def toolchain() -> Path:
    return _toolchain_or_skip()


@pytest.fixture(scope="module")
def rgb_conversion(toolchain, tmp_path_factory):
    """The CIFAR-10 VGG-like seed trained on tinted digits (32x32 RGB), converted to imx500 and verified."""
    from edgecnn.converters.pipeline import ConvertOptions, convert
    from edgecnn.converters.zoo import tinted_digits, trained_rgb_cnn

    folder = tmp_path_factory.mktemp("imx500_rgb")
    for split in ("train", "val"):
        x, y = tinted_digits(split)
        np.savez(folder / f"{split}.npz", x=x, y=y)
    return convert(trained_rgb_cnn(), calib=folder / "train.npz", val=folder / "val.npz", out=folder / "out",
                   options=ConvertOptions(formats="imx500", progress=False))


@pytest.fixture(scope="module")
def mnist_conversion(toolchain, tmp_path_factory, mnist_keras_path):
    from edgecnn.converters.pipeline import ConvertOptions, convert

    return convert(mnist_keras_path, calib="mnist", val="mnist", out=tmp_path_factory.mktemp("imx500_mnist"),
                   options=ConvertOptions(formats="imx500", progress=False))


def _check_conversion(result, dims: list[int]) -> None:
    entry = result.manifest.artifact("imx500")
    bundle = result.artifact_path("imx500")
    assert bundle.name.endswith("_imx500.zip") and bundle.stat().st_size == entry.size_bytes
    with zipfile.ZipFile(bundle) as archive:
        assert set(archive.namelist()) == {*imx500.MEMBERS, imx500.MANIFEST_MEMBER}
        embedded = json.loads(archive.read(imx500.MANIFEST_MEMBER))
        with zipfile.ZipFile(archive.open("packerOut.zip")) as packer:
            converted = packer.read("dnnParams.xml")  # the converter's own copy, packed for the Pi
        assert archive.read("dnnParams.xml") == converted
    assert embedded["model_name"] == result.manifest.model_name and embedded["labels"] == list(result.manifest.labels)
    check = entry.verification
    assert check.samples == 1000 and check.data == "validation"
    assert check.keras_accuracy > 0.8, "a trained classifier, far from chance"
    assert check.agreement >= 0.98, check
    assert np.isfinite(check.max_abs_diff) and check.drop_pp is not None
    assert list(entry.input.shape[1:]) == dims and entry.input.dtype == "uint8" and entry.input.scale == 1 / 256
    notes = "\n".join(entry.notes)
    assert f"IMX500 input (dnnParams.xml): {'x'.join(map(str, dims))}, 8-bit unsigned" in notes
    assert "fits in the sensor: yes" in notes and "of 8.00MB" in notes
    assert "model-compression-toolkit 2.5.1" in notes and "imx500-converter 3.19.2" in notes
    moved = float(notes.split("max |diff| ")[1].split(" ")[0])
    assert moved < 1e-5, "the model rebuilt in tf.keras 2.15 computes what Keras 3 does"


@pytest.mark.imx500
def test_rgb_cnn_converts_and_agrees_with_keras(rgb_conversion):
    _check_conversion(rgb_conversion, [32, 32, 3])


@pytest.mark.imx500
def test_the_mnist_demo_model_converts_with_its_one_channel_input(mnist_conversion):
    _check_conversion(mnist_conversion, [28, 28, 1])


@pytest.mark.imx500
def test_every_portable_layer_is_rebuilt_in_keras_2_within_float_error(toolchain, tmp_path):
    """The move as a sweep over the layer table: tf.keras 2.15 reproduces Keras 3's outputs."""
    model = _every_portable_layer()
    samples = np.random.default_rng(0).random((16, 16, 16, 3), dtype=np.float32)
    imx500.write_move(tmp_path, describe(model, (16, 16, 3)), lambda x: model.predict(x, verbose=0), samples)
    result = imx500.run_worker(toolchain, "move", tmp_path, {"move_tolerance": imx500.MOVE_TOLERANCE})
    assert result["probe_samples"] == 16 and result["move_max_abs_diff"] < 1e-5, result


@pytest.mark.imx500
def test_a_layer_the_imx500_cannot_run_gets_one_line(toolchain, tmp_path, capsys):
    """The DAVE-2 seed uses ELU, which the IMX500 does not run: imxconv-tf's refusal, as one line; the other
    format is published and the manifest lists imx500 as failed with that line."""
    from skimage import data as photos

    from edgecnn.converters.zoo import build_seed

    model = tmp_path / "dave2.keras"
    build_seed("dave2").save(model)
    crops = [photo[y:y + 66, x:x + 200] for photo in (photos.astronaut(), photos.chelsea(), photos.coffee())
             for y in (0, 100, 200) for x in (0, 100)]
    np.savez(tmp_path / "calib.npz", x=np.stack(crops))
    out = tmp_path / "out"
    code = main(["convert", str(model), "--calib", str(tmp_path / "calib.npz"), "--formats", "tflite-fp32,imx500",
                 "--out", str(out)])
    err = _error_lines(capsys.readouterr().err)
    assert code == 1 and len(err) == 1, err
    assert "the IMX500 cannot run the activation of layer 'conv2d" in err[0] and "elu is not supported" in err[0], err
    manifest = Manifest.read(out / "manifest.json")
    assert [a.name for a in manifest.artifacts] == ["tflite-fp32"] and not list(out.glob("*imx500*"))
    (failed,) = manifest.failed
    assert failed.name == "imx500" and failed.reason.startswith("imx500: the IMX500 cannot run the activation of")
    assert "\n" not in failed.reason and "elu is not supported" in failed.reason
