"""The integer lowering's requantization as Relax expressions.

The arithmetic is :mod:`edgekit.core.fixedpoint`'s (multiplier and shift
derivation, rounding, clamp), which the MCU kernels and the NPU share; this
module only builds the same integer operations inside a compiled model, so
the Relax result is bit-exact with :func:`~edgekit.core.fixedpoint.requantize`
and :func:`~edgekit.core.fixedpoint.rescale_sum`.

The rounding shift (half to even) is written as::

    right_shift(add(add(x, offset), bitwise_and(right_shift(x, n), mask)), n)

with the constants of :func:`~edgekit.core.fixedpoint.tie_constants`.
Passes that recognise a requantization (the x86 float form, the MCU kernel
offload, the int8 chain folding) read it back with
:func:`match_round_shift`, so the form is defined in this one place.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgekit.core.fixedpoint import QMAX, QMIN, FixedPoint, tie_constants

if TYPE_CHECKING:
    from tvm import relax

__all__ = ["emit_requantize", "emit_rescale_sum", "emit_round_shift", "match_round_shift"]

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


def emit_round_shift(
    x: "relax.Expr", shift: np.ndarray, *, axis: int | None = None, ndim: int = 0
) -> "relax.Expr":
    """Relax expression of :func:`~edgekit.core.fixedpoint.round_shift` on an int64 tensor.

    Args:
        x: int64 Relax tensor (used twice: the parity and the sum).
        shift: Right shifts: a scalar, a per-``axis`` vector or a
            broadcastable array.
        axis: Axis of ``x`` a 1-D ``shift`` runs along; ``None`` otherwise.
        ndim: Rank of ``x`` (needed with ``axis``).
    """
    from tvm.relax import op as R

    if not np.any(shift):
        return x
    offset, mask = tie_constants(shift)
    n = _broadcast_const(shift, "int64", axis, ndim)
    parity = R.bitwise_and(R.right_shift(x, n), _broadcast_const(mask, "int64", axis, ndim))
    return R.right_shift(R.add(R.add(x, _broadcast_const(offset, "int64", axis, ndim)), parity), n)


def match_round_shift(
    expr: Any, bound: Callable[[Any], Any], constant: Callable[[Any], np.ndarray | None] | None = None
) -> tuple[Any, np.ndarray] | None:
    """``(x, n)`` when ``expr`` is :func:`emit_round_shift`'s expression of ``x``, else None.

    Args:
        expr: A Relax expression (a call or a variable bound to one).
        bound: Maps a ``relax.Var`` to the expression bound to it (the
            caller's ``var2val`` lookup or ``lookup_binding``) and returns
            any other expression unchanged.
        constant: Reads a constant operand (the caller's reader, e.g. one
            that also sees through a layout transform); by default a
            ``relax.Constant`` (after ``bound``).

    Returns:
        The rounded operand ``x`` as it appears in the call (a variable or
        an expression) and the shift constant, or None if the expression
        has another shape or constants that are not the tie constants of
        its shift.
    """
    import tvm
    from tvm import relax

    def call(e: Any, name: str) -> Any:
        e = bound(e)
        ok = isinstance(e, relax.Call) and isinstance(e.op, tvm.ir.Op) and e.op.name == f"relax.{name}"
        return e if ok else None

    def const(e: Any) -> np.ndarray | None:
        value = getattr(bound(e), "value", None)
        return value.numpy() if hasattr(value, "numpy") else None

    constant = constant or const
    top = call(expr, "right_shift")
    total = call(top.args[0], "add") if top is not None else None
    biased = call(total.args[0], "add") if total is not None else None
    parity = call(total.args[1], "bitwise_and") if total is not None else None
    inner = call(parity.args[0], "right_shift") if parity is not None else None
    if biased is None or inner is None or not biased.args[0].same_as(inner.args[0]):
        return None
    n, n2 = constant(top.args[1]), constant(inner.args[1])
    offset, mask = constant(biased.args[1]), constant(parity.args[1])
    if n is None or n2 is None or offset is None or mask is None or not np.array_equal(n, n2):
        return None
    want_offset, want_mask = tie_constants(n)
    try:
        same = np.array_equal(*np.broadcast_arrays(offset, want_offset)) and np.array_equal(
            *np.broadcast_arrays(mask, want_mask)
        )
    except ValueError:
        return None
    return (biased.args[0], n.astype(np.int64)) if same else None


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
    x = emit_round_shift(x, fp.shift, axis=axis, ndim=ndim)
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
    offset = -sum(int(z) * m for z, m in zip(zero_points, mults))
    total = None
    for x, m in zip(inputs, mults):
        term = R.multiply(R.astype(x, "int64"), relax.const(np.int64(m), "int64"))
        total = term if total is None else R.add(total, term)
    if offset:
        total = R.add(total, relax.const(np.int64(offset), "int64"))
    total = emit_round_shift(total, np.int64(shift))
    if zero_point:
        total = R.add(total, relax.const(np.int64(zero_point), "int64"))
    total = R.clip(total, relax.prim_value(int(qmin)), relax.prim_value(int(qmax)))
    return R.astype(total, out_dtype)
