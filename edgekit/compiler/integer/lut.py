"""Elementwise chains of one int8 tensor become a 256-entry lookup table.

``quantize(f(dequantize(x)))`` for any elementwise ``f`` of one int8 input
and scalar constants (a requantize, Relu/Clip alone, HardSigmoid's
``clip(0.2 * x + 0.5, 0, 1)``, ``x + 3``, ``x / 6``, Sigmoid, ...) has only 256
possible inputs. The table is computed at compile time with onnxruntime's own
float32 arithmetic (DequantizeLinear, the ops, QuantizeLinear with round half
to even), so the compiled model does a single integer gather and matches
onnxruntime's unfused execution exactly for the arithmetic ops.
"""

from __future__ import annotations

import logging
import math
from typing import Callable

import numpy as np
from tvm import relax
from tvm.relax import op as R
from tvm.relax.dpl import DFPattern

from edgekit.compiler.integer.context import LoweringContext, Skip, int_range
from edgekit.compiler.integer.lut_program import program_of_chain, table_key
from edgekit.compiler.integer.patterns import AnyQuantizePattern
from edgekit.compiler.integer.values import QParams, call_name, tensor_dtype, tensor_shape
from edgekit.core.fixedpoint import dequantize_ref, quantize_ref

__all__ = [
    "ELEMENTWISE", "ELEMENTWISE_CHAIN", "lower_lut", "lut_of_chain", "lut_of_one_tensor", "requantize_lut", "emit_lut",
    "identity_or_lut",
]  # fmt: skip

logger = logging.getLogger(__name__)

ELEMENTWISE_CHAIN = AnyQuantizePattern.build()

_F = np.float32


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return (_F(1) / (_F(1) + np.exp(-x))).astype(_F)


_erf = np.vectorize(math.erf, otypes=[np.float64])

#: float32 numpy versions of the elementwise ops a chain may contain.
ELEMENTWISE: dict[str, Callable[..., np.ndarray]] = {
    "relax.add": lambda a, b: a + b,
    "relax.subtract": lambda a, b: a - b,
    "relax.multiply": lambda a, b: a * b,
    "relax.divide": lambda a, b: a / b,
    "relax.maximum": np.maximum,
    "relax.minimum": np.minimum,
    "relax.power": np.power,
    "relax.negative": np.negative,
    "relax.abs": np.abs,
    "relax.sqrt": np.sqrt,
    "relax.exp": np.exp,
    "relax.tanh": np.tanh,
    "relax.sigmoid": _sigmoid,
    "relax.nn.relu": lambda a: np.maximum(a, _F(0)),
    "relax.nn.silu": lambda a: a * _sigmoid(a),
    "relax.erf": lambda a: _erf(a).astype(_F),
    "relax.log": np.log,
    # TVM's Clip converter guards input bounds with where(isnan(b), +-inf, b).
    "relax.isnan": np.isnan,
    "relax.where": np.where,
}

#: TOPI kernels that TVM's Clip converter (bounds as inputs) emits as call_tir.
_TIR_BINARY: dict[str, Callable[..., np.ndarray]] = {"maximum": np.maximum, "minimum": np.minimum}


def _tir_name(call: relax.Call) -> str:
    return getattr(call.args[0], "name_hint", "").rstrip("0123456789")


