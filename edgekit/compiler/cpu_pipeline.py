"""A Relax pipeline for CPUs that gives fast code without tuning.

TVM 0.27's default CPU pipeline (``relax.backend.cpu_generic``) legalizes and
fuses operators but schedules nothing: every kernel is a naive scalar,
single-threaded loop nest. TVM 0.27 ships no x86/ARM TOPI schedules any more,
dlight's CPU rules cover only GEMV and row reductions, and the wheel has no
BLAS/DNNL BYOC. So this module builds the missing pieces from TVM's own
machinery:

* **Layout**: ``relax.transform.ConvertLayout`` rewrites every ``conv2d`` to
  NHWC activations / HWIO weights, so the output channel -- a multiple of the
  SIMD width in nearly every model -- is the innermost, contiguous axis of both
  the output and the weights. The weight transposes this inserts (and every
  other computation that depends only on weights) are split out with
  ``relax.transform.LiftTransformParams`` and run once at compile time on the
  parameters (weights stay run-time arguments, never LLVM constants).
* **Schedules**: a dlight :class:`ScheduleRule` (:class:`CpuTiledReduction`,
  hand-written because TVM 0.27 has no untuned CPU schedule for convolutions
  or matrix products) gives every reduction whose output's innermost axis is
  contiguous a register-blocked micro-kernel: a ``rows x (k * SIMD width)``
  accumulator tile kept in registers (``cache_write`` to a tile-sized local
  buffer), vectorized FMAs over the innermost axis, unrolled rows, the
  reduction loops outside the tile, the elementwise epilogue (bias, ReLU,
  residual add) inlined into the write-back and the outer loops parallel.
  dlight's own ``cpu.Reduction`` handles softmax/normalization and
  :class:`CpuInjective` parallelizes and vectorizes everything else.
* **Tuning**: a kernel with a record in a MetaSchedule database (see
  :mod:`edgekit.compiler.tuning`) is taken from it before the default rules
  run, if the record measured clearly faster than the default schedule
  (:func:`apply_database`).

Entry point: :func:`build_cpu`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.core.errors import CompileError

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = [
    "CONV_LAYOUTS",
    "CpuBuild",
    "build_cpu",
    "apply_database",
    "default_schedule",
    "import_onnx",
    "prepare_cpu_module",
    "schedule_passes",
    "set_num_threads",
    "simd_lanes",
    "vector_registers",
]

logger = logging.getLogger(__name__)

#: Desired layouts for ``relax.transform.ConvertLayout``: activations NHWC,
#: weights HWIO, so the output channel is innermost in output and weights.
#: conv2d_transpose is pinned to NCHW/IOHW: ConvertLayout would otherwise make
#: it NHWC too, which TOPI cannot legalize (the VM then fails on the raw op).
CONV_LAYOUTS: dict[str, list[str]] = {
    "relax.nn.conv2d": ["NHWC", "HWIO"],
    "relax.nn.conv2d_transpose": ["NCHW", "IOHW"],
}

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


# --------------------------------------------------------------------------- #
# Schedule rules
# --------------------------------------------------------------------------- #


def _extent(sch: Any, loop: Any) -> int | None:
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


def _tile_efficiency(vectors: int, rows: int, extent: int, registers: int = 16, lanes: int = 8) -> float:
    """Estimated FMA-unit utilisation of a ``rows x vectors`` register tile.

    Per reduction step the tile loads ``vectors`` weight vectors and
    broadcasts ``rows`` inputs (2 loads/cycle) and issues ``rows * vectors``
    FMAs (2/cycle, 4-5 cycles latency: fewer than ~10 independent
    accumulators leave the FMA units idle). A tile that does not divide the
    row extent wastes its tail and runs predicated.
    """
    acc = rows * vectors
    if acc + vectors + 1 > registers:  # would spill
        return 0.0
    if acc * lanes * 4 >= TILE_BYTES:
        return 0.0
    cycles = max(5.0, acc / 2.0, (vectors + rows) / 2.0)
    eff = acc / (2.0 * cycles)
    tiles = -(-extent // rows)
    if tiles * rows != extent:
        eff *= 0.85 * extent / (tiles * rows)
    return eff


def _choose_tile(vec_ext: int, row_ext: int, lanes: int, vec_align: int, registers: int = 16) -> tuple[int, int]:
    """Picks ``(vector-axis tile, row tile)`` for the micro-kernel.

    Args:
        vec_ext: Extent of the innermost (vectorized) output axis.
        row_ext: Extent of the row axis (1 if none).
        lanes: SIMD lanes.
        vec_align: The vector tile must divide this (the channels per group
            of a grouped convolution; ``vec_ext`` otherwise), so one vector
            never straddles two groups.
        registers: SIMD registers (:func:`vector_registers`).
    """
    best = (0.0, min(vec_ext, lanes), 1)
    for vectors in (2, 1):
        vec_in = vectors * lanes
        if vec_in > vec_ext or vec_align % vec_in:
            continue
        for rows in range(1, min(row_ext, 12) + 1):
            eff = _tile_efficiency(vectors, rows, row_ext, registers, lanes)
            if eff > best[0]:
                best = (eff, vec_in, rows)
    if best[0] == 0.0:
        # Narrow output (fewer channels than a vector) or odd group sizes:
        # the largest divisor of the alignment that fits in one vector.
        vec_in = max(d for d in range(1, min(vec_ext, lanes) + 1) if vec_align % d == 0)
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


class _Rules:
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
                    _schedule_tiled_reduction(sch, anchor, simd_lanes(target), vector_registers(target))
                    _schedule_rest(sch, simd_lanes(target), skip=anchor)
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
                    _schedule_rest(sch, simd_lanes(target), skip=None)
                except Exception as exc:
                    logger.debug("CpuInjective gave up on a function: %s", exc)
                    return None
                return sch

        cls._cache = {"CpuTiledReduction": CpuTiledReduction, "CpuInjective": CpuInjective}
        return cls._cache


def _root_blocks(sch: Any) -> list[Any]:
    from tvm.s_tir.dlight.analysis import get_root_block

    return list(sch.get_child_blocks(get_root_block(sch)))


def _block_kinds(sch: Any, block: Any) -> str:
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
        kinds = _block_kinds(sch, block)
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
    kinds = _block_kinds(sch, anchor)
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
        if _extent(sch, loop) is None:
            return None
    return anchor


def _schedule_tiled_reduction(sch: Any, block: Any, lanes: int, registers: int = 16) -> None:
    """Tiles ``block`` into a register micro-kernel (see :class:`CpuTiledReduction`)."""
    stmt = sch.get(block)
    ivars = [iv.var for iv in stmt.iter_vars]
    kinds = _block_kinds(sch, block)
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
    extents = [_extent(sch, lp) for lp in loops]
    vec_ext = extents[vec]
    align = _group_alignment(sch.get(block), ivars[vec], vec_ext)
    vec_in, rows_in = _choose_tile(vec_ext, extents[row] if row is not None else 1, lanes, align, registers)

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
    if _weights_dominate(sch.get(block), ivars, vec):
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
    _inline_epilogue(sch, acc)
    acc_loops = sch.get_loops(acc)[1:]
    if acc_loops:
        wb_inner = acc_loops[-1]
        ext = _extent(sch, wb_inner)
        if ext and ext % lanes == 0:
            if ext > lanes:
                wb_inner = sch.split(wb_inner, factors=[None, lanes])[1]
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


def _weights_dominate(stmt: Any, ivars: Sequence[Any], vec: int) -> bool:
    """True if the reads indexed by the output channel (weights) outweigh the others (activations)."""
    weights = data = 0
    for region in stmt.reads:
        if region.source.same_as(stmt.writes[0].source):
            continue
        try:
            size = _buffer_bytes(region.source)
        except TypeError:  # symbolic shape
            return False
        if region.region and _is_lane_index(region.region[-1].min, ivars[vec]):
            weights += size
        else:
            data += size
    return weights > data


def _inline_epilogue(sch: Any, acc: Any) -> None:
    out_blocks = [sch.get(b).name_hint for b in sch.get_output_blocks(_root_sref_block(sch))]
    for block in list(_downstream(sch, acc)):
        name = sch.get(block).name_hint
        if name in out_blocks:
            continue
        try:
            sch.compute_inline(block)
        except Exception:
            return
    consumers = list(sch.get_consumers(acc))
    if len(consumers) == 1 and _same_write_shape(sch, acc, consumers[0]):
        try:
            sch.reverse_compute_inline(consumers[0])
        except Exception:
            pass


def _same_write_shape(sch: Any, a: Any, b: Any) -> bool:
    """True if blocks ``a`` and ``b`` write buffers of the same shape.

    An epilogue that also slices (the channel padding of
    :func:`_block_weights_pass`) is not inlined into the write-back: TVM 0.27's
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
        if sch.get(block).name_hint in outputs or "R" in _block_kinds(sch, block):
            continue
        feeds_reduction = any("R" in _block_kinds(sch, c) for c in sch.get_consumers(block))
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
    kinds = _block_kinds(sch, block)
    if kinds.count("R") != 1 or kinds[-1] != "R" or len(loops) != len(kinds):
        return False
    ext = _extent(sch, loops[-1])
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


