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

Asymmetric weights (a zero point ``z_w[c]`` per output channel: onnxruntime's
``QUInt8`` weights, which :mod:`edgekit.frontend.uint8_activations` turns
into int8 with zero point ``z - 128``) add two terms::

    sum((x - z_x) * (w - z_w)) = conv(x, w) - z_w[c] * sum(x) - z_x * sum(w[c]) + K * z_x * z_w[c]

``w - z_w`` does not fit the int8 the dot-product kernels take, so the
weights stay as stored, the last two terms join the per-channel constant,
and the window sum ``sum(x)`` (one int32 per output pixel) is subtracted,
times ``z_w[c]`` (:func:`_minus_weight_zero`). Channels whose ``w - z_w``
fits int8 take it as their weights and need no window sum
(:func:`_fit_weights`). All of it is exact integer arithmetic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np
from tvm import relax
from tvm.relax import op as R
from tvm.relax.dpl import DFPattern

from edgekit.compiler.integer.context import LoweringContext, Skip, activation_bounds
from edgekit.compiler.integer.patterns import LinearPattern
from edgekit.compiler.integer.requant import emit_requantize, value_bound
from edgekit.compiler.integer.values import QParams, tensor_shape
from edgekit.compiler.integer.weight_taps import Tap, split_taps, tap_correction
from edgekit.core.fixedpoint import dot_bound, quantize_multiplier

__all__ = ["LINEAR", "lower_linear"]

logger = logging.getLogger(__name__)

LINEAR = LinearPattern.build()


def _per_output(values: np.ndarray, w: np.ndarray, qp: QParams, perm: list[int] | None, oc_axis: int,
                what: str) -> np.ndarray:  # fmt: skip
    """One of ``values`` (the weight's per-axis scales or zero points) per
    output channel of the (possibly transposed) weight."""
    full_shape = [1] * w.ndim
    if not qp.per_tensor:
        full_shape[qp.axis] = values.size
    full = np.broadcast_to(values.reshape(full_shape), w.shape)
    if perm is not None:
        full = np.transpose(full, perm)
    rows = np.moveaxis(full, oc_axis, 0).reshape(full.shape[oc_axis], -1)
    if not np.all(rows == rows[:, :1]):
        raise Skip(f"weight {what} does not run along the output-channel axis")
    return rows[:, 0]


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
        qparams: Its scales and zero points.
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
    """The matched weight: constant and int8 (any zero point), or :class:`Skip`."""
    p = LINEAR
    w_dq = m[p.w]
    w = ctx.values.value(w_dq.args[0])
    w_qp = ctx.values.qparams(w_dq)
    if w is None or w_qp is None:
        raise Skip("weights or their scales are not known at compile time")
    if w.dtype != np.int8:
        raise Skip(f"weights are {w.dtype}, only int8 weights are lowered")
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


def _conv_input(core: relax.Call, x: relax.Expr, x_zero: int, notes: list[str]) -> tuple[relax.Expr, list[int]]:
    """A conv's input, padded with its zero point (the integer of real 0.0)
    where that is not 0, and the padding the conv itself still applies."""
    padding = [int(v) for v in core.attrs.padding]  # top, left, bottom, right
    if x_zero == 0 or not any(padding):
        return x, padding
    top, left, bottom, right = padding
    notes.append("input padded with its zero point")
    return R.nn.pad(x, [0, 0, 0, 0, top, bottom, left, right], pad_value=float(x_zero)), [0, 0, 0, 0]


def _conv(core: relax.Call, data: relax.Expr, w: relax.Expr, padding: list[int]) -> relax.Expr:
    a = core.attrs
    return R.nn.conv2d(
        data, w, strides=[int(v) for v in a.strides], padding=padding, dilation=[int(v) for v in a.dilation],
        groups=int(a.groups), data_layout="NCHW", kernel_layout="OIHW", out_layout="NCHW", out_dtype="int32",
    )  # fmt: skip


def _accumulate(core: relax.Call, is_conv: bool, x: relax.Expr, x_zero: int, w_expr: relax.Expr,
                notes: list[str]) -> relax.Expr:  # fmt: skip
    """The int32 conv2d / matmul of the integer input and weight."""
    if not is_conv:
        return R.matmul(x, w_expr, out_dtype="int32")
    data, padding = _conv_input(core, x, x_zero, notes)
    return _conv(core, data, w_expr, padding)


