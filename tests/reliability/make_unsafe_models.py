"""Write small Keras models that need code execution to load (run as a child: it imports TensorFlow).

    python make_unsafe_models.py OUT_DIR MARKER_PATH

- lambda.keras / lambda.h5: a Lambda layer named 'times_two' whose function also touches MARKER_PATH, so a
  test can tell whether the function's bytecode ever ran;
- nested_lambda.keras: the Lambda ('hidden_lambda') inside a Sequential inside a functional model;
- custom_layer.keras: a registered custom layer class ('Doubler', named 'doubler') that the loading
  process does not know.
"""
from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402


@keras.saving.register_keras_serializable(package="hostile")
class Doubler(keras.layers.Layer):
    def call(self, x):
        return x * 2.0


def main(out: str, marker: str) -> None:
    # A real lambda: Keras stores its bytecode, which runs again when an unsafe load rebuilds the layer.
    # (built with eval so the marker path is a constant in the bytecode: Keras cannot store defaults)
    touch_and_double = eval(f"lambda x: (__import__('pathlib').Path({marker!r}).touch(), x * 2.0)[1]")  # noqa: S307

    base = [keras.Input((4,)), keras.layers.Lambda(touch_and_double, name="times_two"), keras.layers.Dense(3)]
    model = keras.Sequential(base, name="with_lambda")
    model.save(os.path.join(out, "lambda.keras"))
    model.save(os.path.join(out, "lambda.h5"))
    inner = keras.Sequential([keras.Input((4,)), keras.layers.Lambda(touch_and_double, name="hidden_lambda")],
                             name="inner")
    x = keras.Input((4,))
    outer = keras.Model(x, keras.layers.Dense(3)(inner(x)), name="outer")
    outer.save(os.path.join(out, "nested_lambda.keras"))
    custom = keras.Sequential([keras.Input((4,)), Doubler(name="doubler"), keras.layers.Dense(3)], name="custom")
    custom.save(os.path.join(out, "custom_layer.keras"))
    if os.path.exists(marker):
        os.unlink(marker)  # saving traced the function; start clean


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