def _schedule_rest(sch: Any, lanes: int, skip: Any | None) -> None:
    """Parallelizes and vectorizes every root block except ``skip``.

    Spatial blocks: outer loops fused and parallel, the innermost loop
    vectorized. Reduction blocks: spatial loops parallel, reductions inside.
    """

    from edgekit.compiler.cpu_grouped import split_channel_runs

    skip_name = sch.get(skip).name_hint if skip is not None else None
    for block in _root_blocks(sch):
        stmt = sch.get(block)
        if stmt.name_hint == skip_name:
            continue
        loops = sch.get_loops(block)
        if not loops:
            continue
        kinds = _block_kinds(sch, block)
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
        spatial = split_channel_runs(sch, block, spatial, lanes)  # grouped-conv slices, channel shuffles
        last = spatial[-1]
        ext = _extent(sch, last)
        outer = spatial[:-1]
        tail = 0
        if ext is not None and ext >= 2 * lanes:
            tail = ext % lanes
            if not tail:
                o, last = sch.split(last, factors=[None, lanes])
                outer = outer + [o]
                sch.vectorize(last)
        elif ext is not None and ext >= 2 and ext <= lanes * 2:
            sch.vectorize(last)
        if outer:
            fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
            sch.parallel(fused)
        if tail:
            # A split that does not divide the extent puts a predicate inside
            # the vector loop and LLVM scalarizes it: peel the tail instead.
            main, _rest = sch.loop_partition(last, [ext - tail, None])
            sch.vectorize(sch.split(main, factors=[None, lanes])[1])


