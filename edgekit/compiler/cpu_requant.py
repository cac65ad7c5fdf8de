"""32-bit requantization on x86 CPUs: float scale and round instead of int64 fixed point.

The integer lowering (:mod:`edgekit.compiler.integer.requant`) writes every
requantization as ``clamp(((sum_i a_i * m_i + c) >> n) + z)`` in int64 --
portable, bit-exact with the NPU and MCU references, and what an integer-only
core needs. On x86 that is the slowest part of a narrow int8 layer: there is
no 64-bit vector multiply below AVX-512DQ (LLVM emulates ``vpmullq`` with
three ``vpmuludq`` and shifts), and the int64 lanes halve every vector. For
x86 targets this pass rewrites the same arithmetic to int32/float32 lanes::

    y = clamp(round(sum_i float(a_i) * f_i + g), lo, hi)       f_i = m_i / 2**n,
                                                               g = (c - 2**(n-1)) / 2**n + z

that is ``cvtdq2ps``, an FMA per term, ``vroundps`` (to nearest, ties to
even: QuantizeLinear's rule), a min, a max and ``cvttps2dq`` per 8 or 16
lanes. The zero point goes in before the rounding, so the rounded value is
the output itself (``|y| <= 128``) and float32 resolves it to ``2**-17``;
an earlier form lifted it above 512 to round by truncation and lost four of
those bits: per layer, 184 elements of PP-OCR cls (16 samples, 10.5 M
elements) missed the exact rounding of the QDQ graph, now 7, and
onnxruntime's own float32 execution of it misses 19
(``benchmarks/int8_fidelity.py``). Every ``a_i``
is an int32 accumulator, an int32 product of two int8 values or an int8
value, so ``float(a_i)`` is exact up to ``2**24`` and the float sum is
within a few ``2**-24`` (relative) of the real value: the result differs
from the fixed-point form only where that value is within such an error of
a half-way point (and on exact ties, which the fixed-point form rounds up),
by one step. Against onnxruntime's QDQ graph (a float32 computation with
its own rounding error) that keeps the fixed-point form's 1-LSB bound
(``tests/unit/test_cpu_int8.py``).

Chosen by the target (any x86 target with AVX2), never by the build machine.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = ["float_requant_pass", "uses_float_requant"]

logger = logging.getLogger(__name__)

#: Output dtypes of the requantizations this pass rewrites.
_OUT_DTYPES = ("int8", "uint8")
#: Dtypes an int64 term may be widened from (exact in float32 up to 2**24).
_TERM_DTYPES = ("int8", "uint8", "int16", "int32")


def uses_float_requant(target: tvm.target.Target) -> bool:
    """True when ``target`` (not this machine) gets the float32 requantization: x86 with AVX2."""
    from edgekit.compiler.cpu_int8 import _has

    if target.kind.name != "llvm":
        return False
    triple = str(target.attrs.get("mtriple", "") or "")
    return (not triple or triple.startswith(("x86_64", "i686", "i386"))) and _has(target, "avx2")


def _const(expr: Any) -> np.ndarray | None:
    value = getattr(expr, "value", None)
    return value.numpy() if hasattr(value, "numpy") else None


class _Parsed:
    """``clamp(((sum_i a_i * m_i + c) >> n) + z, lo, hi)`` read off the Relax bindings."""

    def __init__(self) -> None:
        self.terms: list[tuple[Any, np.ndarray]] = []  # (int expression a_i, multiplier m_i)
        self.offset: np.ndarray = np.zeros((), np.int64)  # c
        self.shift: np.ndarray = np.zeros((), np.int64)  # n
        self.zero_point = 0
        self.lo = self.hi = 0


def float_requant_pass(target: tvm.target.Target) -> Any:
    """A Relax pass rewriting the lowering's int64 requantizations to float32 (x86 targets only).

    Runs after layout conversion (the constants are already in the layout of
    the tensors they scale) and before fusion, so the new arithmetic fuses
    into the producing kernel's epilogue as the old did.
    """
    import tvm
    from tvm import relax
    from tvm.relax import op as R

    from edgekit.compiler.cpu_pipeline import mutator_pass

    if not uses_float_requant(target):
        return tvm.transform.Sequential([], name="EdgekitFloatRequant")
    ops = {name: tvm.ir.Op.get(f"relax.{name}") for name in ("astype", "maximum", "minimum", "add", "right_shift", "multiply")}

    def is_op(expr: Any, name: str) -> bool:
        return isinstance(expr, relax.Call) and expr.op.same_as(ops[name])

    def dtype(expr: Any) -> str:
        t = expr.ty
        return str(t.dtype) if isinstance(t, relax.TensorType) else ""

    @relax.expr_functor.mutator
    class Requant(relax.PyExprMutator):
        def bound(self, expr: Any) -> Any:
            return self.lookup_binding(expr) if isinstance(expr, relax.Var) else expr

        def scalar(self, expr: Any) -> int | None:
            value = _const(expr)
            return int(value.reshape(-1)[0]) if value is not None and value.size == 1 else None

        def parse(self, call: Any) -> _Parsed | None:
            """The fixed-point requantization ending in ``call`` (``astype(..., int8)``), or None."""
            p = _Parsed()
            clamp = self.bound(call.args[0])
            if not (is_op(clamp, "maximum") and dtype(clamp) == "int64"):
                return None
            inner = self.bound(clamp.args[0])
            if not is_op(inner, "minimum"):
                return None
            lo, hi = self.scalar(clamp.args[1]), self.scalar(inner.args[1])
            if lo is None or hi is None:
                return None
            p.lo, p.hi = lo, hi
            v = self.bound(inner.args[0])
            if is_op(v, "add") and self.scalar(v.args[1]) is not None:
                p.zero_point = self.scalar(v.args[1])
                v = self.bound(v.args[0])
            if is_op(v, "right_shift"):
                shift = _const(v.args[1])
                if shift is None:
                    return None
                p.shift = shift.astype(np.int64)
                v = self.bound(v.args[0])
            if is_op(v, "add") and _const(v.args[1]) is not None:
                p.offset = _const(v.args[1]).astype(np.int64)
                v = self.bound(v.args[0])
            return p if self.terms(v, p) else None

        def terms(self, v: Any, p: _Parsed) -> bool:
            """Collects ``astype(a, int64) * m`` terms of a sum into ``p``; False if ``v`` is anything else."""
            if is_op(v, "add"):
                return self.terms(self.bound(v.args[0]), p) and self.terms(self.bound(v.args[1]), p)
            if not is_op(v, "multiply"):
                return False
            m = _const(v.args[1])
            widened = self.bound(v.args[0])
            if m is None or not is_op(widened, "astype") or dtype(widened.args[0]) not in _TERM_DTYPES:
                return False
            p.terms.append((widened.args[0], m.astype(np.int64)))
            return True

        def visit_call_(self, call: Any) -> Any:
            call = super().visit_call_(call)
            if not (is_op(call, "astype") and dtype(call) in _OUT_DTYPES):
                return call
            p = self.parse(call)
            return call if p is None else self.emit_float(p, dtype(call))

        def emit_float(self, p: _Parsed, out_dtype: str) -> Any:
            b = self.builder_
            scale = np.exp2(-p.shift.astype(np.float64))
            total = None
            for a, m in p.terms:
                term = b.emit(R.multiply(R.astype(a, "float32"), _f32(m * scale)))
                total = term if total is None else b.emit(R.add(total, term))
            # (s + c - 2**(n-1)) / 2**n is the real value v; round(v + z) to
            # nearest even is QuantizeLinear's rounding, and clamping commutes
            # with it (the bounds are integers).
            half = np.where(p.shift > 0, np.exp2(p.shift.astype(np.float64) - 1), 0.0)
            g = (p.offset.astype(np.float64) - half) * scale + p.zero_point
            u = b.emit(R.round(R.add(total, _f32(g))))
            u = b.emit(R.maximum(R.minimum(u, relax.const(np.float32(p.hi))), relax.const(np.float32(p.lo))))
            q = b.emit(R.astype(u, "int32"))
            return R.astype(q, out_dtype)

    def _f32(value: np.ndarray) -> Any:
        v = np.asarray(value, dtype=np.float32)
        return relax.const(v.reshape(()) if v.size == 1 else v)

    # The per-channel constants are still layout transforms of constants after ConvertLayout.
    return tvm.transform.Sequential(
        [relax.transform.FoldConstant(), mutator_pass(Requant, "EdgekitFloatRequant")], name="EdgekitFloatRequant"
    )
