"""Asymmetric weights whose ``w - z_w`` leaves int8 at a few taps: the rest read from the input.

With per-tensor asymmetric weights (onnxruntime's ``QUInt8``, zero point
other than 128) ``d = w - z_w`` fits int8 almost everywhere: only the
tensor's extreme values leave ``[-128, 127]``, at one or a few taps
(PP-OCR cls: 1-7 per layer). Split ``d = clip(d, -128, 127) + r``::

    sum_k x_k d_k = conv(x, clip(d)) + sum_{k: r_k != 0} x_k r_k

The first term is an ordinary int8 conv/matmul (the dot-product kernels
take it as they take symmetric weights); each tap of the second is one
input value per output pixel, a strided slice of the (padded) input times
a per-channel constant that is zero on every other channel. Slices and
broadcast multiplies are side inputs of the conv's epilogue, so they fuse
into it (on CPUs: :mod:`edgekit.compiler.backends.llvm.tap_fusion`, which
TVM's FuseOps needs for slices): no window sum, no extra output channel, no
second conv.
All of it is exact integer arithmetic (the accumulator is the same value
as ``conv(x, w) - z_w sum(x)``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tvm import relax
from tvm.relax import op as R

__all__ = ["MAX_TAPS", "Tap", "split_taps", "tap_correction"]

#: Layers with more input positions than this outside int8 keep the window-sum form
#: (:func:`edgekit.compiler.integer.linear._minus_weight_zero`): each position is one
#: more read per output in the conv's epilogue.
MAX_TAPS = 8


@dataclass(frozen=True)
class Tap:
    """One input position whose weight leaves int8, and what it adds to each output channel.

    Attributes:
        position: The index into the weight's reduced axes: ``(input channel
            within the group, kh, kw)`` for a conv, ``(k,)`` for a matmul.
        group: The conv group whose input channels ``position`` indexes (0 for a matmul).
        rest: ``r`` per output channel (zero on the channels that do not read this tap).
    """

    position: tuple[int, ...]
    group: int
    rest: np.ndarray


def split_taps(centered: np.ndarray, oc_axis: int, groups: int = 1,
               max_taps: int | None = None) -> tuple[np.ndarray, list[Tap]] | None:  # fmt: skip
    """``(clip(centered) as int8, taps)`` where ``centered = w - z_w`` leaves int8 at no more than
    ``max_taps`` (default :data:`MAX_TAPS`) input positions (taps of several output channels at one
    position count once); else None."""
    max_taps = MAX_TAPS if max_taps is None else max_taps
    fitted = np.clip(centered, -128, 127)
    rest = np.moveaxis(centered - fitted, oc_axis, 0)  # [O, reduced axes...]
    per_group = rest.shape[0] // groups
    taps: dict[tuple[int, tuple[int, ...]], np.ndarray] = {}
    for o, *position in zip(*np.nonzero(rest)):
        key = (int(o) // per_group, tuple(int(v) for v in position))
        if key not in taps:
            if len(taps) >= max_taps:
                return None
            taps[key] = np.zeros(rest.shape[0], np.int64)
        taps[key][o] = rest[(o, *position)]
    return fitted.astype(np.int8), [Tap(pos, g, r) for (g, pos), r in sorted(taps.items())]


def _along(values: np.ndarray, axis: int, ndim: int) -> relax.Expr:
    shape = [1] * ndim
    shape[axis] = values.size
    return relax.const(values.reshape(shape).astype("int32"), "int32")


def _axis_range(out: int, offset: int, stride: int, size: int) -> tuple[int, int, int, int]:
    """``(first, stop, before, after)``: the input indices ``o * stride + offset`` (``o`` < ``out``) that
    lie inside ``[0, size)`` as a slice, and how many outputs fall before and after them (padding)."""
    lo = max(0, -(-(-offset) // stride))
    hi = min(out - 1, (size - 1 - offset) // stride)
    if hi < lo:
        raise ValueError("a tap reads only padding")
    return lo * stride + offset, hi * stride + offset + 1, lo, out - 1 - hi


def tap_correction(x: relax.Expr, x_zero: int, taps: list[Tap], *, out_shape: tuple[int, ...], oc_axis: int,
                   conv: relax.Call | None = None, in_per_group: int = 0) -> relax.Expr:  # fmt: skip
    """``sum_taps int32(input at the tap) * rest``, broadcast to ``out_shape``.

    ``x`` is the layer's int8 input before any padding (``x_zero`` pads it,
    the integer of real 0.0), ``conv`` the conv2d call (NCHW: its padding,
    strides, dilation) or None for a matmul. A dense layer's unpadded tap is
    widened before it is sliced: a widening of a dense conv's input is what the
    CPU backend re-points to the conv's own operand
    (:mod:`edgekit.compiler.backends.llvm.operand_readers`), so no second copy
    of the input is made. Other taps slice the int8 input (where a layout
    transpose moves through them), widen the slice and pad it with the zero
    point (an int32 pad: the CPU backend makes an int8 pad a kernel of its
    own, which no epilogue can absorb). A
    depthwise conv's taps at one kernel position are one slice of every
    channel times a per-channel vector (zero where a channel has no tap there):
    elementwise, as the conv's own output is. A conv's product is written
    channels-last (:func:`_channels_last_product`).
    """
    ndim = len(out_shape)
    depthwise = conv is not None and in_per_group == 1 and out_shape[1] == int(conv.attrs.groups)
    total = None
    for rows, rest in _merged(taps, depthwise, in_per_group):
        if conv is None:
            (k,) = rows
            x_tap = R.strided_slice(R.astype(x, "int32"), axes=[ndim - 1], begin=[k], end=[k + 1])
            term = R.multiply(x_tap, _along(rest, oc_axis, ndim))
        else:
            term = _channels_last_product(_conv_tap(x, x_zero, rows, conv, out_shape, widen_first=not depthwise), rest)
        total = term if total is None else R.add(total, term)
    assert total is not None
    return total


def _channels_last_product(x_tap: relax.Expr, rest: np.ndarray) -> relax.Expr:
    """``x_tap * rest`` (NCHW) computed channels-last between two transposes. ``ConvertLayout``
    has no layout rule for a pad, and a tap read from the model's NCHW input has no layout to
    follow: a product written in NCHW stayed NCHW there, a full-size int32 kernel of its own with
    a transpose on each side. Written channels-last, the CPU backend moves the inner transpose
    out through the pad, the widening and the slice, and the outer one cancels against the conv's
    output (``backends/llvm/layout.py``); the product fuses into the conv's epilogue."""
    nhwc = R.multiply(R.permute_dims(x_tap, [0, 2, 3, 1]), _along(rest, 3, 4))
    return R.permute_dims(nhwc, [0, 3, 1, 2])


