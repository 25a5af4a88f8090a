"""How ONNX int8 calibration picks activation ranges; shared by the ONNX quantizer and the convert pipeline."""
from __future__ import annotations

from enum import Enum


class CalibrationMethod(str, Enum):
    """The ranges ONNX Runtime's calibrator gives activations before int8 quantization.

    minmax: the observed min and max (cheap; one outlier widens the range).
    entropy: the range whose int8 histogram loses least KL divergence (histograms per tensor: heavier).
    percentile: clip at the 99.999th percentile of |x| (histograms per tensor: heavier).
    """

    MINMAX = "minmax"
    ENTROPY = "entropy"
    PERCENTILE = "percentile"


CALIBRATION_METHODS = {method.value: method for method in CalibrationMethod}
