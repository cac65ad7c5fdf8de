"""int8 table lookups computed arithmetically in the producer's epilogue (x86 without VBMI).

A 256-entry table costs an AVX2 target 16 ``vpshufb``, 15 compares and 15
blends per 32 values (:func:`edgekit.compiler.backends.llvm.lookup._lookup32`)
in a kernel of its own, while fp32 computes hard-swish or hard-sigmoid in the
convolution's epilogue at a few instructions per 8 values. Where the lowering
recorded the float32 program a table was computed with
(:mod:`edgekit.compiler.integer.lut_program`: hard-swish, hard-sigmoid, ReLU6
and other clips, inner requantizations), this module emits that program as
Relax float32 operations on the int8 tensor instead -- they fuse into the
producing kernel's epilogue like the requantization before them.

Exactness is proven per table, over all 256 int8 inputs, for the arithmetic
the compiled code does. The input is the requantized int8 value itself
(recovered exactly from the float requantization's rounded value), so the
accumulator's range plays no part: every output is a function of one of 256
inputs. Two things may differ from the table's own step-by-step float32
evaluation: divisions by constants become multiplications by the rounded
reciprocal and consecutive constant factors one factor (cheaper forms, tried
first), and LLVM may contract any ``a * b + c`` into one FMA (TVM compiles
with FP contraction on). :func:`exact_form` evaluates a form under every
choice of contraction and takes the first form that equals the table
everywhere; when none does, the table stays.
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np

from edgekit.compiler.backends.llvm.requant import _ROUND, float_requant_source
from edgekit.compiler.integer.lut_program import Operand, Program, evaluate
from edgekit.compiler.relax_rewrite import bound_value

__all__ = ["arithmetic_lookup", "exact_form", "kernel_forms"]

logger = logging.getLogger(__name__)

_F = np.float32
#: Most contractible additions a form may have (3 ** 6 evaluations at most).
_MAX_CONTRACTIBLE = 6


def _rewrite(program: Program, step: Any) -> Program:
    """``program`` with each step ``(op, args)`` replaced by ``step(i, op, args, steps)`` (same indices)."""
    steps: list[tuple[str, tuple[Operand, ...]]] = []
    for i, (op, args) in enumerate(program.steps):
        steps.append(step(i, op, args, steps))
    return Program(tuple(steps))


def _reciprocals(program: Program) -> Program:
    """Divisions by a constant as multiplications by its float32 reciprocal."""

    def step(_i: int, op: str, args: tuple, _steps: list) -> tuple:
        if op == "div" and not isinstance(args[1], int):
            return "mul", (args[0], _F(1.0 / float(args[1])))
        return op, args

    return _rewrite(program, step)


def _uses(program: Program) -> list[int]:
    uses = [0] * len(program.steps)
    for _op, args in program.steps:
        for a in args:
            if isinstance(a, int):
                uses[a] += 1
    return uses


def _merged_factors(program: Program) -> Program:
    """``(t * c1) * c2`` as ``t * fl32(c1 * c2)`` where ``t * c1`` has no other use."""
    uses = _uses(program)

    def step(_i: int, op: str, args: tuple, steps: list) -> tuple:
        if op != "mul" or not isinstance(args[0], int) or isinstance(args[1], int):
            return op, args
        inner_op, inner = steps[args[0]]
        if inner_op == "mul" and uses[args[0]] == 1 and isinstance(inner[0], int) and not isinstance(inner[1], int):
            return "mul", (inner[0], _F(float(inner[1]) * float(args[1])))
        return op, args

    return _rewrite(program, step)


def _scales_hoisted(program: Program) -> Program:
    """Positive constant factors carried to where a value is needed unscaled.

    A step ``v`` with a positive constant factor (``v = t * S``) is tracked
    as ``(t, S)``: ``v + c``, ``max(v, c)`` and ``min(v, c)`` become
    ``t + c / S`` and so on with the same factor, ``v * w`` multiplies the
    factors, ``v / c`` divides them, and the product with the factor is only
    computed where another operation needs ``v`` itself (a ``rint``: one
    FMA with its ``+ R``). Hard-swish ``v * clip(v + 3, 0, 6) / 6 / s_o``
    with ``v = k * s`` becomes ``(k * clip(k + 3/s, 0, 6/s)) * (s * s / 6 / s_o)``:
    two multiplications fewer per value.
    """
    steps: list[tuple[str, tuple[Operand, ...]]] = []
    scaled: dict[int, tuple[int, float]] = {}  # old step -> (new step t, S) with value t * S
    where: dict[int, int] = {}

    def emit(op: str, *args: Operand) -> int:
        steps.append((op, args))
        return len(steps) - 1

    def plain(a: Operand) -> Operand:
        if not isinstance(a, int):
            return a
        if a not in where:
            t, factor = scaled[a]
            where[a] = emit("mul", t, _F(factor))
        return where[a]

    for i, (op, args) in enumerate(program.steps):
        const = [not isinstance(a, int) for a in args]
        if op == "mul" and sum(const) == 1 and float(args[const.index(True)]) > 0:
            t, c = args[const.index(False)], float(args[const.index(True)])
            scaled[i] = (scaled[t][0], scaled[t][1] * c) if t in scaled else (where[t], c)
        elif op == "div" and isinstance(args[0], int) and const[1] and args[0] in scaled and float(args[1]) > 0:
            t, factor = scaled[args[0]]
            scaled[i] = (t, factor / float(args[1]))
        elif op in ("add", "sub", "max", "min") and isinstance(args[0], int) and args[0] in scaled and const[1]:
            t, factor = scaled[args[0]]
            scaled[i] = (emit(op, t, _F(float(args[1]) / factor)), factor)
        elif op == "mul" and all(isinstance(a, int) and a in scaled for a in args):
            (t1, f1), (t2, f2) = scaled[args[0]], scaled[args[1]]
            scaled[i] = (emit("mul", t1, t2), f1 * f2)
        else:
            where[i] = emit(op, *(plain(a) for a in args))
    return Program(tuple(steps))


def _rint_as_adds(program: Program) -> Program:
    """``rint(a)`` as the kernel computes it: ``(a + R) - R`` (``R = 1.5 * 2**23``), two steps."""
    steps: list[tuple[str, tuple[Operand, ...]]] = []
    where: dict[int, int] = {}
    for i, (op, args) in enumerate(program.steps):
        args = tuple(where[a] if isinstance(a, int) else a for a in args)
        if op == "rint":
            steps.append(("add", (args[0], _F(_ROUND))))
            op, args = "sub", (len(steps) - 1, _F(_ROUND))
        steps.append((op, args))
        where[i] = len(steps) - 1
    return Program(tuple(steps))


def kernel_forms(program: Program) -> list[Program]:
    """Forms of ``program`` the kernel may compute, cheapest first, rounding as the kernel rounds."""
    forms = [_scales_hoisted(program), _merged_factors(_reciprocals(program)), _reciprocals(program), program]
    out: list[Program] = []
    for form in (_rint_as_adds(f) for f in forms):
        if form not in out:
            out.append(form)
    return out


def _contractions(form: Program) -> list[dict[int, int]] | None:
    """Every way LLVM may fuse a multiply into an add or subtract of ``form``; None when too many."""
    choices = []
    for i, (op, args) in enumerate(form.steps):
        if op in ("add", "sub"):
            muls = [k for k, a in enumerate(args) if isinstance(a, int) and form.steps[a][0] == "mul"]
            if muls:
                choices.append([(i, None)] + [(i, k) for k in muls])
    if len(choices) > _MAX_CONTRACTIBLE:
        return None
    return [{i: k for i, k in combo if k is not None} for combo in itertools.product(*choices)]


def _rounds_in_range(form: Program, fused: dict[int, int]) -> bool:
    """The values each ``+ R`` rounds stay below ``2**22`` in magnitude (where that add rounds to integers)."""
    for i, (op, args) in enumerate(form.steps):
        if op == "add" and not isinstance(args[1], int) and float(args[1]) == _ROUND:
            value = evaluate(Program(form.steps[: i + 1]), fused) - _F(_ROUND)
            if np.any(np.abs(value) >= 2.0**22):
                return False
    return True


def exact_form(program: Program, table: np.ndarray) -> Program | None:
    """The cheapest kernel form equal to ``table`` on all 256 inputs under every FMA contraction, or None."""
    want = table.astype(np.int64).astype(_F)
    for form in kernel_forms(program):
        variants = _contractions(form)
        if variants is None:
            continue
        if all(np.array_equal(evaluate(form, fused), want) and _rounds_in_range(form, fused) for fused in variants):
            return form
    return None


class _Emitter:
    """Emits a form's steps as Relax float32 operations on one int8 tensor."""

    def __init__(self, builder: Any, form: Program, x: Any, requant: tuple[Any, Any, int] | None) -> None:
        self.b, self.form, self.x, self.requant = builder, form, x, requant
        self.done: dict[int, Any] = {}

    def const(self, a: Operand) -> Any:
        from tvm import relax

        return relax.const(_F(a))

    def operand(self, a: Operand) -> Any:
        return self.value(a) if isinstance(a, int) else self.const(a)

    def value(self, i: int) -> Any:
        from tvm.relax import op as R

        if i in self.done:
            return self.done[i]
        op, args = self.form.steps[i]
        if op == "x" and self.requant is not None:
            _q, u, offset = self.requant  # x = int(u) - offset exactly
            out = self.b.emit(R.subtract(u, self.const(offset)))
        elif op == "x":
            out = self.b.emit(R.astype(self.x, "float32"))
        elif op == "sub" and args[0] == 0 and self.requant is not None and not isinstance(args[1], int):
            out = self.b.emit(R.subtract(self.requant[1], self.const(self.requant[2] + float(args[1]))))
        elif op == "sub" and not isinstance(args[1], int) and float(args[1]) == _ROUND:
            # (a + R) - R through int32: exact, and out of reach of float simplification.
            t = R.astype(self.value(args[0]), "int32")
            out = self.b.emit(R.astype(R.subtract(t, self._int(_ROUND)), "float32"))
        else:
            fn = {"add": R.add, "sub": R.subtract, "mul": R.multiply, "div": R.divide, "max": R.maximum,
                  "min": R.minimum}[op]  # fmt: skip
            out = self.b.emit(fn(self.operand(args[0]), self.operand(args[1])))
        self.done[i] = out
        return out

    def _int(self, value: float) -> Any:
        from tvm import relax

        return relax.const(np.int32(value))

    def result(self) -> Any:
        """The int8 result; a quantize's tail ``(t - R + z)`` clamped is clamped in ``t``'s offset domain."""
        from tvm.relax import op as R

        steps = self.form.steps
        tail = [op for op, _args in steps[-5:]]
        if len(steps) > 5 and tail == ["add", "sub", "add", "max", "min"] and self._quantize_tail():
            t = self.value(len(steps) - 5)
            z, lo, hi = (float(steps[k][1][1]) for k in range(len(steps) - 3, len(steps)))
            clamped = R.maximum(R.minimum(t, self.const(_ROUND + hi - z)), self.const(_ROUND + lo - z))
            q = R.subtract(R.astype(self.b.emit(clamped), "int32"), self._int(_ROUND - z))
            return R.astype(self.b.emit(q), "int8")
        return R.astype(R.astype(self.value(len(steps) - 1), "int32"), "int8")

    def _quantize_tail(self) -> bool:
        steps, n = self.form.steps, len(self.form.steps)
        chained = all(steps[k][1][0] == k - 1 for k in range(n - 4, n))
        consts = all(not isinstance(steps[k][1][1], int) for k in range(n - 5, n))
        return chained and consts and float(steps[n - 5][1][1]) == _ROUND and float(steps[n - 4][1][1]) == _ROUND


def arithmetic_lookup(m: Any, x: Any, table: np.ndarray, program: Program) -> Any:
    """``table[x + 128]`` for the int8 tensor ``x`` as float32 arithmetic, or None when no form is exact.

    Emitted on ``m.builder_``; ``x``'s float requantization, when it is one
    (:func:`edgekit.compiler.backends.llvm.requant.float_requant_source`), is
    read before its int8 cast.
    """
    form = exact_form(program, table)
    if form is None:
        logger.debug("no exact arithmetic form for a table; keeping the lookup")
        return None
    requant = float_requant_source(m, bound_value(m, x))
    return _Emitter(m.builder_, form, x, requant).result()