class _Chain:
    """Evaluates a float chain over the 256 values of its single int8 input."""

    def __init__(self, ctx: LoweringContext) -> None:
        self.ctx = ctx
        self.source: relax.Expr | None = None

    def run(self, expr: relax.Expr, xs: np.ndarray) -> np.ndarray:
        values = self.ctx.values
        expr = values.lookup(expr)
        const = values.evaluate(expr)
        if const is not None:
            if const.size != 1:
                raise Skip("non-scalar constant operand")
            return np.asarray(const.reshape(()), dtype=_F)
        name = call_name(expr)
        if name == "relax.dequantize":
            return self._input(expr, xs)
        if name == "relax.clip":
            lo, hi = (values.value(a) for a in expr.args[1:])
            if lo is None or hi is None:
                raise Skip("clip bounds not known at compile time")
            return np.clip(self.run(expr.args[0], xs), _F(lo), _F(hi)).astype(_F)
        if name == "relax.nn.leakyrelu":
            v = self.run(expr.args[0], xs)
            return np.where(v >= 0, v, v * _F(expr.attrs.alpha)).astype(_F)
        if name == "relax.call_tir" and _tir_name(expr) in _TIR_BINARY and len(getattr(expr.args[1], "fields", ())) == 2:
            a, b = (self.run(f, xs) for f in expr.args[1].fields)
            return np.asarray(_TIR_BINARY[_tir_name(expr)](a, b), dtype=_F)
        if name not in ELEMENTWISE:
            raise Skip(f"{name.removeprefix('relax.') or type(expr).__name__} has no integer lowering")
        args = [self.run(a, xs) for a in expr.args]
        with np.errstate(all="ignore"):
            return np.asarray(ELEMENTWISE[name](*args), dtype=_F)

    def _input(self, dq: relax.Call, xs: np.ndarray) -> np.ndarray:
        qp = self.ctx.input_qparams(dq)
        return dequantize_ref(self._int8(self.ctx.values.lookup(dq.args[0]), xs), qp.s, qp.z)

    def _int8(self, x: relax.Expr, xs: np.ndarray) -> np.ndarray:
        """The values of the int8 tensor ``x`` for each value of the source."""
        if self.source is not None and self.source.same_as(x):
            return xs
        values = self._through(x, xs)
        if values is not None:
            return values
        if self.source is not None:
            raise Skip("elementwise chain of two int8 tensors")
        self.source = x
        return xs

    def _through(self, x: relax.Expr, xs: np.ndarray) -> np.ndarray | None:
        """Values of ``x`` when it is itself a function of the source, else None.

        Two cases: a requantized elementwise chain (``quantize(f(...))``,
        evaluated with onnxruntime's float32 QuantizeLinear) and a table
        lookup the lowering already made (``take(table, x + 128)``). This is
        what turns hard-swish -- a table for ``clip(x + 3, 0, 6)``, a
        requantized product with ``x``, a requantized ``/ 6`` -- into one
        table: each step is a function of the same 256 values.
        """
        name = call_name(x)
        if name == "relax.take":
            return self._lookup(x, xs)
        if name != "relax.quantize" or str(x.attrs.out_dtype) not in ("int8", "uint8"):
            return None
        inner = _Chain(self.ctx)
        inner.source = self.source
        try:
            values = inner.run(x.args[0], xs)
            out = self.ctx.output_qparams(x)
        except Skip:
            return None
        if inner.source is None:
            return None  # a constant: FoldConstant's job
        self.source = inner.source
        lo, hi = int_range(str(x.attrs.out_dtype))
        return quantize_ref(np.broadcast_to(values, xs.shape), out.s, out.z, lo, hi).astype(np.int32)

    def _lookup(self, take: relax.Call, xs: np.ndarray) -> np.ndarray | None:
        """Values of :func:`emit_lut`'s ``take(table, astype(x, int32) + 128)``."""
        values = self.ctx.values
        table = values.evaluate(take.args[0])
        index = values.lookup(take.args[1])
        if table is None or table.shape != (256,) or call_name(index) != "relax.add":
            return None
        offset = values.evaluate(index.args[1])
        cast = values.lookup(index.args[0])
        if offset is None or offset.size != 1 or int(offset.reshape(-1)[0]) != 128 or call_name(cast) != "relax.astype":
            return None
        x = values.lookup(cast.args[0])
        if tensor_dtype(x) != "int8":
            return None
        return table[self._int8(x, xs).astype(np.int64) + 128].astype(np.int32)


def requantize_lut(fn: Callable[[np.ndarray], np.ndarray], out: QParams, out_dtype: str = "int8") -> np.ndarray:
    """Table ``T[x + 128] = quantize(fn(x))`` over all int8 ``x``."""
    xs = np.arange(-128, 128, dtype=np.int8)
    lo, hi = int_range(out_dtype)
    return quantize_ref(fn(xs), out.s, out.z, lo, hi).astype(out_dtype)


def emit_lut(x: relax.Expr, table: np.ndarray) -> relax.Expr:
    """Gathers ``table[x + 128]``: the only arithmetic is an int32 add."""
    index = R.add(R.astype(x, "int32"), relax.const(np.int32(128), "int32"))
    return R.take(relax.const(table), index, axis=0, mode="clip")


def identity_or_lut(x: relax.Expr, x_qp: QParams, out: QParams, out_dtype: str = "int8") -> relax.Expr:
    """``quantize(dequantize(x))`` in integers: ``x`` itself when the params agree."""
    if x_qp.same_as(out) and out_dtype == "int8":
        return x
    return emit_lut(x, requantize_lut(lambda v: dequantize_ref(v, x_qp.s, x_qp.z), out, out_dtype))


def lower_lut(ctx: LoweringContext, q_call: relax.Call, m: dict[DFPattern, relax.Expr]) -> tuple[str, str, relax.Expr] | None:
    """Rewrites an elementwise chain of one int8 tensor into a table lookup."""
    return lut_of_chain(ctx, q_call, ctx.values.lookup(m[ELEMENTWISE_CHAIN.data]))


def lut_of_one_tensor(ctx: LoweringContext, q_call: relax.Call) -> tuple[str, str, relax.Expr] | None:
    """The table of ``q_call`` when its whole input is a function of one int8 tensor, else None.

    For the binary rule: ``x * hard_sigmoid(x)`` has two int8 operands but
    one source, so it is a table (exactly onnxruntime's float arithmetic),
    not a requantized integer product followed by more tables.
    """
    try:
        return lut_of_chain(ctx, q_call, ctx.values.lookup(q_call.args[0]))
    except Skip:
        return None


