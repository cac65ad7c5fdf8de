"""The integer lowering's requantization as Relax expressions.

The arithmetic is :mod:`edgekit.core.fixedpoint`'s (multiplier and shift
derivation, rounding, clamp), which the MCU kernels and the NPU share; this
module only builds the same integer operations inside a compiled model, so
the Relax result is bit-exact with :func:`~edgekit.core.fixedpoint.requantize`
and :func:`~edgekit.core.fixedpoint.rescale_sum`.

The rounding shift (half to even) is written as::

    right_shift(add(add(x, offset), bitwise_and(right_shift(x, n), mask)), n)

with the constants of :func:`~edgekit.core.fixedpoint.tie_constants`. Where
``x`` is an accumulator times multipliers and no value the accumulator can
take makes an exact half-way product
(:func:`~edgekit.core.fixedpoint.ties_possible` with the accumulator's
bound, false on every channel: every conv of the models measured), half up
is the same value in one add::

    right_shift(add(x, 2**(n-1)), n)

-- three int64 operations per element fewer, on the targets that keep this
integer form (every non-x86 CPU). Passes that recognise a requantization
(the x86 float form, the MCU kernel offload) read both back with
:func:`match_round_shift`, so the forms are defined in this one place.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from edgekit.core.fixedpoint import QMAX, QMIN, FixedPoint, tie_constants, ties_possible

if TYPE_CHECKING:
    from tvm import relax

__all__ = ["emit_requantize", "emit_rescale_sum", "emit_round_shift", "match_round_shift", "value_bound"]

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
    x: "relax.Expr", shift: np.ndarray, *, axis: int | None = None, ndim: int = 0, ties: bool = True
) -> "relax.Expr":
    """Relax expression of :func:`~edgekit.core.fixedpoint.round_shift` on an int64 tensor.

    Args:
        x: int64 Relax tensor (used twice: the parity and the sum).
        shift: Right shifts: a scalar, a per-``axis`` vector or a
            broadcastable array.
        axis: Axis of ``x`` a 1-D ``shift`` runs along; ``None`` otherwise.
        ndim: Rank of ``x`` (needed with ``axis``).
        ties: False only where the caller has proved that no value of ``x``
            is exactly half-way (:func:`~edgekit.core.fixedpoint.ties_possible`);
            the rounding is then half up, one add, which is the same value.
    """
    from tvm.relax import op as R

    if not np.any(shift):
        return x
    n = _broadcast_const(shift, "int64", axis, ndim)
    offset, mask = tie_constants(shift)
    if not ties:
        return R.right_shift(R.add(x, _broadcast_const(offset + mask, "int64", axis, ndim)), n)  # 2**(n-1)
    parity = R.bitwise_and(R.right_shift(x, n), _broadcast_const(mask, "int64", axis, ndim))
    return R.right_shift(R.add(R.add(x, _broadcast_const(offset, "int64", axis, ndim)), parity), n)


def match_round_shift(
    expr: Any, bound: Callable[[Any], Any], constant: Callable[[Any], np.ndarray | None] | None = None
) -> tuple[Any, np.ndarray] | None:
    """``(x, n)`` when ``expr`` is :func:`emit_round_shift`'s expression of ``x``, else None.

    Both forms are read: half to even, and half up on a widened product
    ``astype(a, "int64") * m`` of a 32-bit or narrower ``a`` -- the only
    operand :func:`emit_requantize` emits it for, and only where no value
    of ``a`` can tie. So ``(x, n)`` means ``round_shift(x, n)``, ties to
    even, on every value the model computes.

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
        has another shape, constants that are not the rounding constants of
        its shift, or is the half-up form of another operand.
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

    def equal(got: np.ndarray, want: np.ndarray) -> bool:
        try:
            return bool(np.array_equal(*np.broadcast_arrays(got, want)))
        except ValueError:
            return False

    constant = constant or const
    top = call(expr, "right_shift")
    total = call(top.args[0], "add") if top is not None else None
    n = constant(top.args[1]) if top is not None else None
    if total is None or n is None:
        return None
    n = n.astype(np.int64)
    want_offset, want_mask = tie_constants(n)
    half = constant(total.args[1])
    if half is not None:  # half up: right_shift(add(x, 2**(n-1)), n)
        x = total.args[0]
        return (x, n) if equal(half, want_offset + want_mask) and _widened_product(x, call, constant) else None
    biased = call(total.args[0], "add")
    parity = call(total.args[1], "bitwise_and")
    inner = call(parity.args[0], "right_shift") if parity is not None else None
    if biased is None or inner is None or not biased.args[0].same_as(inner.args[0]):
        return None
    n2, offset, mask = constant(inner.args[1]), constant(biased.args[1]), constant(parity.args[1])
    if n2 is None or offset is None or mask is None or not np.array_equal(n, n2):
        return None
    return (biased.args[0], n) if equal(offset, want_offset) and equal(mask, want_mask) else None


