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

import numpy as np
from tvm import relax
from tvm.relax import op as R
from tvm.relax.dpl import DFPattern

from edgekit.compiler.integer.context import LoweringContext, Skip, activation_bounds
from edgekit.compiler.integer.patterns import LinearPattern
from edgekit.compiler.integer.requant import emit_requantize
from edgekit.compiler.integer.values import QParams
from edgekit.core.fixedpoint import quantize_multiplier

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
    x = m[p.x].args[0]

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
    w_eff = np.transpose(w, perm) if perm is not None else w

    out_shape = ctx.shape(core)
    out_ndim = len(out_shape)
    if is_conv:
        a = core.attrs
        if (str(a.data_layout), str(a.kernel_layout), str(a.out_layout or a.data_layout)) != ("NCHW", "OIHW", "NCHW"):
            raise Skip("conv2d layout is not NCHW/OIHW")
        oc_axis_w, oc_axis = 0, 1
        reduce_axes = tuple(range(1, w_eff.ndim))
    else:
        if w_eff.ndim != 2:
            raise Skip("matmul weight is not 2-D")
        oc_axis_w, oc_axis = 1, out_ndim - 1
        reduce_axes = (0,)
    channels = w_eff.shape[oc_axis_w]
    s_w = _weight_scale(w, w_qp, perm, oc_axis_w)
    acc_scale = np.float64(x_qp.s) * s_w

    notes = ["per-channel" if not w_qp.per_tensor else "per-tensor"]
    data = x
    if is_conv:
        pads = [int(v) for v in a.padding]  # top, left, bottom, right
        padding = pads
        if x_qp.z != 0 and any(pads):
            # Pad with the integer that means real 0.0, then an unpadded conv.
            top, left, bottom, right = pads
            data = R.nn.pad(x, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(x_qp.z))
            padding = [0, 0, 0, 0]
            notes.append("input padded with its zero point")
        acc = R.nn.conv2d(
            data, w_expr, strides=[int(v) for v in a.strides], padding=padding,
            dilation=[int(v) for v in a.dilation], groups=int(a.groups), data_layout="NCHW",
            kernel_layout="OIHW", out_layout="NCHW", out_dtype="int32",
        )  # fmt: skip
    else:
        acc = R.matmul(x, w_expr, out_dtype="int32")

    offset = -np.int64(x_qp.z) * w_eff.astype(np.int64).sum(axis=reduce_axes)
    if p.bias in m:
        bias = _bias_vector(ctx, m[p.bias], channels, oc_axis, out_ndim)
        bias_acc = np.rint(bias / acc_scale)
        if np.any(np.abs(bias_acc) >= 2**31):
            raise Skip("bias does not fit the int32 accumulator")
        offset = offset + bias_acc.astype(np.int64)
        notes.append("bias folded")
    if np.any(np.abs(offset) >= 2**31):
        raise Skip("bias and zero-point correction overflow int32")
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
    result = emit_requantize(acc, fp, out.z, axis=oc_axis, ndim=out_ndim, qmin=lo, qmax=hi, out_dtype=out_dtype)
    return kind, ", ".join(notes), result
