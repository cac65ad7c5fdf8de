"""32-bit requantization on x86 CPUs: float scale and round instead of int64 fixed point.

The integer lowering (:mod:`edgekit.compiler.integer.requant`) writes every
requantization as ``clamp(((sum_i a_i * m_i + c) >> n) + z)`` in int64 --
portable, bit-exact with the NPU and MCU references, and what an integer-only
core needs. On x86 that is the slowest part of a narrow int8 layer: there is
no 64-bit vector multiply below AVX-512DQ (LLVM emulates ``vpmullq`` with
three ``vpmuludq`` and shifts), and the int64 lanes halve every vector. For
x86 targets this pass rewrites the same arithmetic to int32/float32 lanes::

    y = clamp(fl32(sum_i float(a_i) * f_i + g + R) - R + z, lo, hi)    f_i = m_i / 2**n,
                                                                 g = (c - 2**(n-1)) / 2**n,  R = 1.5 * 2**23

that is ``cvtdq2ps``, an FMA per term (the last one adds ``R``), a min, a
max, ``cvttps2dq`` and a subtract per 8 or 16 lanes. A float32 near ``R``
has no fraction bits, so the add of ``R`` *is* the rounding: to nearest,
ties to even, as QuantizeLinear rounds ``v`` before it adds the zero point
(an odd zero point inside the rounded value would flip every exact tie),
and inside an FMA it rounds the exact product. An earlier form rounded half
up by truncating a value lifted above 512 and lost four bits of it: per
layer, 184 elements of PP-OCR cls (16 samples, 34.5 M elements) missed the
exact rounding of the QDQ graph, this form misses 8, and onnxruntime's own
float32 execution of it 19 (``benchmarks/int8_fidelity.py``,
docs/integer-lowering.md). Every ``a_i`` is an int32 accumulator, an
int32 product of two int8 values or an int8 value, so ``float(a_i)`` is
exact up to ``2**24`` and the float sum is within a few ``2**-24``
(relative) of the real value: the result differs from the fixed-point form
only where that value is within such an error of a half-way point, by one
step (both forms round exact ties to even)
(``tests/build/test_cpu_int8.py``, ``tests/build/test_int8_fidelity.py``).

Chosen by the target (any x86 target with AVX2), never by the build machine.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from edgekit.compiler.relax_rewrite import bound_value, calls_rewrite_pass, const_value, is_call, use_counts

if TYPE_CHECKING:  # pragma: no cover
    import tvm

__all__ = ["float_requant_pass", "float_requant_source", "uses_float_requant"]

logger = logging.getLogger(__name__)

#: Output dtypes of the requantizations this pass rewrites.
_OUT_DTYPES = ("int8", "uint8")
#: 1.5 * 2**23: a float32 in [2**23, 2**24) has no fraction bits, so adding
#: this rounds any |v| < 2**22 to an integer, ties to even (1.5 * 2**23 is
#: even), in the add itself -- or in the FMA that computes ``v``.
_ROUND = 12582912.0
#: Dtypes an int64 term may be widened from (exact in float32 up to 2**24).
_TERM_DTYPES = ("int8", "uint8", "int16", "int32")


def uses_float_requant(target: tvm.target.Target) -> bool:
    """True when ``target`` (not this machine) gets the float32 requantization: x86 with AVX2."""
    from edgekit.compiler.backends.llvm.intrin import has_feature

    if target.kind.name != "llvm":
        return False
    triple = str(target.attrs.get("mtriple", "") or "")
    return (not triple or triple.startswith(("x86_64", "i686", "i386"))) and has_feature(target, "avx2")


class _Parsed:
    """``clamp(round_shift(sum_i a_i * m_i + k, n) + z, lo, hi)`` read off the Relax bindings
    (``c = k + 2**(n-1)``: the offset the float form subtracts its half from)."""

    def __init__(self) -> None:
        self.terms: list[tuple[Any, np.ndarray]] = []  # (int expression a_i, multiplier m_i)
        self.offset: np.ndarray = np.zeros((), np.int64)  # c
        self.shift: np.ndarray = np.zeros((), np.int64)  # n
        self.zero_point = 0
        self.lo = self.hi = 0


def _scalar(expr: Any) -> int | None:
    """A one-element integer constant's value, None for anything else."""
    value = const_value(expr)
    return int(value.reshape(-1)[0]) if value is not None and value.size == 1 else None