#: Accumulator dtypes :func:`emit_requantize` takes (at most 31 trailing zero bits).
_NARROW = ("int8", "uint8", "int16", "uint16", "int32")


def _widened_product(x: Any, call: Callable[[Any, str], Any], constant: Callable[[Any], Any]) -> bool:
    """Whether ``x`` is ``astype(a, "int64") * m`` with a narrow ``a`` and a constant ``m``."""
    product = call(x, "multiply")
    cast = call(product.args[0], "astype") if product is not None else None
    if cast is None or constant(product.args[1]) is None or str(cast.attrs.dtype) != "int64":
        return False
    return str(getattr(getattr(cast.args[0], "ty", None), "dtype", None)) in _NARROW


def value_bound(x: Any, *, centered: bool = False) -> int:
    """Largest ``|x|`` an integer tensor holds (``|x - z|`` for a zero point in its range
    when ``centered``), from its dtype; an int32's ``2**31`` when the dtype is not known
    or wider (the accumulators it bounds are int32)."""
    dtype = str(getattr(getattr(x, "ty", None), "dtype", ""))
    if not dtype.startswith(("int", "uint")):
        return 2**31
    info = np.iinfo(np.dtype(dtype))
    return min(int(info.max) - int(info.min) if centered else max(-int(info.min), int(info.max)), 2**31)


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
    acc_bound: np.ndarray | int = 2**31,
) -> "relax.Expr":
    """Relax expression of :func:`~edgekit.core.fixedpoint.requantize` on an integer tensor.

    Args:
        acc: int32 (or narrower) Relax tensor.
        fp: Scalar, per-``axis`` vector, or a full broadcastable array.
        zero_point: Output zero point.
        axis: Axis of ``acc`` that a 1-D ``fp`` runs along (per-channel);
            ``None`` when ``fp`` is scalar or already broadcastable.
        ndim: Rank of ``acc`` (needed with ``axis``).
        qmin: Lower clamp.
        qmax: Upper clamp.
        out_dtype: Result dtype.
        acc_bound: Largest ``|acc|`` the layer can produce, a scalar or
            broadcastable like ``fp`` (a conv's: its weights' absolute sum
            times the input's largest magnitude, plus the folded constant).
            Where no channel's multiplier makes an exact tie with a value
            that small (:func:`~edgekit.core.fixedpoint.ties_possible`), the
            rounding is emitted half up, the same value in one add.

    Returns:
        The requantized tensor; its arithmetic is integer only.
    """
    from tvm import relax
    from tvm.relax import op as R

    x = R.astype(acc, "int64")
    x = R.multiply(x, _broadcast_const(fp.multiplier, "int64", axis, ndim))
    ties = bool(np.any(ties_possible(fp.multiplier, fp.shift, np.minimum(acc_bound, 2**31))))
    x = emit_round_shift(x, fp.shift, axis=axis, ndim=ndim, ties=ties)
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
