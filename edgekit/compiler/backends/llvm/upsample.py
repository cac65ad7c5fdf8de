"""int8 nearest upsampling by powers of two as a repeat of the int8 tensor, channels-last where it comes so.

The integer lowering turns a quantized nearest ``Resize`` into ``resize2d``
of the int8 tensor (``compiler/integer/indexing.py``; a table before it when
the output's scale differs). A nearest resize by a power of two with
``asymmetric`` coordinates and ``floor`` rounding reads input pixel
``floor(o / k)`` exactly (``o * (1 / k)`` is exact in float32), so it is
``repeat(repeat(x, kh, H), kw, W)``. PP-OCR det's neck upsamples three 24-
and three 96-channel maps by 2, 4 and 8 this way, YOLO necks two maps by 2;
TVM's resize kernel computes each output pixel's source coordinate in float
and, NCHW between two NHWC layers, came with transposes to NCHW and back
(PP-OCR det, one Zen 5 core: about 800 us of 6.6 ms int8 kernels as float
chains, about 400 as repeats). Where ``x`` is a transpose of an NHWC tensor
the repeat reads that tensor, and
:func:`edgekit.compiler.backends.llvm.layout.cancel_transposes_pass`, which
runs next, moves the transpose back to NCHW on to its inverse.
"""

from __future__ import annotations

import logging
from typing import Any

from edgekit.compiler.relax_rewrite import TO_NCHW, calls_rewrite_pass, permuted, static_shape

__all__ = ["int8_upsample_pass"]

logger = logging.getLogger(__name__)

#: The (H, W) axes of each layout ``resize2d`` may have (ConvertLayout gives it the convs' NHWC).
_SPATIAL = {"NCHW": (2, 3), "NHWC": (1, 2)}


def _factor(out: int, size: int) -> int | None:
    """``out / size`` when it is a power of two (1 included), else None."""
    k, rest = divmod(out, size)
    return k if rest == 0 and k & (k - 1) == 0 else None


def _upsample(m: Any, call: Any) -> Any:
    """``resize2d`` of int8 ``x`` by powers of two, nearest and exact, as :func:`repeat` (module docstring), or None."""
    from tvm.relax import op as R

    x, a = call.args[0], call.attrs
    shape, layout = static_shape(x, "int8"), str(a.layout)
    if (shape is None or len(shape) != 4 or str(a.method) != "nearest_neighbor"
            or str(a.coordinate_transformation_mode) != "asymmetric" or str(a.rounding_method) != "floor"
            or layout not in _SPATIAL):  # fmt: skip
        return None
    out = static_shape(call, "int8")
    h, w = _SPATIAL[layout]
    if out is None or [d for i, d in enumerate(out) if i not in (h, w)] != [d for i, d in enumerate(shape) if i not in (h, w)]:
        return None
    kh, kw = _factor(out[h], shape[h]), _factor(out[w], shape[w])
    if kh is None or kw is None:
        return None
    src = permuted(m, x)
    if layout == "NCHW" and src is not None and src[1] == TO_NCHW:
        rows = m.builder_.emit(R.repeat(src[0], kh, axis=1))
        return R.permute_dims(m.builder_.emit(R.repeat(rows, kw, axis=2)), TO_NCHW)
    return R.repeat(m.builder_.emit(R.repeat(x, kh, axis=h)), kw, axis=w)


def int8_upsample_pass() -> Any:
    """Quantized nearest upsampling by powers of two as int8 repeats (see the module docstring)."""
    return calls_rewrite_pass({"relax.image.resize2d": _upsample}, "EdgekitInt8Upsample")