def _along_array(values: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    """A per-channel vector shaped to broadcast along ``axis`` of a rank-``ndim`` tensor."""
    shape = [1] * ndim
    shape[axis] = values.size
    return values.reshape(shape)


def _along(values: np.ndarray, axis: int, ndim: int, dtype: str) -> relax.Expr:
    return relax.const(_along_array(values, axis, ndim).astype(dtype), dtype)


def _fit_weights(effective: np.ndarray, w_zero: np.ndarray, oc_axis: int,
                 reduce_axes: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``(w2, z2)`` with ``w2 - z2 == w - w_zero`` channel by channel, ``w2``
    int8 and ``z2`` zero wherever a channel's ``w - w_zero`` fits int8 (with
    per-tensor zero points, most channels: 98 % of PP-OCR cls's); elsewhere
    the stored weights and their zero point."""
    centered = effective.astype(np.int64) - _along_array(w_zero, oc_axis, effective.ndim)
    fits = (centered.min(axis=reduce_axes) >= -128) & (centered.max(axis=reduce_axes) <= 127)
    w2 = np.where(_along_array(fits, oc_axis, effective.ndim), centered, effective).astype(np.int8)
    return w2, np.where(fits, 0, w_zero)


def _minus_weight_zero(core: relax.Call, is_conv: bool, x: relax.Expr, x_zero: int, weight: _Weight,
                       w_zero: np.ndarray, axes: tuple[int, int], notes: list[str]) -> relax.Expr:  # fmt: skip
    """``sum_k x_k * w_k - w_zero[n] * sum_k x_k``: the accumulation with
    asymmetric weights (one zero point per output channel ``n``).

    ``w - w_zero`` spans 255 values, too many for the int8 operand of the
    dot-product kernels, so the weights stay as stored and the zero point's
    share is subtracted. With one group (a conv or a matmul) the window sum
    ``sum_k x_k`` is the same for every output channel, and the same kernel
    computes it as one more output channel of all-ones weights: free where
    the channel count leaves a vector lane unused, one vector of lanes more
    where it does not; the epilogue then reads two slices of the result, so
    it runs as a kernel of its own. (Measured against computing the window
    sum apart, by a one-output-channel conv of ones and a one-channel box
    conv, whose epilogue fuses: PP-OCR cls 291.7 against 300.8 us, the digits
    CNN 7.2 against 8.5 us, Zen 5.) A grouped conv has one window sum per
    group, so it runs a second conv of the same shape whose weights are
    ``w_zero[n]`` (int8, as the zero point is).
    """
    oc_axis_w, oc_axis = axes
    channels = weight.effective.shape[oc_axis_w]
    out_ndim = len(tensor_shape(core) or ())
    notes.append("weight zero point subtracted")
    if is_conv and int(core.attrs.groups) != 1:
        data, padding = _conv_input(core, x, x_zero, notes)
        z = np.broadcast_to(w_zero.reshape(-1, 1, 1, 1), weight.effective.shape).astype(np.int8)
        return R.subtract(_conv(core, data, weight.expr, padding), _conv(core, data, relax.const(z, "int8"), padding))
    ones = np.ones([1 if i == oc_axis_w else d for i, d in enumerate(weight.effective.shape)], np.int8)
    extended = R.concat([weight.expr, relax.const(ones, "int8")], axis=oc_axis_w)
    y = _accumulate(core, is_conv, x, x_zero, extended, notes)
    main = R.strided_slice(y, axes=[oc_axis], begin=[0], end=[channels])
    sums = R.strided_slice(y, axes=[oc_axis], begin=[channels], end=[channels + 1])
    return R.subtract(main, R.multiply(sums, _along(w_zero, oc_axis, out_ndim, "int32")))


def _with_taps(core: relax.Call, is_conv: bool, x: relax.Expr, x_zero: int, weight: _Weight, taps: list[Tap],
               oc_axis: int, notes: list[str]) -> relax.Expr:  # fmt: skip
    """``conv(x, clip(w - zw)) + sum_taps x_tap * rest``: asymmetric weights beyond int8 at a few taps
    (:mod:`edgekit.compiler.integer.weight_taps`); ValueError where a tap reads only padding or a
    shape is not static (the caller takes the window-sum form)."""
    out_shape = tensor_shape(core)
    if out_shape is None or tensor_shape(x) is None:
        raise ValueError("shapes are not static")
    if not is_conv:
        correction = tap_correction(x, x_zero, taps, out_shape=out_shape, oc_axis=oc_axis)
        acc = R.add(R.matmul(x, weight.expr, out_dtype="int32"), correction)
    else:
        correction = tap_correction(x, x_zero, taps, out_shape=out_shape, oc_axis=oc_axis, conv=core,
                                    in_per_group=weight.effective.shape[1])  # fmt: skip
        acc = R.add(_accumulate(core, is_conv, x, x_zero, weight.expr, notes), correction)
    notes.append(f"weight zero point folded, {len(taps)} taps beyond int8 read from the input")
    return acc


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
    w_qp = weight.qparams
    acc_scale = np.float64(x_qp.s) * _per_output(w_qp.scale, weight.values, w_qp, weight.perm, oc_axis_w, "scale")
    w_zero = _per_output(w_qp.zero_point, weight.values, w_qp, weight.perm, oc_axis_w, "zero point").astype(np.int64)

    notes = ["per-channel" if not weight.qparams.per_tensor else "per-tensor"]
    x = m[p.x].args[0]
    w_sum = weight.effective.astype(np.int64).sum(axis=reduce_axes)
    reduced = weight.effective.size // channels
    asymmetric = bool(np.any(w_zero))
    if asymmetric:
        # sum (x - zx)(w - zw) = sum x w - zw sum x - zx sum w + K zx zw, on the weights made to fit int8 where they do
        if 2 * reduced * 128 * 128 >= 2**31:
            raise Skip("weight zero-point correction may overflow int32")
        centered = weight.effective.astype(np.int64) - _along_array(w_zero, oc_axis_w, weight.effective.ndim)
        groups = int(core.attrs.groups) if is_conv else 1
        split = split_taps(centered, oc_axis_w, groups)
    tapped = None
    if asymmetric and split is not None and split[1]:
        # every channel's w - zw as int8, the few taps beyond it read from the input (weight_taps)
        tapped = replace(weight, expr=relax.const(split[0], "int8"), perm=None, effective=split[0])
        try:
            acc = _with_taps(core, is_conv, x, x_qp.z, tapped, split[1], oc_axis, notes)
        except ValueError:
            tapped = None
    if tapped is not None:
        weight = tapped
        zero_point_term = -np.int64(x_qp.z) * centered.sum(axis=reduce_axes)
    elif asymmetric:
        fitted, w_zero = _fit_weights(weight.effective, w_zero, oc_axis_w, reduce_axes)
        if not np.array_equal(fitted, weight.effective):
            weight = replace(weight, expr=relax.const(fitted, "int8"), perm=None, effective=fitted)
            notes.append("weight zero point folded where it fits int8")
        w_sum = fitted.astype(np.int64).sum(axis=reduce_axes)
    if tapped is None and np.any(w_zero):
        acc = _minus_weight_zero(core, is_conv, x, x_qp.z, weight, w_zero, (oc_axis_w, oc_axis), notes)
        zero_point_term = np.int64(x_qp.z) * (reduced * w_zero - w_sum)
    elif tapped is None:
        acc = _accumulate(core, is_conv, x, x_qp.z, weight.expr, notes)
        zero_point_term = -np.int64(x_qp.z) * w_sum
    offset = _channel_offset(ctx, m, zero_point_term, acc_scale, oc_axis, out_ndim, notes)
    if np.any(offset):
        acc = R.add(acc, _along(offset, oc_axis, out_ndim, "int32"))

    lo, hi, act_note = activation_bounds(ctx, m, p.relu, p.clip, out, out_dtype)
    if act_note:
        notes.append(act_note)
    try:
        fp = quantize_multiplier(acc_scale / np.float64(out.s))
    except ValueError as exc:
        raise Skip(str(exc)) from None
    # |acc| <= sum |w| * max |x| + |offset|: the requantization rounds half up where no such value ties.
    if asymmetric:  # = sum (x - zx)(w - zw) + bias
        bound = dot_bound(centered, reduce_axes, value_bound(x, centered=True), offset - zero_point_term)
    else:
        bound = dot_bound(weight.effective, reduce_axes, value_bound(x), offset)
    result = emit_requantize(acc, fp, out.z, axis=oc_axis, ndim=out_ndim, qmin=lo, qmax=hi, out_dtype=out_dtype,
                             acc_bound=bound)  # fmt: skip
    return kind, ", ".join(notes), result
