"""Models built from keras.applications, recognised by the layer names Keras gives them, and their documented
preprocessing (keras.applications.<family>.preprocess_input).

``imagenet_utils.preprocess_input`` has three modes: "tf" (x / 127.5 - 1), "torch" (x / 255, then the
ImageNet mean and std per RGB channel) and "caffe" (RGB -> BGR, then the ImageNet mean per BGR channel
subtracted from 0..255 pixels). EfficientNet, EfficientNetV2, ConvNeXt and MobileNetV3 carry their own
Rescaling/Normalization layers and take 0..255 pixels: the Rescaling rule of build_preprocessing covers them.
The layer names below are the ones Keras 3 builds (checked with weights=None for each family); a family is
recognised when all its names are present, so a keras.applications base nested in a Sequential counts too.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Optional

from edgecnn.manifest import ColorOrder


@dataclass(frozen=True)
class KnownPreprocessing:
    """The documented input of a family: x = (pixel * scale - mean) / std, in ``color`` order."""

    mode: str  # tf | torch | caffe (keras.applications.imagenet_utils)
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]
    color: ColorOrder
    formula: str  # how the Keras documentation writes it

    @property
    def options(self) -> str:
        """The convert options that give this preprocessing."""
        return cli_options(self.scale, self.mean, self.std, self.color if self.color == ColorOrder.BGR else None)


TF_MODE = KnownPreprocessing("tf", 1 / 127.5, (1.0,), (1.0,), ColorOrder.RGB, "x / 127.5 - 1")
TORCH_MODE = KnownPreprocessing("torch", 1 / 255, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), ColorOrder.RGB,
                                "x / 255, ImageNet mean/std")
CAFFE_MODE = KnownPreprocessing("caffe", 1.0, (103.939, 116.779, 123.68), (1.0,), ColorOrder.BGR,
                                "BGR, ImageNet mean subtracted")

# family -> (layer names that all appear in it and in no other family, its preprocessing)
FAMILIES: dict[str, tuple[tuple[str, ...], KnownPreprocessing]] = {
    "MobileNet": (("conv_dw_1", "conv_pw_1", "conv1_bn"), TF_MODE),
    "MobileNetV2": (("bn_Conv1", "expanded_conv_project"), TF_MODE),
    "ResNet (v1)": (("conv1_conv", "conv2_block1_0_conv", "conv2_block1_add"), CAFFE_MODE),
    "ResNetV2": (("conv2_block1_preact_bn", "post_bn"), TF_MODE),
    "VGG": (("block1_conv1", "block1_conv2", "block2_conv1", "block5_conv3"), CAFFE_MODE),
    "Xception": (("block1_conv1_bn", "block2_sepconv1"), TF_MODE),
    "InceptionV3": (("mixed0", "mixed10"), TF_MODE),
    "InceptionResNetV2": (("mixed_5b", "block35_1_mixed"), TF_MODE),
    "DenseNet": (("conv2_block1_concat", "pool2_conv"), TORCH_MODE),
    "NASNet": (("stem_bn1", "reduction_conv_1_stem_1"), TF_MODE),
}


def recognise(model: Any) -> Optional[tuple[str, KnownPreprocessing]]:
    """(family, documented preprocessing) of a keras.Model built from keras.applications, else None."""
    if model is None:
        return None
    names = set(_layer_names(model))
    for family, (required, prep) in FAMILIES.items():
        if all(name in names for name in required):
            return family, prep
    return None


def _layer_names(model: Any) -> Iterator[str]:
    for layer in getattr(model, "layers", []):
        yield layer.name
        if hasattr(layer, "layers"):
            yield from _layer_names(layer)


def cli_options(scale: float, mean: tuple[float, ...], std: tuple[float, ...], color: Optional[ColorOrder] = None,
                explicit: bool = False) -> str:
    """The `edgecnn convert` options that give x = (pixel * scale - mean) / std; ``explicit``: name the default
    mean and std too (to override values given before), ``color``: add --color."""
    parts = [f"--scale {_fraction(scale)}"]
    if explicit or tuple(mean) != (0.0,):
        parts.append("--mean " + ",".join(f"{v:g}" for v in mean))
    if explicit or tuple(std) != (1.0,):
        parts.append("--std " + ",".join(f"{v:g}" for v in std))
    if color is not None:
        parts.append(f"--color {ColorOrder(color).value}")
    return " ".join(parts)


def _fraction(value: float) -> str:
    """1/255 and 1/127.5 as the CLI accepts them; other values as plain numbers."""
    for denominator in (255.0, 127.5):
        if abs(value * denominator - 1.0) < 1e-9:
            return f"1/{denominator:g}"
    return f"{value:g}"