def _conv_tap(x: relax.Expr, x_zero: int, rows: tuple, conv: relax.Call, out_shape: tuple[int, ...],
              widen_first: bool) -> relax.Expr:  # fmt: skip
    """The int32 input a conv's kernel position ``(channel or None, i, j)`` reads at each output pixel."""
    c, i, j = rows
    a = conv.attrs
    top, left, _bottom, _right = (int(v) for v in a.padding)
    sh, sw = (int(v) for v in a.strides)
    dh, dw = (int(v) for v in a.dilation)
    shape = [int(v) for v in x.ty.shape.values]
    h0, h1, pad_top, pad_bottom = _axis_range(out_shape[2], i * dh - top, sh, shape[2])
    w0, w1, pad_left, pad_right = _axis_range(out_shape[3], j * dw - left, sw, shape[3])
    padded = any((pad_top, pad_bottom, pad_left, pad_right))
    axes, begin, end, strides = [2, 3], [h0, w0], [h1, w1], [sh, sw]
    if c is not None:
        axes, begin, end, strides = [1, *axes], [c, *begin], [c + 1, *end], [1, *strides]
    if widen_first and not padded:
        return R.strided_slice(R.astype(x, "int32"), axes=axes, begin=begin, end=end, strides=strides)
    tap = R.astype(R.strided_slice(x, axes=axes, begin=begin, end=end, strides=strides), "int32")
    if padded:  # padded as int32: an int8 pad is a kernel of its own on the CPU (backends/llvm/pad.py)
        tap = R.nn.pad(tap, [0, 0, 0, 0, pad_top, pad_bottom, pad_left, pad_right], pad_value=float(x_zero))
    return tap


def _merged(taps: list[Tap], depthwise: bool, in_per_group: int) -> list[tuple[tuple, np.ndarray]]:
    """``(input position, rest per output channel)`` per slice: a conv's input channel made absolute
    (``None``: every channel, a depthwise conv's taps at one kernel position merged)."""
    if any(len(tap.position) == 1 for tap in taps):  # matmul: (k,)
        return [(tap.position, tap.rest) for tap in taps]
    merged: dict[tuple, np.ndarray] = {}
    for tap in taps:
        ci, i, j = tap.position
        key = (None if depthwise else tap.group * in_per_group + ci, i, j)
        merged[key] = merged.get(key, 0) + tap.rest
    return list(merged.items())
