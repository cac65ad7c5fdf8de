"""The first int8 layer's input: quantize, pad and interleave a float NCHW image in one vector kernel.

Before the first ``vpdpbusd`` convolution the float model input goes
through ``quantize`` (NCHW), the lowering's spatial pad with the zero
point, a transpose to NHWC, the ``x + 128`` conversion to u8 and a pad from 3
to 4 channels (:mod:`edgekit.compiler.backends.llvm.int8`); before an AVX2
``vpmaddwd`` one, a conversion to int16 and a pad to an even number of
channels instead. TVM fuses these into one kernel whose innermost axis is
the 4 (or 2) channels, with lane conditions on both pads: it ran at about
one nanosecond per byte (PP-OCR cls int8: 34 of 400 us on one Zen 5 core;
the int16 form in haswell code 18 of 600). Here each channel's row of 16
floats is quantized as TVM's ``quantize`` does (``round(x / scale) +
zero_point``, rounding half to even, saturated) and the channels are
interleaved in registers: for u8 the 4 bytes of a pixel as one 32-bit word,
for int16 with a shuffle; 16 pixels per step. TVM has no schedule that
vectorizes across a transpose this way, hence by hand.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edgekit.compiler.relax_rewrite import bound_value, calls_rewrite_pass, is_call, static_shape

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = ["input_pass"]

logger = logging.getLogger(__name__)

#: Pixels per step (16 int32 words: one AVX-512 register, two AVX2 ones).
STEP = 16


def _signed(word: int) -> int:
    """A 32-bit pattern as the int32 it reads as."""
    return word - (1 << 32) if word >= 1 << 31 else word


def _quantized(v: Any, scale: Any, zp: Any, lanes: int, offset: int) -> Any:
    """TVM's quantize of ``v`` (float32 lanes) to int8, plus ``offset``, as int32 lanes."""
    from tvm.script import tirx as T

    bc = (lambda e: e) if lanes == 1 else (lambda e: T.broadcast(e, lanes))
    q = T.round(v / bc(scale)) + bc(T.Cast("float32", zp))
    q = T.max(T.min(q, bc(T.float32(127.0))), bc(T.float32(-128.0)))
    return T.Cast("int32" if lanes == 1 else f"int32x{lanes}", q) + bc(T.int32(offset))


def _input_func(c: int, h: int, w: int, top: int, left: int, ho: int, wo: int, border: int, dtype: str) -> Any:
    """``Y[0, y, x, :] = (q(X[0, :, y - top, x - left]) + o, o...)``; ``border + o`` outside.

    ``dtype`` ``uint8`` (4 channels, ``o = 128``: ``vpdpbusd``'s operand) or
    ``int16`` (channels padded to an even number, ``o = 0``).
    """
    from tvm.script import tirx as T

    full, tail = divmod(w, STEP)
    offset = 128 if dtype == "uint8" else 0
    cp = 4 if dtype == "uint8" else c + c % 2

    def words(X: Any, y: Any, i: Any, scale: Any, zp: Any) -> Any:
        """16 pixels as 16 int32 words, channel ``k`` in byte ``k`` (unrolled here, in Python)."""
        out = T.broadcast(T.int32(_signed(128 << 24)), STEP) if c < 4 else None
        for ch in range(c):
            v = X.vload([(ch * h + y - top) * w + i * STEP], f"float32x{STEP}")
            b = T.shift_left(_quantized(v, scale, zp, STEP, offset), T.broadcast(T.int32(8 * ch), STEP))
            out = b if out is None else out | b
        for ch in range(c, 3):
            out = out | T.broadcast(T.int32(_signed(128 << (8 * ch))), STEP)
        return T.reinterpret(out, dtype=f"uint8x{4 * STEP}")

    def shorts(X: Any, y: Any, i: Any, scale: Any, zp: Any) -> Any:
        """16 pixels as ``16 * cp`` int16, channels interleaved by one shuffle."""
        rows = [
            T.Cast(f"int16x{STEP}", _quantized(X.vload([(ch * h + y - top) * w + i * STEP], f"float32x{STEP}"),
                                              scale, zp, STEP, 0))
            for ch in range(c)
        ] + [T.broadcast(T.int16(0), STEP)] * (cp - c)  # fmt: skip
        return T.Shuffle(rows, [ch * STEP + p for p in range(STEP) for ch in range(cp)])

    step = words if dtype == "uint8" else shorts

    @T.prim_func(private=True, s_tir=True)
    def quantize_input(
        Xs: T.Buffer((1, c, h, w), "float32"),
        scale: T.Buffer((), "float32"),
        zp: T.Buffer((), "int8"),
        Ys: T.Buffer((1, ho, wo, cp), dtype),
    ) -> None:
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            X = T.decl_buffer((c * h * w,), "float32", data=Xs.data)
            Y = T.decl_buffer((ho * wo * cp,), dtype, data=Ys.data)
            for y in T.parallel(ho):
                for x in range(wo):
                    if y < top or y >= top + h or x < left or x >= left + w:
                        for ch in range(cp):
                            Y[(y * wo + x) * cp + ch] = T.Cast(dtype, T.if_then_else(ch < c, border + offset, offset))
                if top <= y and y < top + h:
                    for i in range(full):
                        Y[T.ramp((y * wo + left + i * STEP) * cp, 1, cp * STEP)] = step(X, y, i, scale[()], zp[()])
                    for j in range(tail):
                        for ch in range(cp):
                            Y[(y * wo + left + full * STEP + j) * cp + ch] = T.Cast(dtype, T.if_then_else(
                                ch < c,
                                _quantized(X[(ch * h + y - top) * w + full * STEP + j], scale[()], zp[()], 1, offset),
                                offset,
                            ))  # fmt: skip

    return quantize_input