def _dtype(expr: Any) -> str:
    from tvm import relax

    t = expr.ty
    return str(t.dtype) if isinstance(t, relax.TensorType) else ""


def _terms(m: Any, v: Any, p: _Parsed) -> bool:
    """Collects ``astype(a, int64) * m`` terms of a sum into ``p``; False if ``v`` is anything else."""
    if is_call(v, "relax.add"):
        return _terms(m, bound_value(m, v.args[0]), p) and _terms(m, bound_value(m, v.args[1]), p)
    if not is_call(v, "relax.multiply"):
        return False
    mult = const_value(v.args[1])
    widened = bound_value(m, v.args[0])
    if mult is None or not is_call(widened, "relax.astype") or _dtype(widened.args[0]) not in _TERM_DTYPES:
        return False
    p.terms.append((widened.args[0], mult.astype(np.int64)))
    return True


def _parse(m: Any, call: Any) -> _Parsed | None:
    """The fixed-point requantization ending in ``call`` (``astype(..., int8)``), or None."""
    from edgekit.compiler.integer.requant import match_round_shift

    p = _Parsed()
    clamp = bound_value(m, call.args[0])
    if not (is_call(clamp, "relax.maximum") and _dtype(clamp) == "int64"):
        return None
    inner = bound_value(m, clamp.args[0])
    if not is_call(inner, "relax.minimum"):
        return None
    lo, hi = _scalar(clamp.args[1]), _scalar(inner.args[1])
    if lo is None or hi is None:
        return None
    p.lo, p.hi = lo, hi
    v = bound_value(m, inner.args[0])
    if is_call(v, "relax.add") and _scalar(v.args[1]) is not None:
        p.zero_point = _scalar(v.args[1])
        v = bound_value(m, v.args[0])
    rounded = match_round_shift(v, lambda e: bound_value(m, e), const_value)
    if rounded is not None:  # round half to even, as the float add of _ROUND does
        v, p.shift = bound_value(m, rounded[0]), rounded[1]
        p.offset = np.where(p.shift > 0, np.left_shift(np.int64(1), np.maximum(p.shift - 1, 0)), 0)
    if is_call(v, "relax.add") and const_value(v.args[1]) is not None:
        p.offset = p.offset + const_value(v.args[1]).astype(np.int64)
        v = bound_value(m, v.args[0])
    return p if _terms(m, v, p) else None


def _f32(value: np.ndarray) -> Any:
    from tvm import relax

    v = np.asarray(value, dtype=np.float32)
    return relax.const(v.reshape(()) if v.size == 1 else v)


def _emit_float(b: Any, p: _Parsed, out_dtype: str) -> Any:
    """The float32 form of ``p`` (module docstring), emitted on the block builder ``b``."""
    from tvm import relax
    from tvm.relax import op as R

    scale = np.exp2(-p.shift.astype(np.float64))
    total = None
    for a, mult in p.terms:
        term = b.emit(R.multiply(R.astype(a, "float32"), _f32(mult * scale)))
        total = term if total is None else b.emit(R.add(total, term))
    # (s + c - 2**(n-1)) / 2**n is the real value v (g = 0 for one
    # requantized accumulator). Adding _ROUND leaves no fraction bits:
    # float32 rounds v to an integer, ties to even -- QuantizeLinear's
    # round(v), *then* the zero point (whose parity must not decide a
    # tie). Clamping commutes with the rounding (integer bounds).
    half = np.where(p.shift > 0, np.exp2(p.shift.astype(np.float64) - 1), 0.0)
    g = (p.offset.astype(np.float64) - half) * scale
    if np.any(g):
        total = b.emit(R.add(total, _f32(g)))
    u = b.emit(R.add(total, relax.const(np.float32(_ROUND))))
    lo, hi = (float(_ROUND + bound - p.zero_point) for bound in (p.lo, p.hi))
    u = b.emit(R.maximum(R.minimum(u, relax.const(np.float32(hi))), relax.const(np.float32(lo))))
    q = b.emit(R.subtract(R.astype(u, "int32"), relax.const(np.int32(_ROUND - p.zero_point))))
    return R.astype(q, out_dtype)


