"""Fold int8 -> int8 elementwise chains into one 256-entry lookup table.

After the integer lowering, a HardSwish between two int8 layers is three
kernels over the whole tensor: a table lookup (``clip(x + 3, 0, 6)``), an
integer multiply of ``x`` by it with a requantization, and another table
(the division by 6). All three are functions of the one int8 value ``x``
alone, so their composition is a function of 256 inputs: this pass
evaluates it for every int8 value and replaces the chain by one lookup
(``lut_kernel(x, table)``). The result is bit-exact by construction: the
table is the chain's own integer arithmetic (the same ops, dtypes and
wrap-around), run by numpy on all 256 inputs.

A chain folds when every op in it is elementwise with scalar constants
(astype, add, subtract, multiply, shifts, bitwise and, clip, minimum,
maximum, an int8 table lookup) and it reads exactly one non-constant tensor, int8, of the
result's shape. The per-channel squeeze-excite multiply and residual adds
read two tensors and stay.

Hand-written: TVM folds constants, not functions of one small-domain input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

__all__ = ["fold_int8_chains"]

logger = logging.getLogger(__name__)

_BINARY: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "relax.add": np.add,
    "relax.subtract": np.subtract,
    "relax.multiply": np.multiply,
    "relax.right_shift": np.right_shift,
    "relax.left_shift": np.left_shift,
    "relax.bitwise_and": np.bitwise_and,
    "relax.minimum": np.minimum,
    "relax.maximum": np.maximum,
}
_INT_DTYPES = {"int8", "uint8", "int16", "int32", "int64"}
_DOMAIN = np.arange(-128, 128, dtype=np.int8)


@dataclass(frozen=True)
class _Fold:
    """What a value computes from its one int8 source (``None``: a constant)."""

    source: Any  # the relax.Var read, or None
    fn: Callable[[np.ndarray], np.ndarray]  # values for each of the 256 source values
    ops: int  # kernels' worth of work folded (0: the source itself)
    lut_only: bool = False  # a single table lookup of the source


def _dtype(expr: Any) -> str | None:
    ty = getattr(expr, "ty", None)
    return str(ty.dtype) if ty is not None and hasattr(ty, "dtype") else None


def _shape(expr: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(v) for v in expr.ty.shape)
    except (AttributeError, TypeError, ValueError):
        return None


class _Folder:
    def __init__(self, func: Any, lut_kernel: str) -> None:
        from tvm import relax

        self.relax = relax
        self.var2val = relax.analysis.get_var2val(func)
        self.lut_kernel = lut_kernel
        self.memo: dict[Any, _Fold | None] = {}

    def constant(self, expr: Any) -> np.ndarray | None:
        import tvm

        if isinstance(expr, self.relax.Var) and expr in self.var2val:
            expr = self.var2val[expr]
        if isinstance(expr, tvm.ir.GenericConst):
            return expr.value.numpy()
        if isinstance(expr, tvm.tirx.IntImm):
            return np.asarray(int(expr.value))
        return None

    def scalar(self, expr: Any) -> np.ndarray | None:
        value = self.constant(expr)
        return value.reshape(()) if value is not None and value.size == 1 else None

    def fold(self, expr: Any) -> _Fold | None:
        """The fold of ``expr``, or None when it is not one source's elementwise function."""
        key = expr
        if key in self.memo:
            return self.memo[key]
        self.memo[key] = None  # guards cycles; replaced below
        result = self._fold(expr)
        self.memo[key] = result
        return result

    def _leaf(self, var: Any) -> _Fold | None:
        if _dtype(var) != "int8":
            return None
        return _Fold(var, lambda xs: xs, 0)

    def _fold(self, expr: Any) -> _Fold | None:
        relax = self.relax
        const = self.scalar(expr)
        if const is not None:
            return _Fold(None, lambda xs, c=const: c, 0)
        var = expr if isinstance(expr, relax.Var) else None
        value = self.var2val.get(expr, None) if var is not None else expr
        if not isinstance(value, relax.Call):
            return self._leaf(var) if var is not None else None
        dtype = _dtype(value)
        if dtype not in _INT_DTYPES:
            return self._leaf(var) if var is not None else None
        op = getattr(value.op, "name", "")
        parts: list[_Fold]
        if op == "relax.astype":
            inner = self.fold(value.args[0])
            if inner is None or _dtype(value.args[0]) not in _INT_DTYPES:
                return self._leaf(var) if var is not None else None
            return self._combine([inner], lambda a: a.astype(dtype), 0, var)
        if op in _BINARY:
            parts = [self.fold(a) for a in value.args[:2]]
            fn = _BINARY[op]
            return self._combine(parts, lambda a, b: fn(np.asarray(a, dtype), np.asarray(b, dtype)).astype(dtype), 1,
                                 var)  # fmt: skip
        if op == "relax.clip":
            lo, hi = (int(v.value) for v in value.args[1:3])
            return self._combine([self.fold(value.args[0])], lambda a: np.clip(a, lo, hi).astype(dtype), 1, var)
        if op == "relax.call_dps_packed" and str(value.args[0].global_symbol) == self.lut_kernel:
            x, table_expr = value.args[1].fields
            table = self.constant(table_expr)
            inner = self.fold(x)
            if table is None or inner is None or table.shape != (256,):
                return self._leaf(var) if var is not None else None
            out = self._combine([inner], lambda a: table[a.astype(np.int32) + 128], 1, var)
            if out is not None and inner.ops == 0:
                out = _Fold(out.source, out.fn, out.ops, lut_only=True)
            return out
        return self._leaf(var) if var is not None else None

    def _combine(self, parts: list[_Fold | None], fn: Callable, ops: int, var: Any) -> _Fold | None:
        if any(p is None for p in parts):
            return self._leaf(var) if var is not None else None
        sources = {id(p.source): p.source for p in parts if p.source is not None}
        if len(sources) != 1:
            return self._leaf(var) if var is not None else None
        (source,) = sources.values()
        if var is not None and _shape(var) != _shape(source):
            return self._leaf(var)
        fns = [p.fn for p in parts]
        return _Fold(source, lambda xs: fn(*(f(xs) for f in fns)), ops + sum(p.ops for p in parts))

    def replacement(self, expr: Any) -> Any:
        """``lut_kernel(source, table)`` for an int8 value worth folding, else None."""
        from tvm import relax

        if _dtype(expr) != "int8":
            return None
        folded = self._fold(expr)
        if folded is None or folded.source is None or folded.ops < 1 or folded.lut_only:
            return None
        if _shape(expr) != _shape(folded.source):
            return None
        table = np.broadcast_to(folded.fn(_DOMAIN), (256,)).astype(np.int8)
        return relax.call_dps_packed(
            relax.ExternFunc(self.lut_kernel),
            relax.Tuple([folded.source, relax.const(np.ascontiguousarray(table), "int8")]),
            [relax.TensorType(folded.source.ty.shape, "int8")],
        )


