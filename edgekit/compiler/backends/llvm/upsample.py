"""int8 nearest upsampling by powers of two as a repeat of the int8 tensor, channels-last where it comes so.

A quantized nearest ``Resize`` imports as ``quantize(resize2d(dequantize(x,
s, z)), s, z)``: float32 NCHW between two int8 NHWC layers. With the same
scale and zero point on both sides it is an identity on the values
(``round((x - z) * s / s) + z == x``: the float32 error is far below half a
step for any int8 ``x``), and a nearest resize by a power of two with
``asymmetric`` coordinates and ``floor`` rounding reads input pixel
``floor(o / k)`` exactly (``o * (1 / k)`` is exact in float32), so the whole
chain is ``repeat(repeat(x, kh, H), kw, W)`` on the int8 tensor. PP-OCR det's
neck upsamples three 24- and three 96-channel maps by 2, 4 and 8 this way;
TVM fused each float chain, with transposes to NCHW and back, into the
following requantizing add or lookup (one Zen 5 core: about 800 us of det's
6.6 ms int8 kernels). Where ``x`` is a transpose of an NHWC tensor the
repeat reads that tensor, and
:func:`edgekit.compiler.backends.llvm.layout.cancel_transposes_pass`, which
runs next, moves the transpose back to NCHW on to its inverse. TVM has no
pass that folds a dequantize-resize-quantize chain: its QDQ handling is the
float compute between them.
"""

from __future__ import annotations

import logging
from typing import Any

from edgekit.compiler.relax_rewrite import TO_NCHW, bound_value, calls_rewrite_pass, is_call, permuted, static_shape

__all__ = ["int8_upsample_pass"]

logger = logging.getLogger(__name__)

def _factor(out: int, size: int) -> int | None:
    """``out / size`` when it is a power of two (1 included), else None."""
    k, rest = divmod(out, size)
    return k if rest == 0 and k & (k - 1) == 0 else None


def _upsample(m: Any, call: Any) -> Any:
    """``quantize(resize2d(dequantize(x, s, z)), s, z)`` of int8 ``x`` as :func:`repeat` (module docstring), or None."""
    from tvm.relax import op as R

    resize = bound_value(m, call.args[0])
    if not is_call(resize, "relax.image.resize2d"):
        return None
    deq = bound_value(m, resize.args[0])
    if not is_call(deq, "relax.dequantize"):
        return None
    x, scale, zero = deq.args
    shape = static_shape(x, "int8")
    a = resize.attrs
    # The same scale and zero point (per tensor, or per channel on the same axis) on both sides.
    same_step = scale.same_as(call.args[1]) and zero.same_as(call.args[2]) and int(deq.attrs.axis) == int(call.attrs.axis)
    if (shape is None or len(shape) != 4 or str(call.attrs.out_dtype) != "int8" or not same_step
            or str(a.method) != "nearest_neighbor"
            or str(a.coordinate_transformation_mode) != "asymmetric" or str(a.rounding_method) != "floor"
            or str(a.layout) != "NCHW"):  # fmt: skip
        return None
    out = static_shape(call, "int8")
    if out is None or out[:2] != shape[:2]:
        return None
    kh, kw = _factor(out[2], shape[2]), _factor(out[3], shape[3])
    if kh is None or kw is None:
        return None
    src = permuted(m, x)
    if src is not None and src[1] == TO_NCHW:
        rows = m.builder_.emit(R.repeat(src[0], kh, axis=1))
        return R.permute_dims(m.builder_.emit(R.repeat(rows, kw, axis=2)), TO_NCHW)
    return R.repeat(m.builder_.emit(R.repeat(x, kh, axis=2)), kw, axis=3)


def int8_upsample_pass() -> Any:
    """Quantized nearest upsampling by powers of two as int8 repeats (see the module docstring)."""
    return calls_rewrite_pass({"relax.quantize": _upsample}, "EdgekitInt8Upsample")
