"""Pooling, concat and data movement in the quantized domain.

* MaxPool and data movement (reshape, transpose, ...) commute with the
  monotone ``quantize(dequantize(.))`` map: they run on the int8 tensor, and a
  table requantizes when the output scale differs from the input's.
* AveragePool and ReduceMean/GlobalAveragePool: an int32 window sum of
  ``x - z_x`` (a depthwise conv with a ones kernel, or ``sum``) requantized
  with ``M = s_x / (s_y * count)``; with ``count_include_pad=False`` the count
  differs at the border, so the multiplier is per output position.
* Concat: each input is requantized to the output's scale (a table, or
  nothing when it already matches) and the int8 tensors are concatenated.
"""

from __future__ import annotations

import logging

import numpy as np
from tvm import relax
from tvm.relax import op as R
from tvm.relax.dpl import DFPattern

from edgekit.compiler.integer.context import LoweringContext, Skip, int_range
from edgekit.compiler.integer.lut import identity_or_lut
from edgekit.compiler.integer.patterns import MOVEMENT_OPS, ConcatPattern, UnaryOpPattern
from edgekit.compiler.integer.requant import emit_requantize, value_bound
from edgekit.compiler.integer.values import call_name
from edgekit.core.fixedpoint import quantize_multiplier

__all__ = ["MAX_POOL", "AVG_POOL", "MEAN", "CONCAT", "MOVEMENT", "lower_max_pool", "lower_avg_pool",
           "lower_mean", "lower_concat", "lower_movement", "window_counts", "int8_output"]  # fmt: skip

logger = logging.getLogger(__name__)

MAX_POOL = UnaryOpPattern.build("relax.nn.max_pool2d")
AVG_POOL = UnaryOpPattern.build("relax.nn.avg_pool2d")
MEAN = UnaryOpPattern.build("relax.mean")
CONCAT = ConcatPattern.build()
MOVEMENT = UnaryOpPattern.build(*MOVEMENT_OPS)


def int8_output(q_call: relax.Call) -> str:
    """The int8/uint8 dtype ``q_call`` quantizes to, or :class:`Skip`."""
    out_dtype = str(q_call.attrs.out_dtype)
    if out_dtype not in ("int8", "uint8"):
        raise Skip(f"output dtype {out_dtype}")
    return out_dtype


def _same_op_on(call: relax.Call, x: relax.Expr) -> relax.Expr:
    """``call`` with its first argument replaced (attrs kept)."""
    return relax.Call(call.op, [x, *call.args[1:]], call.attrs)


def lower_max_pool(ctx: LoweringContext, q_call: relax.Call, m: dict[DFPattern, relax.Expr]) -> tuple[str, str, relax.Expr]:
    """max_pool2d on int8; padding uses the dtype minimum, which never wins a window."""
    out_dtype = int8_output(q_call)
    out = ctx.output_qparams(q_call)
    x_qp = ctx.input_qparams(m[MAX_POOL.x])
    pooled = _same_op_on(m[MAX_POOL.op], m[MAX_POOL.x].args[0])
    return "max_pool2d", "" if x_qp.same_as(out) else "requantized", identity_or_lut(pooled, x_qp, out, out_dtype)


def lower_movement(ctx: LoweringContext, q_call: relax.Call, m: dict[DFPattern, relax.Expr]) -> tuple[str, str, relax.Expr]:
    """Reshape/transpose/... on the int8 tensor."""
    out_dtype = int8_output(q_call)
    out = ctx.output_qparams(q_call)
    x_qp = ctx.input_qparams(m[MOVEMENT.x])
    call = m[MOVEMENT.op]
    moved = _same_op_on(call, m[MOVEMENT.x].args[0])
    return call_name(call).removeprefix("relax."), "", identity_or_lut(moved, x_qp, out, out_dtype)


def window_counts(
    in_hw: tuple[int, int], out_hw: tuple[int, int], kernel: tuple[int, int], strides: tuple[int, int],
    dilation: tuple[int, int], padding: tuple[int, int, int, int], include_pad: bool,
) -> np.ndarray:  # fmt: skip
    """Elements each average-pool window divides by, shape ``out_hw``."""
    if include_pad:
        return np.full(out_hw, kernel[0] * kernel[1], dtype=np.int64)
    top, left = padding[0], padding[1]
    counts = np.zeros(out_hw, dtype=np.int64)
    for oh in range(out_hw[0]):
        rows = [oh * strides[0] - top + i * dilation[0] for i in range(kernel[0])]
        nr = sum(0 <= r < in_hw[0] for r in rows)
        for ow in range(out_hw[1]):
            cols = [ow * strides[1] - left + j * dilation[1] for j in range(kernel[1])]
            counts[oh, ow] = nr * sum(0 <= c < in_hw[1] for c in cols)
    return counts


