"""Fixed-point requantization: integer arithmetic that replaces float rescaling.

A quantized layer computes an int32 accumulator ``acc`` whose real value is
``acc * s_in``; its int8 output must be ``round(acc * s_in / s_out) + z_out``.
The real multiplier ``M = s_in / s_out`` is represented as an integer
``m`` (``2**30 <= |m| < 2**31``) and a right shift ``n`` with
``M ~= m / 2**n``, and the output is::

    q = clamp(((acc * m + 2**(n-1)) >> n) + z_out, qmin, qmax)

computed with an int32 x int32 -> int64 product and an arithmetic shift.

Rounding: *half up* (toward +infinity), i.e. TFLite's single-rounding
``MultiplyByQuantizedMultiplier``. It costs one add before the shift, which
every integer ISA and the NPU do in one step. onnxruntime's float
``QuantizeLinear`` rounds half to even, but its input is a float32 sum whose
own rounding error is far larger than the difference between the two tie
rules, so exact ties are rare and cost at most one LSB (see
``docs/integer-lowering.md``).

This module holds the numpy reference (shared with the NPU simulator) and the
Relax emitter that produces the same arithmetic inside a compiled model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from tvm import relax

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
    "emit_requantize",
    "rescale_sum",
    "emit_rescale_sum",
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


def _rounding(shift: np.ndarray) -> np.ndarray:
    s = np.asarray(shift, dtype=np.int64)
    return np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 0).astype(np.int64)


def requantize(
    acc: np.ndarray,
    fp: FixedPoint,
    zero_point: int,
    qmin: int = QMIN,
    qmax: int = QMAX,
) -> np.ndarray:
    """numpy reference of the integer requantization (bit-exact with the Relax one).

    Args:
        acc: Integer accumulators (any int dtype, values within int32).
        fp: Multipliers and shifts, broadcastable to ``acc``.
        zero_point: Output zero point.
        qmin: Lower clamp (folds Relu/Clip).
        qmax: Upper clamp.

    Returns:
        int8 array: ``clamp(((acc * m + 2**(n-1)) >> n) + zero_point)``.
    """
    a = np.asarray(acc).astype(np.int64)
    out = np.right_shift(a * fp.multiplier + _rounding(fp.shift), fp.shift) + np.int64(zero_point)
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


def _broadcast_const(values: np.ndarray, dtype: str, axis: int | None, ndim: int) -> "relax.Expr":
    from tvm import relax

    v = np.asarray(values).astype(dtype)
    if v.size == 1:
        return relax.const(v.reshape(()), dtype)
    if axis is None:
        return relax.const(v, dtype)
    shape = [1] * ndim
    shape[axis] = v.size
    return relax.const(v.reshape(shape), dtype)


def emit_requantize(
    acc: "relax.Expr",
    fp: FixedPoint,
    zero_point: int,
    *,
    axis: int | None = None,
    ndim: int = 0,
    qmin: int = QMIN,
    qmax: int = QMAX,
    out_dtype: str = "int8",
) -> "relax.Expr":
    """Relax expression of :func:`requantize` on an integer tensor.

    Args:
        acc: int32 (or int64) Relax tensor.
        fp: Scalar, per-``axis`` vector, or a full broadcastable array.
        zero_point: Output zero point.
        axis: Axis of ``acc`` that a 1-D ``fp`` runs along (per-channel);
            ``None`` when ``fp`` is scalar or already broadcastable.
        ndim: Rank of ``acc`` (needed with ``axis``).
        qmin: Lower clamp.
        qmax: Upper clamp.
        out_dtype: Result dtype.

    Returns:
        The requantized tensor; its arithmetic is integer only.
    """
    from tvm import relax
    from tvm.relax import op as R

    x = R.astype(acc, "int64")
    x = R.multiply(x, _broadcast_const(fp.multiplier, "int64", axis, ndim))
    rounding = _rounding(fp.shift)
    if np.any(rounding):
        x = R.add(x, _broadcast_const(rounding, "int64", axis, ndim))
    if np.any(fp.shift):
        x = R.right_shift(x, _broadcast_const(fp.shift, "int64", axis, ndim))
    if zero_point:
        x = R.add(x, relax.const(np.int64(zero_point), "int64"))
    x = R.clip(x, relax.prim_value(int(qmin)), relax.prim_value(int(qmax)))
    return R.astype(x, out_dtype)


def rescale_sum(
    inputs: list[np.ndarray],
    zero_points: list[int],
    fp: FixedPoint,
    zero_point: int,
    qmin: int = QMIN,
    qmax: int = QMAX,
) -> np.ndarray:
    """numpy reference of a requantized sum of differently scaled int8 tensors.

    ``out = clamp(((sum_i (x_i - z_i) * m_i + 2**(n-1)) >> n) + zero_point)``
    with the common shift ``n`` of :func:`quantize_multipliers_common`
    (quantized Add: ``m_i ~= s_i / s_out * 2**n``; Sub: a negative ``m``).
    """
    shift = int(fp.shift.reshape(-1)[0])
    total: np.ndarray | np.int64 = np.int64(0)
    for x, z, m in zip(inputs, zero_points, fp.multiplier.reshape(-1)):
        total = total + (np.asarray(x).astype(np.int64) - np.int64(z)) * np.int64(m)
    out = np.right_shift(total + _rounding(np.int64(shift)), shift) + np.int64(zero_point)
    return np.clip(out, qmin, qmax).astype(np.int8)


def emit_rescale_sum(
    inputs: "list[relax.Expr]",
    zero_points: list[int],
    fp: FixedPoint,
    zero_point: int,
    *,
    qmin: int = QMIN,
    qmax: int = QMAX,
    out_dtype: str = "int8",
) -> "relax.Expr":
    """Relax expression of :func:`rescale_sum`; the zero points fold into one constant."""
    from tvm import relax
    from tvm.relax import op as R

    shift = int(fp.shift.reshape(-1)[0])
    mults = [int(m) for m in fp.multiplier.reshape(-1)]
    offset = int(_rounding(np.int64(shift))) - sum(int(z) * m for z, m in zip(zero_points, mults))
    total = None
    for x, m in zip(inputs, mults):
        term = R.multiply(R.astype(x, "int64"), relax.const(np.int64(m), "int64"))
        total = term if total is None else R.add(total, term)
    total = R.add(total, relax.const(np.int64(offset), "int64"))
    if shift:
        total = R.right_shift(total, relax.const(np.int64(shift), "int64"))
    if zero_point:
        total = R.add(total, relax.const(np.int64(zero_point), "int64"))
    total = R.clip(total, relax.prim_value(int(qmin)), relax.prim_value(int(qmax)))
    return R.astype(total, out_dtype)
