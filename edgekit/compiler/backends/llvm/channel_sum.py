"""Channels-last reductions on int8 tensors: squeeze sums and max pools after a transpose to NCHW.

The integer lowering turns a quantized global average pool (the squeeze of
every squeeze-and-excitation block) into an int32 ``sum`` and keeps max
pools in NCHW; ConvertLayout leaves both behind a transpose of the whole
activation. :func:`channel_sum_pass` moves them into the NHWC layout the
convolutions write (see its docstring for the measured cost).

A squeeze sum of 16 channels or more is one hand-written kernel
(:func:`channel_sum_rows`): TVM's tiled reduction needs a vector tile that
divides the channel count, so a structured-pruned count such as 62 or 73
ran on 2-lane or scalar vectors (PP-OCR cls pruned 30 %, int8: 13 of
170 us in these sums, one Zen 5 core).
"""

from __future__ import annotations

import logging
from typing import Any

from edgekit.compiler.relax_rewrite import TO_NCHW, bound_value, calls_rewrite_pass, is_call, permuted, static_shape

__all__ = ["channel_sum_pass", "channel_sum_rows"]

logger = logging.getLogger(__name__)

#: Channels per vector step of :func:`channel_sum_rows` (int8 loads, int32 sums).
STEP = 16
#: Widest channel row a max pool takes as one masked vector on AVX-512BW targets.
MASKED_POOL_LANES = 64


def _channel_sum(x: Any) -> Any:
    """``y[n, 0, 0, c] = sum_hw int32(x[n, h, w, c])``: an int8 NHWC tensor summed over H and W in int32."""
    from tvm import te

    n, h, w, c = x.shape
    rh = te.reduce_axis((0, h), name="rh")
    rw = te.reduce_axis((0, w), name="rw")
    return te.compute(
        (n, 1, 1, c), lambda i, _a, _b, k: te.sum(x[i, rh, rw, k].astype("int32"), axis=[rh, rw]), name="channel_sum"
    )