def default_schedule(func: Any, target: tvm.target.Target) -> Any | None:
    """The schedule :func:`schedule_passes` gives one unscheduled PrimFunc (traced), or None.

    Tuning measures it first and stores it as a record, so a kernel is only
    taken from the database if the search beat this schedule.
    """
    from edgekit.compiler.cpu_int8 import dot_schedule_rule

    rules = _Rules.get()
    for rule in (dot_schedule_rule(), rules["CpuTiledReduction"](), rules["CpuInjective"]()):
        sch = rule.apply(func, target, False)
        if sch is not None:
            return sch
    return None


def schedule_passes(target: tvm.target.Target) -> list[Any]:
    """The default scheduling passes (functions already scheduled, e.g. from a database, are kept)."""
    from tvm.s_tir import dlight

    from edgekit.compiler.cpu_int8 import dot_schedule_rule
    from edgekit.compiler.cpu_threads import serial_small_kernels_pass

    rules = _Rules.get()
    passes = []
    passes.append(
        dlight.ApplyDefaultSchedule(
            dot_schedule_rule(),
            rules["CpuTiledReduction"](),
            # dlight.cpu.Reduction is left out on purpose: in TVM 0.27 it
            # parallelizes softmax over the wrong axis when the batch is 1
            # (each of the 1000 threads recomputes the whole row: 4 ms
            # instead of 10 us for a 1000-class softmax).
            rules["CpuInjective"](),
        )
    )
    # Kernels of a microsecond or two run on the calling thread (cpu_threads).
    passes.append(serial_small_kernels_pass())
    return passes


# --------------------------------------------------------------------------- #
# Pipeline
# --------------------------------------------------------------------------- #


