"""int8 depthwise convolutions on VNNI targets: four taps per ``vpdpbusd`` lane.

The tap-pair kernel (:func:`edgekit.compiler.backends.llvm.depthwise_pairs.depthwise_dot`)
multiplies two taps per ``vpdpwssd`` lane, but builds every operand from two
16-byte loads, a byte interleave and a widening: about four instructions per
32 products, where an fp32 depthwise kernel takes one FMA (with its load
folded in) per 16, and int8 was slower than fp32 on most of PP-OCR's layers.

Here the input is copied once per layer (the copy the spatial padding
already needed) into 16-channel blocks, ``X[n, C/16, H, W, 16]`` as
``uint8 = x + 128``. In that layout four horizontally neighbouring pixels
of one channel block are 64 contiguous bytes, so the operand of four kernel
taps is one 64-byte load and one byte permutation (``vpermb``, AVX512-VBMI)
putting each channel's four pixels side by side; one ``vpdpbusd`` then
multiplies them by that channel's four tap weights (``[C/16, KH, KW/4, 16,
4]`` int8, a zero tap where the kernel width is not a multiple of 4) and adds
all four into the channel's int32 lane. A register tile of several output
rows and columns is fully unrolled, so an operand that serves several outputs
(the same pixels under another kernel row) is loaded and permuted once.

AVX-VNNI targets without AVX-512 (Alder Lake and later clients, Sierra
Forest) take the same kernel on 8-channel blocks: 32-byte operands, the
``{vex} vpdpbusd ymm`` form, and the permutation as LLVM lowers it without
``vpermb`` (a dword permute and a byte shuffle). AVX512-VNNI targets without
VBMI (Cascade Lake) take the 16-channel kernel, its permutation lowered the
same way: ``vpermd`` puts each 128-bit lane's four dwords (4 channels of each
pixel) in place, an in-lane ``vpshufb`` transposes their bytes. One shuffle
more per operand than ``vpermb``, shared by the tile like the permutation:
PP-OCR cls, cascadelake code on one Zen 4 core, depthwise + pad kernels
212 -> 127 us against the tap pairs (docs/performance.md). AVX-512 targets
without VNNI (Skylake-SP) keep the tap pairs; AVX2 targets
:mod:`edgekit.compiler.backends.llvm.depthwise_avx2`.

``u8 x s8``: ``sum((x + 128) * w) = sum(x * w) + 128 * sum(w)``; the second
term is a weight-only constant per channel, subtracted after the sum (lifted
to compile time). Exact for any int8 weights (four products of at most
``255 * 128`` each fit an int32 lane), so outputs are bit-identical with the
generic integer kernels.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.compiler.backends.llvm.intrin import _products, has_feature
from edgekit.compiler.relax_rewrite import is_call, round_up

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = ["BLOCK", "PLACE_BLOCK", "PLACEMENT", "lower_depthwise_vnni", "placed", "schedule_depthwise_vnni", "supported"]

logger = logging.getLogger(__name__)

#: Channels per block: int32 lanes of a zmm register (AVX512-VNNI) or a ymm one (AVX-VNNI).
LANES = 16
#: Kernel taps per lane (products ``vpdpbusd`` adds into one int32).
TAPS = 4
#: Name of the convolution's TE block; the int8 schedule rule finds it by it.
BLOCK = "ek_dw_vnni_depthwise"
#: Accumulators of one register tile, by lanes: 15 int32x16 vectors are 960 bytes (TVM
#: allocates a tile of 1 KiB or more, its ``kMaxStackAlloca``, as a workspace, with a call
#: to allocate and free it per tile); with 16 ymm registers, 10 leave room for the operands.
MAX_ACCUMULATORS = {16: 15, 8: 10}
#: Attribute of the input copy (:func:`_block_func`): ``[top, left, border]``.
PLACEMENT = "edgekit_block_placement"
#: Name of the block that writes the blocked input over the image in the producing kernel
#: (:func:`edgekit.compiler.backends.llvm.depthwise_input.place_func`).
PLACE_BLOCK = "place_interior"


def _intrin(lanes: int) -> str:
    """Registered name of the tensor intrinsic for ``lanes`` channels."""
    return f"edgekit_dw_vpdpbusd_{lanes}x{TAPS}"


def lanes_of(target: tvm.target.Target) -> int:
    """Channels per block for ``target`` (not this machine): 16 with ``vpdpbusd zmm``
    (AVX512-VNNI; the permutation one ``vpermb`` with VBMI, ``vpermd`` + ``vpshufb`` without:
    Cascade Lake), 8 with AVX-VNNI and no AVX-512 (``{vex} vpdpbusd ymm``), 0 without
    either (AVX-512 targets without VNNI keep the tap pairs)."""
    if all(has_feature(target, f) for f in ("avx512vnni", "avx512bw")):
        return 16
    if has_feature(target, "avxvnni") and not has_feature(target, "avx512f"):
        return 8
    return 0


def supported(target: tvm.target.Target) -> bool:
    """True when ``target`` takes this kernel (:func:`lanes_of`)."""
    return lanes_of(target) > 0


# --------------------------------------------------------------------------- #
# The input copy: pad, 16-channel blocks, + 128
# --------------------------------------------------------------------------- #


def _block_func(shape: tuple[int, ...], top: int, left: int, out_hw: tuple[int, int], border: int, lanes: int) -> Any:
    """A PrimFunc ``Y[n, C/16, y, x, 16] = uint8(X[n, y - top, x - left, c] + 128)``, ``border`` (uint8) outside.

    Channels past ``C`` in the last block hold ``border`` too (they meet zero
    weights). A block of ``lanes`` whole channels is one copy; a ragged last
    block is read as the row's last ``lanes`` bytes and shifted into place (rows of
    fewer than ``lanes`` channels are copied byte by byte).
    """
    from tvm.script import tirx as T

    n, h, w, c = shape
    hp, wp = out_hw
    cb = -(-c // lanes)
    full, tail = divmod(c, lanes)
    vec = f"uint8x{lanes}"
    # Lane i of the ragged block is byte (lanes - tail + i) of the row's last lanes.
    shift = [min(lanes - tail + i, lanes - 1) for i in range(lanes)]

    @T.prim_func(private=True, s_tir=True)
    def pad_block(Xs: T.Buffer(shape, "int8"), Ys: T.Buffer((n, cb, hp, wp, lanes), "uint8")) -> None:
        # The placement, for a producer that writes this layout itself (depthwise_input.py).
        T.func_attr({"tirx.noalias": True, "tirx.is_scheduled": True, PLACEMENT: [top, left, border]})
        with T.sblock("root"):
            X = T.decl_buffer((n * h * w * c,), "uint8", data=Xs.data)
            Y = T.decl_buffer((n * cb * hp * wp * lanes,), "uint8", data=Ys.data)
            for nh in T.parallel(n * hp):
                for x in range(wp):
                    # meta_var: expressions, not named scalars (a scalar is a buffer, and inside a
                    # parallel loop TVM takes it from the heap on every iteration: concat.py)
                    b = T.meta_var(nh // hp)
                    y = T.meta_var(nh % hp)
                    if top <= y and y < top + h and left <= x and x < left + w:
                        src = T.meta_var(((b * h + y - top) * w + x - left) * c)
                        for k in range(full):
                            Y[T.ramp(((b * cb + k) * hp + y) * wp * lanes + x * lanes, 1, lanes)] = X.vload(
                                [src + k * lanes], vec
                            ) ^ T.broadcast(T.uint8(128), lanes)
                        if tail > 0 and c >= lanes:
                            last = T.meta_var(X.vload([src + c - lanes], vec) ^ T.broadcast(T.uint8(128), lanes))
                            Y[T.ramp(((b * cb + full) * hp + y) * wp * lanes + x * lanes, 1, lanes)] = T.Select(
                                T.ramp(T.int32(0), 1, lanes) < T.broadcast(T.int32(tail), lanes),
                                T.Shuffle([last], shift),
                                T.broadcast(T.uint8(border), lanes),
                            )
                        if tail > 0 and c < lanes:
                            for i in range(lanes):
                                Y[((b * cb + full) * hp + y) * wp * lanes + x * lanes + i] = T.if_then_else(
                                    i < tail, X[src + T.min(i, tail - 1)] ^ T.uint8(128), T.uint8(border)
                                )
                    else:
                        for k in range(cb):
                            Y[T.ramp(((b * cb + k) * hp + y) * wp * lanes + x * lanes, 1, lanes)] = T.broadcast(
                                T.uint8(border), lanes
                            )

    return pad_block


def placed(sch: Any, acc: Any) -> bool:
    """True when the one consumer of a conv's write-back ``acc`` is the block writing this kernel's blocked
    input over the image (:data:`PLACE_BLOCK`) on the write-back's whole domain: it can become its store."""
    consumers = list(sch.get_consumers(acc))
    if len(consumers) != 1 or sch.get(consumers[0]).name_hint != PLACE_BLOCK:
        return False
    domain = [int(v.dom.extent) for v in sch.get(consumers[0]).iter_vars]
    return domain == [int(d) for d in sch.get(acc).writes[0].source.shape]


