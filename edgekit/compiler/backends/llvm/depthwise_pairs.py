"""int8 depthwise convolutions with two taps of one channel per ``vpmaddwd`` lane (AVX-512 without VNNI, AVX2).

:mod:`edgekit.compiler.backends.llvm.int8` lowers such a layer here and
schedules the result (``schedule_dot``: a register tile of pixels of one
channel vector, the step tensorized with ``intrin``'s ``DW_I16_512`` /
``DW_I16_256``, or ``DW_ROWS_256`` for row pairs). Each lane multiplies two
int8 inputs, interleaved and widened to int16, by the channel's two weights and adds both in 32 bits: exact for
every int8 weight.

On AVX2 the pair is built per step (``vpunpcklbw`` + ``vpmovsxbw``) and LLVM
builds each once per tile, shared by every pixel and tap that reads it. The
two taps are two neighbouring columns of one kernel row, or two kernel rows
of one column (:func:`vertical_pairs`): a row pair is shared by all ``KW``
taps of the kernel's width, a column pair by every other tap only. PP-OCR cls
(haswell code, one Zen 4 core): all 11 depthwise layers take row pairs; its
200-channel 5x5 layers' tap loop went from 24 ``vpmaddwd`` on 12 pairs per
kernel row to 40 on 12 per row pair; the int8 model 0.455 -> 0.451 ms (haswell
code, one Zen 4 core, bit-identical; BENCHMARKS.md "int8 on AVX2-only targets:
depthwise tap pairs along the kernel's height").
"""

from __future__ import annotations

from typing import Any

from edgekit.compiler.backends.llvm.intrin import DW_I16_256, DW_ROWS_256, DotIsa
from edgekit.compiler.relax_rewrite import round_up

__all__ = ["AVX2_DEPTHWISE_ROWS", "depthwise_dot", "depthwise_rows", "lower_pairs", "vertical_pairs"]

#: Most output pixels in a register tile of the AVX2 depthwise kernel (:func:`depthwise_rows`).
AVX2_DEPTHWISE_ROWS = 8


def depthwise_dot(x: Any, wp: Any, strides: Any, name: str, vertical: bool = False) -> Any:
    """Depthwise ``y[n, oy, ox, c] = sum x[n, oy*sh + ry, ox*sw + 2*rp + j, c] * w[ry, rp, c, j]``.

    ``x`` is the padded NHWC int8 input (one column wider when the kernel
    width is odd: the extra tap has weight 0); ``wp`` is ``[KH, KW/2, C, 2]``
    int16, the taps of one channel in pairs (``intrin._dw_pmaddwd``).
    ``vertical``: the pairs are two kernel rows of one column instead,
    ``sum x[n, oy*sh + 2*rp + j, ox*sw + rx, c] * w[rp, rx, c, j]`` with ``wp``
    ``[KH/2, KW, C, 2]`` (one row taller when the kernel height is odd); the
    step's input region is then two rows by one column by its channels
    (``DW_ROWS_256``).
    """
    from tvm import te

    k0, k1, cp, two = (int(v) for v in wp.shape)
    n, h, wd, _c = (int(v) for v in x.shape)
    sh, sw = (int(v) for v in strides)
    r0 = te.reduce_axis((0, k0), name="rp" if vertical else "ry")
    r1 = te.reduce_axis((0, k1), name="rx" if vertical else "rp")
    rj = te.reduce_axis((0, two), name="rj")
    if vertical:
        oh, ow = (h - two * k0) // sh + 1, (wd - k1) // sw + 1

        def tap(nn: Any, yy: Any, xx: Any, cc: Any) -> Any:
            return x[nn, yy * sh + r0 * two + rj, xx * sw + r1, cc]
    else:
        oh, ow = (h - k0) // sh + 1, (wd - two * k1) // sw + 1

        def tap(nn: Any, yy: Any, xx: Any, cc: Any) -> Any:
            return x[nn, yy * sh + r0, xx * sw + r1 * two + rj, cc]

    return te.compute(
        (n, oh, ow, cp),
        lambda nn, yy, xx, cc: te.sum(
            tap(nn, yy, xx, cc).astype("int32") * wp[r0, r1, cc, rj].astype("int32"), axis=[r0, r1, rj]
        ),
        name=name,
    )


