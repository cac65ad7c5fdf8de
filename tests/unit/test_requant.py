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
    dot_bound,
    quantize_multiplier,
    quantize_multipliers_common,
    quantize_ref,
    requantize,
    rescale_sum,
    round_shift,
    ties_possible,
)

positive_multipliers = st.floats(min_value=1e-12, max_value=2.0**29, allow_nan=False, allow_infinity=False)
# Powers of two and small multiples of them make exact ties common: every
# fixed-point multiplier is then exact and the rounding rule alone decides.
scales = st.one_of(
    st.floats(min_value=1e-5, max_value=1.0, allow_nan=False, allow_infinity=False),
    st.builds(lambda k, e: k * 2.0**-e, st.sampled_from([1, 3, 5]), st.integers(3, 12)),
)


def _round_half_even(x: Fraction) -> int:
    return round(x)  # Fraction.__round__: ties to even


def test_round_shift_is_half_to_even_on_every_small_value() -> None:
    x = np.arange(-(2**13), 2**13, dtype=np.int64)
    for n in range(0, 12):
        want = [_round_half_even(Fraction(int(v), 2**n)) for v in x]
        assert round_shift(x, n).tolist() == want, n
    big = np.array([2**62 - 1, 2**62 - 2**40, -(2**62), -(2**62) + 2**40 + 2**39, 3 * 2**39, -(3 * 2**39)], np.int64)
    for n in (1, 31, 32, 33, 40, 61, 62):
        assert round_shift(big, n).tolist() == [_round_half_even(Fraction(int(v), 2**n)) for v in big], n


def test_round_shift_breaks_exact_ties_toward_the_even_neighbour() -> None:
    halves = np.array([1, 3, 5, 7, -1, -3, -5, -7], dtype=np.int64)  # (2k + 1) / 2
    assert round_shift(halves, 1).tolist() == [0, 2, 2, 4, 0, -2, -2, -4]
    assert round_shift(halves * 2**40, 41).tolist() == [0, 2, 2, 4, 0, -2, -2, -4]
    per_lane = round_shift(np.array([[6, 6, 6]], np.int64), np.array([[0, 2, 3]], np.int64))  # 6, 1.5, 0.75
    assert per_lane.tolist() == [[6, 2, 1]]


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
def test_requantize_is_exact_round_half_to_even_of_the_fixed_point_value(
    s_x: float, s_w: float, s_y: float, zero_point: int, acc: list[int]
) -> None:
    real = np.float64(s_x) * np.float64(s_w) / np.float64(s_y)
    fp = quantize_multiplier(real)
    got = requantize(np.array(acc, dtype=np.int64), fp, zero_point)
    m, n = int(fp.multiplier), int(fp.shift)
    for a, g in zip(acc, got.tolist()):
        want = min(127, max(-128, _round_half_even(Fraction(a * m, 2**n)) + zero_point))
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
    fp = quantize_multiplier(real)
    got = requantize(acc, fp, zero_point).astype(np.int64)
    ties_even = np.clip(np.rint(acc * real) + zero_point, -128, 127)
    assert np.all(np.abs(got - ties_even) <= 1)
    # Off by one only where the real value is within the multiplier's error
    # of a half-way point (the fixed-point value may fall on its other side).
    error = np.abs(acc) * abs(float(fp.real()) - real) + np.abs(acc * real) * 2.0**-50
    frac = np.abs(acc * real - np.floor(acc * real) - 0.5)
    assert np.all((got == ties_even) | (frac <= error))


@settings(max_examples=300, deadline=None)
@given(real=st.floats(min_value=1e-9, max_value=0.5), acc=st.lists(st.integers(-(2**31), 2**31 - 1), min_size=1, max_size=64))
def test_where_no_product_can_tie_half_up_is_the_same_value(real: float, acc: list[int]) -> None:
    fp = quantize_multiplier(real)
    m, n = int(fp.multiplier), int(fp.shift)
    a = np.array(acc + [2**31 - 1, -(2**31), 2**30, -(2**29) * 3], dtype=np.int64)
    half_up = np.right_shift(a * m + (1 << (n - 1)), n)
    if not ties_possible(m, n):
        np.testing.assert_array_equal(round_shift(a * m, n), half_up)
    elif n > 32:  # ... and where it is possible, some int32 value is exactly half-way
        tz = (abs(m) & -abs(m)).bit_length() - 1
        a_tie = -(1 << (n - 1 - tz))  # -2**31 is an int32 too
        assert a_tie >= -(2**31) and (a_tie * m) % 2**n == 2 ** (n - 1)


@settings(max_examples=500, deadline=None)
@given(real=st.floats(min_value=1e-9, max_value=0.5), bits=st.integers(1, 31), data=st.data())
def test_ties_possible_with_a_bound_is_exactly_whether_some_value_within_it_ties(real: float, bits: int, data) -> None:
    fp = quantize_multiplier(real)
    m, n = int(fp.multiplier), int(fp.shift)
    bound = data.draw(st.integers(2 ** (bits - 1), 2**bits))
    tz = (m & -m).bit_length() - 1
    # The smallest |a| whose product has exactly n - 1 trailing zeros; m's own zeros at or past n: no fraction at all.
    smallest_tie = 1 << max(n - 1 - tz, 0)
    assert bool(ties_possible(m, n, bound)) == (tz >= n or (tz <= n - 1 and smallest_tie <= bound))
    if ties_possible(m, n, bound):
        return
    a = np.array(data.draw(st.lists(st.integers(-bound, bound), min_size=1, max_size=64)) + [bound, -bound], np.int64)
    half_up = np.right_shift(a * m + (1 << (n - 1)), n)
    np.testing.assert_array_equal(round_shift(a * m, n), half_up)


