"""Quantized elementwise Add / Sub / Mul (and a two-input Sum) of two int8 tensors.

Add/Sub: ``q = round((s_a (a - z_a) +- s_b (b - z_b)) / s_y) + z_y`` is one
fixed-point sum with a shared shift (:func:`~.requant.rescale_sum`), the zero
points folded into a single constant. Mul:
``q = round(s_a s_b / s_y * (a - z_a)(b - z_b)) + z_y``, an int32 product
requantized like a conv accumulator. Relu/Clip fold into the clamp. Both
operands functions of one int8 tensor (hard-swish's ``x * hard_sigmoid(x)``):
a 256-entry table instead (:func:`~.lut.lut_of_one_tensor`).
"""

from __future__ import annotations

import logging

import numpy as np
from tvm import relax
from tvm.relax import op as R
from tvm.relax.dpl import DFPattern

from edgekit.compiler.integer.context import LoweringContext, Skip, activation_bounds
from edgekit.compiler.integer.lut import lut_of_one_tensor
from edgekit.compiler.integer.patterns import BinaryPattern
from edgekit.compiler.integer.requant import emit_rescale_sum, emit_requantize, value_bound
from edgekit.core.fixedpoint import quantize_multiplier, quantize_multipliers_common

__all__ = ["BINARY", "lower_binary"]

logger = logging.getLogger(__name__)

BINARY = BinaryPattern.build()


def _centered(x: relax.Expr, zero_point: int) -> relax.Expr:
    x = R.astype(x, "int32")
    return R.subtract(x, relax.const(np.int32(zero_point), "int32")) if zero_point else x


def _sums_the_stack(total: relax.Call, stack: relax.Call) -> bool:
    """``sum(stack(...), axis=k)`` reduces exactly the stacked axis ``k``, without keepdims."""
    axis = total.attrs.axis
    return (not total.attrs.keepdims and axis is not None and len(axis) == 1
            and int(axis[0]) == int(stack.attrs.axis))  # fmt: skip


def lower_binary(ctx: LoweringContext, q_call: relax.Call, m: dict[DFPattern, relax.Expr]) -> tuple[str, str, relax.Expr] | None:
    """Rewrites a matched binary chain; ``None`` when an operand is a constant."""
    p = BINARY
    a_dq, b_dq = m[p.a], m[p.b]
    if ctx.values.value(a_dq.args[0]) is not None or ctx.values.value(b_dq.args[0]) is not None:
        return None  # one operand is a weight: the elementwise-chain (LUT) rule
    one_tensor = lut_of_one_tensor(ctx, q_call)
    if one_tensor is not None:
        return one_tensor
    out_dtype = str(q_call.attrs.out_dtype)
    if out_dtype not in ("int8", "uint8"):
        raise Skip(f"output dtype {out_dtype}")
    out = ctx.output_qparams(q_call)
    qa = ctx.input_qparams(a_dq, "first operand")
    qb = ctx.input_qparams(b_dq, "second operand")
    lo, hi, note = activation_bounds(ctx, m, p.relu, p.clip, out, out_dtype)
    if p.sum_of_two in m and not _sums_the_stack(m[p.sum_of_two], m[p.stack]):
        raise Skip("a sum over another axis than its stack")
    a, b = a_dq.args[0], b_dq.args[0]
    try:
        if p.multiply in m:
            fp = quantize_multiplier(np.float64(qa.s) * np.float64(qb.s) / np.float64(out.s))
            acc = R.multiply(_centered(a, qa.z), _centered(b, qb.z))
            bound = value_bound(a, centered=True) * value_bound(b, centered=True)
            return "mul", note, emit_requantize(acc, fp, out.z, qmin=lo, qmax=hi, out_dtype=out_dtype, acc_bound=bound)
        sign = -1.0 if p.subtract in m else 1.0
        fp = quantize_multipliers_common([qa.s / np.float64(out.s), sign * qb.s / np.float64(out.s)])
    except ValueError as exc:
        raise Skip(str(exc)) from None
    kind = "sub" if sign < 0 else "add"
    return kind, note, emit_rescale_sum([a, b], [qa.z, qb.z], fp, out.z, qmin=lo, qmax=hi, out_dtype=out_dtype)