def lut_of_chain(ctx: LoweringContext, q_call: relax.Call, data: relax.Expr) -> tuple[str, str, relax.Expr] | None:
    """The table rewrite of ``q_call = quantize(data)``; raises :class:`Skip` or returns None as a rule does.

    Ops that pick elements (max pools, nearest resizes, slices:
    :func:`_commutes_with_tables`) between the chain and the ``quantize`` run
    on the int8 tensor, the table where it has the fewest elements.
    """
    if call_name(data) in ("", "relax.quantize"):  # a model input or a re-quantize of a quantize
        return None
    out_dtype = str(q_call.attrs.out_dtype)
    if out_dtype not in ("int8", "uint8"):
        raise Skip(f"output dtype {out_dtype}")
    out = ctx.output_qparams(q_call)
    picks = []  # outermost first
    while _commutes_with_tables(data):
        picks.append(data)
        data = ctx.values.lookup(data.args[0])
        if call_name(data) in ("", "relax.quantize"):
            return None
    chain = _Chain(ctx)
    xs = np.arange(-128, 128, dtype=np.int8)
    values = chain.run(data, xs)
    if chain.source is None:
        return None  # constant: FoldConstant's job
    if tensor_shape(data) != tensor_shape(chain.source):
        raise Skip("elementwise chain broadcasts its input")
    names = [call_name(p).removeprefix("relax.").removeprefix("nn.").removeprefix("image.") for p in picks]
    if call_name(data) == "relax.dequantize" and chain.source.same_as(ctx.values.lookup(data.args[0])):
        x_qp = ctx.input_qparams(data)
        requantized = identity_or_lut(chain.source, x_qp, out, out_dtype) if not picks else _through_picks(
            picks, chain.source, lambda x: identity_or_lut(x, x_qp, out, out_dtype))
        detail = "+".join(reversed(names[1:])) + ("" if x_qp.same_as(out) else " requantized")
        return (names[0] if picks else "requantize"), detail.strip(), requantized
    lo, hi = int_range(out_dtype)
    table = quantize_ref(np.broadcast_to(values, xs.shape), out.s, out.z, lo, hi).astype(out_dtype)
    _record_program(ctx, data, chain.source, out, out_dtype, table)
    ops = sorted({_tir_name(e) if call_name(e) == "relax.call_tir" else call_name(e).removeprefix("relax.")
                  for e in _calls(ctx, data)} - {"", "dequantize", "isnan", "where"})  # fmt: skip
    return "lut", "+".join(ops + names[::-1]), _through_picks(picks, chain.source, lambda x: emit_lut(x, table))


def _through_picks(picks: list[relax.Call], x: relax.Expr, table: Callable[[relax.Expr], relax.Expr]) -> relax.Expr:
    """``picks`` (outermost first) applied to ``x``, with ``table`` after the innermost slices and before the rest."""
    done = False
    for pick in reversed(picks):
        if not done and call_name(pick) != "relax.strided_slice":
            x, done = table(x), True
        x = relax.Call(pick.op, [x, *pick.args[1:]], pick.attrs)
    return x if done else table(x)


def _commutes_with_tables(expr: relax.Expr) -> bool:
    """True for an op that commutes with any elementwise map of its input, ``quantize(op(f(x))) == op(quantize(f(x)))``.

    A max pool because ``quantize`` is non-decreasing (and int8 padding, the
    dtype minimum, never wins a window where -inf would not); a nearest
    resize and a strided slice because each output element is one input
    element.
    """
    name = call_name(expr)
    if name == "relax.image.resize2d":
        return str(expr.attrs.method) == "nearest_neighbor"
    return name in ("relax.nn.max_pool2d", "relax.strided_slice")


def _record_program(ctx: LoweringContext, data: relax.Expr, source: relax.Expr, out: QParams, out_dtype: str,
                    table: np.ndarray) -> None:  # fmt: skip
    """Keeps the float32 program of an int8 table, for targets that compute it instead of looking it up."""
    if out_dtype != "int8":
        return

    def fold(expr: relax.Expr) -> np.ndarray | None:
        chain = _Chain(ctx)
        try:
            value = chain.run(expr, np.arange(-128, 128, dtype=np.int8))
        except Skip:
            return None
        return None if chain.source is not None else value

    program = program_of_chain(ctx, data, source, (out.s, out.z, out_dtype), table, fold)
    if program is not None:
        ctx.lut_programs[table_key(table)] = program.to_json()


def _calls(ctx: LoweringContext, expr: relax.Expr) -> list[relax.Expr]:
    expr = ctx.values.lookup(expr)
    if isinstance(expr, relax.Tuple):  # call_tir's arguments
        return [c for f in expr.fields for c in _calls(ctx, f)]
    if call_name(expr) in ("", "relax.dequantize"):
        return [expr]
    out = [expr]
    for a in expr.args:
        out += _calls(ctx, a)
    return out