@settings(max_examples=100, deadline=None)
@given(seed=st.integers(0, 2**16), operand_bound=st.sampled_from([127, 128, 255]))
def test_dot_bound_is_the_largest_accumulator_and_is_reached(seed: int, operand_bound: int) -> None:
    rng = np.random.default_rng(seed)
    w = rng.integers(-128, 128, size=(5, 3, 3, 3)).astype(np.int8)  # OIHW: per output channel over (1, 2, 3)
    offset = rng.integers(-(2**20), 2**20, size=5)
    bound = dot_bound(w, (1, 2, 3), operand_bound, offset)
    flat = w.reshape(5, -1).astype(np.int64)
    x = rng.integers(-operand_bound, operand_bound + 1, size=(64, flat.shape[1]))
    assert np.all(np.abs(x @ flat.T + offset) <= bound)
    extreme = operand_bound * np.sign(flat) * np.sign(offset).reshape(-1, 1)  # each channel's worst input
    np.testing.assert_array_equal(np.abs((extreme * flat).sum(axis=1) + offset), bound)


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
    assert np.mean(got == ort) >= 0.99  # differs only where float32 crosses a half-way point


# Scale ratios whose rescaled int8 values are exact in float32 and often
# exactly half-way: QuantizeLinear(DequantizeLinear(x)) is then the exact
# value rounded half to even, and so must the fixed point be, everywhere.
TIE_SCALES = [(0.5, 1.0), (0.25, 1.0), (0.75, 0.5), (1.25, 0.5), (0.375, 0.25), (0.125, 1.0), (3.0, 4.0)]


@pytest.mark.parametrize("s_in,s_out", TIE_SCALES)
@pytest.mark.parametrize("z_in,z_out", [(0, 0), (3, -10), (-128, 7), (1, 1)])
def test_exact_ties_requantize_exactly_like_quantize_linear(s_in: float, s_out: float, z_in: int, z_out: int) -> None:
    x = np.arange(-128, 128, dtype=np.int64)
    got = requantize(x - z_in, quantize_multiplier(s_in / s_out), z_out).astype(np.int64)
    ort = quantize_ref(dequantize_ref(x, s_in, z_in), s_out, z_out).astype(np.int64)
    ties = ((x - z_in) * s_in / s_out) % 1 == 0.5
    assert ties.sum() >= 32  # not vacuous: half up would miss on every odd-floor one
    np.testing.assert_array_equal(got, ort)


@pytest.mark.parametrize("s_a,s_b,s_y", [(0.25, 0.25, 0.5), (0.5, 0.25, 1.0), (0.5, 0.125, 0.75 * 0.5), (1.0, 0.5, 4.0)])
def test_exact_ties_of_a_quantized_add_round_like_quantize_linear(s_a: float, s_b: float, s_y: float) -> None:
    a, b = (v.reshape(-1) for v in np.meshgrid(np.arange(-128, 128), np.arange(-128, 128)))
    for z_a, z_b, z_y, sign in [(0, 0, 0, 1.0), (5, -7, 3, 1.0), (-2, 9, -1, -1.0)]:
        fp = quantize_multipliers_common([s_a / s_y, sign * s_b / s_y])
        got = rescale_sum([a, b], [z_a, z_b], fp, z_y).astype(np.int64)
        da, db = dequantize_ref(a, s_a, z_a), dequantize_ref(b, s_b, z_b)
        ort = quantize_ref((da + np.float32(sign) * db).astype(np.float32), s_y, z_y).astype(np.int64)
        real = ((a - z_a) * s_a + sign * (b - z_b) * s_b) / s_y
        if s_y != 0.75 * 0.5:  # 0.375 is exact too, but not every quotient is
            assert np.mean(real % 1 == 0.5) > 0.1
        np.testing.assert_array_equal(got, ort)


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
    want = np.clip(np.rint(real) + z_y, -128, 127)
    assert np.all(np.abs(got - want) <= 1)
    # Exact, ties to even, except where the real value is within the
    # multipliers' own error of a half-way point. Scales like 1.0 / 0.6 and
    # 0.5 / 0.6 put many float sums within 1e-16 of one (hypothesis found
    # 3.9 %); the fixed-point value may then fall on either side of it.
    shift = int(fp.shift[0])
    # The ratio s/s_y is itself a float64 quotient, up to half an ulp
    # (|r| * 2**-53) from the exact one the multiplier approximates: with
    # 0.5 / (1/3) it rounds to 1.5 exactly, so a multiplier of exactly 1.5
    # looks error-free while the exact value is 1.5 + 8e-17.
    error = sum(np.abs(x - z) * (abs(int(m) / 2.0**shift - r) + abs(r) * 2.0**-52) for x, z, m, r in
                zip((a, b), (z_a, z_b), fp.multiplier, (s_a / s_y, sign * s_b / s_y))) + np.abs(real) * 2.0**-50  # fmt: skip
    frac = np.abs(real - np.floor(real) - 0.5)
    assert np.all((got == want) | (frac <= error))
