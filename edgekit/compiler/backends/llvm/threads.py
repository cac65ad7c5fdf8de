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
(:func:`kernel_work`) and turns the ``parallel`` loops of the kernels below
:data:`PARALLEL_MIN_WORK` into serial ones. TVM has no such threshold of
its own (its ``ParallelLaunch`` always uses the whole pool).

The estimate counts *operations*, not statements: an int8 kernel's
tensorized ``vpdpbusd`` step and a requantize-and-add epilogue of fifty
vector operations were one statement each before, and on Zen 5 a statement
took from 0.05 ns (a VNNI conv step) to 16 ns (a concat gathering from three
channels-first inputs). The 100,000-statement threshold kept 2 of PP-OCR
det's 7.7 ms of int8 kernel time (its elementwise kernels, 0.1-0.65 ms
each) on one thread.
"""

from __future__ import annotations

import logging
import math
from typing import Any

__all__ = ["PARALLEL_MIN_WORK", "kernel_work", "serial_small_kernels_pass", "vector_bits"]

logger = logging.getLogger(__name__)

#: Kernels whose :func:`kernel_work` is below this stay on one thread.
#: Fitted on the 430 kernels of PP-OCR det/cls, the digits CNN and SqueezeNet
#: (int8 and fp32, code for znver5, one Zen 5 core, CPU time of each kernel):
#: a unit of work took 0.019 ns (an operation) and 0.025 ns (a byte), within
#: 2x for most kernels above 10 us; so 1,000,000 is some 20 us of work, enough
#: to pay for a fork/join even when the second core is not idle. It keeps
#: every kernel of PP-OCR cls int8 and the digits CNN serial, as the
#: statement threshold did, and puts PP-OCR det's large elementwise int8
#: kernels (0.1-0.65 ms each) on the pool.
PARALLEL_MIN_WORK = 1_000_000

_COMPARE_NAMES = ("EQ", "NE", "LT", "LE", "GT", "GE")
_BINARY_NAMES = ("Add", "Sub", "Mul", "Div", "Mod", "FloorDiv", "FloorMod", "Min", "Max", "And", "Or",
                 "LShift", "RShift", "BitwiseAnd", "BitwiseOr", "BitwiseXor", *_COMPARE_NAMES)  # fmt: skip


def vector_bits(target: Any) -> int:
    """Bits of one SIMD register of ``target`` (512 with AVX-512, 256 with AVX2, else 128)."""
    from edgekit.compiler.backends.llvm.schedule import simd_lanes

    return simd_lanes(target, 8) * 8


def kernel_work(func: Any, bits: int = 512) -> float:
    """Estimated work of a scheduled PrimFunc: the operations it executes plus the bytes of its buffers.

    An operation on ``n`` lanes of a ``b``-bit type counts ``ceil(n * b / bits)``
    (``bits``: the target's SIMD width, :func:`vector_bits`); a vectorized loop
    multiplies the lanes of the operations in it that depend on its variable
    (the others are scalar); a load that is not contiguous along a vectorized
    loop (a gather) counts one per lane, plus per lane the index arithmetic
    when the index is not linear in the loop. The bytes of the parameters
    stand for memory traffic (a concat of 10 MB does 0.5 M operations in 1 ms).
    A loop with a non-constant extent counts as unbounded (the kernel keeps
    its parallel loops).
    """
    from tvm import tirx

    nbytes = 0
    for param in func.params:
        shape = getattr(param, "shape", None)
        if shape is not None and all(isinstance(s, tirx.IntImm) for s in shape):
            nbytes += math.prod(int(s) for s in shape) * param.dtype.bits // 8
    return _Counter(bits).stmt(func.body, None, {}) + nbytes


class _Vector:
    """The vectorized loop a statement sits in: its variable, its lanes, an analyzer that knows its range."""

    def __init__(self, var: Any, lanes: int) -> None:
        from tvm import ir
        from tvm.sym import Analyzer

        self.var, self.lanes = var, lanes
        self.analyzer = Analyzer()
        self.analyzer.bind(var, ir.Range(0, lanes))


class _Counter:
    """The counting of :func:`kernel_work`; ``binds`` maps block iteration variables to (binding, depends on the vector loop)."""

    def __init__(self, bits: int) -> None:
        from tvm import tirx

        self.bits = bits
        self.binary = tuple(getattr(tirx, n) for n in _BINARY_NAMES)
        self.compare = tuple(getattr(tirx, n) for n in _COMPARE_NAMES)

    def ops(self, dtype: Any, lanes: int) -> int:
        return max(1, math.ceil(max(int(dtype.bits), 8) * lanes / self.bits))

    def stmt(self, s: Any, vec: _Vector | None, binds: dict) -> float:
        from tvm import s_tir, tirx

        if s is None:
            return 0.0
        if isinstance(s, tirx.For):
            if not isinstance(s.extent, tirx.IntImm):
                return float("inf")
            n = int(s.extent.value)
            if s.kind == tirx.ForKind.VECTORIZED:
                return self.stmt(s.body, _Vector(s.loop_var, n * (vec.lanes if vec else 1)), binds)
            return n * self.stmt(s.body, vec, binds)
        if isinstance(s, tirx.SeqStmt):
            return sum(self.stmt(x, vec, binds) for x in s.seq)
        if isinstance(s, tirx.IfThenElse):
            branches = max(self.stmt(s.then_case, vec, binds), self.stmt(s.else_case, vec, binds))
            return self.expr(s.condition, vec, binds)[0] + branches
        if isinstance(s, tirx.BufferStore):
            cost, dep = self.expr(s.value, vec, binds)
            dep = dep or any(self.expr(i, vec, binds)[1] for i in s.indices if not isinstance(i, tirx.Ramp))
            dtype = s.value.ty.dtype
            return cost + self.ops(dtype, dtype.lanes * (vec.lanes if dep and vec else 1))
        if isinstance(s, tirx.Evaluate):
            return 1.0 + self.expr(s.value, vec, binds)[0]
        if isinstance(s, s_tir.SBlockRealize):
            inner = dict(binds)
            for iv, value in zip(s.block.iter_vars, s.iter_values):
                inner[iv.var] = (value, self.expr(value, vec, binds)[1])
            return self.stmt(s.block, vec, inner)
        if isinstance(s, s_tir.SBlock):
            return self.stmt(s.body, vec, binds) + self.stmt(s.init, vec, binds)
        if isinstance(s, (tirx.AttrStmt, tirx.LetStmt)):
            return self.stmt(s.body, vec, binds)
        return 0.0

    def expr(self, e: Any, vec: _Vector | None, binds: dict) -> tuple[float, bool]:
        """``(operations, whether e varies along the vectorized loop)``."""
        from tvm import ir, tirx

        if isinstance(e, (tirx.IntImm, tirx.FloatImm, ir.StringImm)):
            return 0.0, False
        if isinstance(e, tirx.Var):
            return 0.0, vec is not None and (e.same_as(vec.var) or binds.get(e, (None, False))[1])
        if isinstance(e, ir.TensorLoad):
            return self.load(e, vec, binds)
        kids = _operands(e, self.binary)
        if kids is None:  # an expression kind not listed: one operation
            return 1.0, vec is not None
        cost, dep = 0.0, False
        for k in kids:
            c, d = self.expr(k, vec, binds)
            cost, dep = cost + c, dep or d
        dtype = e.a.ty.dtype if isinstance(e, self.compare) else e.ty.dtype
        return cost + self.ops(dtype, dtype.lanes * (vec.lanes if dep and vec else 1)), dep

    def load(self, e: Any, vec: _Vector | None, binds: dict) -> tuple[float, bool]:
        from tvm import tirx

        dtype = e.ty.dtype
        if vec is None or not any(self.expr(i, vec, binds)[1] for i in e.indices if not isinstance(i, tirx.Ramp)):
            return self.ops(dtype, dtype.lanes), False
        lanes = dtype.lanes * vec.lanes
        index = [vec.analyzer.simplify(_resolve(i, binds)) for i in e.indices]
        strides = [_stride(i, vec) for i in index]
        if all(s == 0 for s in strides[:-1]) and strides[-1] in (0, 1):
            return self.ops(dtype, lanes), True
        # A gather: one scalar load per lane, each computing its own index
        # unless the index steps by a constant.
        arithmetic = sum(self.expr(i, None, {})[0] for i, s in zip(index, strides) if s is None)
        return float(lanes) * (1 + arithmetic), True


def _operands(e: Any, binary: tuple) -> list | None:
    """The operand expressions of ``e``, or None for a kind of expression not known here."""
    from tvm import ir, tirx

    if isinstance(e, binary):
        return [e.a, e.b]
    if isinstance(e, (tirx.Cast, tirx.Broadcast)):
        return [e.value]
    if isinstance(e, (tirx.Not, tirx.BitwiseNot)):
        return [e.a]
    if isinstance(e, tirx.Select):
        return [e.condition, e.true_value, e.false_value]
    if isinstance(e, ir.Call):
        return [a for a in e.args if isinstance(a, ir.Expr)]
    if isinstance(e, tirx.Ramp):
        return [e.base, e.stride]
    if isinstance(e, tirx.Let):
        return [e.value, e.body]
    if isinstance(e, tirx.Shuffle):
        return list(e.vectors)
    return None


def _resolve(e: Any, binds: dict) -> Any:
    """``e`` with block iteration variables replaced by their bindings (in loop variables)."""
    import tvm_ffi
    from tvm import tirx

    def var(node: Any, _mutator: Any) -> Any:
        bound = binds.get(node)
        return _resolve(bound[0], binds) if bound is not None else node

    return tvm_ffi.structural_mutate(e, [(tirx.Var, var)])


def _stride(index: Any, vec: _Vector) -> int | None:
    """The constant step of ``index`` per lane of ``vec``, or None when it is not linear in it."""
    from tvm import tirx
    from tvm.sym import detect_linear_equation

    coeff = detect_linear_equation(index, [vec.var])
    return int(coeff[0].value) if coeff and isinstance(coeff[0], tirx.IntImm) else None


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


def serial_small_kernels_pass(target: Any = None, min_work: float = PARALLEL_MIN_WORK, threads: int = 1) -> Any:
    """A module pass making the ``parallel`` loops of kernels under ``min_work`` serial (see the module doc).

    ``target`` (default: the current target, else 128-bit SIMD) sets the
    vector width :func:`kernel_work` counts operations in. ``threads`` is the
    board's cores: with two or more, a small kernel that shares a large
    tensor with a parallel kernel runs in parallel too where its threads then
    touch the lines their neighbour's threads touched
    (:func:`edgekit.compiler.backends.llvm.thread_shares.aligned_parallel`),
    and so does a hand-written kernel with no parallel loop whose outer loop
    can be split (:func:`~edgekit.compiler.backends.llvm.thread_shares.parallel_outer`).
    """
    import tvm

    from edgekit.compiler.backends.llvm.thread_shares import has_parallel

    @tvm.transform.module_pass(opt_level=0, name="EdgekitSerialSmallKernels")
    def apply(mod: Any, _ctx: Any) -> Any:
        chosen = target if target is not None else tvm.target.Target.current(allow_none=True)
        bits = vector_bits(chosen) if chosen is not None else 128
        small: dict[str, Any] = {}
        parallel: set[str] = set()
        for gv, func in list(mod.functions_items()):
            if not isinstance(func, tvm.tirx.PrimFunc):
                continue
            if has_parallel(func.body):
                if kernel_work(func, bits) < min_work:
                    small[gv.name_hint] = func
                else:
                    parallel.add(gv.name_hint)
        kept = _aligned(mod, threads, small, parallel)
        for gv, func in list(mod.functions_items()):
            name = gv.name_hint
            if name in kept:
                mod[gv] = kept[name]
            elif name in small:
                mod[gv] = _serial(func)
        logger.debug("%d kernels below %d units of work run serially, %d small ones in parallel",
                     len(small) - len(kept), min_work, len(kept))  # fmt: skip
        return mod

    return apply


def _aligned(mod: Any, threads: int, small: dict[str, Any], parallel: set[str]) -> dict[str, Any]:
    """The small kernels (and hand-written serial ones) :func:`thread_shares.aligned_parallel` keeps in parallel."""
    from edgekit.compiler.backends.llvm.thread_shares import aligned_parallel, parallel_outer

    if threads < 2 or "main" not in [gv.name_hint for gv in mod.get_global_vars()]:
        return {}
    candidates = dict(small)
    for name in _touching_large_tensors(mod):
        func = mod[name]
        if name not in small and name not in parallel and isinstance(func, __import__("tvm").tirx.PrimFunc):
            split = parallel_outer(func, threads)
            if split is not None:
                candidates[name] = split
    keep = aligned_parallel(mod, threads, candidates, parallel)
    return {name: candidates[name] for name in keep}


def _touching_large_tensors(mod: Any) -> set[str]:
    from edgekit.compiler.backends.llvm.thread_shares import SHARED_MIN_BYTES, _calls

    calls, nbytes = _calls(mod["main"])
    return {c.name for c in calls if any(nbytes.get(k, 0) >= SHARED_MIN_BYTES for _, k in c.reads + c.writes)}
