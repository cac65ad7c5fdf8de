"""Small kernels run on the calling thread: no thread-pool fork/join for a microsecond of work.

Every schedule rule of :mod:`edgekit.compiler.backends.llvm.schedule` makes a kernel's
outer loop ``parallel``, and TVM turns each parallel loop into a
``TVMBackendParallelLaunch``: wake the pool, split the loop, wait for the
slowest thread. That costs about a microsecond per kernel on a quiet 2-core
Zen 5 host, and much more when another process holds the second core, while
most kernels of a small model take only one or two microseconds of work.
Measured there with 2 threads: the digits CNN ran 7.4 us on one thread and
17.3 us on two (int8; fp32 7.7 and 12.6 us), PP-OCR cls int8 0.37 ms on one
thread and 0.51 ms on two.

:func:`serial_small_kernels_pass` estimates each scheduled kernel's work
(:func:`kernel_work`: the statements it executes, a vector statement
counted once) and turns the ``parallel`` loops of the kernels below
:data:`PARALLEL_MIN_WORK` into serial ones. TVM has no such threshold of
its own (its ``ParallelLaunch`` always uses the whole pool).
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["PARALLEL_MIN_WORK", "kernel_work", "serial_small_kernels_pass"]

logger = logging.getLogger(__name__)

#: Kernels that execute fewer statements than this stay on one thread. A
#: statement here is one store (a vector store counted once) or one
#: tensorized dot-product step; on a Zen 5 core 40,000 of them took 4-12 us
#: (PP-OCR cls and the digits CNN, int8 and fp32 kernels), so a kernel left
#: parallel takes some 10-30 us of work: enough to pay for a fork/join even
#: when the second core is not idle. Measured with 2 threads on the shared
#: 2-core Zen 5 host (load average 2-6, interleaved, 10th percentile), PP-OCR
#: cls int8 / fp32: every kernel parallel 502 / 406 us, below 20,000 serial
#: 379 / 360 us, below 150,000 or all serial 277 / 361 us.
PARALLEL_MIN_WORK = 100_000


def kernel_work(stmt: Any) -> float:
    """Statements ``stmt`` executes: loop extents times body, a vectorized loop counted once.

    A loop with a non-constant extent counts as unbounded (the kernel keeps
    its parallel loops).
    """
    from tvm import s_tir, tirx

    if stmt is None:
        return 0.0
    if isinstance(stmt, tirx.For):
        if not isinstance(stmt.extent, tirx.IntImm):
            return float("inf")
        body = kernel_work(stmt.body)
        return body if stmt.kind == tirx.ForKind.VECTORIZED else int(stmt.extent.value) * body
    if isinstance(stmt, tirx.SeqStmt):
        return sum(kernel_work(s) for s in stmt.seq)
    if isinstance(stmt, tirx.IfThenElse):
        return 1.0 + max(kernel_work(stmt.then_case), kernel_work(stmt.else_case))
    if isinstance(stmt, (tirx.BufferStore, tirx.Evaluate)):
        return 1.0
    if isinstance(stmt, s_tir.SBlockRealize):
        return kernel_work(stmt.block)
    if isinstance(stmt, s_tir.SBlock):
        return kernel_work(stmt.body) + kernel_work(stmt.init)
    if isinstance(stmt, (tirx.AttrStmt, tirx.LetStmt)):
        return kernel_work(stmt.body)
    return 0.0


def _has_parallel(stmt: Any) -> bool:
    import tvm_ffi
    from tvm import tirx

    found = []
    tvm_ffi.structural_walk(stmt, [(tirx.For, lambda f: found.append(f.kind == tirx.ForKind.PARALLEL))])
    return any(found)


def _serial(func: Any) -> Any:
    """``func`` with every ``parallel`` loop serial."""
    import tvm_ffi
    from tvm import tirx

    def loop(node: Any, mutator: Any) -> Any:
        body = mutator.mutate(node.body)
        kind = tirx.ForKind.SERIAL if node.kind == tirx.ForKind.PARALLEL else node.kind
        if kind == node.kind and body.same_as(node.body):
            return node
        return tirx.For(node.loop_var, node.min, node.extent, kind, body, node.thread_binding, node.annotations,
                        node.step)  # fmt: skip

    return func.with_body(tvm_ffi.structural_mutate(func.body, [(tirx.For, loop)]))


def serial_small_kernels_pass(min_work: float = PARALLEL_MIN_WORK) -> Any:
    """A module pass making the ``parallel`` loops of kernels under ``min_work`` serial (see the module doc)."""
    import tvm

    @tvm.transform.module_pass(opt_level=0, name="EdgekitSerialSmallKernels")
    def apply(mod: Any, _ctx: Any) -> Any:
        serial = 0
        for gv, func in list(mod.functions_items()):
            if not isinstance(func, tvm.tirx.PrimFunc):
                continue
            if _has_parallel(func.body) and kernel_work(func.body) < min_work:
                mod[gv] = _serial(func)
                serial += 1
        logger.debug("%d kernels below %d statements run serially", serial, min_work)
        return mod

    return apply
