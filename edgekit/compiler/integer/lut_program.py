"""The float32 steps a 256-entry lookup table was computed with, as a straight-line program.

:mod:`edgekit.compiler.integer.lut` computes each table by running an
elementwise chain (hard-swish's ``x * clip(x + 3, 0, 6) / 6``, HardSigmoid's
``clip(0.2 * x + 0.5, 0, 1)``, a ReLU6 clip, inner requantizations) over the
256 int8 values in numpy float32, then quantizing. Where every step of the
chain is an IEEE basic operation (add, subtract, multiply, divide, min, max,
round half to even) the same chain, recorded here as a :class:`Program`, can
be computed arithmetically in the producing kernel's epilogue instead of by a
byte gather -- the form x86 targets without VBMI want
(:mod:`edgekit.compiler.backends.llvm.lookup_arith`). IEEE basic operations
are correctly rounded, so a program evaluated step by step in float32 gives
the table's values bit for bit; :func:`program_of_chain` checks that over all
256 inputs before it returns one.

The program travels with the module as the attribute :data:`LUT_PROGRAMS`
(table bytes in hex -> program JSON): any program reproducing a table is a
valid way to compute it, whatever chain it came from.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
from tvm import relax

from edgekit.compiler.integer.context import LoweringContext, Skip, int_range
from edgekit.compiler.integer.values import call_name

__all__ = ["LUT_PROGRAMS", "Program", "evaluate", "program_of_chain", "table_key"]

logger = logging.getLogger(__name__)

#: Module attribute holding the programs of the lowering's tables (table key -> JSON).
LUT_PROGRAMS = "edgekit_lut_programs"

_F = np.float32
#: An operand: a step index (int) or a float32 constant.
Operand = Union[int, np.float32]
#: The binary operations of a program and their float32 numpy functions.
BINARY = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.divide,
    "max": np.maximum,
    "min": np.minimum,
}


@dataclass(frozen=True)
class Program:
    """Steps ``(op, operands)``; step 0 is ``("x", ())``, the int8 input as a float; the last step is the result.

    ``op`` is one of :data:`BINARY` or ``"rint"`` (round half to even, one
    operand). The result is an integer-valued float in the table's range.
    """

    steps: tuple[tuple[str, tuple[Operand, ...]], ...]

    def to_json(self) -> str:
        enc = [[op, [a if isinstance(a, int) else {"c": float(a)} for a in args]] for op, args in self.steps]
        return json.dumps(enc)

    @classmethod
    def from_json(cls, text: str) -> "Program":
        steps = [(op, tuple(a if isinstance(a, int) else _F(a["c"]) for a in args)) for op, args in json.loads(text)]
        return cls(tuple(steps))


def table_key(table: np.ndarray) -> str:
    """The key of a 256-entry int8/uint8 table in :data:`LUT_PROGRAMS`."""
    return np.ascontiguousarray(table).astype(np.int8).tobytes().hex()


def _fma32(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``a * b + c`` rounded once to float32 (what an FMA computes), for float32 arrays.

    The product of two float32 values is exact in float64; TwoSum gives the
    float64 sum ``s`` and its error. Rounding ``s`` to float32 is the correct
    rounding of the exact sum unless ``s`` sits exactly half-way between two
    float32 values while the exact sum does not: then the error's sign picks
    the neighbour. (numpy has no float32 FMA -- hand-written.)
    """
    p = a.astype(np.float64) * b.astype(np.float64)
    c64 = np.broadcast_to(c, p.shape).astype(np.float64)
    s = p + c64
    t = s - p
    err = (p - (s - t)) + (c64 - t)
    r = s.astype(_F)
    r64 = r.astype(np.float64)
    other = np.nextafter(r, np.where(s > r64, _F(np.inf), _F(-np.inf)).astype(_F))
    tie = (err != 0) & (s != r64) & (2 * np.abs(s - r64) == np.abs(other.astype(np.float64) - r64))
    return np.where(tie & (np.sign(err) == np.sign(s - r64)), other, r).astype(_F)


