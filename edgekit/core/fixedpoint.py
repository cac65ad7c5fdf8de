"""Fixed-point requantization: integer arithmetic that replaces float rescaling.

A quantized layer computes an int32 accumulator ``acc`` whose real value is
``acc * s_in``; its int8 output must be ``round(acc * s_in / s_out) + z_out``.
The real multiplier ``M = s_in / s_out`` is represented as an integer
``m`` (``2**30 <= |m| < 2**31``) and a right shift ``n`` with
``M ~= m / 2**n``, and the output is::

    q = clamp(round_shift(acc * m, n) + z_out, qmin, qmax)

computed with an int32 x int32 -> int64 product and an arithmetic shift.

Rounding: *half to even*, as onnxruntime's ``QuantizeLinear`` rounds (and
the x86 float form, :mod:`edgekit.compiler.backends.llvm.requant`). Exact ties are
not rare: with scale ratios such as 1.0 / 0.6 a few percent of the sums of
a quantized Add sit exactly on a half step. For ``n >= 1``::

    round_shift(x, n) = (x + 2**(n-1) - 1 + ((x >> n) & 1)) >> n

Writing ``x = q * 2**n + r`` (``0 <= r < 2**n``, ``b = q & 1``), the sum
carries into ``q`` when ``r + 2**(n-1) - 1 + b >= 2**n``: for every
``r > 2**(n-1)``, for ``r == 2**(n-1)`` only when ``q`` is odd (the tie
goes to the even neighbour), never below -- and it never carries twice.
Half up (TFLite's ``2**(n-1)`` alone) would send every tie toward +inf.
The cost over half up is a shift, an AND and an add, and two constants per
channel: the offset ``2**(n-1) - 1`` and the parity mask (1; 0 when
``n == 0``, where nothing is rounded).

This is the numpy reference every integer backend shares: the integer
lowering's Relax emitters (:mod:`edgekit.compiler.integer.requant`), the MCU
C kernels and the NPU (simulator, layers, partition). Pure numpy: no TVM.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

__all__ = [
    "QMIN",
    "QMAX",
    "MAX_SHIFT",
    "FixedPoint",
    "quantize_multiplier",
    "quantize_multipliers_common",
    "requantize",
    "quantize_ref",
    "dequantize_ref",
    "rescale_sum",
    "round_shift",
    "tie_constants",
    "ties_possible",
    "dot_bound",
]

logger = logging.getLogger(__name__)

#: The int8 range every lowered layer clamps to.
QMIN, QMAX = -128, 127
#: Bits of the multiplier's magnitude: ``|m| < 2**MULT_BITS``.
MULT_BITS = 31
#: Largest right shift. ``|acc * m| < 2**62`` for int32 ``acc``, so a shift
#: of 62 already maps every product to 0 or -1 before rounding.
MAX_SHIFT = 62


@dataclass(frozen=True)
class FixedPoint:
    """Integer multipliers and right shifts, ``real ~= multiplier / 2**shift``.

    Attributes:
        multiplier: int64 array; ``2**30 <= |m| < 2**31`` unless the real
            value is 0 (or too small to matter: then ``shift == MAX_SHIFT``).
        shift: int64 array of the same shape, each in ``[0, MAX_SHIFT]``.
    """

    multiplier: np.ndarray
    shift: np.ndarray

    def real(self) -> np.ndarray:
        """The real values the pair represents (float64)."""
        return self.multiplier.astype(np.float64) / np.exp2(self.shift.astype(np.float64))

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.multiplier.shape)


def quantize_multiplier(real: np.ndarray | float) -> FixedPoint:
    """Splits real multipliers into (int32 multiplier, right shift) pairs.

    Args:
        real: Any shape of finite float multipliers, ``|real| < 2**30``.

    Returns:
        A :class:`FixedPoint` of the same shape; the relative error of each
        non-zero value is at most ``2**-31``.

    Raises:
        ValueError: a value is not finite or too large to represent.
    """
    r = np.asarray(real, dtype=np.float64)
    if not np.all(np.isfinite(r)):
        raise ValueError("requantization multipliers must be finite")
    frac, exp = np.frexp(np.abs(r))  # |r| = frac * 2**exp, frac in [0.5, 1)
    mult = np.rint(frac * 2.0**MULT_BITS).astype(np.int64)
    shift = (MULT_BITS - exp).astype(np.int64)
    # Rounding frac up to 1.0 gives 2**31: halve it and shift one less.
    carry = mult == (1 << MULT_BITS)
    mult = np.where(carry, mult >> 1, mult)
    shift = np.where(carry, shift - 1, shift)
    if np.any(shift < 0):
        raise ValueError(f"requantization multiplier {float(np.max(np.abs(r)))} is too large (>= 2**30)")
    tiny = shift > MAX_SHIFT
    if np.any(tiny):
        # Keep the value as exactly as 62 bits allow (usually 0).
        mult = np.where(tiny, np.rint(np.abs(r) * 2.0**MAX_SHIFT).astype(np.int64), mult)
        shift = np.where(tiny, MAX_SHIFT, shift)
    zero = r == 0
    mult = np.where(zero, 0, mult)
    shift = np.where(zero, 0, shift)
    mult = np.where(r < 0, -mult, mult)
    return FixedPoint(mult.astype(np.int64), shift.astype(np.int64))


def quantize_multipliers_common(reals: np.ndarray | list[float]) -> FixedPoint:
    """Multipliers that share one shift, for sums of differently scaled terms.

    The largest magnitude gets a full 31-bit multiplier; the others are
    rounded to the same power of two (so ``sum(x_i * m_i) >> n`` rounds once).

    Args:
        reals: 1-D multipliers, ``|real| < 2**30``, at least one non-zero.

    Returns:
        A :class:`FixedPoint` whose ``shift`` entries are all equal.
    """
    r = np.asarray(reals, dtype=np.float64).reshape(-1)
    top = quantize_multiplier(np.max(np.abs(r)))
    shift = int(top.shift)
    mult = np.rint(r * 2.0**shift).astype(np.int64)
    return FixedPoint(mult, np.full(r.shape, shift, dtype=np.int64))


def tie_constants(shift: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """The constants of :func:`round_shift` per shift ``n``: the offset
    ``2**(n-1) - 1`` and the parity mask 1 (both 0 where ``n == 0``)."""
    s = np.asarray(shift, dtype=np.int64)
    offset = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)) - 1, 0).astype(np.int64)
    return offset, (s > 0).astype(np.int64)


def round_shift(x: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """``x / 2**shift`` rounded to the nearest integer, ties to even (int64, wrapping like the hardware).

    Args:
        x: int64 values (products or sums of products, ``|x| < 2**63 - 2**62``).
        shift: Right shifts in ``[0, MAX_SHIFT]``, broadcastable to ``x``.
    """
    x = np.asarray(x, dtype=np.int64)
    n = np.asarray(shift, dtype=np.int64)
    offset, mask = tie_constants(n)
    return np.right_shift(x + offset + (np.right_shift(x, n) & mask), n)


def ties_possible(multiplier: np.ndarray, shift: np.ndarray, bound: np.ndarray | int = 2**31) -> np.ndarray:
    """Whether ``a * m`` for some integer ``0 < |a| <= bound`` is exactly half-way for the shift ``n``.

    A tie needs the product's trailing zeros to be exactly ``n - 1``; ``a``
    has at most ``L = floor(log2(bound))`` (31 for an int32), so the low
    ``n - 1 - L`` bits of ``m`` must be 0 (for an int32 and ``n > 32``:
    multipliers like 0.5 or 3/16 -- real per-channel scales rarely; with
    the bound a conv's weights put on its accumulator, almost never).
    Where this is False, rounding half up gives the same value as
    :func:`round_shift`, which kernels use to keep one add (the MCU kernels
    in ``firmware_stubs/nn/ek_nn_s8.c``, the integer lowering's Relax form).

    Args:
        multiplier: Fixed-point multipliers.
        shift: Their right shifts (broadcastable).
        bound: Largest ``|a|`` (broadcastable); the default is an int32's.
    """
    m = np.abs(np.asarray(multiplier, dtype=np.int64))
    n = np.asarray(shift, dtype=np.int64)
    b = np.maximum(np.asarray(bound, dtype=np.int64), 1)
    top = np.frexp(b.astype(np.float64))[1].astype(np.int64) - 1  # floor(log2(b)), exact below 2**53
    low = np.left_shift(np.int64(1), np.clip(n - 1 - top, 0, 62)) - 1
    return (m & low) == 0


def dot_bound(
    weights: np.ndarray, axis: int | tuple[int, ...], operand_bound: int, offset: np.ndarray | int = 0
) -> np.ndarray:
    """Largest ``|sum(w * x) + offset|`` over ``axis`` for any ``|x| <= operand_bound``: the
    bound a conv's or matmul's int32 accumulator puts on :func:`ties_possible`.

    Its weights are known at compile time, so the bound is per output channel
    ``sum |w| * max |x| + |offset|`` (the offset: the folded bias and
    zero-point correction), far below an int32's on real layers.

    Args:
        weights: Integer weights.
        axis: Their reduction axes; the remaining axes are the channels.
        operand_bound: Largest ``|x|`` of the other operand (128 for int8).
        offset: Constant added to each channel's sum (broadcastable to the result).
    """
    total = np.abs(np.asarray(weights, dtype=np.int64)).sum(axis=axis) * np.int64(operand_bound)
    return total + np.abs(np.asarray(offset, dtype=np.int64))


def requantize(
    acc: np.ndarray,
    fp: FixedPoint,
    zero_point: int,
    qmin: int = QMIN,
    qmax: int = QMAX,
) -> np.ndarray:
    """numpy reference of the integer requantization (bit-exact with the Relax one in compiler/integer/requant.py).

    Args:
        acc: Integer accumulators (any int dtype, values within int32).
        fp: Multipliers and shifts, broadcastable to ``acc``.
        zero_point: Output zero point.
        qmin: Lower clamp (folds Relu/Clip).
        qmax: Upper clamp.

    Returns:
        int8 array: ``clamp(round_shift(acc * m, n) + zero_point)``.
    """
    a = np.asarray(acc).astype(np.int64)
    out = round_shift(a * fp.multiplier, fp.shift) + np.int64(zero_point)
    return np.clip(out, qmin, qmax).astype(np.int8)


def quantize_ref(x: np.ndarray, scale: float, zero_point: int, qmin: int = QMIN, qmax: int = QMAX) -> np.ndarray:
    """onnxruntime's QuantizeLinear: float32 divide, round half to even, saturate."""
    v = np.rint(np.asarray(x, dtype=np.float32) / np.float32(scale)) + np.float32(zero_point)
    return np.clip(v, qmin, qmax).astype(np.int8)


def dequantize_ref(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """onnxruntime's DequantizeLinear: ``(q - zero_point) * scale`` in float32."""
    return ((np.asarray(q).astype(np.int32) - np.int32(zero_point)).astype(np.float32) * np.float32(scale)).astype(
        np.float32
    )


def rescale_sum(
    inputs: list[np.ndarray],
    zero_points: list[int],
    fp: FixedPoint,
    zero_point: int,
    qmin: int = QMIN,
    qmax: int = QMAX,
) -> np.ndarray:
    """numpy reference of a requantized sum of differently scaled int8 tensors.

    ``out = clamp(round_shift(sum_i (x_i - z_i) * m_i, n) + zero_point)``
    with the common shift ``n`` of :func:`quantize_multipliers_common`
    (quantized Add: ``m_i ~= s_i / s_out * 2**n``; Sub: a negative ``m``).
    """
    shift = int(fp.shift.reshape(-1)[0])
    total: np.ndarray | np.int64 = np.int64(0)
    for x, z, m in zip(inputs, zero_points, fp.multiplier.reshape(-1)):
        total = total + (np.asarray(x).astype(np.int64) - np.int64(z)) * np.int64(m)
    out = round_shift(total, shift) + np.int64(zero_point)
    return np.clip(out, qmin, qmax).astype(np.int8)