def channel_sum_rows(shape: tuple[int, int, int, int], epilogue: Any = None, out_dtype: str = "int32") -> Any:
    """A PrimFunc ``Y[n, 0, 0, c] = sum_hw int32(X[n, h, w, c])`` on whole vectors, for ``c >= STEP``.

    ``epilogue`` (int32 vector of ``STEP`` sums -> ``out_dtype`` vector), where
    given, is applied to the sums before they are stored (the requantization
    of the mean: :mod:`edgekit.compiler.backends.llvm.gate_multiply`).

    One int32 vector of sums per ``STEP`` channels, added over every
    pixel; the last step reads the row's last ``STEP`` channels (overlapping
    the previous step when ``c`` is not a multiple of ``STEP``), so every
    load stays inside the row and every sum is exact. One accumulator at a
    time: with all of a row's accumulators live at once, LLVM broke them
    into scalars (88 channels ran at 1.5 us, 200 at 0.4). TVM has no
    schedule that splits a ragged channel axis this way, hence by hand (as
    :mod:`edgekit.compiler.backends.llvm.pad`).
    """
    from tvm.script import tirx as T

    n, h, w, c = shape
    hw = h * w
    steps = -(-c // STEP)
    wide, narrow = f"int32x{STEP}", f"int8x{STEP}"

    def out(v: Any) -> Any:
        return v if epilogue is None else epilogue(v)

    @T.prim_func(private=True, s_tir=True)
    def channel_sum(Xs: T.Buffer(shape, "int8"), Ys: T.Buffer((n, 1, 1, c), out_dtype)) -> None:
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            X = T.decl_buffer((n * hw * c,), "int8", data=Xs.data)
            Y = T.decl_buffer((n * c,), out_dtype, data=Ys.data)
            # On the stack: a "local" buffer or a named scalar is taken from the heap (TVM's LowerTVMBuiltin).
            acc = T.decl_buffer((STEP,), "int32", scope="global")
            for b, k in T.grid(n, steps):
                first = T.meta_var(T.min(k * STEP, c - STEP))  # the last step of a ragged row overlaps
                acc[T.ramp(0, 1, STEP)] = T.broadcast(T.int32(0), STEP)
                for p in range(hw):
                    acc[T.ramp(0, 1, STEP)] = acc[T.ramp(0, 1, STEP)] + T.Cast(wide, X.vload([(b * hw + p) * c + first], narrow))
                Y[T.ramp(b * c + first, 1, STEP)] = out(acc[T.ramp(0, 1, STEP)])

    return channel_sum


def _sum_kernel(m: Any, x: Any) -> Any:
    """The int32 squeeze sum of the int8 NHWC tensor ``x``: :func:`channel_sum_rows` from
    ``STEP`` channels, TVM's tiled reduction of :func:`_channel_sum` below that."""
    from tvm import relax

    shape = tuple(static_shape(x, "int8") or ())
    if len(shape) != 4 or shape[3] < STEP:
        return m.builder_.call_te(_channel_sum, x, primfunc_name_hint="channel_sum")
    if shape not in m.channel_sums:
        m.channel_sums[shape] = m.builder_.add_func(channel_sum_rows(shape), "channel_sum")
    return relax.call_tir(m.channel_sums[shape], relax.Tuple([x]), relax.TensorType((shape[0], 1, 1, shape[3]), "int32"))


def _to_nchw(m: Any, expr: Any) -> Any:
    """``x`` when ``expr`` is ``permute_dims(x, [0, 3, 1, 2])``, else None."""
    found = permuted(m, expr)
    return found[0] if found is not None and found[1] == TO_NCHW else None


def _channels_last_sum(m: Any, call: Any) -> Any:
    """A squeeze sum over H and W read in NHWC, from the int8 tensor where there is one (see :func:`channel_sum_pass`)."""
    from tvm.relax import op as R

    if call.attrs.axis is None:
        return None
    summed = sorted(int(a) for a in call.attrs.axis)
    if summed == [1, 2] and call.attrs.keepdims and str(call.ty.dtype) == "int32":
        # Already NHWC: sum(astype(x: int8)) reads the int8 values.
        cast = bound_value(m, call.args[0])
        if is_call(cast, "relax.astype"):
            shape = static_shape(cast.args[0], "int8")
            if shape is not None and len(shape) == 4:
                return _sum_kernel(m, cast.args[0])
        return None
    if summed != [2, 3] or not call.attrs.keepdims:
        return None
    # sum(permute(astype(x))) or sum(astype(permute(x))).
    src, int8 = call.args[0], None
    cast = bound_value(m, src)
    if is_call(cast, "relax.astype"):
        x = int8 = _to_nchw(m, cast.args[0])
    else:
        x = _to_nchw(m, src)
        cast = bound_value(m, x) if x is not None else None
        if is_call(cast, "relax.astype"):
            int8 = cast.args[0]
    if x is None:
        return None
    if int8 is not None and static_shape(int8, "int8") is not None and str(call.ty.dtype) == "int32":
        inner = m.builder_.emit(_sum_kernel(m, int8))
        return R.permute_dims(inner, [0, 3, 1, 2])
    inner = m.builder_.emit(R.sum(x, axis=[1, 2], keepdims=True))
    return R.permute_dims(inner, [0, 3, 1, 2])


def _max_pool_rows(shape: tuple[int, int, int, int], pool: tuple[int, int], strides: tuple[int, int]) -> Any:
    """A PrimFunc for an unpadded int8 NHWC max pool on ``STEP``-channel vectors, for ``c >= STEP``.

    As :func:`channel_sum_rows`, the last step of a ragged channel row
    overlaps the previous one (a maximum written twice is the same value).
    TVM's pool found no vector tile dividing a pruned count and ran one
    channel at a time (digits CNN pruned 30 %, int8: 23 channels took 0.39 us
    where the unpruned 32 took 0.12, one Zen 5 core).
    """
    from tvm.script import tirx as T

    n, h, w, c = shape
    (ph, pw), (sh, sw) = pool, strides
    oh, ow = (h - ph) // sh + 1, (w - pw) // sw + 1
    steps = -(-c // STEP)
    vec = f"int8x{STEP}"

    @T.prim_func(private=True, s_tir=True)
    def max_pool(Xs: T.Buffer(shape, "int8"), Ys: T.Buffer((n, oh, ow, c), "int8")) -> None:
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True})
        with T.sblock("root"):
            X = T.decl_buffer((n * h * w * c,), "int8", data=Xs.data)
            Y = T.decl_buffer((n * oh * ow * c,), "int8", data=Ys.data)
            for ny in T.parallel(n * oh):
                # One accumulator per thread, on its stack ("global", 16 bytes); first, corner
                # and tap are expressions: named, each would be a buffer taken from the heap
                # on every iteration of the parallel loop (TVM's LowerTVMBuiltin).
                acc = T.decl_buffer((STEP,), "int8", scope="global")
                for x, k in T.grid(ow, steps):
                    first = T.meta_var(T.min(k * STEP, c - STEP))
                    corner = T.meta_var((((ny // oh) * h + (ny % oh) * sh) * w + x * sw) * c + first)
                    acc[T.ramp(0, 1, STEP)] = X.vload([corner], vec)
                    for ky, kx in T.grid(ph, pw):
                        acc[T.ramp(0, 1, STEP)] = T.max(acc[T.ramp(0, 1, STEP)], X.vload([corner + (ky * w + kx) * c], vec))
                    Y[T.ramp((ny * ow + x) * c + first, 1, STEP)] = acc[T.ramp(0, 1, STEP)]

    return max_pool


def masked_pool_lanes(target: Any, channels: int) -> int | None:
    """Lanes of the one masked vector per pixel a max pool of ``channels`` ragged channels takes on
    ``target`` (:func:`_masked_max_pool`): 16, 32 or 64 on AVX-512BW targets for a count under
    :data:`MASKED_POOL_LANES` that is not a multiple of ``STEP``; None elsewhere (an AVX2 target has no
    byte-masked loads: LLVM would split them into one load per lane)."""
    from edgekit.compiler.backends.llvm.intrin import has_feature

    if target is None or channels % STEP == 0 or channels >= MASKED_POOL_LANES:
        return None
    if str(target.kind.name) != "llvm" or not (has_feature(target, "avx512bw") and has_feature(target, "avx512vl")):
        return None
    return next(lanes for lanes in (16, 32, 64) if lanes >= channels)


def _masked_max_pool(shape: tuple[int, int, int, int], pool: tuple[int, int], strides: tuple[int, int],
                     lanes: int) -> Any:  # fmt: skip
    """An unpadded int8 NHWC max pool with one ``lanes``-wide vector per pixel, its lanes past the
    channel count masked off (``vmovdqu8 {k}``) in every load and in the store.

    The overlapping 16-channel steps of :func:`_max_pool_rows` read and write
    23 channels twice over as 2 x 16 lanes (digits CNN pruned 30 %, int8: 0.031
    against 0.018 us for the unpruned 32-channel pool, kernels built alone,
    one Zen 4 core); a masked vector reads each byte once, as many
    instructions per pixel as a round count.
    """
    from tvm import tirx
    from tvm.script.ir_builder import IRBuilder
    from tvm.script.ir_builder import tirx as T

    n, h, w, c = shape
    (ph, pw), (sh, sw) = pool, strides
    oh, ow = (h - ph) // sh + 1, (w - pw) // sw + 1
    vec = f"int8x{lanes}"
    with IRBuilder() as ib:
        with T.prim_func(private=True):
            T.func_name("max_pool2d")
            # Opaque (kOpaque = 8): FuseOps must not merge the masked kernel into its producer.
            T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, "op_pattern": 8})
            Xs = T.arg("Xs", T.buffer(shape, "int8"))
            Ys = T.arg("Ys", T.buffer((n, oh, ow, c), "int8"))
            with T.sblock("root"):
                X = T.decl_buffer((n * h * w * c,), "int8", data=Xs.data)
                Y = T.decl_buffer((n * oh * ow * c,), "int8", data=Ys.data)
                mask = T.ramp(0, 1, lanes) < T.broadcast(c, lanes)
                with T.parallel(0, n * oh) as ny:
                    with T.serial(0, ow) as x:
                        corner = (((ny // oh) * h + (ny % oh) * sh) * w + x * sw) * c

                        def tap(ky: int, kx: int) -> Any:
                            return tirx.op.masked_load(vec, X, T.ramp(corner + (ky * w + kx) * c, 1, lanes), mask)

                        best = tap(0, 0)
                        for ky in range(ph):
                            for kx in range(pw):
                                if ky or kx:
                                    best = T.max(best, tap(ky, kx))
                        T.evaluate(tirx.op.masked_store(Y, best, T.ramp((ny * ow + x) * c, 1, lanes), mask))
    return ib.get()


def _nhwc_max_pool(m: Any, x: Any, a: Any) -> Any:
    """The NHWC max pool of the int8 tensor ``x`` with the attributes ``a`` of an NCHW one:
    :func:`_max_pool_rows` for a ragged channel count of ``STEP`` or more (no
    padding, dilation 1, floor mode), TVM's pool otherwise."""
    from tvm import relax
    from tvm.relax import op as R

    shape = tuple(static_shape(x, "int8") or ())
    pool, strides = tuple(int(v) for v in a.pool_size), tuple(int(v) for v in a.strides)
    plain = [int(v) for v in a.padding] == [0] * 4 and [int(v) for v in a.dilation] == [1, 1] and not a.ceil_mode
    lanes = masked_pool_lanes(m.target, shape[3]) if len(shape) == 4 else None
    if lanes and plain and shape[1] >= pool[0] and shape[2] >= pool[1]:
        key = ("masked_max_pool", shape, pool, strides, lanes)
        if key not in m.channel_sums:
            m.channel_sums[key] = m.builder_.add_func(_masked_max_pool(shape, pool, strides, lanes), "max_pool2d")
        oh, ow = (shape[1] - pool[0]) // strides[0] + 1, (shape[2] - pool[1]) // strides[1] + 1
        return relax.call_tir(m.channel_sums[key], relax.Tuple([x]), relax.TensorType((shape[0], oh, ow, shape[3]), "int8"))
    if len(shape) == 4 and shape[3] >= STEP and shape[3] % STEP and plain and shape[1] >= pool[0] and shape[2] >= pool[1]:
        key = ("max_pool", shape, pool, strides)
        if key not in m.channel_sums:
            m.channel_sums[key] = m.builder_.add_func(_max_pool_rows(shape, pool, strides), "max_pool2d")
        oh, ow = (shape[1] - pool[0]) // strides[0] + 1, (shape[2] - pool[1]) // strides[1] + 1
        out = relax.TensorType((shape[0], oh, ow, shape[3]), "int8")
        return relax.call_tir(m.channel_sums[key], relax.Tuple([x]), out)
    return R.nn.max_pool2d(x, list(pool), list(strides), [int(v) for v in a.padding], [int(v) for v in a.dilation],
                           bool(a.ceil_mode), bool(a.count_include_pad), layout="NHWC", out_layout="NHWC")  # fmt: skip


def _channels_last_pool(m: Any, call: Any) -> Any:
    """An int8 NCHW max pool of a transposed NHWC tensor as the NHWC pool, transposed after;
    an int8 NHWC pool with a ragged channel count as :func:`_max_pool_rows`."""
    from tvm.relax import op as R

    a = call.attrs
    if a.layout == "NHWC" and a.out_layout == "NHWC" and static_shape(call.args[0], "int8") is not None:
        pool = _nhwc_max_pool(m, call.args[0], a)  # already channels-last: only a ragged count changes
        return pool if is_call(pool, "relax.call_tir") else None
    x = _to_nchw(m, call.args[0])
    if x is None or a.layout != "NCHW" or a.out_layout != "NCHW" or static_shape(x, "int8") is None:
        return None
    return R.permute_dims(m.builder_.emit(_nhwc_max_pool(m, x, a)), [0, 3, 1, 2])


def channel_sum_pass(target: Any = None) -> Any:
    """Channels-last reductions: squeeze sums and max pools after a transpose to NCHW.

    * ``sum(permute_dims(x, NHWC -> NCHW), axis=[2, 3])`` (``x`` possibly
      cast from int8 to int32) becomes a sum over ``x``'s own H and W,
      the cast inside it. The integer lowering turns a quantized global
      average pool (the squeeze of every squeeze-and-excitation block) into
      an int32 ``sum``, which ConvertLayout leaves in NCHW: a transpose of
      the whole activation went before each (PP-OCR cls int8: 7 transposes,
      33 us of 510 on one Zen 5 core), and the cast to int32 was a kernel
      of its own writing four bytes per value.
    * ``max_pool2d(permute_dims(x, NHWC -> NCHW))`` of int8 values becomes
      the NHWC pool of ``x``, transposed after: TVM's NCHW int8 pool was a
      scalar loop (PP-OCR cls's last pool: 6.6 us, and 4.7 us for the
      transpose before it, one Zen 5 core).
    """
    def setup(mutator: Any) -> None:
        import tvm

        mutator.channel_sums = {}  # shape (and pool) -> GlobalVar of its hand-written kernel
        # Which max-pool kernel fits depends on the target (masked_pool_lanes): the one given, or the
        # one the pass runs under (prepare_cpu_module runs its passes inside ``with target``).
        mutator.target = target if target is not None else tvm.target.Target.current(allow_none=True)

    return calls_rewrite_pass({"relax.sum": _channels_last_sum, "relax.nn.max_pool2d": _channels_last_pool},
                              "EdgekitChannelSum", setup)  # fmt: skip