def evaluate(program: Program, fused: dict[int, int] | None = None) -> np.ndarray:
    """The program's float32 result for each int8 input ``-128 .. 127``.

    ``fused`` maps an ``add``/``sub`` step to the operand position (0 or 1)
    of a ``mul`` step it takes with one rounding, as a compiler allowed to
    contract ``a * b + c`` into an FMA may compute it.
    """
    fused = fused or {}
    vals: list[np.ndarray] = []

    def get(a: Operand) -> np.ndarray:
        return vals[a] if isinstance(a, int) else np.asarray(a, dtype=_F)

    for i, (op, args) in enumerate(program.steps):
        if op == "x":
            vals.append(np.arange(-128, 128).astype(_F))
        elif op == "rint":
            vals.append(np.rint(get(args[0])).astype(_F))
        elif i in fused:
            k = fused[i]
            mul = program.steps[args[k]][1]
            other = get(args[1 - k])
            a, b = (np.broadcast_to(get(v), (256,)).astype(_F) for v in mul)
            if op == "sub" and k == 1:  # c - a * b
                a = -a
            elif op == "sub":  # a * b - c
                other = -other
            vals.append(_fma32(a, b, other))
        else:
            with np.errstate(all="ignore"):
                vals.append(np.broadcast_to(BINARY[op](get(args[0]), get(args[1])), (256,)).astype(_F))
    return vals[-1]


