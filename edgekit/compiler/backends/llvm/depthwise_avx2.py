"""int8 depthwise convolutions for AVX2 targets: tap pairs' int16 products summed in int16.

Since issue #14's AVX2 round of 2026-12-07 an undilated depthwise conv on an
AVX2-only target takes two taps per ``vpmaddwd`` lane instead
(:mod:`edgekit.compiler.backends.llvm.int8`, ``DW_I16_256``: exact for every
int8 weight, about half the instructions per product); this kernel stays for
dilated ones.

AVX2 has no instruction that multiplies int8 and adds in 32 bits without
widening, and the tap-pair ``vpmaddwd`` form of the AVX-512 targets does
not pay with 8-lane vectors (:mod:`edgekit.compiler.backends.llvm.int8`).
Here each product is taken in int16 (``vpmullw``), the products of two
horizontal taps of one output are added in int16, and only that sum is
widened to the int32 accumulator. Exact for weights in ``[-127, 127]``:
``2 * 128 * 127 < 2**15`` (a layer with a -128 weight keeps the generic
kernel). Outputs are bit-identical with the generic integer kernel
(``tests/build/test_cpu_int8.py``).

Larger groups of taps would widen less often, but int16 only holds their sum
where ``128 * sum(|w|)`` over the group stays below ``2**15``: not one
depthwise layer of PP-OCR cls qualifies for three taps (its 3x3 and 5x5
kernels have ``sum(|w|)`` of 560-1,700 per channel), and its activations
(hard-swish and ReLU outputs, asymmetric int8) use the whole int8 range, so
a narrower input range does not help either.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from edgekit.compiler.relax_rewrite import round_up

__all__ = ["DW_PAIRS_X16", "lower_depthwise"]

logger = logging.getLogger(__name__)

#: The block name of a kernel taking 16 channels per step (16 int16 products, one ymm register,
#: widened into two int32 accumulators); the int8 dot-product rule schedules it. Others keep the
#: default schedule's 8 int32 lanes, i.e. 8 int16 lanes (half an xmm register) per multiply.
DW_PAIRS_X16 = "depthwise_conv2d_int16_pairs_x16"


def _lanes(channels: int) -> int:
    """Channels per step: 16 unless that pads too many.

    Haswell code on one Zen 5 core, PP-OCR cls: 200 channels (padded to 208)
    35.3 -> 30.3 us, 104 -> 112: 19.0 -> 16.9 us, 88 -> 96: 23.9 -> 21.4 us,
    48 and 32 equal; 40 -> 48 equal, 24 -> 32 7.7 -> 9.8 us and 8 -> 16
    5.4 -> 7.3 us (the padded channels cost more than the wider multiplies
    save).
    """
    return 16 if channels % 16 == 0 or channels >= 64 else 8


def _depthwise_int16_pairs(x: Any, w: Any, strides: Any, dilation: Any, name: str) -> Any:
    """Depthwise NHWC int8 conv summing two horizontal taps in int16 before widening (weights without -128).

    ``w`` is ``[KH, KW2 * 2, 1, C]`` (an odd kernel width padded with a zero
    tap, the input one column wider). ``|x * w| <= 128 * 127``, so a pair
    fits in int16 exactly.
    """
    from tvm import te

    n, h, wd, c = (int(v) for v in x.shape)
    kh, kw = int(w.shape[0]), int(w.shape[1])
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilation)
    oh, ow = (h - (kh - 1) * dh - 1) // sh + 1, (wd - (kw - 1) * dw - 1) // sw + 1
    ry = te.reduce_axis((0, kh), name="ry")
    rp = te.reduce_axis((0, kw // 2), name="rp")

    def tap(nn: Any, yy: Any, xx: Any, cc: Any, j: int) -> Any:
        col = rp * 2 + j
        return x[nn, yy * sh + ry * dh, xx * sw + col * dw, cc].astype("int16") * w[ry, col, 0, cc].astype("int16")

    return te.compute(
        (n, oh, ow, c),
        lambda nn, yy, xx, cc: te.sum((tap(nn, yy, xx, cc, 0) + tap(nn, yy, xx, cc, 1)).astype("int32"), axis=[ry, rp]),
        name=name,
    )


def lower_depthwise(b: Any, call: Any, x: Any, w: Any, weight: np.ndarray, pad_value: float,
                    int32_lanes: int = 8) -> Any | None:  # fmt: skip
    """The int8 depthwise ``call`` (NHWC/HWIO, input ``x``, weights ``w`` of value ``weight``) in tap pairs.

    The input is padded once: the conv's own padding, one (dilated) column
    more when the kernel width is odd (its tap has weight 0) and channels to
    whole vectors; ``pad_value`` is what that pad holds where the conv has no
    padding of its own (the lowering's zero-point pad it then merges with).
    None for weights with -128 (a pair could overflow int16). ``int32_lanes``:
    the target's (16 on AVX-512 targets, which get here for dilated kernels:
    then always 16 channels per step).
    """
    from tvm.relax import op as R

    if int(weight.min()) <= -128:
        return None
    a = call.attrs
    kw, c = weight.shape[1], weight.shape[3]
    lanes = 16 if int32_lanes >= 16 else _lanes(c)
    cp = round_up(c, lanes)
    extra = kw % 2
    dw = int(a.dilation[1])
    pt, pl, pb, pr = (int(v) for v in a.padding)
    xp = x
    if any((pt, pl, pb, pr, extra)) or cp != c:
        value = pad_value if not any((pt, pl, pb, pr)) else 0.0
        xp = b.emit(R.nn.pad(x, [0, 0, pt, pb, pl, pr + extra * dw, 0, cp - c], pad_value=value))
    wp = w
    if extra or cp != c:
        wp = b.emit(R.nn.pad(w, [0, 0, 0, extra, 0, 0, 0, cp - c]))
    name = DW_PAIRS_X16 if lanes == 16 else "depthwise_conv2d_int16_pairs"
    y = b.emit(b.call_te(_depthwise_int16_pairs, xp, wp, strides=list(a.strides), dilation=list(a.dilation),
                         name=name, primfunc_name_hint="depthwise_conv2d_i16p"))  # fmt: skip
    return R.strided_slice(y, axes=[3], begin=[0], end=[c]) if cp != c else y
