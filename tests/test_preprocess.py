"""Pre/post-processing properties: the LUT encoder is the formula, quantization is within half a step,
colour and resize give what they say, and output decoding is a distribution."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from edgecnn.errors import DataError
from edgecnn.manifest import ColorOrder, Layout, OutputKind, Preprocessing, ResizeMode, TensorSpec
from edgecnn.preprocess import (InputEncoder, convert_color, decode_output, decode_scores, decode_top_k, dequantize,
                                encode_float, prepare_batch, prepare_pixels, quantize, resize_image, softmax, to_float,
                                top_k)

finite = dict(allow_nan=False, allow_infinity=False)
pixels_strategy = hnp.arrays(np.uint8, hnp.array_shapes(min_dims=4, max_dims=4, min_side=1, max_side=6))


@st.composite
def preprocessings(draw, channels=None):
    color = draw(st.sampled_from([ColorOrder.GRAY, ColorOrder.RGB, ColorOrder.BGR])) if channels is None else \
        (ColorOrder.GRAY if channels == 1 else ColorOrder.RGB)
    n = 1 if color == ColorOrder.GRAY else 3
    per = draw(st.sampled_from([1, n]))
    mean = tuple(draw(st.floats(-2, 2, **finite)) for _ in range(per))
    std = tuple(draw(st.floats(0.05, 4, **finite)) * draw(st.sampled_from([1, -1])) for _ in range(per))
    return Preprocessing(height=4, width=4, color=color, scale=draw(st.floats(1e-4, 1.0, **finite)), mean=mean,
                         std=std, invert=draw(st.booleans()))


def direct_formula(pixels: np.ndarray, prep: Preprocessing) -> np.ndarray:
    values = pixels.astype(np.float64)
    if prep.invert:
        values = 255.0 - values
    return (values * prep.scale - np.asarray(prep.mean)) / np.asarray(prep.std)


@settings(max_examples=120, deadline=None)
@given(prep=preprocessings(), data=st.data())
def test_float_encoder_equals_direct_formula(prep, data):
    pixels = data.draw(hnp.arrays(np.uint8, (2, 3, 5, prep.channels)))
    out = InputEncoder.build(prep, TensorSpec("x", (), "float32"))(pixels)
    assert out.dtype == np.float32 and out.shape == pixels.shape
    np.testing.assert_array_equal(out, direct_formula(pixels, prep).astype(np.float32))
    np.testing.assert_array_equal(to_float(pixels, prep), out)


@settings(max_examples=120, deadline=None)
@given(prep=preprocessings(), dtype=st.sampled_from(["int8", "uint8"]), scale=st.floats(1e-3, 0.1, **finite),
       zero_point=st.integers(-128, 255), data=st.data())
def test_quantized_encoder_equals_formula_then_quantize(prep, dtype, scale, zero_point, data):
    zero_point = int(np.clip(zero_point, *((-128, 127) if dtype == "int8" else (0, 255))))
    spec = TensorSpec("x", (), dtype, scale, zero_point)
    pixels = data.draw(hnp.arrays(np.uint8, (1, 4, 4, prep.channels)))
    out = InputEncoder.build(prep, spec)(pixels)
    assert out.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(out, quantize(direct_formula(pixels, prep), spec))


def test_flatten_encoder_gives_vectors():
    prep = Preprocessing(height=28, width=28, color=ColorOrder.GRAY, layout=Layout.FLAT)
    out = InputEncoder.build(prep, TensorSpec("x", (1, 784), "float32"))(np.full((3, 28, 28, 1), 255, np.uint8))
    assert out.shape == (3, 784) and np.allclose(out, 1.0)


@settings(max_examples=200, deadline=None)
@given(dtype=st.sampled_from(["int8", "uint8", "int16"]), scale=st.floats(1e-4, 10, **finite),
       zero_point=st.integers(-100, 100), data=st.data())
def test_quantize_dequantize_round_trip_within_half_a_step(dtype, scale, zero_point, data):
    lo, hi = {"int8": (-128, 127), "uint8": (0, 255), "int16": (-32768, 32767)}[dtype]
    zero_point = int(np.clip(zero_point, lo, hi))
    spec = TensorSpec("x", (), dtype, scale, zero_point)
    x_lo, x_hi = (lo - zero_point) * scale, (hi - zero_point) * scale
    assume(x_hi > x_lo)
    x = np.asarray(data.draw(st.lists(st.floats(x_lo, x_hi, **finite), min_size=1, max_size=20)))
    q = quantize(x, spec)
    assert q.dtype == np.dtype(dtype)
    back = dequantize(q, spec)
    # within half a step, plus float32 rounding of the dequantized value (dequantize returns float32)
    assert np.all(np.abs(back.astype(np.float64) - x) <= scale / 2 * (1 + 1e-4) + np.abs(x) * 2.0 ** -22 + 1e-6)


def test_quantize_saturates_and_rounds_half_away_from_zero():
    spec = TensorSpec("x", (), "int8", 1.0, 0)
    np.testing.assert_array_equal(quantize(np.array([-1e9, -2.5, -0.5, 0.5, 2.5, 1e9]), spec),
                                  np.array([-128, -3, -1, 1, 3, 127], np.int8))
    float_spec = TensorSpec("x", (), "float32")
    assert not float_spec.quantized
    assert encode_float(np.array([0.25]), float_spec).dtype == np.float32
    assert dequantize(np.array([3], np.int8), float_spec).dtype == np.float32


rgb_images = hnp.arrays(np.uint8, st.tuples(st.integers(1, 8), st.integers(1, 8), st.just(3)))


@settings(max_examples=60, deadline=None)
@given(image=rgb_images)
def test_colour_conversions(image):
    assert np.array_equal(convert_color(image, ColorOrder.RGB, ColorOrder.RGB), image)
    assert np.array_equal(convert_color(image, ColorOrder.RGB, ColorOrder.BGR), image[:, :, ::-1])
    assert np.array_equal(convert_color(image, ColorOrder.BGR, ColorOrder.RGB), image[:, :, ::-1])
    grey = convert_color(image, ColorOrder.RGB, ColorOrder.GRAY)
    assert grey.shape == image.shape[:2] + (1,) and grey.dtype == np.uint8
    expected = image.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    assert np.all(np.abs(grey[:, :, 0].astype(np.float64) - expected) <= 1.0)
    assert np.array_equal(convert_color(image[:, :, ::-1].copy(), ColorOrder.BGR, ColorOrder.GRAY), grey)
    rgba = np.concatenate([image, np.full(image.shape[:2] + (1,), 7, np.uint8)], axis=2)
    assert np.array_equal(convert_color(rgba, ColorOrder.RGB, ColorOrder.RGB), image)


@settings(max_examples=40, deadline=None)
@given(grey=hnp.arrays(np.uint8, st.tuples(st.integers(1, 8), st.integers(1, 8))))
def test_grey_input_to_any_colour_order(grey):
    for shape in (grey, grey[:, :, None]):
        colour = convert_color(shape, ColorOrder.GRAY, ColorOrder.RGB)
        assert colour.shape == grey.shape + (3,) and all(np.array_equal(colour[:, :, c], grey) for c in range(3))
        assert np.array_equal(convert_color(shape, ColorOrder.BGR, ColorOrder.GRAY)[:, :, 0], grey)


@pytest.mark.parametrize("shape", [(4, 4, 2), (4, 4, 5), (4,), (2, 4, 4, 3)])
def test_images_neither_grey_nor_colour_are_refused(shape):
    with pytest.raises(DataError, match="neither grey nor colour"):
        convert_color(np.zeros(shape, np.uint8), ColorOrder.RGB, ColorOrder.RGB)


@settings(max_examples=60, deadline=None)
@given(h=st.integers(1, 64), w=st.integers(1, 64), th=st.integers(1, 32), tw=st.integers(1, 32),
       channels=st.sampled_from([1, 3]), mode=st.sampled_from(list(ResizeMode)))
def test_every_resize_mode_gives_the_target_shape(h, w, th, tw, channels, mode):
    image = np.random.default_rng(h * 100 + w).integers(0, 256, (h, w, channels), dtype=np.uint8)
    out = resize_image(image, th, tw, mode)
    assert out.shape == (th, tw, channels) and out.dtype == np.uint8


def test_letterbox_pads_with_zeros_and_center_crop_keeps_the_centre():
    wide = np.full((10, 40, 1), 200, np.uint8)
    boxed = resize_image(wide, 20, 20, ResizeMode.LETTERBOX)
    assert boxed[:5].max() == 0 and boxed[-5:].max() == 0 and boxed[8:12].min() == 200
    image = np.zeros((10, 40, 1), np.uint8)
    image[:, 15:25] = 255  # the centred 10x10 square
    assert resize_image(image, 10, 10, ResizeMode.CENTER_CROP).min() == 255
    assert resize_image(image, 10, 10, ResizeMode.STRETCH).min() == 0


def test_prepare_pixels_refuses_non_uint8_and_empty_images():
    prep = Preprocessing(height=28, width=28, color=ColorOrder.GRAY)
    with pytest.raises(DataError, match="uint16"):
        prepare_pixels(np.zeros((28, 28), np.uint16), prep)
    with pytest.raises(DataError, match="float"):
        prepare_pixels(np.zeros((28, 28, 3), np.float32), prep)
    with pytest.raises(DataError, match="empty"):
        prepare_pixels(np.zeros((0, 28, 3), np.uint8), prep)
    out = prepare_pixels(np.full((480, 640, 3), 9, np.uint8), prep, ColorOrder.BGR)
    assert out.shape == (28, 28, 1) and out.min() == 9


def test_prepare_batch_fast_path_and_slow_path_agree():
    prep = Preprocessing(height=8, width=8, color=ColorOrder.RGB)
    batch = np.random.default_rng(0).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    assert np.array_equal(prepare_batch(batch, prep), batch)
    assert np.array_equal(prepare_batch(list(batch), prep), batch)
    assert np.array_equal(prepare_batch(batch, prep, ColorOrder.BGR), batch[..., ::-1])
    ragged = [np.zeros((16, 16, 3), np.uint8), np.zeros((9, 4), np.uint8)]
    assert prepare_batch(ragged, prep).shape == (2, 8, 8, 3)
    with pytest.raises(DataError, match="no images"):
        prepare_batch([], prep)


def test_encoder_refuses_wrong_dtype_and_wrong_channel_count():
    prep = Preprocessing(height=2, width=2, color=ColorOrder.RGB, mean=(0.1, 0.2, 0.3), std=(1, 2, 3))
    encoder = InputEncoder.build(prep, TensorSpec("x", (), "float32"))
    with pytest.raises(DataError, match="uint8"):
        encoder(np.zeros((1, 2, 2, 3), np.float32))
    with pytest.raises(DataError, match="channel"):
        encoder(np.zeros((1, 2, 2, 1), np.uint8))
    with pytest.raises(DataError, match="channel"):
        encoder(np.zeros((1, 2, 2, 4), np.uint8))


@settings(max_examples=100, deadline=None)
@given(scores=hnp.arrays(np.float32, st.integers(1, 30), elements=st.floats(-1e3, 1e3, width=32, **finite)),
       k=st.integers(-2, 40))
def test_top_k_is_sorted_best_first_with_ties_by_index(scores, k):
    result = top_k(scores, k)
    assert len(result) == max(1, min(k, len(scores)))
    values = [s for _, s in result]
    assert values == sorted(values, reverse=True)
    two_class_tie = len(scores) == 2 and scores[0] == scores[1]  # decides for class 1 (the p >= 0.5 rule)
    assert result[0][1] == scores.max() and result[0][0] == (1 if two_class_tie else int(np.argmax(scores)))
    for (i, s), (j, t) in zip(result, result[1:]):
        # Ties go to the lower index, except a two-class tie, which decides for class 1 (the p >= 0.5 rule).
        assert s > t or (s == t and (i < j if len(scores) != 2 else i == 1))


@settings(max_examples=150, deadline=None)
@given(scores=hnp.arrays(np.float32, st.integers(1, 300),
                         elements=st.sampled_from([0.0, 0.25, 0.5, 1.0, -3.0, float("nan")])),
       k=st.integers(1, 12))
def test_top_k_equals_the_full_ranking_with_ties_and_nans(scores, k):
    # top_k finds the k best without sorting everything; it must pick exactly what ranking all of them picks,
    # ties at the k-th place (quantized outputs tie often) and NaNs included.
    from edgecnn.preprocess import ranking

    expected = ranking(scores[None, :])[0][:max(1, min(k, len(scores)))]
    assert [i for i, _ in top_k(scores, k)] == [int(i) for i in expected]


@settings(max_examples=100, deadline=None)
@given(logits=hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 12)),
                         elements=st.floats(-80, 80, width=32, **finite)))
def test_decode_output_logits_give_probabilities(logits):
    spec = TensorSpec("y", logits.shape, "float32")
    probs = decode_output(logits, spec, OutputKind.LOGITS)
    if logits.shape[1] == 1:  # one unit: a binary logit, two classes [1 - sigmoid(z), sigmoid(z)]
        assert probs.shape == (logits.shape[0], 2) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-6)
        decided = np.abs(logits[:, 0]) > 1e-6  # nearer 0 float32 rounds sigmoid(z) to 0.5: a tie, class 1 by rule
        assert np.array_equal((probs[:, 1] >= 0.5)[decided], (logits[:, 0] >= 0)[decided])
        return
    assert probs.shape == logits.shape and probs.dtype == np.float32
    assert np.allclose(probs.sum(axis=1), 1.0, atol=1e-5) and np.all(probs >= 0)
    chosen = np.take_along_axis(logits, np.argmax(probs, axis=1)[:, None], 1)[:, 0]
    assert np.all(chosen >= logits.max(axis=1) - 1e-5)  # the most probable class has the largest logit (ties aside)
    np.testing.assert_array_equal(decode_output(logits, spec, OutputKind.PROBABILITIES), logits)


@settings(max_examples=150, deadline=None)
@given(dtype=st.sampled_from(["int8", "uint8"]), scale=st.floats(1e-6, 50, **finite),
       zero_point=st.integers(-128, 255), data=st.data())
def test_dequantize_8bit_by_table_is_bit_identical_to_the_arithmetic(dtype, scale, zero_point, data):
    # 8-bit outputs are dequantized through a 256-entry table: every code must give the very float32 that
    # (q - zero_point) * scale gives, the formula the float path and the other dtypes use.
    q = np.arange(256, dtype=np.uint8).view(dtype).reshape(2, 128)
    q = q[:, data.draw(st.permutations(list(range(128))))]  # any order, a non-contiguous view too
    spec = TensorSpec("y", q.shape, dtype, scale, zero_point)
    expected = ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)
    got = dequantize(q[:, ::-1], spec)[:, ::-1]
    assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), expected.view(np.uint32))


@settings(max_examples=300, deadline=None)
@given(dtype=st.sampled_from(["int8", "uint8", "int16", "float32"]), n=st.integers(1, 1001),
       scale=st.floats(1e-5, 2.0, **finite), zero_point=st.integers(-128, 127), k=st.integers(-1, 12),
       kind=st.sampled_from(list(OutputKind)), levels=st.integers(1, 256), seed=st.integers(0, 2 ** 16))
def test_decode_top_k_equals_top_k_of_the_decoded_scores(dtype, n, scale, zero_point, k, kind, levels, seed):
    # The per-frame shortcut (an int8 softmax ranked by its codes, only the winners dequantized) must give what
    # the one decoder and the one ranking give: same classes, same order (ties by index), same float32 scores.
    rng = np.random.default_rng(seed)
    if dtype == "float32":
        raw = rng.integers(0, levels, size=(1, n)).astype(np.float32) / levels
        spec = TensorSpec("y", raw.shape, dtype)
    else:
        info = np.iinfo(dtype)
        codes = rng.choice(np.arange(info.min, info.max + 1), size=levels)  # few levels: many ties
        raw = rng.choice(codes, size=(1, n)).astype(dtype)
        spec = TensorSpec("y", raw.shape, dtype, scale, int(np.clip(zero_point, info.min, info.max)))
    expected = top_k(decode_scores(raw, spec, kind)[0], k)
    got = decode_top_k(raw, spec, kind, k)
    assert [i for i, _ in got] == [i for i, _ in expected]
    assert np.array_equal(np.float32([s for _, s in got]).view(np.uint32),
                          np.float32([s for _, s in expected]).view(np.uint32))


def test_decode_top_k_of_an_int8_softmax_tied_at_zero():
    # A confident quantized classifier: one class at 0.9, hundreds at exactly 0; the top 5 are the winner and
    # then the lowest-indexed zeros.
    spec = TensorSpec("y", (1, 1000), "int8", 1 / 256, -128)
    raw = np.full((1, 1000), -128, np.int8)
    raw[0, 700], raw[0, 3] = 102, -100  # 230/256 and 28/256
    assert decode_top_k(raw, spec, OutputKind.PROBABILITIES, 5) == [(700, 230 / 256), (3, 28 / 256), (0, 0.0),
                                                                     (1, 0.0), (2, 0.0)]


def test_decode_quantized_output_dequantizes():
    spec = TensorSpec("y", (1, 3), "int8", 1 / 256, -128)
    out = decode_output(np.array([[-128, 0, 127]], np.int8), spec)
    np.testing.assert_allclose(out, [[0.0, 0.5, 255 / 256]])
    assert np.allclose(softmax(np.array([[1000.0, 1000.0]])), 0.5)


def test_interpolation_is_recorded_and_honoured():
    """Shrinking follows the manifest: bilinear by default (as Keras resizes), area on request; both round-trip."""
    import dataclasses

    from edgecnn.manifest import Interpolation, Manifest, Preprocessing

    rng = np.random.default_rng(1)
    frame = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    linear = Preprocessing(height=224, width=224)
    area = dataclasses.replace(linear, interpolation=Interpolation.AREA)
    assert linear.interpolation == Interpolation.LINEAR
    import cv2

    expected_linear = cv2.resize(frame, (224, 224), interpolation=cv2.INTER_LINEAR)
    expected_area = cv2.resize(frame, (224, 224), interpolation=cv2.INTER_AREA)
    assert np.array_equal(prepare_pixels(frame, linear), expected_linear)
    assert np.array_equal(prepare_pixels(frame, area), expected_area)
    assert not np.array_equal(expected_linear, expected_area)
    manifest = Manifest(model_name="m", source_sha256="0" * 64, input_shape=(224, 224, 3), preprocessing=area,
                        labels=("a", "b"))
    assert Manifest.from_dict(manifest.to_dict()).preprocessing.interpolation == Interpolation.AREA