def lower_avg_pool(ctx: LoweringContext, q_call: relax.Call, m: dict[DFPattern, relax.Expr]) -> tuple[str, str, relax.Expr]:
    """avg_pool2d as an int32 window sum and a per-position requantization."""
    out_dtype = int8_output(q_call)
    out = ctx.output_qparams(q_call)
    x_dq = m[AVG_POOL.x]
    x_qp = ctx.input_qparams(x_dq)
    call = m[AVG_POOL.op]
    a = call.attrs
    if str(a.layout) != "NCHW" or str(a.out_layout or a.layout) != "NCHW":
        raise Skip("avg_pool2d layout is not NCHW")
    if bool(a.ceil_mode):
        raise Skip("avg_pool2d with ceil_mode")
    n, c, h, w = ctx.shape(x_dq)
    out_shape = ctx.shape(call)
    kernel = tuple(int(v) for v in a.pool_size)
    strides = tuple(int(v) for v in a.strides)
    dilation = tuple(int(v) for v in a.dilation)
    padding = tuple(int(v) for v in a.padding)
    counts = window_counts((h, w), out_shape[2:], kernel, strides, dilation, padding, bool(a.count_include_pad))
    if np.any(counts == 0):
        raise Skip("avg_pool2d window entirely in the padding")
    x = R.astype(x_dq.args[0], "int32")
    if x_qp.z:
        x = R.subtract(x, relax.const(np.int32(x_qp.z), "int32"))
    ones = relax.const(np.ones((c, 1, *kernel), dtype=np.int32))
    acc = R.nn.conv2d(x, ones, strides=list(strides), padding=list(padding), dilation=list(dilation), groups=c, out_dtype="int32")
    try:
        fp = quantize_multiplier(np.float64(x_qp.s) / (np.float64(out.s) * counts.reshape(1, 1, *counts.shape)))
    except ValueError as exc:
        raise Skip(str(exc)) from None
    lo, hi = int_range(out_dtype)
    bound = value_bound(x_dq.args[0], centered=True) * counts.reshape(1, 1, *counts.shape)
    return "avg_pool2d", "window sum + per-position multiplier", emit_requantize(
        acc, fp, out.z, qmin=lo, qmax=hi, out_dtype=out_dtype, acc_bound=bound)


def lower_mean(ctx: LoweringContext, q_call: relax.Call, m: dict[DFPattern, relax.Expr]) -> tuple[str, str, relax.Expr]:
    """ReduceMean / GlobalAveragePool as an int32 sum and one multiplier."""
    out_dtype = int8_output(q_call)
    out = ctx.output_qparams(q_call)
    x_dq = m[MEAN.x]
    x_qp = ctx.input_qparams(x_dq)
    call = m[MEAN.op]
    shape = ctx.shape(x_dq)
    axes = list(range(len(shape))) if call.attrs.axis is None else [int(v) % len(shape) for v in call.attrs.axis]
    count = int(np.prod([shape[i] for i in axes]))
    if count * 255 >= 2**31:
        raise Skip("mean over too many elements for an int32 sum")
    acc = R.sum(R.astype(x_dq.args[0], "int32"), axis=axes, keepdims=bool(call.attrs.keepdims))
    if x_qp.z:
        acc = R.subtract(acc, relax.const(np.int32(x_qp.z * count), "int32"))
    try:
        fp = quantize_multiplier(np.float64(x_qp.s) / (np.float64(out.s) * count))
    except ValueError as exc:
        raise Skip(str(exc)) from None
    lo, hi = int_range(out_dtype)
    return "mean", f"sum of {count}", emit_requantize(acc, fp, out.z, qmin=lo, qmax=hi, out_dtype=out_dtype,
                                                      acc_bound=value_bound(x_dq.args[0], centered=True) * count)  # fmt: skip


def lower_concat(ctx: LoweringContext, q_call: relax.Call, m: dict[DFPattern, relax.Expr]) -> tuple[str, str, relax.Expr]:
    """Requantizes every input to the output scale, then concatenates int8."""
    out_dtype = int8_output(q_call)
    out = ctx.output_qparams(q_call)
    call = m[CONCAT.concat]
    fields = ctx.values.lookup(call.args[0])
    if not isinstance(fields, relax.Tuple):
        raise Skip("concat of a non-literal tuple")
    parts, requantized = [], 0
    for field in fields.fields:
        dq = ctx.values.lookup(field)
        if call_name(dq) != "relax.dequantize":
            raise Skip("concat input is not dequantized int8")
        qp = ctx.input_qparams(dq, "concat")
        parts.append(identity_or_lut(dq.args[0], qp, out, out_dtype))
        requantized += not qp.same_as(out)
    detail = f"{requantized} of {len(parts)} inputs requantized" if requantized else ""
    return "concat", detail, R.concat(relax.Tuple(parts), axis=int(call.attrs.axis))
