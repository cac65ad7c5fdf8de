"""Vector loops for the epilogues of grouped convolutions (slice, bias, ReLU, channel shuffle).

A grouped convolution's output channels are padded per group to whole
vectors (:func:`edgekit.compiler.backends.llvm.layout.block_weights_pass`), so its
epilogue reads ``y[..., c // 34 * 48 + c % 34]``; ShuffleNet's channel
shuffle then reads ``x[..., c % 4 * 34 + c // 4]``. The fused elementwise
kernel vectorizes the flat channel loop ``c``, whose indices are not affine
in it: every lane was a scalar load behind a chain of divisions (ShuffleNet:
about 1.3 ns per element, a third of the model's time).

:func:`split_channel_runs` splits that loop as ``c = co * k + ci`` for the
divisor ``k`` that leaves the fewest divisions in the indices (34 for the
slice: ``48 * co + ci``; 4 for the shuffle: ``48 * ci + co``), so the
innermost loop is a run of affine loads and stores that LLVM vectorizes.
The epilogue stays a kernel of its own: fusing it into the convolution with
``reverse_compute_inline`` wrote past the output buffer (see
``_same_write_shape`` in :mod:`edgekit.compiler.backends.llvm.schedule`).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["split_channel_runs"]

logger = logging.getLogger(__name__)


def _is_load(expr: Any) -> bool:
    return hasattr(expr, "indices") and (hasattr(expr, "source") or hasattr(expr, "buffer"))


def _children(expr: Any) -> list[Any]:
    """Sub-expressions of a TIR expression (by field: loads are ``TensorLoad`` nodes in TVM 0.27)."""
    if _is_load(expr):
        return list(expr.indices)
    if hasattr(expr, "true_value"):  # Select
        return [expr.condition, expr.true_value, expr.false_value]
    if hasattr(expr, "args") and hasattr(expr, "op"):  # Call
        return list(expr.args)
    if hasattr(expr, "value") and hasattr(expr, "dtype"):  # Cast, Not
        return [expr.value]
    if hasattr(expr, "a") and hasattr(expr, "b"):
        return [expr.a, expr.b]
    return []


def _walk(expr: Any) -> list[Any]:
    out, todo = [], [expr]
    while todo:
        e = todo.pop()
        out.append(e)
        todo.extend(_children(e))
    return out


def _uses_any(expr: Any, vars_: list[Any]) -> bool:
    from tvm import tirx

    return any(isinstance(e, tirx.Var) and any(e.same_as(v) for v in vars_) for e in _walk(expr))


def _divisions(exprs: list[Any], vars_: list[Any]) -> tuple[int, set[int]]:
    """Number of ``//``/``%`` nodes over ``vars_`` in ``exprs``, and their constant divisors."""
    from tvm import tirx

    count, divisors = 0, set()
    for expr in exprs:
        for e in _walk(expr):
            if isinstance(e, (tirx.FloorDiv, tirx.FloorMod)) and _uses_any(e.a, vars_):
                count += 1
                if isinstance(e.b, tirx.IntImm):
                    divisors.add(int(e.b.value))
    return count, divisors


def _load_indices(stmt: Any) -> list[Any]:
    return [i for e in _walk(stmt.body.value) if _is_load(e) for i in e.indices]


def split_channel_runs(sch: Any, block: Any, spatial: list[Any], lanes: int) -> list[Any]:
    """Splits the innermost spatial loop of an elementwise ``block`` into affine runs.

    Args:
        sch: The schedule.
        block: A spatial block whose loops are bound one-to-one, in order, to
            its iters (the unscheduled form of a fused elementwise function).
        spatial: Its loops.
        lanes: The target's float32 vector width.

    Returns:
        ``spatial`` with the last loop replaced by ``[co, ci]`` when a split
        ``c = co * k + ci`` leaves fewer divisions in the load indices than
        ``c`` alone (``[ci, co]`` when ``k`` is under a vector: the channel
        shuffle then loads whole vectors of one group and stores them with a
        stride of ``k``, where 4-lane vectors of its 4 groups left most of the
        time in loop overhead); ``spatial`` unchanged otherwise.
    """
    from tvm import sym, tirx

    stmt = sch.get(block)
    if not isinstance(stmt.body, tirx.BufferStore) or len(stmt.iter_vars) != len(spatial):
        return spatial
    ivars = stmt.iter_vars
    c_iv = ivars[-1]
    ext = c_iv.dom.extent
    if not isinstance(ext, tirx.IntImm) or not isinstance(c_iv.dom.min, tirx.IntImm) or int(c_iv.dom.min.value):
        return spatial
    extent = int(ext.value)
    dtype = str(ext.ty)
    indices = _load_indices(stmt)
    if not indices:
        return spatial

    def score(k: int | None) -> int:
        ana = sym.Analyzer()
        for iv in ivars[:-1]:
            ana.bind(iv.var, iv.dom)
        if k is None:
            ana.bind(c_iv.var, c_iv.dom)
            fresh = [c_iv.var]
        else:
            co = tirx.Var("co", dtype)
            ci = tirx.Var("ci", dtype)
            ana.bind(co, tvm_range(0, extent // k))
            ana.bind(ci, tvm_range(0, k))
            ana.bind(c_iv.var, co * k + ci)
            fresh = [co, ci]
        return _divisions([ana.simplify(i) for i in indices], fresh)[0]

    def tvm_range(lo: int, hi: int) -> Any:
        from tvm import ir

        return ir.Range(tirx.IntImm(dtype, lo), tirx.IntImm(dtype, hi))

    base, divisors = _divisions(indices, [c_iv.var])
    if not base:
        return spatial
    best_k, best = None, base
    for k in sorted(d for d in divisors if 1 < d < extent and extent % d == 0):
        s = score(k)
        if s < best:
            best_k, best = k, s
    if best_k is None or score(None) <= best:
        return spatial
    logger.debug("%s: channel loop %d split by %d (%d -> %d divisions)", stmt.name_hint, extent, best_k, base, best)
    co, ci = sch.split(spatial[-1], factors=[extent // best_k, best_k])
    if best_k < lanes:
        sch.reorder(ci, co)
        return [*spatial[:-1], ci, co]
    return [*spatial[:-1], co, ci]