class _Builder:
    """Records the chain of :class:`edgekit.compiler.integer.lut._Chain` as program steps.

    Mirrors ``_Chain.run`` for the IEEE-exact subset of its ops; anything else
    (sigmoid, exp, tanh, a chain of two int8 tensors) raises :class:`Skip`.
    """

    def __init__(self, ctx: LoweringContext, source: relax.Expr, fold: Callable[[relax.Expr], np.ndarray | None]
                 ) -> None:  # fmt: skip
        self.ctx = ctx
        self.source = source
        self.fold = fold
        self.steps: list[tuple[str, tuple[Operand, ...]]] = [("x", ())]
        self.seen: dict[tuple[str, tuple[Operand, ...]], int] = {}

    def emit(self, op: str, *args: Operand) -> int:
        """The step ``op(*args)``; an equal earlier step is reused (two dequantizes of one tensor)."""
        key = (op, tuple((type(a).__name__, a) for a in args))
        if key not in self.seen:
            self.steps.append((op, args))
            self.seen[key] = len(self.steps) - 1
        return self.seen[key]

    def run(self, expr: relax.Expr) -> Operand:
        values = self.ctx.values
        expr = values.lookup(expr)
        const = values.evaluate(expr)
        if const is not None:
            if const.size != 1:
                raise Skip("non-scalar constant operand")
            return _F(const.reshape(-1)[0])
        name = call_name(expr)
        if name == "relax.dequantize":
            qp = self.ctx.input_qparams(expr)
            q = self.int8(values.lookup(expr.args[0]))
            return self.emit("mul", self.emit("sub", q, _F(qp.z)), _F(qp.s))
        if name == "relax.clip":
            lo, hi = (values.value(a) for a in expr.args[1:])
            if lo is None or hi is None:
                raise Skip("clip bounds not known at compile time")
            return self.emit("min", self.emit("max", self.run(expr.args[0]), _F(lo)), _F(hi))
        if name == "relax.nn.relu":
            return self.emit("max", self.run(expr.args[0]), _F(0))
        if name == "relax.negative":
            return self.emit("mul", self.run(expr.args[0]), _F(-1))
        if name == "relax.call_tir":
            op = {"maximum": "max", "minimum": "min"}.get(getattr(expr.args[0], "name_hint", "").rstrip("0123456789"))
            fields = getattr(expr.args[1], "fields", ())
            if op is None or len(fields) != 2:
                raise Skip("call_tir")
            return self.emit(op, *(self.run(f) for f in fields))
        ops = {"relax.add": "add", "relax.subtract": "sub", "relax.multiply": "mul", "relax.divide": "div",
               "relax.maximum": "max", "relax.minimum": "min"}  # fmt: skip
        if name not in ops:
            return self.constant(expr, name)
        return self.emit(ops[name], *(self.run(a) for a in expr.args))

    def constant(self, expr: relax.Expr, name: str) -> np.float32:
        """A scalar computed from constants alone (``fold``), or Skip."""
        value = self.fold(expr)
        if value is None or np.size(value) != 1:
            raise Skip(f"{name or type(expr).__name__} is not an IEEE basic operation")
        return _F(np.reshape(value, -1)[0])

    def quantize(self, v: Operand, s: float, z: int, lo: int, hi: int) -> int:
        """onnxruntime's QuantizeLinear (:func:`edgekit.core.fixedpoint.quantize_ref`) as steps."""
        r = self.emit("add", self.emit("rint", self.emit("div", v, _F(s))), _F(z))
        return self.emit("min", self.emit("max", r, _F(lo)), _F(hi))

    def int8(self, x: relax.Expr) -> Operand:
        """The int8 tensor ``x`` as steps: the source, a requantized chain of it, or an earlier table of it."""
        if self.source.same_as(x):
            return 0
        name = call_name(x)
        if name == "relax.quantize" and str(x.attrs.out_dtype) in ("int8", "uint8"):
            out = self.ctx.output_qparams(x)
            return self.quantize(self.run(x.args[0]), out.s, out.z, *int_range(str(x.attrs.out_dtype)))
        if name == "relax.take":
            return self.inline(x)
        raise Skip("a second int8 tensor")

    def inline(self, take: relax.Call) -> int:
        """The steps of an earlier table ``take(table, astype(x, int32) + 128)``, when it has a program."""
        values = self.ctx.values
        table = values.evaluate(take.args[0])
        text = None if table is None or table.shape != (256,) else self.ctx.lut_programs.get(table_key(table))
        index = values.lookup(take.args[1])
        if text is None or call_name(index) != "relax.add" or call_name(values.lookup(index.args[0])) != "relax.astype":
            raise Skip("a table without a program")
        x = self.int8(values.lookup(values.lookup(index.args[0]).args[0]))
        base: dict[int, Operand] = {0: x}
        for i, (op, args) in enumerate(Program.from_json(text).steps[1:], start=1):
            base[i] = self.emit(op, *(base[a] if isinstance(a, int) else a for a in args))
        return int(base[len(base) - 1])


def program_of_chain(
    ctx: LoweringContext,
    data: relax.Expr,
    source: relax.Expr,
    out: tuple[float, int, str],
    table: np.ndarray,
    fold: Callable[[relax.Expr], np.ndarray | None],
) -> Program | None:
    """The program of ``quantize(data)``, a chain over the int8 tensor ``source``, if it reproduces ``table``.

    Args:
        out: The quantize's scale, zero point and dtype.
        fold: The value of a subexpression computed from constants alone
            (the Clip converter's ``where(isnan(b), -inf, b)``), None for
            anything else: the lowering's own evaluator.

    Returns:
        None when a step is no IEEE basic operation or (it should not
        happen) the program's float32 evaluation differs from the table.
    """
    out_s, out_z, out_dtype = out
    b = _Builder(ctx, source, fold)
    try:
        b.quantize(b.run(data), out_s, out_z, *int_range(out_dtype))
    except Skip as why:
        logger.debug("table without a program: %s", why)
        return None
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
        # The program is optional (the table is always exact): an expression
        # this reader does not know must not stop the lowering.
        logger.debug("table without a program: %s: %s", type(exc).__name__, exc)
        return None
    program = Program(tuple(b.steps))
    if not np.array_equal(evaluate(program), table.astype(np.int64).astype(_F)):
        logger.debug("table program differs from the table; keeping the table only")
        return None
    return program
