"""Default schedules for CPU kernels (what :func:`edgekit.compiler.backends.llvm.relax_build.schedule_passes` applies).

TVM 0.27's default CPU pipeline schedules nothing: every kernel is a naive
scalar, single-threaded loop nest, and TVM 0.27 ships no x86/ARM TOPI
schedules any more (dlight's CPU rules cover only GEMV and row reductions).
Two dlight rules here (:class:`Rules`, hand-written for that reason):

* ``CpuTiledReduction`` gives every reduction whose output's innermost axis
  is contiguous a register-blocked micro-kernel: a ``rows x (k * SIMD
  width)`` accumulator tile kept in registers (``cache_write`` to a
  tile-sized buffer), vectorized FMAs over the innermost axis, unrolled
  rows, the reduction loops outside the tile, the elementwise epilogue
  (bias, ReLU, residual add) inlined into the write-back and the outer
  loops parallel;
* ``CpuInjective`` parallelizes and vectorizes everything else.

The helpers (block kinds, epilogue inlining, the rest of a function) are
shared with the int8 dot-product rule of :mod:`edgekit.compiler.backends.llvm.int8`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = ["TILE_BYTES", "schedule_tiled_reduction", "simd_lanes", "vector_registers"]

logger = logging.getLogger(__name__)


def simd_lanes(target: tvm.target.Target, dtype_bits: int = 32) -> int:
    """Number of ``dtype_bits`` lanes in one SIMD register of ``target``.

    ``tvm.target.codegen.llvm_get_vector_width`` answers 512 for every x86 CPU
    in TVM 0.27 (AVX2-only ones included), so x86 is decided by features.
    """
    from tvm.target.codegen import llvm_get_vector_width, target_has_features

    bits = 128
    try:
        if target_has_features("avx512f", target):
            bits = 512
        elif target_has_features("avx2", target) or target_has_features("avx", target):
            bits = 256
        elif "x86" in str(target.attrs.get("mtriple", "x86_64")) or not target.attrs.get("mtriple"):
            bits = 128
        else:
            bits = max(128, min(int(llvm_get_vector_width(target)), 512))
    except Exception:  # a target LLVM does not know: assume 128-bit SIMD
        bits = 128
    return max(1, bits // dtype_bits)




def loop_extent(sch: Any, loop: Any) -> int | None:
    from tvm import tirx

    ext = sch.get(loop).extent
    return int(ext.value) if isinstance(ext, tirx.IntImm) else None


def _iter_var_of(expr: Any, vars_: Sequence[Any]) -> int | None:
    """Index in ``vars_`` of the block iter that ``expr`` is exactly, or None."""
    for i, v in enumerate(vars_):
        if expr.same_as(v):
            return i
    return None


def _is_lane_index(expr: Any, var: Any) -> bool:
    """True if ``expr`` is ``var`` or ``var % k``: the innermost index of a
    channel-blocked weight (``w[f // k, ..., f % k]``) is contiguous in ``var``
    once ``var`` is split by a divisor of ``k``."""
    from tvm import tirx

    if expr.same_as(var):
        return True
    return isinstance(expr, (tirx.FloorMod, tirx.Mod)) and expr.a.same_as(var) and isinstance(expr.b, tirx.IntImm)


def _uses(expr: Any, var: Any) -> bool:
    from tvm.s_tir.dlight.analysis import collect_vars_used_in_prim_expr

    return any(v.same_as(var) for v in collect_vars_used_in_prim_expr(expr))


#: A float accumulator tile of this many bytes or more is not kept in
#: registers: TVM allocates it as a workspace (2 x 8 zmm vectors, 1 KiB, ran
#: YOLOv8n's 3x3 convolutions 2-3x slower than 2 x 5).
TILE_BYTES = 1024


def vector_registers(target: tvm.target.Target) -> int:
    """SIMD registers a register tile may use on ``target``: 32 with AVX-512 (zmm0-31), else 16.

    16 is what AVX2 has; aarch64 has 32 NEON registers, but larger tiles
    were measured only on AVX-512 (ResNet-50's 7x7 layers: 77 -> 91 GMAC/s
    with 2 x 7 tiles instead of 1 x 7).
    """
    from tvm.target.codegen import target_has_features

    try:
        return 32 if target_has_features("avx512f", target) else 16
    except Exception:  # a target LLVM does not know
        return 16


def _tile_efficiency(vectors: int, rows: int, extent: int, registers: int = 16, lanes: int = 8,
                     lane_inputs: bool = False) -> float:  # fmt: skip
    """Estimated FMA-unit utilisation of a ``rows x vectors`` register tile.

    Per reduction step the tile loads ``vectors`` weight vectors and
    broadcasts ``rows`` inputs (2 loads/cycle) and issues ``rows * vectors``
    FMAs (2/cycle, 4-5 cycles latency: fewer than ~10 independent
    accumulators leave the FMA units idle). A tile that does not divide the
    row extent wastes its tail and runs predicated. ``lane_inputs``: the
    input is a vector per lane, not a broadcast (a depthwise conv, a pool):
    each step holds ``vectors`` input vectors and, where the conv's padding
    is inlined, a zero to select -- registers the accumulators cannot have
    (:func:`choose_tile`).
    """
    acc = rows * vectors
    if acc + vectors + (vectors + 3 if lane_inputs else 1) > registers:  # would spill
        return 0.0
    if acc * lanes * 4 >= TILE_BYTES:
        return 0.0
    cycles = max(5.0, acc / 2.0, (vectors + rows) / 2.0)
    eff = acc / (2.0 * cycles)
    tiles = -(-extent // rows)
    if tiles * rows != extent:
        eff *= 0.85 * extent / (tiles * rows)
    return eff


def fallback_vector_width(vec_align: int, widest: int) -> int:
    """The vector tile :func:`choose_tile` falls back to: the largest divisor of ``vec_align`` up to ``widest``.

    Except where that divisor is not a power of two and 8 divides ``vec_align``:
    then 8 lanes (a ymm vector of AVX-512 targets). 88, 200 or 104 channels
    with AVX-512's 16 lanes took 11-, 10- and 13-lane tiles (masked, slow), and
    :func:`~edgekit.compiler.backends.llvm.layout._depthwise_whole_vectors` padded
    such depthwise layers to whole zmm vectors instead; that pad is a kernel of its
    own (the spatial padding too, no longer inlined), and PP-OCR cls's fp32 build
    ran slower in znver4 code than in haswell code (0.495 against 0.420 ms). On 8
    lanes those layers run as in AVX2 code (tests/unit/test_fallback_width.py).
    """
    widest_divisor = max(d for d in range(1, widest + 1) if vec_align % d == 0)
    if widest_divisor > 8 and widest_divisor & (widest_divisor - 1) and vec_align % 8 == 0:
        return 8
    return widest_divisor


def choose_tile(vec_ext: int, row_ext: int, lanes: int, vec_align: int, registers: int = 16,
                lane_inputs: bool = False) -> tuple[int, int]:  # fmt: skip
    """Picks ``(vector-axis tile, row tile)`` for the micro-kernel.

    Args:
        vec_ext: Extent of the innermost (vectorized) output axis.
        row_ext: Extent of the row axis (1 if none).
        lanes: SIMD lanes.
        vec_align: The vector tile must divide this (the channels per group
            of a grouped convolution; ``vec_ext`` otherwise), so one vector
            never straddles two groups.
        registers: SIMD registers (:func:`vector_registers`).
        lane_inputs: The input is read per lane (a depthwise conv or a pool:
            its channel is the output's), so each step also holds one input
            vector per tile vector and a zero for the inlined padding. Without
            counting them, PP-OCR cls's fp32 5x5 depthwise convs got 6 x 16
            tiles in haswell code (12 accumulators): LLVM kept 6 of them on the
            stack, reloading and storing them in the tap loop, and those
            kernels took 1-3x their time depending on the process.
    """
    best = (0.0, min(vec_ext, lanes), 1)
    for vectors in (2, 1):
        vec_in = vectors * lanes
        if vec_in > vec_ext or vec_align % vec_in:
            continue
        for rows in range(1, min(row_ext, 12) + 1):
            eff = _tile_efficiency(vectors, rows, row_ext, registers, lanes, lane_inputs)
            if eff > best[0]:
                best = (eff, vec_in, rows)
    if best[0] == 0.0:
        # Narrow output (fewer channels than a vector) or odd group sizes:
        # the largest divisor of the alignment that fits in one vector.
        vec_in = fallback_vector_width(vec_align, min(vec_ext, lanes))
        rows = max(d for d in range(1, min(row_ext, 8) + 1) if row_ext % d == 0)
        return vec_in, rows
    return best[1], best[2]


def _group_alignment(stmt: Any, vec_var: Any, vec_ext: int) -> int:
    """Channels per group when an input index is ``vec // k * k + ...`` (grouped conv)."""
    from tvm import tirx

    align = vec_ext

    def visit(node: Any) -> None:
        nonlocal align
        if isinstance(node, (tirx.FloorDiv, tirx.Div)) and _uses(node.a, vec_var):
            if isinstance(node.b, tirx.IntImm):
                k = int(node.b.value)
                if k > 1:
                    align = int(np.gcd(align, k))
        if isinstance(node, (tirx.FloorMod, tirx.Mod)) and _uses(node.a, vec_var):
            if isinstance(node.b, tirx.IntImm) and int(node.b.value) > 1:
                align = int(np.gcd(align, int(node.b.value)))

    import tvm_ffi

    for region in stmt.reads:
        for rng in region.region:
            tvm_ffi.structural_walk(rng.min, ((tirx.FloorDiv, tirx.Div, tirx.FloorMod, tirx.Mod), visit), order="post")
    return align


class Rules:
    """Lazily builds the dlight rule classes (dlight imports TVM)."""

    _cache: dict[str, Any] = {}

    @classmethod
    def get(cls) -> dict[str, Any]:
        if cls._cache:
            return cls._cache
        from tvm import s_tir, tirx
        from tvm.s_tir import dlight

        class CpuTiledReduction(dlight.ScheduleRule):
            """Register-blocked micro-kernel for conv/matmul/pool-like reductions.

            Hand-written: TVM 0.27 has no untuned CPU schedule for these (the
            x86 TOPI schedules are gone, dlight ``cpu`` only has GEMV and row
            reductions); MetaSchedule's ``MultiLevelTiling`` explores the same
            structure when tuning, this rule fixes it to one good point.
            """

            def apply(self, func: Any, target: Any, tunable: bool) -> Any:
                if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
                    return None
                sch = s_tir.Schedule(func)
                anchor = _find_anchor(sch)
                if anchor is None:
                    return None
                try:
                    lanes = simd_lanes(target)
                    _schedule_tiled_reduction(sch, anchor, lanes, vector_registers(target), lane_budget=lanes == 8)
                    schedule_rest(sch, simd_lanes(target), skip=anchor)
                except Exception as exc:  # a pattern the rule misjudged: let the next rule try
                    logger.debug("CpuTiledReduction gave up on a function: %s", exc)
                    return None
                return sch

        class CpuInjective(dlight.ScheduleRule):
            """Parallel + vectorized loops for every other function (fallback)."""

            def apply(self, func: Any, target: Any, tunable: bool) -> Any:
                if not isinstance(func, tirx.PrimFunc) or target.kind.name != "llvm":
                    return None
                sch = s_tir.Schedule(func)
                try:
                    _inline_spatial(sch)
                    schedule_rest(sch, simd_lanes(target), skip=None)
                except Exception as exc:
                    logger.debug("CpuInjective gave up on a function: %s", exc)
                    return None
                return sch

        cls._cache = {"CpuTiledReduction": CpuTiledReduction, "CpuInjective": CpuInjective}
        return cls._cache


def _root_blocks(sch: Any) -> list[Any]:
    from tvm.s_tir.dlight.analysis import get_root_block

    return list(sch.get_child_blocks(get_root_block(sch)))


def block_kinds(sch: Any, block: Any) -> str:
    from tvm import tirx

    kinds = ""
    for iv in sch.get(block).iter_vars:
        if iv.iter_type == tirx.IterVar.DataPar:
            kinds += "S"
        elif iv.iter_type == tirx.IterVar.CommReduce:
            kinds += "R"
        else:
            kinds += "O"
    return kinds


def _find_anchor(sch: Any) -> Any | None:
    """The reduction block to micro-kernel, or None if the function has none that fits.

    It must be the only reduction of the function, have one loop per block
    iter, and its innermost output axis must be a spatial iter that is also the
    innermost axis of one of its inputs (contiguous vector loads).
    """
    anchor = None
    for block in _root_blocks(sch):
        kinds = block_kinds(sch, block)
        if "R" not in kinds:
            continue
        if anchor is not None or "O" in kinds:
            return None
        anchor = block
    if anchor is None:
        return None
    stmt = sch.get(anchor)
    if len(stmt.writes) != 1 or len(sch.get_loops(anchor)) != len(stmt.iter_vars):
        return None
    ivars = [iv.var for iv in stmt.iter_vars]
    kinds = block_kinds(sch, anchor)
    out_idx = [r.min for r in stmt.writes[0].region]
    if not out_idx:
        return None
    vec = _iter_var_of(out_idx[-1], ivars)
    if vec is None or kinds[vec] != "S":
        return None
    if not any(len(r.region) and _is_lane_index(r.region[-1].min, ivars[vec]) for r in stmt.reads):
        return None
    # Loops must be bound one-to-one, in order, to the block iters.
    for loop, iv in zip(sch.get_loops(anchor), stmt.iter_vars):
        if loop_extent(sch, loop) is None:
            return None
    return anchor


def schedule_tiled_reduction(sch: Any, lanes: int, registers: int = 16) -> bool:
    """Register-tiles the function's one reduction (:class:`CpuTiledReduction`) with ``lanes`` output lanes.

    For callers that vectorize wider than the output type's SIMD width (e.g.
    int32 outputs of int16 products, 16 lanes on AVX2); ``registers`` then
    counts accumulators, not registers. False if the function has no such
    reduction.
    """
    anchor = _find_anchor(sch)
    if anchor is None:
        return False
    _schedule_tiled_reduction(sch, anchor, lanes, registers)
    schedule_rest(sch, lanes, skip=anchor)
    return True


def _schedule_tiled_reduction(sch: Any, block: Any, lanes: int, registers: int = 16, lane_budget: bool = False) -> None:
    """Tiles ``block`` into a register micro-kernel (see :class:`CpuTiledReduction`).

    ``lane_budget``: count a per-lane input's registers (:func:`choose_tile`'s
    ``lane_inputs``) -- on AVX2-class targets (8 float lanes, 16 registers),
    where it was measured.
    """
    stmt = sch.get(block)
    ivars = [iv.var for iv in stmt.iter_vars]
    kinds = block_kinds(sch, block)
    out_idx = [r.min for r in stmt.writes[0].region]
    vec = _iter_var_of(out_idx[-1], ivars)
    row = _iter_var_of(out_idx[-2], ivars) if len(out_idx) >= 2 else None
    if row is not None and kinds[row] != "S":
        row = None

    # Inline pure copies / padding into the kernel: the padding predicate is
    # loop-invariant for the vector axis and cheaper than another pass over
    # the input.
    for producer in sch.get_producers(block):
        try:
            sch.compute_inline(producer)
        except Exception:
            pass

    loops = sch.get_loops(block)
    extents = [loop_extent(sch, lp) for lp in loops]
    vec_ext = extents[vec]
    align = _group_alignment(sch.get(block), ivars[vec], vec_ext)
    vec_in, rows_in = choose_tile(vec_ext, extents[row] if row is not None else 1, lanes, align, registers,
                                  lane_inputs=lane_budget and _lane_inputs(stmt, ivars, vec, kinds))  # fmt: skip

    vec_out, vec_inner = sch.split(loops[vec], factors=[None, vec_in])
    if row is not None:
        row_out, row_inner = sch.split(loops[row], factors=[None, rows_in])
    spatial_outer = []
    for i, lp in enumerate(loops):
        if kinds[i] != "S":
            continue
        if i == vec:
            spatial_outer.append(vec_out)
        elif i == row:
            spatial_outer.append(row_out)
        else:
            spatial_outer.append(lp)
    if _weights_dominate(sch.get(block), ivars, vec, kinds):
        # Channel blocks outermost: each thread walks all output pixels of one
        # weight slice while it is in cache, instead of streaming every weight
        # from memory once per output row (ResNet-50's 7x7x512 3x3 conv was
        # memory-bound at a quarter of FMA peak with the pixel-major order).
        spatial_outer.remove(vec_out)
        spatial_outer.insert(0, vec_out)
    reduction = [lp for i, lp in enumerate(loops) if kinds[i] == "R"]
    inner = ([row_inner] if row is not None else []) + [vec_inner]
    sch.reorder(*spatial_outer, *reduction, *inner)
    outer = sch.fuse(*spatial_outer) if len(spatial_outer) > 1 else spatial_outer[0]

    # Accumulate into a tile-sized buffer LLVM keeps in registers.
    acc = sch.cache_write(block, 0, "global")
    sch.reverse_compute_at(acc, outer, preserve_unit_loops=True)
    # Epilogue (bias, activation, residual add) goes into the write-back:
    # intermediate elementwise blocks are inlined into their consumers first
    # (as MetaSchedule's AutoInline does), then the one block left that writes
    # the output is inlined into the write-back.
    inline_epilogue(sch, acc)
    acc_loops = sch.get_loops(acc)[1:]
    if acc_loops:
        wb_inner = acc_loops[-1]
        ext = loop_extent(sch, wb_inner)
        # The tile's own width where it is narrower than the target's vectors
        # (8-lane tiles of AVX-512 targets, fallback_vector_width): a scalar
        # write-back made PP-OCR cls's 24- and 40-channel fp32 depthwise
        # kernels take twice their haswell-code time in znver4 code.
        step = 0
        if ext and ext % lanes == 0:
            step = lanes
        elif ext and vec_in >= 8 and ext % vec_in == 0:
            step = vec_in
        if step:
            if ext > step:
                wb_inner = sch.split(wb_inner, factors=[None, step])[1]
            sch.vectorize(wb_inner)

    # Vectorize/unroll before decomposing the reduction: afterwards the update
    # block is no longer a "reduction block" and vectorize refuses it.
    sch.vectorize(vec_inner)
    if row is not None and rows_in > 1:
        sch.unroll(row_inner)
    sch.parallel(outer)
    if reduction:
        sch.decompose_reduction(block, reduction[0])


def _buffer_bytes(buf: Any) -> int:
    n = 1
    for d in buf.shape:
        n *= int(d)
    return n * ((int(buf.dtype.bits) * int(buf.dtype.lanes) + 7) // 8)


def _lane_inputs(stmt: Any, ivars: Sequence[Any], vec: int, kinds: str) -> bool:
    """True for a depthwise conv: a read indexed by the output channel (its last axis) *and* an
    output pixel (the input, a vector per tile lane instead of a broadcast) beside a per-channel
    weight. Pools (no weight vectors to hold) keep the dense budget: SqueezeNet's fp32 max pools
    in haswell code ran 1-1.5 % slower with the smaller tiles."""
    pixels = [v for i, v in enumerate(ivars) if kinds[i] == "S" and i != vec]
    per_lane = weights = False
    for region in stmt.reads:
        if region.source.same_as(stmt.writes[0].source) or not region.region:
            continue
        # ``f + rc`` (a depthwise conv's unit channel reduction) counts: the lane's own channel.
        if _uses(region.region[-1].min, ivars[vec]):
            if any(_uses(r.min, v) for r in region.region[:-1] for v in pixels):
                per_lane = True
            else:
                weights = True
    return per_lane and weights


def _weights_dominate(stmt: Any, ivars: Sequence[Any], vec: int, kinds: str) -> bool:
    """True if the reads indexed by the output channel (weights) outweigh the others (activations).

    A read indexed by the output channel *and* an output pixel (a pool's or a
    depthwise conv's input) is an activation: with the channel blocks
    outermost, the threads would split each pixel's channels between them and
    write the same cache lines (PP-OCR det int8's 2 x 2 max pool, 12-byte
    channel blocks: 43 us on one Zen 5 core, 458 us on two).
    """
    pixels = [v for i, v in enumerate(ivars) if kinds[i] == "S" and i != vec]
    weights = data = 0
    for region in stmt.reads:
        if region.source.same_as(stmt.writes[0].source):
            continue
        try:
            size = _buffer_bytes(region.source)
        except TypeError:  # symbolic shape
            return False
        by_pixel = any(_uses(r.min, v) for r in region.region[:-1] for v in pixels)
        if region.region and _is_lane_index(region.region[-1].min, ivars[vec]) and not by_pixel:
            weights += size
        else:
            data += size
    return weights > data


def inline_epilogue(sch: Any, acc: Any) -> None:
    out_blocks = [sch.get(b).name_hint for b in sch.get_output_blocks(_root_sref_block(sch))]
    for block in list(_downstream(sch, acc)):
        name = sch.get(block).name_hint
        if name in out_blocks:
            continue
        try:
            sch.compute_inline(block)
        except Exception:
            return
    from edgekit.compiler.backends.llvm.tap_fusion import inline_tap_chains

    inline_tap_chains(sch, acc)  # first: the write-back can take the epilogue only once they are inlined
    consumers = list(sch.get_consumers(acc))
    if len(consumers) == 1 and _same_write_shape(sch, acc, consumers[0]):
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:
            pass


def _same_write_shape(sch: Any, a: Any, b: Any) -> bool:
    """True if blocks ``a`` and ``b`` write buffers of the same shape.

    An epilogue that also slices (the channel padding of
    :func:`block_weights_pass`) is not inlined into the write-back: TVM 0.27's
    ``reverse_compute_inline`` then keeps only the channel bound of the
    write-back's predicate and drops the row bound of a tile that does not
    divide the rows, writing past the end of the output (heap corruption,
    found on SqueezeNet's 13x13 classifier).
    """
    sa = [int(d) for d in sch.get(a).writes[0].source.shape]
    sb = [int(d) for d in sch.get(b).writes[0].source.shape]
    return sa == sb


def _root_sref_block(sch: Any) -> Any:
    from tvm.s_tir.dlight.analysis import get_root_block

    return get_root_block(sch)


def _downstream(sch: Any, block: Any) -> list[Any]:
    """Blocks reachable from ``block`` through consumer edges, in program order."""
    seen: list[str] = []
    todo = list(sch.get_consumers(block))
    while todo:
        b = todo.pop(0)
        name = sch.get(b).name_hint
        if name in seen:
            continue
        seen.append(name)
        todo.extend(sch.get_consumers(b))
    order = [sch.get(b).name_hint for b in _root_blocks(sch)]
    return [sch.get_sblock(n) for n in order if n in seen]


def _inline_spatial(sch: Any) -> None:
    """Inlines every spatial (elementwise/injective) block that is not an output into its consumers.

    A fused function such as ``transpose -> reshape -> add -> relu ->
    transpose`` then makes one pass over memory instead of writing and
    re-reading an intermediate per operator (what MetaSchedule's AutoInline
    does when tuning).
    """
    outputs = {sch.get(b).name_hint for b in sch.get_output_blocks(_root_sref_block(sch))}
    for block in _root_blocks(sch):
        if sch.get(block).name_hint in outputs or "R" in block_kinds(sch, block):
            continue
        feeds_reduction = any("R" in block_kinds(sch, c) for c in sch.get_consumers(block))
        if feeds_reduction and not _is_copy(sch.get(block)):
            # e.g. softmax's exp: inlined into the sum it would be recomputed
            # there and again in the normalization, in a scalar loop.
            continue
        try:
            sch.compute_inline(block)
        except Exception:  # not inlinable (e.g. read by a reduction at several points): keep it
            pass


def _is_copy(stmt: Any) -> bool:
    """True if a block only copies (possibly padding with a constant): cheap to recompute anywhere."""
    import tvm
    from tvm import tirx

    value = stmt.body.value if isinstance(stmt.body, tirx.BufferStore) else None
    if isinstance(value, tvm.ir.Call) and isinstance(value.op, tvm.ir.Op) and value.op.name.endswith("if_then_else"):
        value = value.args[1]
    return isinstance(value, tvm.ir.TensorLoad)


def _vectorize_row_reduction(sch: Any, block: Any, lanes: int) -> bool:
    """Vectorizes a reduction over the innermost loop with ``rfactor``.

    ``sum/max over k`` becomes ``lanes`` partial results kept in one vector
    (``k = ko * lanes + ki``, ``ki`` vectorized) and a short final reduction;
    LLVM cannot do this itself without reassociating float math. Returns False
    (schedule untouched) when the block does not have that shape.
    """
    loops = sch.get_loops(block)
    kinds = block_kinds(sch, block)
    if kinds.count("R") != 1 or kinds[-1] != "R" or len(loops) != len(kinds):
        return False
    ext = loop_extent(sch, loops[-1])
    if ext is None or ext < 4 * lanes or ext % lanes:
        return False
    spatial = loops[:-1]
    _ko, ki = sch.split(loops[-1], factors=[None, lanes])
    rf = sch.rfactor(ki, factor_axis=len(spatial))
    rf_loops = sch.get_loops(rf)
    # rf block loops: spatial..., ko, ki (ki became spatial): put ki innermost, vectorize.
    sch.reorder(*rf_loops[: len(spatial)], rf_loops[-2], rf_loops[-1])
    sch.vectorize(sch.get_loops(rf)[-1])
    if spatial:
        outer = sch.get_loops(rf)[: len(spatial)]
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        sch.parallel(fused)
        wb = sch.get_loops(block)[: len(spatial)]
        fused_wb = sch.fuse(*wb) if len(wb) > 1 else wb[0]
        sch.parallel(fused_wb)
    return True


def _reads_per_channel(stmt: Any, loops: int) -> bool:
    """True when the elementwise ``stmt`` (one loop per iter) reads a buffer indexed by its last
    iter but not by every other iter of extent above one: a per-channel operand such as a
    squeeze-excite gate ``g[n, 0, 0, c]``.

    Measured (issue #14, haswell code on one Zen 5 core): PP-OCR cls's int8 squeeze-excite
    multiplies, 200 channels as 25 vectors of 8, ran with the channel block fused into the pixel
    loop; the gate's address was ``(fused % 25) * 8``, about 10 scalar instructions per 8 values.
    """
    from tvm import tirx

    ivars = list(stmt.iter_vars)
    if not isinstance(stmt.body, tirx.BufferStore) or len(ivars) != loops or not ivars:
        return False
    outer = [iv.var for iv in ivars[:-1] if not (isinstance(iv.dom.extent, tirx.IntImm) and int(iv.dom.extent) == 1)]
    for region in stmt.reads:
        index = [r.min for r in region.region]
        if any(_uses(e, ivars[-1].var) for e in index) and not all(any(_uses(e, v) for e in index) for v in outer):
            return True
    return False


def schedule_rest(sch: Any, lanes: int, skip: Any | None) -> None:
    """Parallelizes and vectorizes every root block except ``skip``.

    Spatial blocks: outer loops fused and parallel, the innermost loop
    vectorized. Reduction blocks: spatial loops parallel, reductions inside.
    """

    from edgekit.compiler.backends.llvm.grouped import split_channel_runs

    skip_name = sch.get(skip).name_hint if skip is not None else None
    for block in _root_blocks(sch):
        stmt = sch.get(block)
        if stmt.name_hint == skip_name:
            continue
        loops = sch.get_loops(block)
        if not loops:
            continue
        kinds = block_kinds(sch, block)
        if len(loops) != len(kinds) or "O" in kinds:
            continue
        spatial = [lp for lp, k in zip(loops, kinds) if k == "S"]
        if not spatial:
            continue
        if "R" in kinds:
            trial = sch.copy()  # rfactor may refuse half-way: try on a copy first
            try:
                ok = _vectorize_row_reduction(trial, trial.get_sblock(stmt.name_hint), lanes)
            except Exception as exc:
                logger.debug("row reduction not vectorized: %s", exc)
                ok = False
            if ok:
                _vectorize_row_reduction(sch, block, lanes)
                continue
            red = [lp for lp, k in zip(loops, kinds) if k == "R"]
            sch.reorder(*spatial, *red)
            fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
            sch.parallel(fused)
            continue
        per_channel = _reads_per_channel(stmt, len(spatial))
        spatial = split_channel_runs(sch, block, spatial, lanes)  # grouped-conv slices, channel shuffles
        last = spatial[-1]
        ext = loop_extent(sch, last)
        outer = spatial[:-1]
        tail = 0
        if ext is not None and ext >= 2 * lanes:
            tail = ext % lanes
            if not tail:
                o, last = sch.split(last, factors=[None, lanes])
                # Fused with the pixels, the vector step's channel block of a
                # per-channel operand is a modulo of the fused index per step.
                outer = outer if per_channel else outer + [o]
                sch.vectorize(last)
        elif ext is not None and ext >= 2 and ext <= lanes * 2:
            sch.vectorize(last)
        if outer:
            fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
            sch.parallel(fused)
        if tail:
            # A split that does not divide the extent puts a predicate inside
            # the vector loop and LLVM scalarizes it: peel the tail instead.
            main, rest = sch.loop_partition(last, [ext - tail, None])
            sch.vectorize(sch.split(main, factors=[None, lanes])[1])
            if tail >= 4 and not tail & (tail - 1):
                sch.vectorize(rest)  # a narrower vector (200 channels: 12 x 16 + 8), not scalars
