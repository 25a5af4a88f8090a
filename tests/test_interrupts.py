"""A Ctrl-C (a real SIGINT) that a native library swallowed, or that came back out as another exception
(SystemError "returned a result with an exception set"), is still reported as the interrupt."""
from __future__ import annotations

import os
import signal

import pytest

from edgecnn.errors import ConversionError
from edgecnn.interrupts import caused_by_interrupt, interrupt_guard


def _swallowed_sigint() -> None:
    """A real SIGINT whose KeyboardInterrupt a library catches and drops."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # give the handler a bytecode boundary to run at
            pass
    except KeyboardInterrupt:
        pass


@pytest.mark.parametrize("error", [SystemError("<built-in function x> returned a result with an exception set"),
                                   ConversionError("tflite-int8 conversion failed (SystemError: ...)"),
                                   RuntimeError("calibration aborted")])
def test_an_error_after_a_swallowed_sigint_is_the_interrupt(error):
    with pytest.raises(KeyboardInterrupt):
        with interrupt_guard():
            _swallowed_sigint()
            raise error


def test_without_a_sigint_errors_pass_unchanged():
    with pytest.raises(ConversionError):
        with interrupt_guard():
            raise ConversionError("tflite-fp32 conversion failed")


def test_an_error_chained_to_a_keyboard_interrupt_is_recognised():
    try:
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise SystemError("returned a result with an exception set") from interrupt
    except SystemError as exc:
        assert caused_by_interrupt(exc)
    assert not caused_by_interrupt(ValueError("plain"))


def test_a_sigint_inside_the_tflite_representative_dataset_is_an_interrupt(tmp_path):
    """The real path: the TFLite converter calls the representative-dataset generator from C++."""
    import keras
    import numpy as np

    from edgecnn.converters.steps import export_savedmodel
    from edgecnn.converters.tflite import convert_bytes

    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3), keras.layers.Flatten(),
                              keras.layers.Dense(3)])
    export_savedmodel(model, tmp_path / "sm")
    calib = np.random.default_rng(0).random((20, 8, 8, 1), dtype=np.float32)

    def progress(done: int, total: int) -> None:
        if done == 5:
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        with interrupt_guard():
            convert_bytes(tmp_path / "sm", "int8", calib, progress=progress)


def test_progress_callbacks_stop_at_the_next_sample_after_a_swallowed_sigint():
    from edgecnn.converters.progress import ProgressReporter

    reached = []
    with pytest.raises(KeyboardInterrupt):
        with interrupt_guard(), ProgressReporter(enabled=False) as reporter:
            with reporter.task("calibrate", 10) as advance:
                for sample in range(10):
                    if sample == 3:
                        _swallowed_sigint()
                    advance(1)
                    reached.append(sample)
    assert reached == [0, 1, 2]
