"""Relax rewrites for the idioms of YOLO-family detectors on CPUs (float32).

Found by profiling a YOLOv8n and a YOLOX detector kernel by kernel against
onnxruntime's profiler (``benchmarks/cpu.py --profile``):

* **SiLU** (``x * sigmoid(x)``, after every convolution of YOLOv5/v8/X):
  TVM lowers ``sigmoid`` to ``1 / (1 + exp(-x))`` with LLVM's ``exp``, a scalar
  ``expf`` call per element, in the epilogue of every convolution.
  :func:`fast_sigmoid_pass` computes it with TVM's polynomial ``fast_exp``
  instead, which vectorizes and still fuses into the convolution's write-back.
* **Softmax over a short axis** (YOLOv8's DFL head: 16 bins per box side):
  TOPI's softmax reduces with a scalar loop per output, a chain of dependent
  operations (1.1 ms for YOLOv8n's 86k rows of 16 bins on one Zen 5 core).
  :func:`short_softmax_pass` uses balanced trees that vectorize (1.1 -> 0.9 ms
  in isolation, 1.4-2.0 -> 0.9 ms inside the model).

:func:`detector_passes` lists the Relax module passes;
:func:`edgekit.compiler.backends.llvm.relax_build.prepare_cpu_module` runs them after the
layout conversion, with its fast-math passes. The module sits in
``compiler/``, not ``backends/llvm/``, because the ``aot_c`` backend runs
:func:`fast_sigmoid_pass` too; the caller passes the SIMD width, so nothing
here imports a backend.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["detector_passes", "fast_sigmoid", "fast_sigmoid_pass", "short_softmax_pass"]

logger = logging.getLogger(__name__)


def fast_sigmoid(x: Any) -> Any:
    """TE ``sigmoid(x) = 1 / (1 + exp(-x))`` with TVM's polynomial ``fast_exp`` (relative error ~1e-7).

    ``fast_exp`` clamps its argument to about [-88.4, 88.4]: for ``x < -88``
    the result is ~4e-39 instead of something smaller, for ``x > 88`` it is 1.
    """
    from tvm import te, topi

    neg = te.compute(x.shape, lambda *i: -x(*i), name="sigmoid_neg")
    e = topi.fast_exp(neg)
    return te.compute(x.shape, lambda *i: 1.0 / (1.0 + e(*i)), name="sigmoid")


def fast_sigmoid_pass() -> Any:
    """Relax pass: float32 ``relax.sigmoid`` as :func:`fast_sigmoid` (vectorized, no libm calls).

    Runs after ``ConvertLayout`` (a ``call_te`` has no layout rule); the
    result is elementwise, so ``FuseOps`` still puts it in the epilogue of
    the convolution before it.
    """
    from edgekit.compiler.relax_rewrite import call_rewrite_pass, static_shape

    def rewrite(b: Any, call: Any) -> Any:
        if static_shape(call.args[0], "float32") is None:
            return None
        return b.call_te(fast_sigmoid, call.args[0], primfunc_name_hint="fast_sigmoid")

    return call_rewrite_pass("relax.sigmoid", rewrite, "EdgekitFastSigmoid")


#: A softmax axis shorter than this many SIMD vectors takes :func:`short_softmax_pass`
#: (longer ones are vectorized along the axis by the pipeline's own softmax).
SHORT_AXIS_VECTORS = 4


def _tree(op: Any, values: list[Any]) -> Any:
    """``op`` over ``values`` as a balanced binary tree (depth log2(n), not n)."""
    while len(values) > 1:
        values = [op(values[i], values[i + 1]) if i + 1 < len(values) else values[i] for i in range(0, len(values), 2)]
    return values[0]


def _short_softmax_func(shape: tuple[int, ...], lanes: int) -> Any:
    """A scheduled PrimFunc: softmax over the last (short) axis of a float32 tensor of ``shape``.

    Max and sum are balanced trees over the row's ``k`` elements, not
    reductions: a reduction is a chain of ``k`` dependent scalar operations
    per row (that chain, not memory, bounded TOPI's softmax on the DFL head);
    LLVM turns the trees into vector shuffles. Each row's four stages run
    back to back under one parallel loop over the rows (``compute_at``), so
    the intermediates shrink to one row.
    """
    from tvm import s_tir, te, tirx, topi

    *rows, k = shape
    x = te.placeholder(shape, "float32", name="x")
    peak = te.compute(rows, lambda *r: _tree(tirx.max, [x[(*r, j)] for j in range(k)]), name="row_max")
    delta = te.compute(shape, lambda *i: x[i] - peak[i[:-1]], name="delta")
    e = topi.fast_exp(delta)
    total = te.compute(rows, lambda *r: _tree(lambda a, b: a + b, [e[(*r, j)] for j in range(k)]), name="row_sum")
    y = te.compute(shape, lambda *i: e[i] / total[i[:-1]], name="softmax_short")
    sch = s_tir.Schedule(te.create_prim_func([x, y]))
    *row_loops, col = sch.get_loops(sch.get_sblock("softmax_short"))
    row = sch.fuse(*row_loops) if len(row_loops) > 1 else row_loops[0]
    sch.parallel(row)
    exp_block = sch.get_producers(sch.get_sblock("row_sum"))[0]
    sch.compute_at(sch.get_sblock("row_sum"), row)
    sch.compute_at(exp_block, row)
    sch.compute_inline(sch.get_sblock("delta"))
    sch.compute_at(sch.get_sblock("row_max"), row)
    if k <= 2 * lanes:
        sch.vectorize(sch.get_loops(exp_block)[-1])
        sch.vectorize(col)
    # Scheduled here; kOpaque (8) keeps FuseOps from merging it (a fused
    # kernel would be rescheduled by the default rules).
    return sch.mod["main"].with_attr("tirx.is_scheduled", True).with_attr("op_pattern", 8)


def short_softmax_pass(lanes: int) -> Any:
    """Relax pass: float32 ``softmax`` over a last axis shorter than :data:`SHORT_AXIS_VECTORS` vectors
    of ``lanes`` float32 lanes (the target's SIMD width).

    Longer rows are vectorized along the row by the pipeline's own softmax;
    softmax over another axis is already vectorized along the innermost axis
    by TOPI's (measured no slower than trees on YOLOv8n's DFL layout).
    """
    from tvm import relax

    from edgekit.compiler.relax_rewrite import call_rewrite_pass, static_shape

    funcs: dict[tuple[int, ...], Any] = {}

    def rewrite(b: Any, call: Any) -> Any:
        shape = static_shape(call.args[0], "float32")
        if shape is None or len(shape) < 2 or int(call.attrs.axis) % len(shape) != len(shape) - 1:
            return None
        if shape[-1] >= SHORT_AXIS_VECTORS * lanes or int(np.prod(shape[:-1])) < lanes:
            return None
        key = tuple(shape)
        if key not in funcs:
            funcs[key] = b.add_func(_short_softmax_func(key, lanes), "softmax_short_" + "x".join(map(str, key)))
        return relax.call_tir(funcs[key], [call.args[0]], relax.TensorType(key, "float32"))

    return call_rewrite_pass("relax.nn.softmax", rewrite, "EdgekitShortSoftmax")


def detector_passes(lanes: int) -> list[Any]:
    """The Relax passes of this module, in order (run after ``ConvertLayout``, with fast math on);
    ``lanes`` is the target's float32 SIMD width (``backends.llvm.schedule.simd_lanes``)."""
    return [short_softmax_pass(lanes), fast_sigmoid_pass()]