def _simplify_pass() -> Any:
    """A Relax pass undoing two importer idioms ConvertLayout cannot see through.

    TVM's ONNX importer turns ``Sum(a, b)`` into ``sum(stack(broadcast_to(a),
    broadcast_to(b)), axis=0)``: a 5-D tensor whose layout ConvertLayout
    cannot infer (it fails with "Invalid SLayout"). Rewritten here to
    ``add(a, b)`` (broadcasting is ``add``'s own), and ``broadcast_to`` to the
    shape a tensor already has is dropped.
    """
    import tvm
    from tvm import relax

    sum_op = tvm.ir.Op.get("relax.sum")
    stack_op = tvm.ir.Op.get("relax.stack")
    bcast_op = tvm.ir.Op.get("relax.broadcast_to")
    clip_op = tvm.ir.Op.get("relax.clip")
    call_tir_op = tvm.ir.Op.get("relax.call_tir")
    # TVM's Clip converter (opset >= 11, bounds as inputs) emits TOPI's
    # broadcast maximum/minimum as opaque call_tir kernels; as Relax ops they
    # carry a layout (PP-OCR's hard-swish went to NCHW and back for each).
    tir_binary = {"maximum": relax.op.maximum, "minimum": relax.op.minimum}

    def same_shape(a: Any, b: Any) -> bool:
        sa, sb = a.ty, b.ty
        if not isinstance(sa, relax.TensorType) or not isinstance(sb, relax.TensorType):
            return False
        if sa.shape is None or sb.shape is None or sa.dtype != sb.dtype:
            return False
        try:
            return [int(x) for x in sa.shape.values] == [int(x) for x in sb.shape.values]
        except (TypeError, AttributeError):
            return False

    @relax.expr_functor.mutator
    class SumOfStack(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not isinstance(call, relax.Call):
                return call
            if call.op.same_as(bcast_op) and same_shape(call.args[0], call):
                return call.args[0]
            if call.op.same_as(clip_op):
                return self.clip_as_min_max(call)
            if call.op.same_as(call_tir_op):
                return self.tir_min_max(call)
            if not call.op.same_as(sum_op) or call.attrs.keepdims or call.attrs.axis is None:
                return call
            if len(call.attrs.axis) != 1:
                return call
            src = call.args[0]
            stacked = self.lookup_binding(src) if isinstance(src, relax.Var) else src
            if not (isinstance(stacked, relax.Call) and stacked.op.same_as(stack_op)):
                return call
            if int(stacked.attrs.axis) != int(call.attrs.axis[0]):
                return call
            fields = stacked.args[0]
            fields = fields.fields if isinstance(fields, relax.Tuple) else None
            if not fields:
                return call
            fields = [self.unwrap_bcast(f) for f in fields]
            out = fields[0]
            for f in fields[1:]:
                out = self.builder_.emit(relax.op.add(out, f))
            return out

        def tir_min_max(self, call: Any) -> Any:
            """``call_tir(maximum|minimum, (x, scalar))`` from TOPI as the Relax op it computes."""
            gv, args = call.args[0], call.args[1]
            op = tir_binary.get(getattr(gv, "name_hint", "").rstrip("0123456789"))
            fields = getattr(args, "fields", None)
            if op is None or fields is None or len(fields) != 2 or len(call.args) > 2:
                return call
            x, bound = fields
            tx, tb, tout = x.ty, bound.ty, call.ty
            if not all(isinstance(t, relax.TensorType) for t in (tx, tb, tout)):
                return call
            if tb.ndim != 0 or str(tx.dtype) != str(tb.dtype) or str(tout.dtype) != str(tx.dtype):
                return call
            if not same_shape(x, call):
                return call
            return op(x, bound)

        def clip_as_min_max(self, call: Any) -> Any:
            # ConvertLayout has no layout rule for clip: every requantized
            # int8 layer, and every float hard-swish (PP-OCR), went back to
            # NCHW (a transpose each way) at its clamp. The same arithmetic
            # TOPI legalizes clip to (NaN included: both give the bound).
            x, lo, hi = call.args
            t = x.ty
            bound = (lambda v: v.value) if all(hasattr(v, "value") for v in (lo, hi)) else None
            if bound is None or not isinstance(t, relax.TensorType) or t.dtype is None:
                return call
            dtype = str(t.dtype)
            cast = int if dtype.startswith(("int", "uint")) else float
            if cast is float and dtype not in ("float32", "float16", "float64"):
                return call
            return relax.op.maximum(
                relax.op.minimum(x, relax.const(cast(bound(hi)), dtype)), relax.const(cast(bound(lo)), dtype)
            )

        def unwrap_bcast(self, expr: Any) -> Any:
            val = self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr
            if isinstance(val, relax.Call) and val.op.same_as(bcast_op):
                return val.args[0]
            return expr

    @tvm.transform.module_pass(opt_level=0, name="EdgekitSimplifyImported")
    def simplify(mod: Any, _ctx: Any) -> Any:
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mod[gv] = SumOfStack().visit_expr(func)
        return relax.transform.DeadCodeElimination()(mod)

    return simplify


def _cancel_transposes_pass() -> Any:
    """Moves layout transposes through table lookups and drops transpose pairs that cancel.

    ``ConvertLayout`` has no layout rule for ``take``, so the integer
    lowering's 256-entry lookup tables (requantizing a concat input,
    sigmoid, hard-swish, ...) ran on NCHW copies: a transpose of the int32
    index before every table and one back after it (SqueezeNet int8 spent
    a sixth of its time there). ``take(table, permute(i))`` is
    ``permute(take(table, i))`` for a 1-D table; the transpose then meets
    its inverse and both go.
    """
    import tvm
    from tvm import relax

    take_op = tvm.ir.Op.get("relax.take")
    perm_op = tvm.ir.Op.get("relax.permute_dims")
    pad_op = tvm.ir.Op.get("relax.nn.pad")
    astype_op = tvm.ir.Op.get("relax.astype")
    binary_ops = [
        tvm.ir.Op.get(f"relax.{name}")
        for name in ("add", "subtract", "multiply", "minimum", "maximum", "right_shift", "left_shift")
    ]

    def is_scalar(expr: Any) -> bool:
        t = expr.ty
        if not isinstance(t, relax.TensorType) or t.shape is None:
            return False
        try:
            return all(int(v) == 1 for v in t.shape.values)
        except (TypeError, AttributeError):
            return False

    def axes_of(call: Any) -> list[int] | None:
        axes = call.attrs.axes
        return None if axes is None else [int(v) for v in axes]

    @relax.expr_functor.mutator
    class Sink(relax.PyExprMutator):
        def bound(self, expr: Any) -> Any:
            return self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr

        def binary(self, call: Any) -> Any:
            """``op(permute(a, p), permute(b, p))`` or ``op(permute(a, p), scalar)`` as ``permute(op(a, b), p)``."""
            args = list(call.args)
            perms = [self.bound(a) for a in args]
            axes = [
                axes_of(b) if isinstance(b, relax.Call) and b.op.same_as(perm_op) else None for b in perms
            ]
            if all(a is None for a in axes):
                return None
            target_axes = next(a for a in axes if a is not None)
            new_args = []
            for arg, bound, ax in zip(args, perms, axes):
                if ax is not None and ax == target_axes:
                    new_args.append(bound.args[0])
                elif ax is None and is_scalar(arg) and arg.ty.ndim <= 1:
                    new_args.append(arg)
                else:
                    return None
            moved = self.builder_.emit(relax.Call(call.op, new_args, call.attrs))
            return relax.op.permute_dims(moved, target_axes)

        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not isinstance(call, relax.Call):
                return call
            if call.op.same_as(take_op):
                table, index = call.args
                inner = self.bound(index)
                t = table.ty
                if (
                    isinstance(inner, relax.Call)
                    and inner.op.same_as(perm_op)
                    and isinstance(t, relax.TensorType)
                    and t.ndim == 1
                    and axes_of(inner) is not None
                ):
                    looked = self.builder_.emit(relax.op.take(table, inner.args[0], axis=0, mode=call.attrs.mode))
                    return relax.op.permute_dims(looked, axes_of(inner))
            if call.op.same_as(pad_op) and str(call.attrs.pad_mode) == "constant":
                inner = self.bound(call.args[0])
                if isinstance(inner, relax.Call) and inner.op.same_as(perm_op) and axes_of(inner) is not None:
                    # Pad in the source layout: y = permute(x, p) pads axis i as x's axis p[i].
                    perm = axes_of(inner)
                    widths = [int(v) for v in call.attrs.pad_width]
                    src = [0] * len(widths)
                    for i, axis in enumerate(perm):
                        src[2 * axis], src[2 * axis + 1] = widths[2 * i], widths[2 * i + 1]
                    padded = self.builder_.emit(
                        relax.op.nn.pad(inner.args[0], src, pad_value=float(call.attrs.pad_value))
                    )
                    return relax.op.permute_dims(padded, perm)
            if call.op.same_as(astype_op):
                inner = self.bound(call.args[0])
                if isinstance(inner, relax.Call) and inner.op.same_as(perm_op) and axes_of(inner) is not None:
                    cast = self.builder_.emit(relax.op.astype(inner.args[0], call.attrs.dtype))
                    return relax.op.permute_dims(cast, axes_of(inner))
            if any(call.op.same_as(op) for op in binary_ops):
                moved = self.binary(call)
                if moved is not None:
                    return moved
            if call.op.same_as(perm_op):
                inner = self.bound(call.args[0])
                outer_axes = axes_of(call)
                if isinstance(inner, relax.Call) and inner.op.same_as(perm_op) and outer_axes is not None:
                    inner_axes = axes_of(inner)
                    if inner_axes is not None and all(inner_axes[b] == i for i, b in enumerate(outer_axes)):
                        return inner.args[0]
            return call

    return mutator_pass(Sink, "EdgekitCancelTransposes")


def _out_dtype(attrs: Any) -> str | None:
    """A conv's ``out_dtype`` attribute, None when unset (same as the input's)."""
    dtype = attrs.out_dtype
    return None if dtype is None or str(dtype) in ("", "None") else str(dtype)


def _call_rewrite_pass(op_name: str, rewrite: Any, pass_name: str) -> Any:
    """A Relax module pass applying ``rewrite(builder, call)`` to every call of ``op_name``.

    ``rewrite`` returns the replacement expression (it may ``emit`` helper
    bindings on ``builder``) or None to keep the call.
    """
    import tvm
    from tvm import relax

    op = tvm.ir.Op.get(op_name)

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if isinstance(call, relax.Call) and call.op.same_as(op):
                new = rewrite(self.builder_, call)
                if new is not None:
                    return new
            return call

    return mutator_pass(Rewriter, pass_name)


def mutator_pass(mutator_cls: Any, pass_name: str, setup: Any = None) -> Any:
    """A Relax module pass running ``mutator_cls(mod)`` over every Relax function, then dead-code elimination.

    ``setup(mutator)``, if given, is called before the functions are visited
    (e.g. to hand the mutator state that needs it, such as binding lookups).
    """
    import tvm
    from tvm import relax

    @tvm.transform.module_pass(opt_level=0, name=pass_name)
    def apply(mod: Any, _ctx: Any) -> Any:
        mutator = mutator_cls(mod)
        if setup is not None:
            setup(mutator)
        for gv, func in list(mod.functions_items()):
            if isinstance(func, relax.Function):
                mutator.builder_.update_func(gv, mutator.visit_expr(func))
        return relax.transform.DeadCodeElimination()(mutator.builder_.get())

    return apply


def _transpose_conv_pass() -> Any:
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
        y = b.emit(relax.op.nn.conv2d(x, w1, out_dtype=_out_dtype(a)))
        y = b.emit(relax.op.reshape(y, (n, kh, kw, o, h, wd)))
        y = b.emit(relax.op.permute_dims(y, [0, 3, 4, 1, 5, 2]))  # (n, o, h, i, w, j)
        return relax.op.reshape(y, (n, o, h * kh, wd * kw))

    return _call_rewrite_pass("relax.nn.conv2d_transpose", rewrite, "EdgekitTransposeConvAsShuffle")


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


def _block_weights_pass(target: tvm.target.Target) -> Any:
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
        shapes = _static_float_shapes(x, w)
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
            out_dtype=_out_dtype(a) or "float32",
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

    return _call_rewrite_pass("relax.nn.conv2d", rewrite, "EdgekitBlockConvWeights")


def _depthwise_whole_vectors(b: Any, call: Any, x: Any, w: Any, lanes: int) -> Any:
    """A float depthwise conv on channels padded to whole vectors (zero filters), sliced back.

    A pruned channel count (PP-OCR cls at 30 %: 11, 22, 67 channels) ran
    with 1- or 2-lane vectors, the largest width dividing it, and the pruned
    model was slower than the unpruned one.
    """
    from edgekit.compiler.cpu_int8 import depthwise_on_vectors

    c = int(x.ty.shape.values[3])
    # Whole vectors of 8 lanes (or the target's, if narrower) are enough:
    # padding 72 channels to 80 for 16-lane vectors measured slower than
    # 8-lane vectors on 72 (the pad is an extra copy of the input).
    unit = min(lanes, 8)
    if c % unit == 0:
        return call
    return depthwise_on_vectors(b, call, x, w, round_up(c, unit), "float32", "float32", "depthwise_conv2d_padded")


def static_shape(expr: Any, dtype: str) -> list[int] | None:
    """The static shape of a ``dtype`` Relax tensor, None for anything else."""
    from tvm import relax

    t = expr.ty
    if not isinstance(t, relax.TensorType) or str(t.dtype) != dtype or t.shape is None:
        return None
    try:
        return [int(v) for v in t.shape.values]
    except (TypeError, AttributeError):
        return None


def _static_float_shapes(*exprs: Any) -> list[list[int]] | None:
    """Static shapes of float32 tensors, or None if any is not one."""
    shapes = [static_shape(e, "float32") for e in exprs]
    return None if any(s is None for s in shapes) else shapes


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple``."""
    return -(-value // multiple) * multiple


def _row_reduce(fn: Any, data: Any, rows: list[int], lo: int, hi: int, name: str) -> Any:
    """``fn`` (``te.max``/``te.sum``) over ``data[..., lo:hi]``."""
    from tvm import te

    k = te.reduce_axis((lo, hi), name=f"k_{name}")
    return te.compute(rows, lambda *i: fn(data[(*i, k)], axis=k), name=name)


def _softmax_split(x: Any, lanes: int) -> Any:
    """TE softmax over the last axis with each reduction split at a multiple of ``lanes``.

    ``max``/``sum`` over ``[0, N - N % lanes)`` is one reduction the scheduler
    vectorizes (:func:`_vectorize_row_reduction`); the few tail elements are a
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


def _softmax_pass(target: tvm.target.Target) -> Any:
    """Replaces last-axis float ``softmax`` of static shape by :func:`_softmax_split`."""
    lanes = simd_lanes(target)

    def rewrite(b: Any, call: Any) -> Any:
        shapes = _static_float_shapes(call.args[0])
        if shapes is None:
            return call
        axis = int(call.attrs.axis)
        if axis not in (-1, len(shapes[0]) - 1) or shapes[0][-1] < 4 * lanes:
            return call
        return b.call_te(_softmax_split, call.args[0], lanes=lanes, primfunc_name_hint="softmax")

    return _call_rewrite_pass("relax.nn.softmax", rewrite, "EdgekitSplitSoftmax")


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


def _matmul_weights_pass(target: tvm.target.Target) -> Any:
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
        shapes = _static_float_shapes(x, w)
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

    return _call_rewrite_pass("relax.matmul", rewrite, "EdgekitBlockMatmulWeights")


def prepare_cpu_module(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    *,
    lift_params: bool = True,
    fast_math: bool = True,
    weights: dict[str, Any] | None = None,
) -> tuple[tvm.IRModule, tvm.IRModule | None]:
    """Layout conversion, weight-transform lifting, legalization and fusion.

    Args:
        fast_math: Use TVM's polynomial exp/erf/tanh/softmax.
        weights: Weight values by ``main`` parameter name, when known; the
            int8 kernels use them to prove which layers may take ``vpmaddubsw``
            on AVX2 (:mod:`edgekit.compiler.cpu_int8`).

    Returns:
        ``(module, transform)``: ``module`` holds ``main`` and fused,
        *unscheduled* PrimFuncs -- the form MetaSchedule extracts tuning tasks
        from and :func:`schedule_passes` schedules. With ``lift_params``,
        computations on weights alone (layout transposes) are split off by
        ``relax.transform.LiftTransformParams`` into ``transform``, a Relax
        module whose ``main_transform_params`` maps the original weights (one tuple) to the
        weights ``module``'s ``main`` takes; otherwise ``transform`` is None
        and those computations stay in ``main``.
    """
    import tvm
    from tvm import relax

    from edgekit.compiler.cpu_detector import detector_passes
    from edgekit.compiler.cpu_input import input_pass
    from edgekit.compiler.cpu_int8 import channel_sum_pass, int8_dot_pass, lookup_pass
    from edgekit.compiler.cpu_pad import int8_pad_pass
    from edgekit.compiler.cpu_requant import float_requant_pass
    from edgekit.compiler.importer import fusion_passes
    from edgekit.compiler.relax_guards import convert_layout_or_keep, fast_math_transform

    layout = [
        _simplify_pass(),
        # The rewrite above leaves ``y = x`` alias bindings; ConvertLayout
        # does not propagate a layout through an alias and falls back to NCHW
        # with a transpose pair around every residual Add (ResNet-50 spent
        # 12% of its time in those transposes).
        relax.transform.CanonicalizeBindings(),
        _transpose_conv_pass(),
        convert_layout_or_keep(CONV_LAYOUTS),  # relax_guards: TVM's aborts on some conv-free graphs
        relax.transform.Normalize(),
        _cancel_transposes_pass(),
        # int8 conv/matmul on the target's integer dot-product instructions.
        int8_dot_pass(target, weights),
        # int64 fixed-point requantization as float32 scale and round (x86).
        float_requant_pass(target),
        lookup_pass(target),
        channel_sum_pass(),
        int8_pad_pass(target),
        input_pass(target),
        _block_weights_pass(target),
        _matmul_weights_pass(target),
        *([_softmax_pass(target), *detector_passes(target)] if fast_math else []),
        # TVM's polynomial exp/erf/tanh/softmax (relative error ~1e-7):
        # vectorizable, where LLVM calls scalar libm expf once per lane
        # (PP-OCR rec's 18710-class softmax took 7 ms with libm).
        *([fast_math_transform()] if fast_math else []),  # relax_guards: TVM's fails on ExternFunc calls
        relax.transform.FoldConstant(),
    ]
    with target:
        mod = tvm.transform.Sequential(layout)(mod)
        transform = None
        if lift_params:
            mod = relax.transform.LiftTransformParams()(mod)
            names = [gv.name_hint for gv in mod.get_global_vars()]
            if "main_transform_params" in names:
                transform = tvm.IRModule({"main_transform_params": mod["main_transform_params"]})
                mod = _without(mod, "main_transform_params")
        mod = tvm.transform.Sequential(_with_elementwise_lookups(fusion_passes()))(mod)
    return mod, transform


def _with_elementwise_lookups(passes: list[Any]) -> list[Any]:
    """``passes`` with :func:`_lookup_tables_elementwise` right after ``AnnotateTIROpPattern``."""
    out = []
    for p in passes:
        out.append(p)
        if p.info.name == "AnnotateTIROpPattern":
            out.append(_lookup_tables_elementwise())
    return out


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


def _lowering_passes(target: tvm.target.Target) -> list[Any]:
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

    return cpu_generic.dataflow_lower_passes(target) + cpu_generic.finalize_passes(target)


@dataclass
class CpuBuild:
    """What :func:`build_cpu` produced.

    Attributes:
        executable: The compiled ``relax.VMExecutable`` (export it with
            ``executable.export_library(path)``).
        params: The weights ``main`` takes after its ``num_input`` real inputs,
            in order -- already transformed (transposed to HWIO, etc.) when
            ``params`` were given to :func:`build_cpu`. Pass these, not the
            original weights, at run time.
        num_input: Number of real (non-weight) inputs of ``main``.
        tuned_kernels: Names of the kernels taken from the tuning database.
    """

    executable: Any
    params: list[Any] = field(default_factory=list)
    num_input: int = 0
    tuned_kernels: list[str] = field(default_factory=list)
    #: The module as handed to codegen (memory planned), for size reports.
    lowered: Any = None


def _num_input(func: Any) -> int:
    attrs = func.attrs
    if attrs is not None and "num_input" in attrs:
        return int(attrs["num_input"])
    return len(func.params)


def _weights_by_name(mod: Any, num_input: int, params: Sequence[Any] | None, target: Any) -> dict[str, Any] | None:
    """``main``'s weights by parameter name, where the int8 kernels need their values (AVX2 targets)."""
    from edgekit.compiler.cpu_int8 import I16_256, dot_isa

    if not params or dot_isa(target) is not I16_256:
        return None
    names = [p.name for p in mod["main"].params[num_input:]]
    return {n: (p.numpy() if hasattr(p, "numpy") else np.asarray(p)) for n, p in zip(names, params)}


def _transform_params(transform: Any, target: tvm.target.Target, params: Sequence[Any]) -> list[Any]:
    """Runs ``main_transform_params`` once on ``params`` (compiled with TVM's default pipeline).

    These are the weight-only computations (layout transposes, reshapes of
    biases) LiftTransformParams split off; running them here means the
    compiled model receives weights already in its layout.
    """
    import tvm
    from tvm import relax

    with target:
        exe = tvm.compile(transform, target)
    vm = relax.VirtualMachine(exe, tvm.cpu())
    args = [p if isinstance(p, tvm.runtime.Tensor) else tvm.runtime.tensor(np.ascontiguousarray(p)) for p in params]
    out = vm["main_transform_params"](args)
    return [out[i] for i in range(len(out))]


def build_cpu(
    mod: tvm.IRModule,
    target: tvm.target.Target,
    params: Sequence[Any] | None = None,
    *,
    database: Any | None = None,
    num_threads: int = 0,
    opt_level: int = 3,
    use_shipped: bool = True,
    fast_math: bool = True,
) -> CpuBuild:
    """Compiles a Relax module (as imported from ONNX) into fast CPU code.

    Args:
        mod: Relax module whose ``main`` takes the model inputs followed by the
            weights (``from_onnx(..., keep_params_in_input=True)`` +
            ``relax.frontend.detach_params``), with a ``num_input`` attribute.
        target: An LLVM ``tvm.target.Target``.
        params: The weights in the order ``main`` takes them (numpy arrays or
            ``tvm.runtime.Tensor``). When given, weight-only computations
            (layout transposes) are run once now and :attr:`CpuBuild.params`
            holds the transformed weights; when None, they stay in the graph
            and run on every call, and the original weights are passed.
        database: A MetaSchedule database (see
            :func:`edgekit.compiler.tuning.open_database`); kernels it holds
            records for are used instead of the default schedules.
        num_threads: Runtime threads (``Board.cores``; 0 = every core),
            applied to this process's TVM thread pool with
            :func:`set_num_threads`.
        opt_level: ``PassContext`` optimisation level.
        use_shipped: With no ``database``, use the pre-tuned records shipped in
            ``edgekit/tuning_records`` for the target's ISA class, if any.
        fast_math: TVM's polynomial exp/erf/tanh/softmax (relative error about
            1e-7, vectorized) instead of libm calls. Tuning records are made
            with it on.

    Returns:
        A :class:`CpuBuild`.

    Raises:
        CompileError: if TVM fails to lower or build the module.
    """
    import tvm

    set_num_threads(num_threads)
    lift = params is not None
    try:
        num_input = _num_input(mod["main"])
        prepared, transform = prepare_cpu_module(
            mod, target, lift_params=lift, fast_math=fast_math, weights=_weights_by_name(mod, num_input, params, target)
        )
        new_params: list[Any] = list(params or [])
        if transform is not None:
            new_params = _transform_params(transform, target, new_params)
        if database is None and use_shipped:
            from edgekit.compiler.tuning import shipped_database

            database = shipped_database(target)
        with target, tvm.transform.PassContext(opt_level=opt_level):
            tuned: list[str] = []
            if database is not None:
                prepared, tuned = apply_database(prepared, database, target)
            scheduled = tvm.transform.Sequential(schedule_passes(target))(prepared)
            lowered = tvm.transform.Sequential(_lowering_passes(target))(scheduled)
            exe = tvm.compile(lowered, target, relax_pipeline=None)
        if tuned:
            logger.info("%d kernels from the tuning database, the rest with default schedules", len(tuned))
    except CompileError:
        raise
    except Exception as exc:
        raise CompileError(
            f"TVM failed to build the model for {target.kind.name} ({type(exc).__name__}: {str(exc).splitlines()[0][:300]})",
            hint="Re-run with --debug for the full TVM error; try `--opt-level 0` or report the model.",
        ) from exc
    return CpuBuild(executable=exe, params=new_params, num_input=num_input, tuned_kernels=tuned, lowered=lowered)


#: A tuned record replaces the default schedule only if it measured at least
#: this much faster. MetaSchedule times a kernel alone, called back to back
#: with its weights hot in cache; inside the model they are not. Measured on
#: PP-OCR rec (2-core host, 2026-11-23): with a 10% margin three kernels were
#: taken and the model ran 10% slower than untuned; with 50% only the
#: classifier matmul was, and the model ran 1% faster.
TUNED_MARGIN = 0.5


def apply_database(mod: tvm.IRModule, database: Any, target: tvm.target.Target) -> tuple[tvm.IRModule, list[str]]:
    """Schedules the PrimFuncs of ``mod`` that ``database`` has a clearly better record for.

    Like ``relax.transform.MetaScheduleApplyDatabase`` (the record's trace is
    replayed on the kernel), with one difference: the best record is only
    used if it beat the measured default schedule of the kernel (tuning
    stores it first, :func:`edgekit.compiler.tuning._measure_default`) by
    :data:`TUNED_MARGIN`; otherwise, or if the database has no record of the
    current default schedule (it changed since the tuning run), the kernel is
    left to :func:`schedule_passes`. Kernels no default rule schedules take
    the best record.

    Returns:
        ``(module, names)``: the module with those kernels scheduled, and their names.
    """
    import tvm
    from tvm import s_tir

    from edgekit.compiler.tuning import record_seconds

    out = mod
    names: list[str] = []
    for gv, func in mod.functions_items():
        if not isinstance(func, tvm.tirx.PrimFunc) or _is_scheduled(func):
            continue
        # Workloads are stored as {"main": func} with that global symbol.
        workload_mod = tvm.IRModule({"main": func.with_attr("global_symbol", "main")})
        if not database.has_workload(workload_mod):
            continue
        records = [r for r in database.get_top_k(database.commit_workload(workload_mod), 1 << 30) if r.run_secs]
        if not records:
            continue
        best = records[0]
        default = default_schedule(func, target)
        if default is not None:
            text = str(default.trace)
            base = next((r for r in records if str(r.trace) == text), None)
            # No record of the current default schedule (records from before
            # it last changed): nothing measured to beat, the default stays.
            if base is None or best is base or record_seconds(best) > (1 - TUNED_MARGIN) * record_seconds(base):
                # Keep the default schedule already computed here, so that
                # schedule_passes does not schedule the kernel a second time.
                out = _replace(out, gv, default.mod["main"].with_attr("tirx.is_scheduled", True))
                continue
        sch = s_tir.Schedule(func)
        try:
            best.trace.apply_to_schedule(sch, remove_postproc=False)
        except Exception as exc:  # a record from another TVM version: fall back to the default
            logger.warning("tuning record for %s does not apply (%s); using the default schedule", gv.name_hint, exc)
            continue
        out = _replace(out, gv, sch.mod["main"].with_attr("tirx.is_scheduled", True))
        names.append(gv.name_hint)
    return out, names


def _replace(mod: tvm.IRModule, gv: Any, func: Any) -> tvm.IRModule:
    import tvm

    funcs = {g: (func if g.same_as(gv) else f) for g, f in mod.functions_items()}
    return tvm.IRModule(funcs, attrs=mod.attrs)


def _without(mod: tvm.IRModule, name: str) -> tvm.IRModule:
    import tvm

    funcs = {gv: f for gv, f in mod.functions_items() if gv.name_hint != name}
    return tvm.IRModule(funcs, attrs=mod.attrs)


def _is_scheduled(func: Any) -> bool:
    attrs = func.attrs
    return attrs is not None and "tirx.is_scheduled" in attrs and bool(attrs["tirx.is_scheduled"])


def import_onnx(prepared: Any) -> tuple[tvm.IRModule, list[Any]]:
    """Imports a :class:`~edgekit.frontend.loader.PreparedModel` into Relax with weights as inputs.

    The host backend's import (:func:`edgekit.compiler.importer.import_onnx`,
    integer-only lowering included), so tuning sees the kernels compile builds.

    Returns:
        ``(module, weights)`` with the weights in the order ``main`` takes them.
    """
    from edgekit.compiler.importer import import_onnx as shared_import

    mod, weights, _ = shared_import(prepared)
    return mod, weights


def set_num_threads(num_threads: int = 0) -> int:
    """Sets the number of threads TVM's runtime thread pool uses in this process.

    Args:
        num_threads: Threads to use (a board's ``cores``); 0 means every core
            of this machine.

    Returns:
        The number of threads now in use (``runtime.NumThreads``).

    TVM sizes its pool once, on first use, from ``TVM_NUM_THREADS`` -- and
    without it, from *half* the hardware threads on x86 (1 thread on a 2-core
    machine). So the variable is set to every core before the pool exists;
    ``runtime.config_threadpool`` then selects ``num_threads`` of them (it
    can lower the count of an existing pool, not raise it past its size).
    Call this before the first inference of the process.
    """
    import tvm

    cores = os.cpu_count() or 1
    n = int(num_threads) if num_threads and num_threads > 0 else cores
    os.environ.setdefault("TVM_NUM_THREADS", str(max(n, cores)))
    config = tvm.get_global_func("runtime.config_threadpool", allow_missing=True)
    if config is not None:
        config(1, n)  # 1 = kBig: all cores of a homogeneous CPU
    current = tvm.get_global_func("runtime.NumThreads")()
    if current != n:
        logger.warning(
            "TVM runs %d threads, not %d: its thread pool was started earlier with %s",
            current,
            n,
            f"TVM_NUM_THREADS={os.environ.get('TVM_NUM_THREADS')}",
        )
    return int(current)