def _float_requant(m: Any, call: Any) -> Any:
    """``astype(requantization, int8|uint8)`` in float32, or None when ``call`` is no requantization."""
    if _dtype(call) not in _OUT_DTYPES:
        return None
    p = _parse(m, call)
    return None if p is None else _emit_float(m.builder_, p, _dtype(call))


def float_requant_source(m: Any, narrow: Any) -> tuple[Any, Any, int] | None:
    """``(q, u, offset)`` when ``narrow`` is ``astype(q, int8)`` of a float requantization, else None.

    ``q = astype(u, int32) - offset`` with ``u = maximum(minimum(v, hi), lo)``
    in float32, as :func:`_emit_float` writes it, and bounds that keep ``q``
    inside int8: the int8 cast is then the identity and ``u - offset`` (an
    exact float32 subtraction of integers below ``2**24``) is the value.
    """
    if not is_call(narrow, "relax.astype") or _dtype(narrow) != "int8":
        return None
    q = bound_value(m, narrow.args[0])
    if not (is_call(q, "relax.subtract") and is_call(bound_value(m, q.args[0]), "relax.astype")):
        return None
    u = bound_value(m, q.args[0]).args[0]
    clamp = bound_value(m, u)  # maximum(minimum(u, hi), lo), as _emit_float writes it
    inner = bound_value(m, clamp.args[0]) if is_call(clamp, "relax.maximum") else None
    if not (is_call(inner, "relax.minimum") and _dtype(clamp) == "float32"):
        return None
    lo, hi, offset = const_value(clamp.args[1]), const_value(inner.args[1]), _scalar(q.args[1])
    if lo is None or hi is None or offset is None or lo.size != 1 or hi.size != 1:
        return None
    if not (-128 <= float(lo.reshape(-1)[0]) - offset and float(hi.reshape(-1)[0]) - offset <= 127):
        return None
    return narrow.args[0], u, offset


def _widened_once(m: Any, call: Any) -> Any:
    """``astype(q, int16)`` for ``astype(astype(q, int8), int16)`` of a float requantization ``q``, or None.

    ``q`` is already clamped to the int8 range, so the int8 step is the
    identity; the int16 operand of a dense int8 kernel then comes straight
    from the int32 value (one pack) instead of packing to bytes and
    widening them again. Only where the int8 tensor has no other use.
    """
    from tvm.relax import op as R

    if _dtype(call) != "int16" or m.uses.get(call.args[0], 0) != 1:
        return None
    source = float_requant_source(m, bound_value(m, call.args[0]))
    return None if source is None else R.astype(source[0], "int16")


def _count_uses(mutator: Any) -> None:
    mutator.uses = use_counts(mutator.builder_.get())


def _requant(m: Any, call: Any) -> Any:
    new = _float_requant(m, call)
    return _widened_once(m, call) if new is None else new


def float_requant_pass(target: tvm.target.Target) -> Any:
    """A Relax pass rewriting the lowering's int64 requantizations to float32 (x86 targets only).

    Runs after layout conversion (the constants are already in the layout of
    the tensors they scale) and before fusion, so the new arithmetic fuses
    into the producing kernel's epilogue as the old did.
    """
    import tvm

    from edgekit.compiler.backends.llvm.constant_fold import fold_constants_pass

    if not uses_float_requant(target):
        return tvm.transform.Sequential([], name="EdgekitFloatRequant")
    # The per-channel constants are still layout transforms of constants after ConvertLayout
    # (folded in numpy: FoldConstant would build each with LLVM, constant_fold.py).
    return tvm.transform.Sequential(
        [
            fold_constants_pass(),
            calls_rewrite_pass({"relax.astype": _requant}, "EdgekitFloatRequant", _count_uses),
        ],
        name="EdgekitFloatRequant",
    )