def _converted(m: Any, pad: Any, dtype: str) -> Any:
    """``t`` when ``pad`` pads ``t: int8`` converted to ``dtype`` the way the dot-product rewrite does."""
    cast = bound_value(m, pad.args[0])
    if dtype == "int16":
        return bound_value(m, cast.args[0]) if is_call(cast, "relax.astype") else None
    add = bound_value(m, cast.args[0]) if is_call(cast, "relax.astype") else None
    i16 = bound_value(m, add.args[0]) if is_call(add, "relax.add") else None
    offset = getattr(add.args[1], "value", None) if add is not None else None
    if not is_call(i16, "relax.astype") or offset is None or int(offset.numpy()) != 128:
        return None
    return bound_value(m, i16.args[0])


def _quantized_source(m: Any, src: Any, widths: list[int]) -> tuple[Any, int, int, float] | None:
    """``(quantize call, top, left, border)`` for the NHWC transpose's source ``src``: the quantize,
    possibly under the lowering's spatial pad with the zero point; None for anything else."""
    top, left = widths[2], widths[4]
    if is_call(src, "relax.nn.pad"):
        inner = [int(v) for v in src.attrs.pad_width]
        if any(widths[:6]) or inner[:4] != [0, 0, 0, 0]:
            return None
        # The lowering pads with the zero point itself (the integer of real 0.0).
        quant, top, left, border = bound_value(m, src.args[0]), inner[4], inner[6], float(src.attrs.pad_value)
    else:
        quant, border = src, 0.0  # int8 0 (128 in u8), which the lowering pads with only for a zero point of 0
    if not is_call(quant, "relax.quantize") or str(quant.attrs.out_dtype) != "int8":
        return None
    if border != int(border) or not -128 <= border <= 127:
        return None
    return quant, top, left, border


def _input_kernel(m: Any, call: Any) -> Any:
    """The pad ``call`` ending a first layer's input chain (:func:`input_pass`) as one :func:`_input_func` call."""
    from tvm import relax

    pad = m.builder_.normalize(call)
    dtype = "int16" if static_shape(pad, "int16") is not None else "uint8"
    out = static_shape(pad, dtype)
    widths = [int(v) for v in pad.attrs.pad_width]
    if out is None or len(out) != 4 or out[0] != 1 or float(pad.attrs.pad_value) != (128.0 if dtype == "uint8" else 0.0):
        return None
    perm = _converted(m, pad, dtype)
    if not is_call(perm, "relax.permute_dims") or [int(a) for a in perm.attrs.axes] != [0, 2, 3, 1]:
        return None
    found = _quantized_source(m, bound_value(m, perm.args[0]), widths)
    if found is None:
        return None
    quant, top, left, border = found
    x, scale, zp = quant.args
    shape = static_shape(x, "float32")
    if shape is None or len(shape) != 4 or shape[0] != 1 or shape[1] > 4 or int(quant.attrs.axis) not in (1, -3):
        return None
    if static_shape(scale, "float32") != [] or static_shape(zp, "int8") != []:
        return None
    c, h, w = shape[1:]
    _, ho, wo, cp = out
    if cp != (4 if dtype == "uint8" else c + c % 2):
        return None
    gv = m.builder_.add_func(_input_func(c, h, w, top, left, ho, wo, int(border), dtype), "quantize_input")
    return relax.call_tir(gv, relax.Tuple([x, scale, zp]), relax.TensorType(out, dtype))


def input_pass(target: tvm.target.Target) -> Any:
    """Rewrites ``pad(cast(transpose(pad(quantize(x)))))`` of a float NCHW model input to :func:`_input_func`.

    Matches the chains :func:`edgekit.compiler.backends.llvm.int8.int8_dot_pass` makes
    for a first layer: ``quantize(x, scale, zp)`` to int8 (scalar scale and
    zero point), an optional spatial pad with the zero point,
    ``permute_dims`` to NHWC, then either ``astype(astype(., int16) + 128,
    uint8)`` and a pad to 4 channels with 128 (``vpdpbusd``), or
    ``astype(., int16)`` and a pad to an even number of channels with 0
    (``vpmaddwd``); the spatial pad with it when the zero point is 0.
    Anything else is left as it is.
    """
    import tvm

    if target.kind.name != "llvm":
        return tvm.transform.Sequential([], name="EdgekitInput")
    return calls_rewrite_pass({"relax.nn.pad": _input_kernel}, "EdgekitInput")
