"""The fixed-point requantization math against exact and float references."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgekit.core.fixedpoint import (
    MAX_SHIFT,
    FixedPoint,
    dequantize_ref,
    quantize_multiplier,
    quantize_multipliers_common,
    quantize_ref,
    requantize,
    rescale_sum,
)

positive_multipliers = st.floats(min_value=1e-12, max_value=2.0**29, allow_nan=False, allow_infinity=False)
scales = st.floats(min_value=1e-5, max_value=1.0, allow_nan=False, allow_infinity=False)


def _round_half_up(x: Fraction) -> int:
    return (x + Fraction(1, 2)).__floor__()


@settings(max_examples=300, deadline=None)
@given(real=positive_multipliers, negative=st.booleans())
def test_multiplier_is_a_normalized_31_bit_value_within_2_pow_minus_31(real: float, negative: bool) -> None:
    value = -real if negative else real
    fp = quantize_multiplier(value)
    m, n = int(fp.multiplier), int(fp.shift)
    assert 0 <= n <= MAX_SHIFT
    if n < MAX_SHIFT:
        assert 2**30 <= abs(m) < 2**31
        assert abs(Fraction(m, 2**n) - Fraction(value)) <= abs(Fraction(value)) * Fraction(1, 2**31)
    assert (m < 0) == negative


def test_multiplier_edge_values() -> None:
    fp = quantize_multiplier(np.array([0.0, 1.0, 0.5, 2.0**-70, 1 - 2.0**-40]))
    assert fp.multiplier.tolist()[:3] == [0, 2**30, 2**30]
    assert fp.shift.tolist()[:3] == [0, 30, 31]
    assert fp.multiplier[3] == 0 and fp.shift[3] == MAX_SHIFT  # far below one LSB of any int32 product
    assert fp.multiplier[4] == 2**30 and fp.shift[4] == 30  # rounded up to 1.0: carried into the shift
    with pytest.raises(ValueError, match="too large"):
        quantize_multiplier(2.0**31)
    with pytest.raises(ValueError, match="finite"):
        quantize_multiplier(float("nan"))


@settings(max_examples=300, deadline=None)
@given(
    s_x=scales,
    s_w=scales,
    s_y=scales,
    zero_point=st.integers(-128, 127),
    acc=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=32),
)
def test_requantize_is_exact_round_half_up_of_the_fixed_point_value(
    s_x: float, s_w: float, s_y: float, zero_point: int, acc: list[int]
) -> None:
    real = np.float64(s_x) * np.float64(s_w) / np.float64(s_y)
    fp = quantize_multiplier(real)
    got = requantize(np.array(acc, dtype=np.int64), fp, zero_point)
    m, n = int(fp.multiplier), int(fp.shift)
    for a, g in zip(acc, got.tolist()):
        want = min(127, max(-128, _round_half_up(Fraction(a * m, 2**n)) + zero_point))
        assert g == want


@settings(max_examples=200, deadline=None)
@given(s_x=scales, s_w=scales, s_y=scales, zero_point=st.integers(-128, 127), seed=st.integers(0, 2**32 - 1))
def test_requantize_matches_the_float_reference_within_one_lsb(
    s_x: float, s_w: float, s_y: float, zero_point: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    real = np.float64(s_x) * np.float64(s_w) / np.float64(s_y)
    # Accumulators whose real output spans the int8 range and a little beyond.
    acc = np.rint(rng.uniform(-300, 300, size=256) / real)
    acc = np.clip(acc, -(2**31), 2**31 - 1).astype(np.int64)
    got = requantize(acc, quantize_multiplier(real), zero_point).astype(np.int64)
    exact = np.clip(np.floor(acc * real + 0.5) + zero_point, -128, 127)
    ties_even = np.clip(np.rint(acc * real) + zero_point, -128, 127)
    assert np.all(np.abs(got - exact) <= 1)
    # Off by one only where the real value is within the multiplier's error of a tie.
    frac = np.abs(acc * real - np.floor(acc * real) - 0.5)
    near_tie = frac <= np.abs(acc) * real * 2.0**-30 + 1e-12
    assert np.all((got == exact) | near_tie)
    assert np.all(np.abs(got - ties_even) <= 1)


def test_per_channel_requantize_broadcasts_along_the_channel_axis() -> None:
    real = np.array([0.001, 0.01, 0.1], dtype=np.float64)
    fp = quantize_multiplier(real)
    per_channel = FixedPoint(fp.multiplier.reshape(1, 3, 1), fp.shift.reshape(1, 3, 1))
    acc = np.arange(-600, 600, 50, dtype=np.int64).reshape(1, 1, -1).repeat(3, axis=1)
    got = requantize(acc, per_channel, -5)
    for c in range(3):
        assert got[0, c].tolist() == requantize(acc[0, c], quantize_multiplier(real[c]), -5).tolist()
    assert not np.array_equal(got[0, 0], got[0, 2])


@pytest.mark.parametrize("s_in,z_in,s_out,z_out", [(0.02, 3, 0.05, -10), (0.1, -128, 0.013, 7), (1 / 255, 0, 1 / 127, 0)])
def test_every_int8_value_requantizes_like_quantize_of_dequantize(s_in: float, z_in: int, s_out: float, z_out: int) -> None:
    x = np.arange(-128, 128, dtype=np.int64)
    fp = quantize_multiplier(np.float64(np.float32(s_in)) / np.float64(np.float32(s_out)))
    got = requantize(x - z_in, fp, z_out).astype(np.int64)
    ort = quantize_ref(dequantize_ref(x, s_in, z_in), s_out, z_out).astype(np.int64)
    assert np.max(np.abs(got - ort)) <= 1
    assert np.mean(got == ort) >= 0.99  # differs only on (near-)ties, where ORT rounds to even


def test_quantize_ref_rounds_half_to_even_and_saturates() -> None:
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1000.0, -1000.0], dtype=np.float32)
    assert quantize_ref(x, 1.0, 0).tolist() == [0, 2, 2, 0, -2, 127, -128]


@settings(max_examples=200, deadline=None)
@given(s_a=scales, s_b=scales, s_y=scales, z_a=st.integers(-128, 127), z_b=st.integers(-128, 127),
       z_y=st.integers(-128, 127), subtract=st.booleans(), seed=st.integers(0, 2**32 - 1))  # fmt: skip
def test_rescale_sum_matches_float_add_within_one_lsb(
    s_a: float, s_b: float, s_y: float, z_a: int, z_b: int, z_y: int, subtract: bool, seed: int
) -> None:
    if max(s_a, s_b) / s_y >= 2.0**29:
        return
    rng = np.random.default_rng(seed)
    a = rng.integers(-128, 128, size=512)
    b = rng.integers(-128, 128, size=512)
    sign = -1.0 if subtract else 1.0
    fp = quantize_multipliers_common([s_a / s_y, sign * s_b / s_y])
    assert len(set(fp.shift.tolist())) == 1
    got = rescale_sum([a, b], [z_a, z_b], fp, z_y).astype(np.int64)
    real = (s_a * (a - z_a) + sign * s_b * (b - z_b)) / s_y
    want = np.clip(np.floor(real + 0.5) + z_y, -128, 127)
    assert np.all(np.abs(got - want) <= 1)
    # Exact except at rounding ties: scales like 1.0 / 0.6 and 0.5 / 0.6 put
    # many sums exactly on a half step, where the float reference's floor and
    # the fixed-point multiplier may fall on either side (hypothesis found 3.9 %).
    tie = np.abs(real + 0.5 - np.round(real + 0.5)) < 1e-6
    assert np.mean((got == want) | tie) >= 0.99