# --------------------------------------------------------------------------- #
# The convolution
# --------------------------------------------------------------------------- #


def group_starts(kw: int) -> list[int]:
    """The first kernel column of each group of four taps: ``4g``, the last one
    moved left to end at the kernel's last column (5 columns: 0 and 1), so that
    it reads the same four pixels as the first group of another output."""
    return [min(TAPS * g, max(kw - TAPS, 0)) for g in range(-(-kw // TAPS))]


def _depthwise_vnni(xb: Any, wb: Any, strides: Any, out_hw: Any, last_start: int) -> Any:
    """``y[n, oy, ox, c] = sum xb[n, c/16, oy*sh + ry, ox*sw + s(g) + j, c%16] * wb[c/16, ry, g, c%16, j]``.

    ``xb`` is the blocked uint8 input (:func:`_block_func`), ``wb`` the int8
    weights ``[C/16, KH, G, 16, 4]``, ``s(g) = min(4g, last_start)``
    (:func:`group_starts`); the result is NHWC int32.
    """
    from tvm import te

    n = int(xb.shape[0])
    cb, kh, groups, lanes = (int(v) for v in wb.shape[:4])
    sh, sw = (int(v) for v in strides)
    oh, ow = (int(v) for v in out_hw)
    ry = te.reduce_axis((0, kh), name="ry")
    rg = te.reduce_axis((0, groups), name="rg")
    rj = te.reduce_axis((0, TAPS), name="rj")
    return te.compute(
        (n, oh, ow, cb * lanes),
        lambda nn, yy, xx, cc: te.sum(
            xb[nn, cc // lanes, yy * sh + ry, xx * sw + te.min(rg * TAPS, last_start) + rj, cc % lanes].astype("int32")
            * wb[cc // lanes, ry, rg, cc % lanes, rj].astype("int32"),
            axis=[ry, rg, rj],
        ),
        name=BLOCK,
    )


def _source_pad(x: Any, binding: Any) -> tuple[Any, list[int], float]:
    """``(source, [top, left, bottom, right], value)``: ``x`` itself, or the input of the
    spatial constant pad ``x`` is (the lowering's zero-point pad), merged into the copy."""
    inner = binding(x) if binding is not None else None
    if is_call(inner, "relax.nn.pad") and str(inner.attrs.pad_mode) == "constant":
        p = [int(v) for v in inner.attrs.pad_width]
        src = inner.args[0]
        if len(p) == 8 and p[0] == p[1] == p[6] == p[7] == 0 and str(getattr(src.ty, "dtype", "")) == "int8":
            return src, [p[2], p[4], p[3], p[5]], float(inner.attrs.pad_value)
    return x, [0, 0, 0, 0], 0.0


def lower_depthwise_vnni(b: Any, call: Any, x: Any, w: Any, binding: Any = None, lanes: int = LANES) -> Any | None:
    """The int8 NHWC/HWIO depthwise ``call`` (input ``x``, weights ``w``) as :func:`_depthwise_vnni`.

    Emits the input copy (merging a zero-point pad ``x`` is bound to, looked
    up with ``binding``), the weight transform and the correction; None for
    a dilated kernel.
    """
    from tvm import relax
    from tvm.relax import op as R

    a = call.attrs
    if [int(v) for v in a.dilation] != [1, 1]:
        return None
    kh, kw, _one, c = (int(v) for v in w.ty.shape.values)
    sh, sw = (int(v) for v in a.strides)
    pt, pl, pb, pr = (int(v) for v in a.padding)
    src, (st, sl, sb, sr), value = _source_pad(x, binding) if not any((pt, pl, pb, pr)) else (x, [0] * 4, 0.0)
    n, h, wd, _c = (int(v) for v in src.ty.shape.values)
    top, left = st + pt, sl + pl
    full_h, full_w = h + top + sb + pb, wd + left + sr + pr
    oh, ow = (full_h - kh) // sh + 1, (full_w - kw) // sw + 1
    starts = group_starts(kw)
    cp = round_up(c, lanes)
    out_hw = ((oh - 1) * sh + kh, (ow - 1) * sw + starts[-1] + TAPS)
    border = (int(value) + 128) & 0xFF
    func = _block_func((n, h, wd, c), top, left, out_hw, border, lanes)
    gv = b.add_func(func, "pad_block")
    xb = b.emit(relax.call_tir(gv, [src], relax.TensorType((n, cp // lanes, *out_hw, lanes), "uint8")))
    # Group g's taps: columns s(g) .. s(g) + 3, those an earlier group took (or past
    # the kernel) with weight 0.
    taps = [min(s + j, kw - 1) for s in starts for j in range(TAPS)]
    keep = [int(TAPS * g <= s + j < kw) for g, s in enumerate(starts) for j in range(TAPS)]
    wq = b.emit(R.multiply(R.take(w, relax.const(np.array(taps, "int64")), axis=1, mode="clip"),
                           relax.const(np.array(keep, "int8").reshape(1, -1, 1, 1))))  # fmt: skip
    if cp != c:
        wq = b.emit(R.nn.pad(wq, [0, 0, 0, 0, 0, 0, 0, cp - c]))
    w5 = b.emit(R.reshape(wq, (kh, len(starts), TAPS, cp // lanes, lanes)))
    wb = b.emit(R.permute_dims(w5, [3, 0, 1, 4, 2]))
    y = b.emit(b.call_te(_depthwise_vnni, xb, wb, strides=[sh, sw], out_hw=[oh, ow], last_start=starts[-1],
                         primfunc_name_hint="depthwise_conv2d_vnni"))  # fmt: skip
    wsum = R.sum(R.astype(w, "int32"), axis=[0, 1, 2])
    correction = R.multiply(wsum, relax.const(128, "int32"))
    if cp != c:
        correction = R.nn.pad(correction, [0, cp - c])
    y = b.emit(R.subtract(y, b.emit(correction)))
    return R.strided_slice(y, axes=[3], begin=[0], end=[c]) if cp != c else y


# --------------------------------------------------------------------------- #
# The tensor intrinsic
# --------------------------------------------------------------------------- #


def _step(body: Any, lanes: int) -> Any:
    """``C[16] += sum_j A[j, i] * B[i, j]``: ``A`` four pixels of 16 channels (uint8, 64 contiguous bytes),
    ``B`` each channel's four taps (int8), ``C`` the int32 sums; ``body(A, B, C)`` as a ``T.macro``."""
    from tvm.script import tirx as T

    @T.prim_func(s_tir=True)
    def func(a: T.handle, b: T.handle, c: T.handle) -> None:
        A = T.match_buffer(a, (TAPS, lanes), "uint8", offset_factor=1)
        B = T.match_buffer(b, (lanes, TAPS), "int8", offset_factor=1)
        C = T.match_buffer(c, (lanes,), "int32", offset_factor=1)
        with T.sblock("root"):
            T.reads(C[0:lanes], A[0:TAPS, 0:lanes], B[0:lanes, 0:TAPS])
            T.writes(C[0:lanes])
            body(A, B, C)

    return func


def register_intrinsic(lanes: int = LANES) -> None:
    """Registers the byte permutation + ``vpdpbusd`` step for ``lanes`` channels with TVM (once per process)."""
    if lanes in _REGISTERED:
        return
    from tvm.s_tir import TensorIntrin
    from tvm.script import tirx as T

    # Byte 4i + j of the operand: channel i's pixel j.
    order = [(k % TAPS) * lanes + k // TAPS for k in range(TAPS * lanes)]

    @T.macro
    def vpdpbusd(A: Any, B: Any, C: Any) -> None:
        # One expression: a named intermediate would become a local buffer.
        C[T.ramp(T.int32(0), 1, lanes)] = T.call_llvm_pure_intrin(
            T.llvm_lookup_intrinsic_id(f"llvm.x86.avx512.vpdpbusd.{32 * lanes}"),
            C.vload([0], dtype=f"int32x{lanes}"),
            T.reinterpret(T.Shuffle([A.vload([0, 0], f"uint8x{TAPS * lanes}")], order), dtype=f"int8x{TAPS * lanes}"),
            B.vload([0, 0], dtype=f"int8x{TAPS * lanes}"),
            dtype=f"int32x{lanes}",
        )

    TensorIntrin.register(_intrin(lanes), _step(_products(lanes, TAPS, lambda A, i, j: A[j, i]), lanes),
                          _step(vpdpbusd, lanes))  # fmt: skip
    _REGISTERED.add(lanes)


_REGISTERED: set[int] = set()


# --------------------------------------------------------------------------- #
# The schedule
# --------------------------------------------------------------------------- #


def _divisors(n: int, most: int) -> list[int]:
    return [d for d in range(1, min(n, most) + 1) if n % d == 0]


def choose_tile(oh: int, ow: int, kh: int, starts: list[int], strides: tuple[int, int],
                lanes: int = LANES) -> tuple[int, int]:  # fmt: skip
    """``(rows, cols)`` of output pixels per register tile (16 channels each).

    Tiles must divide the output (``tensorize`` cannot match a block under a
    tail predicate) and keep at most :data:`MAX_ACCUMULATORS`. Among those:
    enough accumulators to hide ``vpdpbusd``'s latency (8), then the fewest
    instructions per output: one ``vpdpbusd`` per tap group and a load and a
    ``vpermb`` per distinct 4-pixel operand of the tile.
    """
    sh, sw = strides
    best: tuple[tuple[float, float], tuple[int, int]] = ((-1.0, 0.0), (1, 1))
    most = MAX_ACCUMULATORS[lanes]
    for r in _divisors(oh, most):
        for q in _divisors(ow, most // r):
            rows = len({i * sh + ry for i in range(r) for ry in range(kh)})
            cols = len({j * sw + s for j in range(q) for s in starts})
            per_output = (2 * rows * cols + r * q * kh * len(starts)) / (r * q)
            key = (min(r * q, 8) / 8.0, -per_output)
            if key > best[0]:
                best = (key, (r, q))
    return best[1]


def _inline_sliced(sch: Any, acc: Any) -> None:
    """Moves an epilogue that slices the padded channels off into the tile's write-back.

    :func:`~edgekit.compiler.backends.llvm.schedule.inline_epilogue` leaves it
    a loop of its own over the whole int32 result (TVM 0.27 drops the row bound
    of a tile that does not divide the rows); here the tile divides rows and
    columns, so the channel bound is the only one, and TVM keeps it.
    """
    consumers = list(sch.get_consumers(acc))
    if len(consumers) == 1:
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception as exc:  # the separate loop stands: exact, one more pass over the result
            logger.debug("sliced epilogue not inlined (%s)", str(exc).splitlines()[0][:200])


def schedule_depthwise_vnni(sch: Any, block: Any) -> None:
    """Register-tiles the :data:`BLOCK` convolution, its epilogue in the write-back, and tensorizes each step."""
    from edgekit.compiler.backends.llvm.schedule import inline_epilogue, loop_extent, schedule_rest

    nn, yy, xx, cc, ry, rg, rj = sch.get_loops(block)
    oh, ow = loop_extent(sch, yy), loop_extent(sch, xx)
    kh, groups = loop_extent(sch, ry), loop_extent(sch, rg)
    stmt = sch.get(block)
    read = next(r for r in stmt.reads if len(r.source.shape) == 5)
    lanes = int(read.source.shape[4])
    register_intrinsic(lanes)
    # Input index yy * sh + ry, xx * sw + s(g) + j; the input is (ow - 1) * sw + s(G - 1) + 4 wide.
    sh, sw = (_coefficient(read.region[d].min, stmt.iter_vars[d - 1].var) for d in (2, 3))
    last_start = int(read.source.shape[3]) - (ow - 1) * sw - TAPS
    starts = group_starts(last_start + TAPS) if groups > 1 else [0]
    rows, cols = choose_tile(oh, ow, kh, starts, (sh, sw), lanes)
    yo, yi = sch.split(yy, factors=[None, rows])
    xo, xi = sch.split(xx, factors=[None, cols])
    co, ci = sch.split(cc, factors=[None, lanes])
    sch.reorder(nn, yo, xo, co, ry, rg, yi, xi, ci, rj)
    fused = sch.fuse(nn, yo, xo, co)
    acc = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(acc, fused, preserve_unit_loops=True)
    inline_epilogue(sch, acc)
    _inline_sliced(sch, acc)
    schedule_rest(sch, lanes, skip=block)
    last = sch.get_loops(acc)[-1]
    ext = loop_extent(sch, last) or 0
    if ext % lanes == 0:
        sch.vectorize(sch.split(last, factors=[None, lanes])[1] if ext > lanes else last)
    for lp in (ry, rg, yi, xi):
        if (loop_extent(sch, lp) or 1) > 1:
            sch.unroll(lp)
    sch.parallel(fused)
    sch.decompose_reduction(block, ry)
    sch.tensorize(ci, _intrin(lanes), preserve_unit_iters=True)


def _coefficient(expr: Any, var: Any) -> int:
    """The factor of ``var`` in the affine ``expr`` (1 where it is not affine in it)."""
    from tvm.sym import detect_linear_equation

    found = detect_linear_equation(expr, [var])
    return int(found[0]) if len(found) else 1
