"""The integer lowering's requantization as Relax expressions.

The arithmetic is :mod:`edgekit.core.fixedpoint`'s (multiplier and shift
derivation, rounding, clamp), which the MCU kernels and the NPU share; this
module only builds the same integer operations inside a compiled model, so
the Relax result is bit-exact with :func:`~edgekit.core.fixedpoint.requantize`
and :func:`~edgekit.core.fixedpoint.rescale_sum`.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from edgekit.core.fixedpoint import QMAX, QMIN, FixedPoint, rounding_terms

if TYPE_CHECKING:
    from tvm import relax

__all__ = ["emit_requantize", "emit_rescale_sum"]

logger = logging.getLogger(__name__)


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
    """Relax expression of :func:`~edgekit.core.fixedpoint.requantize` on an integer tensor.

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
    rounding = rounding_terms(fp.shift)
    if np.any(rounding):
        x = R.add(x, _broadcast_const(rounding, "int64", axis, ndim))
    if np.any(fp.shift):
        x = R.right_shift(x, _broadcast_const(fp.shift, "int64", axis, ndim))
    if zero_point:
        x = R.add(x, relax.const(np.int64(zero_point), "int64"))
    x = R.clip(x, relax.prim_value(int(qmin)), relax.prim_value(int(qmax)))
    return R.astype(x, out_dtype)


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
    """Relax expression of :func:`~edgekit.core.fixedpoint.rescale_sum`; the zero points fold into one constant."""
    from tvm import relax
    from tvm.relax import op as R

    shift = int(fp.shift.reshape(-1)[0])
    mults = [int(m) for m in fp.multiplier.reshape(-1)]
    offset = int(rounding_terms(np.int64(shift))) - sum(int(z) * m for z, m in zip(zero_points, mults))
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
