"""The CPU pipeline's Relax rewrites before legalization (float and int8 models alike).

* importer idioms ConvertLayout cannot see through (:func:`simplify_pass`);
* transposes moved through elementwise ops until they cancel
  (:func:`cancel_transposes_pass`), and ``conv2d_transpose`` back to NCHW;
* float convolutions and matrix products on blocked weights, the blocking a
  weight-only transform lifted to compile time (:func:`block_weights_pass`,
  :func:`matmul_weights_pass`);
* softmax over a row split into vector-friendly reductions
  (:func:`softmax_pass`);
* table lookups marked elementwise so they fuse into their producer
  (:func:`with_elementwise_lookups`).

:func:`edgekit.compiler.backends.llvm.relax_build.prepare_cpu_module` runs them in order.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from edgekit.compiler.relax_rewrite import (
    TO_NCHW,
    bound_value,
    call_rewrite_pass,
    calls_rewrite_pass,
    is_call,
    out_dtype,
    permuted,
    round_up,
    static_float_shapes,
    with_pass,
)
from edgekit.compiler.backends.llvm.schedule import fallback_vector_width, simd_lanes

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = [
    "block_weights_pass",
    "cancel_transposes_pass",
    "matmul_weights_pass",
    "simplify_pass",
    "softmax_pass",
    "transpose_conv_pass",
    "with_elementwise_lookups",
]

logger = logging.getLogger(__name__)


def _same_shape(a: Any, b: Any) -> bool:
    """True when two Relax tensors have the same dtype and the same static shape."""
    from tvm import relax

    sa, sb = a.ty, b.ty
    if not isinstance(sa, relax.TensorType) or not isinstance(sb, relax.TensorType):
        return False
    if sa.shape is None or sb.shape is None or sa.dtype != sb.dtype:
        return False
    try:
        return [int(x) for x in sa.shape.values] == [int(x) for x in sb.shape.values]
    except (TypeError, AttributeError):
        return False


def _no_op_broadcast(_m: Any, call: Any) -> Any:
    """``broadcast_to(x, shape of x)`` as ``x``."""
    return call.args[0] if _same_shape(call.args[0], call) else None


def _tir_min_max(_m: Any, call: Any) -> Any:
    """``call_tir(maximum|minimum, (x, scalar))`` from TOPI as the Relax op it computes.

    TVM's Clip converter (opset >= 11, bounds as inputs) emits TOPI's
    broadcast maximum/minimum as opaque call_tir kernels; as Relax ops they
    carry a layout (PP-OCR's hard-swish went to NCHW and back for each).
    """
    from tvm import relax

    gv, args = call.args[0], call.args[1]
    op = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}.get(getattr(gv, "name_hint", "").rstrip("0123456789"))
    fields = getattr(args, "fields", None)
    if op is None or fields is None or len(fields) != 2 or len(call.args) > 2:
        return None
    x, bound = fields
    tx, tb, tout = x.ty, bound.ty, call.ty
    if not all(isinstance(t, relax.TensorType) for t in (tx, tb, tout)):
        return None
    if tb.ndim != 0 or str(tx.dtype) != str(tb.dtype) or str(tout.dtype) != str(tx.dtype):
        return None
    return op(x, bound) if _same_shape(x, call) else None


def _clip_as_min_max(_m: Any, call: Any) -> Any:
    """``clip(x, lo, hi)`` with constant bounds as ``maximum(minimum(x, hi), lo)``.

    ConvertLayout has no layout rule for clip: every requantized int8 layer,
    and every float hard-swish (PP-OCR), went back to NCHW (a transpose each
    way) at its clamp. The same arithmetic TOPI legalizes clip to (NaN
    included: both give the bound).
    """
    from tvm import relax

    x, lo, hi = call.args
    t = x.ty
    if not all(hasattr(v, "value") for v in (lo, hi)) or not isinstance(t, relax.TensorType) or t.dtype is None:
        return None
    dtype = str(t.dtype)
    cast = int if dtype.startswith(("int", "uint")) else float
    if cast is float and dtype not in ("float32", "float16", "float64"):
        return None
    return relax.op.maximum(relax.op.minimum(x, relax.const(cast(hi.value), dtype)), relax.const(cast(lo.value), dtype))


def _sum_of_stack(m: Any, call: Any) -> Any:
    """``sum(stack(broadcast_to(a), broadcast_to(b), ...), axis=k)`` as ``add(a, b, ...)``."""
    from tvm import relax

    if call.attrs.keepdims or call.attrs.axis is None or len(call.attrs.axis) != 1:
        return None
    stacked = bound_value(m, call.args[0])
    if not is_call(stacked, "relax.stack") or int(stacked.attrs.axis) != int(call.attrs.axis[0]):
        return None
    fields = stacked.args[0]
    fields = fields.fields if isinstance(fields, relax.Tuple) else None
    if not fields:
        return None
    unwrapped = []
    for f in fields:
        value = bound_value(m, f)
        unwrapped.append(value.args[0] if is_call(value, "relax.broadcast_to") else f)
    out = unwrapped[0]
    for f in unwrapped[1:]:
        out = m.builder_.emit(relax.op.add(out, f))
    return out


def simplify_pass() -> Any:
    """A Relax pass undoing importer idioms ConvertLayout cannot see through.

    TVM's ONNX importer turns ``Sum(a, b)`` into ``sum(stack(broadcast_to(a),
    broadcast_to(b)), axis=0)``: a 5-D tensor whose layout ConvertLayout
    cannot infer (it fails with "Invalid SLayout"). Rewritten here to
    ``add(a, b)`` (broadcasting is ``add``'s own), and ``broadcast_to`` to the
    shape a tensor already has is dropped; clamps become ``minimum`` and
    ``maximum`` (:func:`_clip_as_min_max`, :func:`_tir_min_max`).
    """
    rewrites = {
        "relax.broadcast_to": _no_op_broadcast,
        "relax.clip": _clip_as_min_max,
        "relax.call_tir": _tir_min_max,
        "relax.sum": _sum_of_stack,
    }
    return calls_rewrite_pass(rewrites, "EdgekitSimplifyImported")


#: Elementwise binary ops a transpose moves through (:func:`_binary_through`).
_BINARY_OPS = ("add", "subtract", "multiply", "minimum", "maximum", "right_shift", "left_shift", "bitwise_and")


def _is_scalar(expr: Any) -> bool:
    """True for a tensor of static shape with one element."""
    from tvm import relax

    t = expr.ty
    if not isinstance(t, relax.TensorType) or t.shape is None:
        return False
    try:
        return all(int(v) == 1 for v in t.shape.values)
    except (TypeError, AttributeError):
        return False


def _take_through(m: Any, call: Any) -> Any:
    """``take(table, permute(i, p))`` of a 1-D table as ``permute(take(table, i), p)``."""
    from tvm import relax

    table, index = call.args
    found = permuted(m, index)
    t = table.ty
    if found is None or not isinstance(t, relax.TensorType) or t.ndim != 1:
        return None
    looked = m.builder_.emit(relax.op.take(table, found[0], axis=0, mode=call.attrs.mode))
    return relax.op.permute_dims(looked, found[1])


def _pad_through(m: Any, call: Any) -> Any:
    """A constant pad of ``permute(x, p)`` as the permuted pad of ``x`` (axis ``i`` is ``x``'s axis ``p[i]``)."""
    from tvm import relax

    found = permuted(m, call.args[0]) if str(call.attrs.pad_mode) == "constant" else None
    if found is None:
        return None
    x, perm = found
    widths = [int(v) for v in call.attrs.pad_width]
    src = [0] * len(widths)
    for i, axis in enumerate(perm):
        src[2 * axis], src[2 * axis + 1] = widths[2 * i], widths[2 * i + 1]
    padded = m.builder_.emit(relax.op.nn.pad(x, src, pad_value=float(call.attrs.pad_value)))
    return relax.op.permute_dims(padded, perm)


def _cast_through(m: Any, call: Any) -> Any:
    """``astype(permute(x, p))`` as ``permute(astype(x), p)``."""
    from tvm import relax

    found = permuted(m, call.args[0])
    if found is None:
        return None
    cast = m.builder_.emit(relax.op.astype(found[0], call.attrs.dtype))
    return relax.op.permute_dims(cast, found[1])


def _binary_through(m: Any, call: Any) -> Any:
    """``op(permute(a, p), permute(b, p))`` or ``op(permute(a, p), scalar)`` as ``permute(op(a, b), p)``."""
    from tvm import relax

    found = [permuted(m, a) for a in call.args]
    axes = next((f[1] for f in found if f is not None), None)
    if axes is None:
        return None
    args = []
    for arg, f in zip(call.args, found):
        if f is not None and f[1] == axes:
            args.append(f[0])
        elif f is None and _is_scalar(arg) and arg.ty.ndim <= 1:
            args.append(arg)
        else:
            return None
    moved = m.builder_.emit(relax.Call(call.op, args, call.attrs))
    return relax.op.permute_dims(moved, axes)


def _slice_through(m: Any, call: Any) -> Any:
    """An int8 ``strided_slice(permute(x, p))`` as ``permute`` of the slice of ``x`` on axes ``p[a]``.

    The integer lowering's slices (a YOLO C2f split, the Focus and DFL
    slices) read an NCHW view of an NHWC conv output; moved through, the
    transpose meets its inverse at the next conv.
    """
    from tvm import relax

    found = permuted(m, call.args[0])
    if found is None or str(getattr(call.ty, "dtype", "")) != "int8":
        return None
    x, perm = found
    axes, *ranges = ([int(v.value) for v in arg.fields] for arg in call.args[1:])
    moved = relax.op.strided_slice(x, [perm[a] for a in axes], *ranges, assume_inbound=bool(call.attrs.assume_inbound))
    return relax.op.permute_dims(m.builder_.emit(moved), perm)


def _max_pool_through(m: Any, call: Any) -> Any:
    """An int8 NCHW ``max_pool2d(permute(x, [0, 3, 1, 2]))`` of an NHWC ``x`` as the permuted NHWC pool of ``x``.

    The integer lowering pools the int8 table output of a SiLU (YOLO's SPP and
    SPPF); ``ConvertLayout`` has no rule for the table's ``take``, so the pool
    stayed NCHW between NHWC convs with a transpose each way.
    """
    from tvm import relax

    found = permuted(m, call.args[0])
    a = call.attrs
    if (found is None or found[1] != TO_NCHW or str(getattr(call.ty, "dtype", "")) != "int8" or str(a.layout) != "NCHW"
            or str(a.out_layout or a.layout) != "NCHW"):  # fmt: skip
        return None
    pooled = relax.op.nn.max_pool2d(
        found[0], [int(v) for v in a.pool_size], [int(v) for v in a.strides], [int(v) for v in a.padding],
        [int(v) for v in a.dilation], bool(a.ceil_mode), bool(a.count_include_pad), layout="NHWC", out_layout="NHWC",
    )  # fmt: skip
    return relax.op.permute_dims(m.builder_.emit(pooled), TO_NCHW)


def _cancel_pair(m: Any, call: Any) -> Any:
    """``permute(permute(x, p), q)`` as ``x`` when ``q`` undoes ``p``."""
    found = permuted(m, call.args[0])
    if found is None or call.attrs.axes is None:
        return None
    outer = [int(v) for v in call.attrs.axes]
    return found[0] if all(found[1][b] == i for i, b in enumerate(outer)) else None


def cancel_transposes_pass() -> Any:
    """Moves layout transposes through table lookups and drops transpose pairs that cancel.

    ``ConvertLayout`` has no layout rule for ``take``, so the integer
    lowering's 256-entry lookup tables (requantizing a concat input,
    sigmoid, hard-swish, ...) ran on NCHW copies: a transpose of the int32
    index before every table and one back after it (SqueezeNet int8 spent
    a sixth of its time there). ``take(table, permute(i))`` is
    ``permute(take(table, i))`` for a 1-D table; the transpose then meets
    its inverse and both go. Pads, casts, int8 slices and max pools and
    elementwise binary ops with a scalar or a same-permuted operand let it
    through the same way.
    """
    rewrites = {
        "relax.take": _take_through,
        "relax.nn.pad": _pad_through,
        "relax.astype": _cast_through,
        "relax.strided_slice": _slice_through,
        "relax.nn.max_pool2d": _max_pool_through,
        **{f"relax.{name}": _binary_through for name in _BINARY_OPS},
        "relax.permute_dims": _cancel_pair,
    }
    return calls_rewrite_pass(rewrites, "EdgekitCancelTransposes")


def transpose_conv_pass() -> Any:
    """Rewrites non-overlapping ``conv2d_transpose`` (stride == kernel) as a 1x1 conv2d + pixel shuffle.

    With stride equal to the kernel size every output pixel receives exactly
    one input pixel, so ``y[n, o, h*s+i, w*s+j] = sum_c x[n, c, h, w] *
    W[c, o, i, j]``: a 1x1 convolution to ``O*kh*kw`` channels followed by a
    depth-to-space reshuffle. TOPI's conv2d_transpose instead convolves a
    zero-dilated input with a generic schedule; PP-OCR's detector head spent
    70% of its time there. Other transposed convolutions are left as they are.
    """
    from tvm import relax

    def rewrite(b: Any, call: Any) -> Any:
        a = call.attrs
        x, w = call.args
        try:
            n, c, h, wd = (int(v) for v in x.ty.shape.values)
            wc, o, kh, kw = (int(v) for v in w.ty.shape.values)
        except (TypeError, AttributeError):
            return call
        if (a.data_layout, a.kernel_layout, a.out_layout) != ("NCHW", "IOHW", "NCHW") or int(a.groups) != 1:
            return call
        if [int(v) for v in a.strides] != [kh, kw] or any(int(v) for v in a.padding):
            return call
        if any(int(v) for v in a.output_padding) or any(int(v) != 1 for v in a.dilation) or wc != c:
            return call
        # The 1x1 conv's channels are ordered (i, j, o): once ConvertLayout
        # makes it NHWC, each output pixel's O channels are one contiguous
        # run of the conv output, so the shuffle copies vectors.
        w1 = b.emit(relax.op.permute_dims(w, [2, 3, 1, 0]))  # (kh, kw, O, C)
        w1 = b.emit(relax.op.reshape(w1, (kh * kw * o, c, 1, 1)))
        y = b.emit(relax.op.nn.conv2d(x, w1, out_dtype=out_dtype(a)))
        y = b.emit(relax.op.reshape(y, (n, kh, kw, o, h, wd)))
        y = b.emit(relax.op.permute_dims(y, [0, 3, 4, 1, 5, 2]))  # (n, o, h, i, w, j)
        return relax.op.reshape(y, (n, o, h * kh, wd * kw))

    return call_rewrite_pass("relax.nn.conv2d_transpose", rewrite, "EdgekitTransposeConvAsShuffle")


def _conv2d_nhwc_blocked(
    x: Any, wp: Any, strides: Any, padding: Any, dilation: Any, out_dtype: str, groups: int = 1
) -> Any:
    """TE conv2d: NHWC activations, weights blocked by output channel.

    ``wp`` is ``[O // B, KH, KW, I, B]``: the ``B`` output channels a register
    tile computes are contiguous for every ``(ky, kx, ci)``, so the tile's
    weight loads walk memory sequentially instead of striding by ``O``
    (TOPI has no such conv2d in TVM 0.27; MLAS/oneDNN block the same way).
    With ``groups > 1`` the output channels are ``groups`` equal runs and run
    ``g`` reads input channels ``[g * I, (g + 1) * I)``.
    """
    from tvm import te, topi

    n, h, w, _c = x.shape
    _ob, kh, kw, ci, block = wp.shape
    per_group = _ob * block // groups
    sh, sw = (int(v) for v in strides)
    dh, dw = (int(v) for v in dilation)
    pt, pl, pb, pr = (int(v) for v in padding)
    oh = (h + pt + pb - (kh - 1) * dh - 1) // sh + 1
    ow = (w + pl + pr - (kw - 1) * dw - 1) // sw + 1
    if pt or pl or pb or pr:
        x = topi.nn.pad(x, [0, pt, pl, 0], [0, pb, pr, 0], name="pad_temp")
    ry = te.reduce_axis((0, kh), name="ry")
    rx = te.reduce_axis((0, kw), name="rx")
    rc = te.reduce_axis((0, ci), name="rc")
    return te.compute(
        (n, oh, ow, _ob * block),
        lambda nn, yy, xx, ff: te.sum(
            x[nn, yy * sh + ry * dh, xx * sw + rx * dw, (ff // per_group * ci + rc) if groups > 1 else rc].astype(out_dtype)
            * wp[ff // block, ry, rx, rc, ff % block].astype(out_dtype),
            axis=[ry, rx, rc],
        ),
        name="conv2d_nhwc_blocked",
    )


def block_weights_pass(target: tvm.target.Target) -> Any:
    """Rewrites float NHWC/HWIO ``conv2d`` to :func:`_conv2d_nhwc_blocked`.

    * Output channels are padded with zero filters to a multiple of the SIMD
      width (the extra channels are sliced off again), so pruned or odd
      channel counts still get full-width vector code.
    * Grouped convolutions pad each group's output channels the same way
      (ShuffleNet's 4 groups of 34 ran with 2-lane vectors, the largest
      width dividing 34; a dense block-diagonal weight instead measured
      slower: 4x the MACs).

    The weight reshapes/pads this adds depend on weights only, so
    ``LiftTransformParams`` moves them to compile time. Depthwise convolutions
    keep the plain conv2d.
    """
    from tvm import relax

    lanes = simd_lanes(target)

    def rewrite(b: Any, call: Any) -> Any:
        a = call.attrs
        if (a.data_layout, a.kernel_layout, a.out_layout) != ("NHWC", "HWIO", "NHWC"):
            return call
        x, w = call.args
        shapes = static_float_shapes(x, w)
        if shapes is None:
            return call
        (_n, _h, _w, c), (kh, kw, ci, co) = shapes
        groups = int(a.groups)
        per_group = co // groups
        if groups == c and groups > 1 and co == c:  # depthwise: no reduction over channels to block
            return _depthwise_whole_vectors(b, call, x, w, lanes)
        # Each group's output channels are padded to a multiple of the SIMD
        # width with zero filters, so a vector never straddles two groups.
        # Wide layers are padded to whole pairs of vectors (2-vector register
        # tiles need fewer loads per FMA); the waste is under 2 * lanes / per_group.
        unit = 2 * lanes if per_group >= 8 * lanes else lanes
        padded = round_up(per_group, unit)
        if padded != per_group and per_group < lanes:  # more padding than work
            return call
        if padded != per_group:
            w = b.emit(relax.op.reshape(w, (kh, kw, ci, groups, per_group)))
            w = b.emit(relax.op.nn.pad(w, [0, 0, 0, 0, 0, 0, 0, 0, 0, padded - per_group]))
            w = b.emit(relax.op.reshape(w, (kh, kw, ci, groups * padded)))
        total = groups * padded
        blk = 2 * lanes if padded % (2 * lanes) == 0 else lanes
        w5 = b.emit(relax.op.reshape(w, (kh, kw, ci, total // blk, blk)))
        wp = b.emit(relax.op.permute_dims(w5, [3, 0, 1, 2, 4]))
        y = b.call_te(
            _conv2d_nhwc_blocked,
            x,
            wp,
            strides=list(a.strides),
            padding=list(a.padding),
            dilation=list(a.dilation),
            out_dtype=out_dtype(a) or "float32",
            groups=groups,
            primfunc_name_hint="conv2d_blocked",
        )
        if padded == per_group:
            return y
        y = b.emit(y)
        if groups == 1:
            return relax.op.strided_slice(y, axes=[3], begin=[0], end=[co])
        n, oh, ow = (int(v) for v in y.ty.shape.values[:3])
        y = b.emit(relax.op.reshape(y, (n, oh, ow, groups, padded)))
        y = b.emit(relax.op.strided_slice(y, axes=[4], begin=[0], end=[per_group]))
        return relax.op.reshape(y, (n, oh, ow, co))

    return call_rewrite_pass("relax.nn.conv2d", rewrite, "EdgekitBlockConvWeights")


def _depthwise_whole_vectors(b: Any, call: Any, x: Any, w: Any, lanes: int) -> Any:
    """A float depthwise conv on channels padded to whole vectors (zero filters), sliced back.

    A pruned channel count (PP-OCR cls at 30 %: 11, 22, 67 channels) ran
    with 1- or 2-lane vectors, the largest width dividing it, and the pruned
    model was slower than the unpruned one.

    A count of whole 8-lane units is left alone: where it is not whole
    target vectors (88, 40, 200 channels with AVX-512's 16 lanes) the tiled
    reduction falls back to 8-lane vectors (``schedule.fallback_vector_width``),
    as for 136 (ShuffleNet's groups). Such counts were padded to whole zmm
    vectors while the fallback took 11, 10 or 13 lanes (88 channels: 30 us
    per 5x5 layer; padded, the fp32 model ran 0.274 ms instead of 0.351, one
    Zen 5 core, 2026-12-06); but the pad (channels and spatial) is a kernel of
    its own, and on the Zen 4 EPYC the cls fp32 build ran 0.495 ms in znver4
    code against 0.420 in haswell code; on 8 lanes, 0.431 (tree_ab_fp32.py,
    one thread CPU time, 2026-12-07).
    """
    from edgekit.compiler.backends.llvm.int8 import depthwise_on_vectors

    c = int(x.ty.shape.values[3])
    # Other counts go to whole vectors of 8 lanes (or the target's, if
    # narrower), as few padded channels as the schedule needs.
    unit = min(lanes, 8)
    fallback = fallback_vector_width(c, lanes)
    if c % unit == 0 and (c % lanes == 0 or c < lanes or fallback & (fallback - 1) == 0):
        return call
    width = lanes if c % unit == 0 else unit
    return depthwise_on_vectors(b, call, x, w, round_up(c, width), "float32", "float32", "depthwise_conv2d_padded")


def _row_reduce(fn: Any, data: Any, rows: list[int], lo: int, hi: int, name: str) -> Any:
    """``fn`` (``te.max``/``te.sum``) over ``data[..., lo:hi]``."""
    from tvm import te

    k = te.reduce_axis((lo, hi), name=f"k_{name}")
    return te.compute(rows, lambda *i: fn(data[(*i, k)], axis=k), name=name)


def _softmax_split(x: Any, lanes: int) -> Any:
    """TE softmax over the last axis with each reduction split at a multiple of ``lanes``.

    ``max``/``sum`` over ``[0, N - N % lanes)`` is one reduction the scheduler
    vectorizes (``schedule._vectorize_row_reduction``); the few tail elements are a
    second, scalar one. TOPI's softmax reduces over ``[0, N)`` in one loop,
    which stays scalar when ``N`` is not a multiple of the vector width
    (PP-OCR rec's 18710 classes). Uses TVM's polynomial ``fast_exp``.
    """
    from tvm import te, tirx, topi

    *rows, n = (int(v) for v in x.shape)
    main = n - n % lanes

    def reduce(fn: Any, data: Any, name: str) -> Any:
        parts = []
        for lo, hi in ((0, main), (main, n)):
            if hi > lo:
                parts.append(_row_reduce(fn, data, rows, lo, hi, f"{name}_{lo}"))
        if len(parts) == 1:
            return parts[0]
        combine = tirx.max if name == "max" else (lambda a, b: a + b)
        return te.compute(rows, lambda *i: combine(parts[0][i], parts[1][i]), name=name)

    peak = reduce(te.max, x, "max")
    e = te.compute(x.shape, lambda *i: x[i] - peak[i[:-1]], name="delta")
    e = topi.fast_exp(e)
    total = reduce(te.sum, e, "sum")
    return te.compute(x.shape, lambda *i: e[i] / total[i[:-1]], name="softmax_norm")


def softmax_pass(target: tvm.target.Target) -> Any:
    """Replaces last-axis float ``softmax`` of static shape by :func:`_softmax_split`."""
    lanes = simd_lanes(target)

    def rewrite(b: Any, call: Any) -> Any:
        shapes = static_float_shapes(call.args[0])
        if shapes is None:
            return call
        axis = int(call.attrs.axis)
        if axis not in (-1, len(shapes[0]) - 1) or shapes[0][-1] < 4 * lanes:
            return call
        return b.call_te(_softmax_split, call.args[0], lanes=lanes, primfunc_name_hint="softmax")

    return call_rewrite_pass("relax.nn.softmax", rewrite, "EdgekitSplitSoftmax")


def _matmul_blocked(x: Any, wp: Any, out_dtype: str) -> Any:
    """TE ``x @ W`` with ``W`` blocked by output column: ``wp`` is ``[N // B, K, B]``.

    As with :func:`_conv2d_nhwc_blocked`, the ``B`` columns of a register tile
    are contiguous for every ``k``, so the weights stream sequentially
    instead of one cache line (and one TLB page) per ``k`` and tile.
    """
    from tvm import te

    *lead, kdim = x.shape
    nb, _k, block = wp.shape
    k = te.reduce_axis((0, kdim), name="k")
    return te.compute(
        (*lead, nb * block),
        lambda *i: te.sum(
            x[(*i[:-1], k)].astype(out_dtype) * wp[i[-1] // block, k, i[-1] % block].astype(out_dtype), axis=k
        ),
        name="matmul_blocked",
    )


def matmul_weights_pass(target: tvm.target.Target) -> Any:
    """Runs float ``matmul`` with a 2-D right operand (a Gemm/MatMul weight) as :func:`_matmul_blocked`.

    The columns are padded to a multiple of the SIMD width first (the product
    is sliced back): PP-OCR rec's classifier, 18710 columns, otherwise ran
    with 5-lane vectors. The pad and the blocking transpose depend on the
    weight alone and move to compile time. Batched products of two
    activations (attention) have a 3-D or 4-D right operand and are left as
    they are.
    """
    from tvm import relax

    lanes = simd_lanes(target)

    def rewrite(b: Any, call: Any) -> Any:
        x, w = call.args
        shapes = static_float_shapes(x, w)
        if shapes is None or len(shapes[1]) != 2:
            return call
        k, n = shapes[1]
        if n < lanes:
            return call
        padded = round_up(n, lanes)
        if padded != n:
            w = b.emit(relax.op.nn.pad(w, [0, 0, 0, padded - n]))
        blk = 2 * lanes if padded % (2 * lanes) == 0 else lanes
        w3 = b.emit(relax.op.reshape(w, (k, padded // blk, blk)))
        wp = b.emit(relax.op.permute_dims(w3, [1, 0, 2]))
        out_dtype = str(call.attrs.out_dtype) if str(call.attrs.out_dtype) not in ("", "None", "void") else "float32"
        y = b.call_te(_matmul_blocked, x, wp, out_dtype=out_dtype, primfunc_name_hint="matmul_blocked")
        if padded == n:
            return y
        return relax.op.strided_slice(b.emit(y), axes=[len(shapes[0]) - 1], begin=[0], end=[n])

    return call_rewrite_pass("relax.matmul", rewrite, "EdgekitBlockMatmulWeights")


#: Attribute of a PrimFunc that FuseOps should treat as elementwise although TVM's analysis
#: finds it opaque (its stores are not at its loads' indices); set after ``AnnotateTIROpPattern``.
FUSE_AS_ELEMENTWISE = "edgekit_fuse_as_elementwise"


def with_elementwise_lookups(passes: list[Any]) -> list[Any]:
    """``passes`` with :func:`_lookup_tables_elementwise` right after ``AnnotateTIROpPattern``."""
    return with_pass(passes, _lookup_tables_elementwise(), after="AnnotateTIROpPattern")


def _lookup_tables_elementwise() -> Any:
    """Marks table lookups (``take`` of a 1-D table by a same-shaped index) elementwise, so they fuse.

    TVM classifies a gather as opaque, so each of the integer lowering's
    256-entry tables (hard-swish, sigmoid, a requantized concat input) ran
    as its own kernel over an int32 index tensor the previous kernel had to
    write out; PP-OCR cls int8 spent a sixth of its time in them. For a 1-D
    table ``out[i] = table[index[i]]`` is elementwise in ``index``: fused,
    it becomes one load in the producer's epilogue.
    """
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="EdgekitElementwiseLookups")
    def apply(mod: Any, _ctx: Any) -> Any:
        for gv, func in list(mod.functions_items()):
            if isinstance(func, tvm.tirx.PrimFunc) and FUSE_AS_ELEMENTWISE in (func.attrs or {}):
                mod[gv] = func.with_attr("op_pattern", 0)  # its builder's word (depthwise_input.place_func)
                continue
            if not isinstance(func, tvm.tirx.PrimFunc) or not gv.name_hint.startswith("take"):
                continue
            if len(func.params) != 3:
                continue
            table, index, out = func.params
            try:
                same = [int(d) for d in index.shape] == [int(d) for d in out.shape]
            except (TypeError, AttributeError):
                continue
            if len(table.shape) == 1 and same:
                mod[gv] = func.with_attr("op_pattern", 0)  # kElemWise
        return mod

    return apply