def fold_int8_chains(func: Any, lut_kernel: str) -> tuple[Any, int]:
    """Replaces each int8 value that is an elementwise function of one int8
    tensor (and more than one table lookup of it) by one ``lut_kernel`` call.

    Args:
        func: The Relax ``main`` function (table lookups already offloaded as ``lut_kernel`` calls).
        lut_kernel: Symbol of the int8 -> int8 table kernel (``args = (x, table[256])``).

    Returns:
        The new function and how many values were replaced.
    """
    from tvm import relax
    from tvm.relax.dpl import is_call_dps_packed, is_op, wildcard

    folder = _Folder(func, lut_kernel)
    count = 0

    def rewrite(expr: Any, _matches: Any) -> Any:
        nonlocal count
        try:
            new = folder.replacement(expr)
        except (ValueError, TypeError, AttributeError, IndexError) as exc:  # an unexpected IR shape: keep it
            logger.debug("int8 chain not folded: %s", exc)
            return expr
        if new is None:
            return expr
        count += 1
        return new

    pattern = is_op("relax.astype")(wildcard()) | is_call_dps_packed(lut_kernel)
    func = relax.dpl.rewrite_call(pattern, rewrite, func)
    if count:
        func = relax.analysis.remove_all_unused(func)
    logger.info("%d int8 elementwise chains folded into lookup tables", count)
    return func, count