def vertical_pairs(kernel: tuple[int, int], strides: tuple[int, int], rows: int) -> bool:
    """Whether an AVX2 depthwise conv pairs its taps along the kernel's height (:func:`depthwise_dot`).

    A register tile of ``rows`` output pixels of one row builds each
    interleaved, widened input pair once (``vpunpcklbw`` + ``vpmovsxbw``)
    and shares it among the pixels and taps that read it. Horizontal pairs
    are two neighbouring columns: per kernel row, one pair per distinct
    column ``ox * sw + 2 * rp``; vertical pairs are two kernel rows of one
    column: per pair of kernel rows, one per distinct column ``ox * sw + rx``.
    The ``vpmaddwd`` count is ``KH/2 * KW`` against ``KH * KW/2`` (rounded
    up), the same for square kernels. Fewer builds win: a stride-1 5x5
    kernel and 8 pixels take 3 x 12 builds instead of 5 x 12, a 3x3 one
    2 x 10 instead of 3 x 10; horizontal stride 2 keeps horizontal pairs
    (5 x 10 against 3 x 19).
    """
    kh, kw = kernel
    sw = strides[1]
    if kh < 2:
        return False
    horizontal = -(-kw // 2) * kh, kh * len({x * sw + 2 * p for x in range(rows) for p in range(-(-kw // 2))})
    vertical = -(-kh // 2) * kw, -(-kh // 2) * len({x * sw + c for x in range(rows) for c in range(kw)})
    return vertical < horizontal


def depthwise_rows(row_ext: int, limit: int | None = None) -> int:
    """Output pixels per register tile of the AVX2 depthwise kernel: the most that divide the row, up to ``limit``.

    One 8-channel vector per pixel: the pixels of a tile share the interleaved
    input pairs (LLVM builds each once: 6 pixels of a 5-wide kernel take 10
    pairs for 18 ``vpmaddwd``) and each tap pair's weights, which other channel
    vectors would not. llvm-mca (haswell / znver2 models, PP-OCR cls's
    200-channel 5x5 layer), cycles per ``vpmaddwd`` of the tap-row loop: 4
    pixels 1.43 / 1.38, 6: 1.34 / 1.23, 8: 1.26 / 1.26 (4 accumulator spills
    per tap row), 12: 1.23 / 1.28 (24 spills); the int16 tap pairs before took
    2.56 / 1.73 per 16 products. Measured (haswell code on one Zen 4 core,
    PP-OCR cls's 9 depthwise shapes, kernel CPU time): 4 pixels 221, 6: 207,
    8: 201 us, the dense convs' tile rule (12 for most) 206 us (conv and pad
    kernels; the int16 tap pairs 257).
    """
    limit = AVX2_DEPTHWISE_ROWS if limit is None else limit
    return max(r for r in range(1, min(row_ext, limit) + 1) if row_ext % r == 0)


def lower_pairs(b: Any, call: Any, x: Any, w: Any, isa: DotIsa, merged_pad: float, prefix: str) -> Any:
    """The depthwise int8 ``call`` with two taps per ``vpmaddwd`` lane (:func:`depthwise_dot`).

    Its block is named ``prefix`` + the step's ``DotIsa`` name + ``_depthwise``.

    The input is padded once: spatially (the conv's own padding), one
    column more on the right when the kernel width is odd (its tap has
    weight 0), and to whole vectors of channels. When the conv has no
    padding of its own and reads a pad (the lowering's zero-point pad),
    the new pad takes that pad's value, so the two are one pad kernel
    (:mod:`edgekit.compiler.backends.llvm.pad`); the extra column and channels meet
    zero weights whatever their value. On AVX2 targets (``DW_I16_256``) the
    pairs are two kernel rows where :func:`vertical_pairs` says so: then the
    extra is a row at the bottom.
    """
    from tvm.relax import op as R

    a = call.attrs
    kh, kw, _one, c = (int(v) for v in w.ty.shape.values)
    lanes = isa.lanes
    strides = tuple(int(v) for v in a.strides)
    pt, pl, pb, pr = (int(v) for v in a.padding)
    vertical = False
    if isa is DW_I16_256:  # AVX2: pairs of kernel rows where they take fewer pair builds
        ow = (int(x.ty.shape.values[2]) + pl + pr - kw) // strides[1] + 1
        vertical = vertical_pairs((kh, kw), strides, depthwise_rows(ow))
    cp = round_up(c, lanes)
    k2 = -(-(kh if vertical else kw) // 2)
    extra = 2 * k2 - (kh if vertical else kw)
    value = merged_pad if not any((pt, pl, pb, pr)) else 0.0
    xp = x
    rows_extra, cols_extra = (extra, 0) if vertical else (0, extra)
    if any((pt, pl, pb, pr, extra)) or cp != c:
        xp = b.emit(R.nn.pad(x, [0, 0, pt, pb + rows_extra, pl, pr + cols_extra, 0, cp - c], pad_value=value))
    w16 = b.emit(R.astype(w, "int16"))
    if extra or cp != c:
        w16 = b.emit(R.nn.pad(w16, [0, rows_extra, 0, cols_extra, 0, 0, 0, cp - c]))
    if vertical:
        w4 = b.emit(R.reshape(w16, (k2, 2, kw, cp)))
        wp = b.emit(R.permute_dims(w4, [0, 2, 3, 1]))
    else:
        w4 = b.emit(R.reshape(w16, (kh, k2, 2, cp)))
        wp = b.emit(R.permute_dims(w4, [0, 1, 3, 2]))
    y = b.emit(
        b.call_te(depthwise_dot, xp, wp, strides=list(a.strides), vertical=vertical,
                  name=f"{prefix}{(DW_ROWS_256 if vertical else isa).name}_depthwise",
                  primfunc_name_hint=f"depthwise_conv2d_{isa.name}")
    )  # fmt: skip
    return R.strided_slice(y, axes=[3], begin=[0], end=[c]) if cp != c else y
