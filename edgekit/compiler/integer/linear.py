"""conv2d / matmul chains: int8 x int8 -> int32, folded bias and zero points.

For ``y = quantize(act(conv(dequantize(x), dequantize(w)) + bias))`` with
symmetric weights (``z_w == 0``, onnxruntime's default for int8 weights) the
real accumulator is ``s_x * s_w[c] * sum((x - z_x) * w)``. The zero point
is folded, not subtracted per element::

    sum((x - z_x) * w) = conv(x, w) - z_x * sum(w[c])

which holds inside the image; at the border the float model pads with real
0.0, i.e. with the integer ``z_x``, so the input is padded with ``z_x``
explicitly before an unpadded conv. The bias (int32 with scale
``s_x * s_w[c]`` as onnxruntime's QDQ writer stores it, or float) and the
``-z_x * sum(w)`` term become one int32 constant per output channel; the
result is requantized per channel with ``M[c] = s_x * s_w[c] / s_y``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tvm import relax
from tvm.relax import op as R
from tvm.relax.dpl import DFPattern

from edgekit.compiler.integer.context import LoweringContext, Skip, activation_bounds
from edgekit.compiler.integer.patterns import LinearPattern
from edgekit.compiler.integer.requant import emit_requantize, value_bound
from edgekit.compiler.integer.values import QParams
from edgekit.core.fixedpoint import dot_bound, quantize_multiplier

__all__ = ["LINEAR", "lower_linear"]

logger = logging.getLogger(__name__)

LINEAR = LinearPattern.build()


def _weight_scale(w: np.ndarray, qp: QParams, perm: list[int] | None, oc_axis: int) -> np.ndarray:
    """Per-output-channel weight scale of the (possibly transposed) weight."""
    full_shape = [1] * w.ndim
    if not qp.per_tensor:
        full_shape[qp.axis] = qp.scale.size
    scale = np.broadcast_to(qp.scale.reshape(full_shape), w.shape)
    if perm is not None:
        scale = np.transpose(scale, perm)
    rows = np.moveaxis(scale, oc_axis, 0).reshape(scale.shape[oc_axis], -1)
    if not np.all(rows == rows[:, :1]):
        raise Skip("weight scale does not run along the output-channel axis")
    return rows[:, 0].astype(np.float64)


def _bias_vector(ctx: LoweringContext, bias: relax.Expr, channels: int, oc_axis: int, out_ndim: int) -> np.ndarray:
    """The bias as one float64 value per output channel."""
    values = ctx.values.evaluate(bias, exact=True)
    if values is None:
        raise Skip("bias (or the added tensor) is not known at compile time")
    values = np.asarray(values, dtype=np.float64)
    if values.size == 1:
        return np.full(channels, float(values.reshape(-1)[0]))
    if values.ndim > out_ndim:
        raise Skip("bias has a higher rank than the layer output")
    shape = (1,) * (out_ndim - values.ndim) + values.shape
    values = values.reshape(shape)
    if values.shape[oc_axis] != channels or values.size != channels:
        raise Skip("added tensor is not a per-channel bias")
    return values.reshape(-1)


@dataclass(frozen=True)
class _Weight:
    """The layer's constant int8 weight as the accumulation reads it.

    Attributes:
        values: The weight as stored (before any transpose of the pattern).
        qparams: Its scales (zero points are all 0).
        expr: The Relax expression the conv/matmul reads (transposed when
            the pattern has a ``permute_dims``).
        perm: That transpose, or None.
        effective: ``values`` in the layout the conv/matmul reads.
    """

    values: np.ndarray
    qparams: QParams
    expr: relax.Expr
    perm: list[int] | None
    effective: np.ndarray


def _int8_weight(ctx: LoweringContext, m: dict[DFPattern, relax.Expr]) -> _Weight:
    """The matched weight: constant, int8 and symmetric, or :class:`Skip`."""
    p = LINEAR
    w_dq = m[p.w]
    w = ctx.values.value(w_dq.args[0])
    w_qp = ctx.values.qparams(w_dq)
    if w is None or w_qp is None:
        raise Skip("weights or their scales are not known at compile time")
    if w.dtype != np.int8:
        raise Skip(f"weights are {w.dtype}, only int8 weights are lowered")
    if np.any(w_qp.zero_point != 0):
        raise Skip("asymmetric weights (zero point != 0)")
    perm = None
    w_expr = w_dq.args[0]
    if p.w_perm in m:
        axes = m[p.w_perm].attrs.axes
        perm = list(range(w.ndim))[::-1] if axes is None else [int(a) for a in axes]
        w_expr = R.permute_dims(w_expr, perm)
    return _Weight(w, w_qp, w_expr, perm, np.transpose(w, perm) if perm is not None else w)


def _channel_axes(core: relax.Call, is_conv: bool, weight: _Weight, out_ndim: int) -> tuple[int, int, tuple[int, ...]]:
    """The output-channel axis of the weight and of the output, and the
    weight axes one output channel sums over; :class:`Skip` for layouts
    other than NCHW/OIHW convs and 2-D matmul weights."""
    if is_conv:
        a = core.attrs
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout or a.data_layout)) != ("NCHW", "OIHW", "NCHW"):
            raise Skip("conv2d layout is not NCHW/OIHW")
        return 0, 1, tuple(range(1, weight.effective.ndim))
    if weight.effective.ndim != 2:
        raise Skip("matmul weight is not 2-D")
    return 1, out_ndim - 1, (0,)


def _accumulate(core: relax.Call, is_conv: bool, x: relax.Expr, x_zero: int, w_expr: relax.Expr,
                notes: list[str]) -> relax.Expr:  # fmt: skip
    """The int32 conv2d / matmul of the integer input and weight (a conv's
    border padded with the input's zero point, the integer of real 0.0)."""
    if not is_conv:
        return R.matmul(x, w_expr, out_dtype="int32")
    a = core.attrs
    padding = [int(v) for v in a.padding]  # top, left, bottom, right
    data = x
    if x_zero != 0 and any(padding):
        # Pad with the integer that means real 0.0, then an unpadded conv.
        top, left, bottom, right = padding
        data = R.nn.pad(x, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(x_zero))
        padding = [0, 0, 0, 0]
        notes.append("input padded with its zero point")
    return R.nn.conv2d(
        data, w_expr, strides=[int(v) for v in a.strides], padding=padding,
        dilation=[int(v) for v in a.dilation], groups=int(a.groups), data_layout="NCHW",
        kernel_layout="OIHW", out_layout="NCHW", out_dtype="int32",
    )  # fmt: skip


def _channel_offset(ctx: LoweringContext, m: dict[DFPattern, relax.Expr], offset: np.ndarray, acc_scale: np.ndarray,
                    oc_axis: int, out_ndim: int, notes: list[str]) -> np.ndarray:  # fmt: skip
    """The zero-point correction ``offset`` plus the bias in accumulator
    units: one int32 per output channel, or :class:`Skip` if it overflows."""
    p = LINEAR
    if p.bias in m:
        bias = _bias_vector(ctx, m[p.bias], offset.size, oc_axis, out_ndim)
        bias_acc = np.rint(bias / acc_scale)
        if np.any(np.abs(bias_acc) >= 2**31):
            raise Skip("bias does not fit the int32 accumulator")
        offset = offset + bias_acc.astype(np.int64)
        notes.append("bias folded")
    if np.any(np.abs(offset) >= 2**31):
        raise Skip("bias and zero-point correction overflow int32")
    return offset


def lower_linear(ctx: LoweringContext, q_call: relax.Call, m: dict[DFPattern, relax.Expr]) -> tuple[str, str, relax.Expr]:
    """Rewrites one matched conv2d/matmul chain; raises :class:`Skip` to keep it float."""
    p = LINEAR
    is_conv = p.conv in m
    core = m[p.conv] if is_conv else m[p.matmul]
    kind = "conv2d" if is_conv else "matmul"
    out_dtype = str(q_call.attrs.out_dtype)
    if out_dtype not in ("int8", "uint8"):
        raise Skip(f"output dtype {out_dtype}")
    out = ctx.output_qparams(q_call)
    x_qp = ctx.input_qparams(m[p.x])
    weight = _int8_weight(ctx, m)
    out_ndim = len(ctx.shape(core))
    oc_axis_w, oc_axis, reduce_axes = _channel_axes(core, is_conv, weight, out_ndim)
    channels = weight.effective.shape[oc_axis_w]
    acc_scale = np.float64(x_qp.s) * _weight_scale(weight.values, weight.qparams, weight.perm, oc_axis_w)

    notes = ["per-channel" if not weight.qparams.per_tensor else "per-tensor"]
    acc = _accumulate(core, is_conv, m[p.x].args[0], x_qp.z, weight.expr, notes)
    zero_point_term = -np.int64(x_qp.z) * weight.effective.astype(np.int64).sum(axis=reduce_axes)
    offset = _channel_offset(ctx, m, zero_point_term, acc_scale, oc_axis, out_ndim, notes)
    if np.any(offset):
        shape = [1] * out_ndim
        shape[oc_axis] = channels
        acc = R.add(acc, relax.const(offset.astype(np.int32).reshape(shape), "int32"))

    lo, hi, act_note = activation_bounds(ctx, m, p.relu, p.clip, out, out_dtype)
    if act_note:
        notes.append(act_note)
    try:
        fp = quantize_multiplier(acc_scale / np.float64(out.s))
    except ValueError as exc:
        raise Skip(str(exc)) from None
    # |acc| <= sum |w| * max |x| + |offset|: the requantization rounds half up where no such value ties.
    bound = dot_bound(weight.effective, reduce_axes, value_bound(m[p.x].args[0]), offset)
    result = emit_requantize(acc, fp, out.z, axis=oc_axis, ndim=out_ndim, qmin=lo, qmax=hi, out_dtype=out_dtype,
                             acc_bound=bound)  # fmt: skip
    return kind, ", ".join(notes), result
